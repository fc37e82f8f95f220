"""What routes require: packages, decorator order, static views, the
anonymous identity, and settings checked at start-up."""

from __future__ import annotations

import json
import threading
import warnings
from typing import Any

import pytest
from flask import Blueprint, Flask, jsonify

from flask_basic_gate import BasicGate, ConfigurationError, current_key, get_current_key

from .support.apps import AppFactory, gate_of, provision


def reports_app(app_factory: AppFactory, **config: Any) -> Flask:
    app = app_factory(config)
    gate = gate_of(app)

    @app.get("/reports")
    @gate.required(packages=["reports"])
    def reports() -> Any:
        return jsonify(key=current_key.key)

    bp = Blueprint("partners", __name__)

    @bp.get("/deals")
    def deals() -> Any:
        return jsonify(key=current_key.key)

    gate.protect(bp, packages=["partners", "reports"])
    app.register_blueprint(bp, url_prefix="/partners")
    provision(app)  # criticalmix in package members
    with app.app_context():
        store = BasicGate.state().store
        store.create_package("reports")
        store.create_key("reports", key="reader", secret="readsecret")
    return app


@pytest.mark.parametrize("mashery", [False, True], ids=["rfc", "mashery"])
def test_a_route_reserved_for_packages(app_factory: AppFactory, auth: Any, mashery: bool) -> None:
    app = reports_app(app_factory, BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE=mashery)
    client = app.test_client()
    assert client.get("/reports", headers=auth("reader", "readsecret")).json == {"key": "reader"}
    # Twice: the second answer comes through the cache, which skips the
    # lookup but never the package check.
    for _ in range(2):
        refused = client.get("/reports", headers=auth("criticalmix", "topsecret"))
        assert refused.status_code == 403
        assert json.loads(refused.get_data()) == {
            "errorCode": "package-not-authorized",
            "errorMessage": "Not Authorized",
            "errors": [],
        }
        if mashery:
            assert refused.headers["X-Mashery-Error-Code"] == "ERR_403_NOT_AUTHORIZED"
            assert refused.headers["X-Error-Detail-Header"] == "Not Authorized"
        else:
            assert "X-Mashery-Error-Code" not in refused.headers
        assert "WWW-Authenticate" not in refused.headers
    # The same key is fine where any package may go.
    assert client.get("/thing", headers=auth("criticalmix", "topsecret")).status_code == 200
    # A wrong secret is still a wrong secret on a reserved route.
    wrong = client.get("/reports", headers=auth("reader", "nope"))
    assert wrong.get_json()["errorCode"] == "invalid-credentials"


def test_a_blueprint_reserved_for_packages(app_factory: AppFactory, auth: Any) -> None:
    app = reports_app(app_factory, BASIC_GATE_PROTECT_ALL=False)
    client = app.test_client()
    assert client.get("/partners/deals", headers=auth("reader", "readsecret")).status_code == 200
    refused = client.get("/partners/deals", headers=auth("criticalmix", "topsecret"))
    assert refused.get_json()["errorCode"] == "package-not-authorized"
    assert client.get("/partners/deals").status_code == 401
    gate = gate_of(app)
    with app.app_context():
        found = gate.requirement("partners.deals")
        assert found is not None and found.packages == {"partners", "reports"}
        assert gate.protection("partners.deals") == "required"


def test_packages_must_name_something(app_factory: AppFactory) -> None:
    gate = gate_of(app_factory())
    with pytest.raises(ValueError, match="at least one package"):
        gate.required(packages=[])
    with pytest.raises(TypeError):
        gate.required(packages=[3])  # type: ignore[list-item]
    assert gate.required(packages="reports")  # one name, not its letters


# -- decorators in the wrong order ------------------------------------------------


def test_required_above_the_route_raises_at_the_first_request(app_factory: AppFactory) -> None:
    app = app_factory({"BASIC_GATE_PROTECT_ALL": False}, routes=False)
    gate = gate_of(app)

    @gate.required  # wrong: above the route, so the route holds the open view
    @app.get("/wrong")
    def wrong() -> Any:
        return jsonify(open=True)

    with pytest.raises(RuntimeError, match=r"'wrong'.*below @app.route"):
        app.test_client().get("/wrong")


def test_required_above_a_blueprint_route_raises(app_factory: AppFactory) -> None:
    app = app_factory({"BASIC_GATE_PROTECT_ALL": False}, routes=False)
    gate = gate_of(app)
    bp = Blueprint("bp", __name__)

    @gate.required(optional=True)
    @bp.get("/wrong")
    def wrong() -> Any:
        return jsonify(open=True)

    app.register_blueprint(bp)
    with pytest.raises(RuntimeError, match=r"'bp\.wrong'"):
        app.test_client().get("/wrong")


def test_required_below_the_route_is_fine(app_factory: AppFactory, auth: Any) -> None:
    app = app_factory({"BASIC_GATE_PROTECT_ALL": False}, routes=False)
    gate = gate_of(app)
    bp = Blueprint("bp", __name__)

    @app.get("/right")
    @gate.required
    def right() -> Any:
        return jsonify(key=current_key.key)

    @bp.get("/right")
    @gate.required
    def bp_right() -> Any:
        return jsonify(key=current_key.key)

    app.register_blueprint(bp, url_prefix="/bp")
    provision(app)
    client = app.test_client()
    assert client.get("/right").status_code == 401
    assert client.get("/bp/right").status_code == 401
    assert client.get("/right", headers=auth("criticalmix", "topsecret")).status_code == 200


# -- static views -----------------------------------------------------------------


def test_a_blueprint_view_named_static_is_guarded(app_factory: AppFactory, tmp_path: Any) -> None:
    app = app_factory(routes=False)
    bp = Blueprint("files", __name__)
    bp.add_url_rule("/static", "static", lambda: jsonify(secret="data"))
    app.register_blueprint(bp, url_prefix="/files")
    response = app.test_client().get("/files/static")
    assert response.status_code == 401


def test_an_app_view_named_static_is_guarded(tmp_path: Any) -> None:
    from flask_sqlalchemy import SQLAlchemy

    app = Flask("nostatic", static_folder=None)
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'n.sqlite'}"
    db = SQLAlchemy(app)
    BasicGate(app, db=db)
    app.add_url_rule("/static", "static", lambda: jsonify(secret="data"))
    assert app.test_client().get("/static").status_code == 401
    with app.app_context():
        db.engine.dispose()


def test_a_blueprint_static_folder_stays_open(app_factory: AppFactory, tmp_path: Any) -> None:
    folder = tmp_path / "assets"
    folder.mkdir()
    (folder / "a.txt").write_text("asset")
    app = app_factory(routes=False)
    bp = Blueprint("assets", __name__, static_folder=str(folder), static_url_path="/files")
    app.register_blueprint(bp, url_prefix="/assets")
    response = app.test_client().get("/assets/files/a.txt")
    assert response.status_code == 200
    assert response.get_data() == b"asset"
    response.close()


# -- the anonymous identity -------------------------------------------------------


def test_current_key_is_anonymous_without_a_key(app_factory: AppFactory) -> None:
    app = app_factory({"BASIC_GATE_EXEMPT_METHODS": "OPTIONS HEAD"}, routes=False)

    @app.get("/hello")
    def hello() -> Any:
        # The README's view: it must not fail when no key authenticated.
        return jsonify(key=current_key.key, package=current_key.package, known=bool(current_key))

    @app.get("/maybe")
    @gate_of(app).required(optional=True)
    def maybe() -> Any:
        assert get_current_key() is None
        return jsonify(key=current_key.key, known=bool(current_key))

    client = app.test_client()
    head = client.head("/hello")
    assert head.status_code == 200
    assert client.get("/maybe").json == {"key": None, "known": False}
    with app.test_request_context():
        assert not current_key
        assert current_key.key is None and current_key.owner_email is None


# -- settings ------------------------------------------------------------------------


def test_an_unknown_setting_warns_with_the_closest_name(app_factory: AppFactory) -> None:
    with pytest.warns(
        UserWarning, match="BASIC_GATE_PROTECTALL .*did you mean BASIC_GATE_PROTECT_ALL"
    ):
        app_factory({"BASIC_GATE_PROTECTALL": False})


def test_an_unknown_setting_from_the_environment_names_the_variable(
    app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_BASIC_GATE_PROTECTALL", "false")
    app = Flask(__name__)
    app.config.from_prefixed_env()
    with pytest.warns(UserWarning, match="environment variable FLASK_BASIC_GATE_PROTECTALL"):
        app_factory(dict(app.config))


def test_known_settings_do_not_warn(app_factory: AppFactory) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        app_factory({"BASIC_GATE_REALM": "partners", "BASIC_GATE_FAILURE_LIMIT": "off"})


@pytest.mark.parametrize("methods", ["FROB", "OPTIONS FROB", ["GET", "brew"]])
def test_exempt_methods_must_be_standard(app_factory: AppFactory, methods: Any) -> None:
    with pytest.raises(ConfigurationError, match="BASIC_GATE_EXEMPT_METHODS"):
        app_factory({"BASIC_GATE_EXEMPT_METHODS": methods})


def test_exempt_methods_any_case(app_factory: AppFactory) -> None:
    app = app_factory({"BASIC_GATE_EXEMPT_METHODS": "options, head"})
    assert BasicGate.state(app).settings.exempt_methods == {"OPTIONS", "HEAD"}


def test_a_bad_value_from_the_environment_names_the_variable(
    app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_BASIC_GATE_CACHE_TTL", "86400")
    app = Flask(__name__)
    app.config.from_prefixed_env()
    with pytest.raises(ConfigurationError) as caught:
        app_factory(dict(app.config))
    message = str(caught.value)
    assert "BASIC_GATE_CACHE_TTL" in message
    assert "environment variable FLASK_BASIC_GATE_CACHE_TTL" in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BASIC_GATE_STORE_TIMEOUT", 0),
        ("BASIC_GATE_STORE_TIMEOUT", "soon"),
        ("BASIC_GATE_KDF_BUDGET", 2),
        ("BASIC_GATE_KDF_BUDGET", 0),
        ("BASIC_GATE_REDIS_URL", "localhost:6379"),
        ("BASIC_GATE_RATE_LIMIT_HEADERS", "maybe"),
    ],
)
def test_bad_new_settings_fail_at_start_up(app_factory: AppFactory, name: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=name):
        app_factory({name: value})


# -- the revocation race --------------------------------------------------------------


def test_a_verification_racing_a_disable_cannot_write_back(
    app_factory: AppFactory, auth: Any
) -> None:
    """A lookup that read the key before it was disabled must not put its
    success into the cache after the eviction."""
    app = app_factory({"BASIC_GATE_LOOKUP_CONNECTIONS": 0})
    provision(app)
    state = BasicGate.state(app)
    reader = state.store.reader
    real = reader.lookup
    looked_up, disabled = threading.Event(), threading.Event()

    def slow_lookup(key: str) -> Any:
        record = real(key)  # read while the key is still active
        looked_up.set()
        assert disabled.wait(10)
        return record

    reader.lookup = slow_lookup  # type: ignore[method-assign]
    results: list[int] = []
    worker = threading.Thread(
        target=lambda: results.append(
            app.test_client().get("/thing", headers=auth("criticalmix", "topsecret")).status_code
        )
    )
    worker.start()
    assert looked_up.wait(10)
    with app.app_context():
        state.store.disable_key("criticalmix")
    disabled.set()
    worker.join(10)
    reader.lookup = real  # type: ignore[method-assign]
    assert results == [200]  # it started before the change
    assert len(state.cache) == 0
    response = app.test_client().get("/thing", headers=auth("criticalmix", "topsecret"))
    assert response.get_json()["errorCode"] == "key-inactive"

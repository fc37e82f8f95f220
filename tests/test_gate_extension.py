"""The extension's wiring: set-up, settings, which routes are guarded, state."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
from flask import Blueprint, Flask, jsonify
from flask_sqlalchemy import SQLAlchemy

from flask_basic_gate import (
    BasicGate,
    ConfigurationError,
    GateError,
    GatePolicy,
    current_key,
    get_current_key,
    request_authenticated,
    request_rejected,
)

from .support.apps import AppFactory, QueryCounter, gate_of, provision

# -- set-up ---------------------------------------------------------------


def test_init_app_twice_refused(app: Flask) -> None:
    with pytest.raises(RuntimeError, match="already initialised"):
        gate_of(app).init_app(app)


def test_db_missing() -> None:
    with pytest.raises(RuntimeError, match=r"BasicGate\(app, db=db\)"):
        BasicGate(Flask(__name__))


def test_db_not_initialised_on_app() -> None:
    app = Flask(__name__)
    with pytest.raises(RuntimeError, match=r"call db.init_app\(app\) before gate.init_app"):
        BasicGate(app, SQLAlchemy())


def test_app_factory_and_extensions(app: Flask) -> None:
    state = BasicGate.state(app)
    assert state.gate is gate_of(app)
    assert app.extensions["basic_gate"] is state
    assert not hasattr(gate_of(app), "app")


def test_defaults_set(app: Flask) -> None:
    assert app.config["BASIC_GATE_PROTECT_ALL"] is True
    assert app.config["BASIC_GATE_REALM"] == "api"
    assert app.config["BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE"] is False
    assert app.config["BASIC_GATE_EXEMPT_METHODS"] == {"OPTIONS"}


TRUE_VALUES = [True, 1, "true", "TRUE", "True", "1", "yes", "YES", "on", "On"]
FALSE_VALUES = [False, 0, "false", "FALSE", "False", "0", "no", "NO", "off", "Off"]


@pytest.mark.parametrize("value", TRUE_VALUES + FALSE_VALUES, ids=repr)
@pytest.mark.parametrize(
    "name", ["BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE", "Keep_Mashery_Default_Response_Code"]
)
def test_mashery_flag_values(app_factory: AppFactory, name: str, value: Any) -> None:
    app = app_factory({name: value})
    expected = value in TRUE_VALUES and value is not False
    assert app.config["BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE"] is expected
    assert app.test_client().get("/thing").status_code == (403 if expected else 401)


def test_mashery_flag_from_prefixed_env(
    app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    for raw, status in (("false", 401), ('"false"', 401), ("true", 403), ("On", 403)):
        monkeypatch.setenv("FLASK_BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE", raw)
        probe = Flask(__name__)
        probe.config.from_prefixed_env()
        app = app_factory(
            {
                "BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE": probe.config[
                    "BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE"
                ]
            }
        )
        assert app.test_client().get("/thing").status_code == status, raw


@pytest.mark.parametrize("value", ["maybe", "", "2", 2, None, [True]], ids=repr)
def test_mashery_flag_bad_value(app_factory: AppFactory, value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        app_factory({"BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE": value})
    assert "BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE" in str(info.value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BASIC_GATE_PROTECT_ALL", "sometimes"),
        ("BASIC_GATE_REALM", ""),
        ("BASIC_GATE_REALM", 'a"b'),
        ("BASIC_GATE_EXEMPT_METHODS", 5),
        ("BASIC_GATE_HASH_METHOD", "md5"),
        ("BASIC_GATE_HASH_METHOD", "scrypt:x:8:1"),
        ("BASIC_GATE_HASH_METHOD", "pbkdf2:nosuchhash"),
        ("BASIC_GATE_CACHE_TTL", 31),
        ("BASIC_GATE_CACHE_TTL", "soon"),
        ("BASIC_GATE_CACHE_SIZE", -1),
        ("BASIC_GATE_LOOKUP_CONNECTIONS", -1),
        ("BASIC_GATE_LOOKUP_CONNECTIONS", "many"),
        ("BASIC_GATE_BIND_KEY", "nosuchbind"),
        ("BASIC_GATE_STORE_PLAINTEXT_SECRETS", "perhaps"),
    ],
)
def test_bad_settings_fail_at_start(app_factory: AppFactory, name: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=name):
        app_factory({name: value})


def test_plaintext_setting_warns(app_factory: AppFactory) -> None:
    with pytest.warns(UserWarning, match="BASIC_GATE_STORE_PLAINTEXT_SECRETS"):
        app_factory({"BASIC_GATE_STORE_PLAINTEXT_SECRETS": "true"})


def test_exempt_methods_from_string(app_factory: AppFactory) -> None:
    app = app_factory({"BASIC_GATE_EXEMPT_METHODS": "options, head"})
    assert app.config["BASIC_GATE_EXEMPT_METHODS"] == {"OPTIONS", "HEAD"}
    client = app.test_client()
    assert client.head("/no/such/route").status_code == 404  # let through to routing
    assert client.get("/no/such/route").status_code == 401


# -- which routes are guarded ---------------------------------------------


def test_options_passes_without_credentials(app: Flask) -> None:
    client = app.test_client()
    assert client.options("/thing").status_code == 200
    assert client.options("/decorated").status_code == 200


def test_options_guarded_when_not_exempt(app_factory: AppFactory) -> None:
    app = app_factory({"BASIC_GATE_EXEMPT_METHODS": []})
    assert app.test_client().options("/thing").status_code == 401


def test_exempt_view_open(app: Flask) -> None:
    response = app.test_client().get("/open")
    assert response.status_code == 200
    assert response.get_json() == {"open": True, "key": False}


def test_unknown_url_guarded_when_protect_all(app: Flask, auth: Any) -> None:
    client = app.test_client()
    assert client.get("/no/such/route").status_code == 401
    assert client.get("/no/such/route", headers=auth("criticalmix", "topsecret")).status_code == 404


def test_static_files_open(app_factory: AppFactory, tmp_path: Any) -> None:
    static = tmp_path / "static"
    static.mkdir()
    (static / "hello.txt").write_text("hi")
    app = app_factory()
    app.static_folder = str(static)
    response = app.test_client().get("/static/hello.txt")
    assert response.status_code == 200
    assert response.get_data() == b"hi"
    response.close()


def test_protect_all_off_guards_only_marked(app_factory: AppFactory, auth: Any) -> None:
    app = app_factory({"BASIC_GATE_PROTECT_ALL": False})
    provision(app)
    gate = gate_of(app)
    guarded = gate.protect(Blueprint("guarded", __name__))
    free = Blueprint("free", __name__)

    @guarded.get("/inside")
    def inside() -> Any:
        return jsonify(key=current_key.key)

    @free.get("/plain")
    def plain() -> Any:
        return jsonify(ok=True)

    app.register_blueprint(guarded, url_prefix="/g")
    app.register_blueprint(free, url_prefix="/f")
    client = app.test_client()
    assert client.get("/f/plain").status_code == 200
    assert client.get("/no/such/route").status_code == 404
    assert client.get("/g/inside").status_code == 401
    assert client.get("/decorated").status_code == 401
    assert client.get("/async").status_code == 401
    ok = client.get("/g/inside", headers=auth("criticalmix", "topsecret"))
    assert ok.get_json() == {"key": "criticalmix"}


def test_exempt_blueprint(app_factory: AppFactory, auth: Any) -> None:
    app = app_factory()
    provision(app)
    gate = gate_of(app)
    public = gate.exempt(Blueprint("public", __name__))

    @public.get("/doc")
    def doc() -> Any:
        return jsonify(doc=True)

    @public.get("/still-guarded")
    @gate.required
    def still() -> Any:
        return jsonify(key=current_key.key)

    app.register_blueprint(public, url_prefix="/p")
    client = app.test_client()
    assert client.get("/p/doc").status_code == 200
    assert client.get("/p/still-guarded").status_code == 401
    assert (
        client.get("/p/still-guarded", headers=auth("criticalmix", "topsecret")).status_code == 200
    )


def test_settings_changed_after_init_app_are_ignored(app: Flask, auth: Any) -> None:
    # Settings are read once, at init_app, into a frozen object.
    @app.get("/plain")
    def plain() -> Any:
        return jsonify(key=get_current_key() is not None)

    client = app.test_client()
    app.config["BASIC_GATE_PROTECT_ALL"] = False
    app.config["BASIC_GATE_EXEMPT_METHODS"] = frozenset()
    app.config["BASIC_GATE_CACHE_TTL"] = 86400
    app.config["BASIC_GATE_REALM"] = "other"
    response = client.get("/plain")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="api", charset="UTF-8"'
    assert client.options("/plain").status_code == 200
    assert BasicGate.state(app).settings.cache_ttl == 30
    with pytest.raises(dataclasses.FrozenInstanceError):
        BasicGate.state(app).settings.protect_all = False  # type: ignore[misc]


def test_exempt_after_first_request(app_factory: AppFactory) -> None:
    app = app_factory()
    public = Blueprint("late", __name__)
    public.add_url_rule("/doc", "doc", lambda: jsonify(doc=True))
    app.register_blueprint(public, url_prefix="/late")
    gate = gate_of(app)
    client = app.test_client()
    assert client.get("/late/doc").status_code == 401
    gate.exempt(public)
    assert client.get("/late/doc").status_code == 200


def test_nested_and_renamed_blueprints(app_factory: AppFactory, auth: Any) -> None:
    app = app_factory()
    provision(app)
    gate = gate_of(app)
    parent = Blueprint("parent", __name__)
    child = gate.exempt(Blueprint("child", __name__))
    renamed = gate.exempt(Blueprint("original", __name__))

    @child.get("/open")
    def child_open() -> Any:
        return jsonify(open=True)

    @renamed.get("/open")
    def renamed_open() -> Any:
        return jsonify(open=True)

    @parent.get("/guarded")
    def parent_guarded() -> Any:
        return jsonify(key=current_key.key)

    parent.register_blueprint(child, url_prefix="/child")
    app.register_blueprint(parent, url_prefix="/parent")
    app.register_blueprint(renamed, url_prefix="/renamed", name="renamed")
    client = app.test_client()
    assert client.get("/parent/child/open").status_code == 200
    assert client.get("/renamed/open").status_code == 200
    assert client.get("/parent/guarded").status_code == 401
    assert gate.protection("parent.child.child_open", app=app) is None
    assert gate.protection("parent.parent_guarded", app=app) == "required"


def test_protected_nested_blueprint(app_factory: AppFactory, auth: Any) -> None:
    app = app_factory({"BASIC_GATE_PROTECT_ALL": False})
    provision(app)
    gate = gate_of(app)
    outer = gate.protect(Blueprint("outer", __name__))
    inner = Blueprint("inner", __name__)

    @inner.get("/deep")
    def deep() -> Any:
        return jsonify(key=current_key.key)

    outer.register_blueprint(inner, url_prefix="/inner")
    app.register_blueprint(outer, url_prefix="/outer", name="elsewhere")
    client = app.test_client()
    assert client.get("/outer/inner/deep").status_code == 401
    assert (
        client.get("/outer/inner/deep", headers=auth("criticalmix", "topsecret")).status_code == 200
    )


@pytest.mark.parametrize("order", ["exempt-outside", "exempt-inside"])
def test_required_wins_over_exempt(app_factory: AppFactory, order: str) -> None:
    app = app_factory()
    gate = gate_of(app)

    def view() -> Any:
        return jsonify(key=get_current_key())

    wrapped = (
        gate.exempt(gate.required(view))
        if order == "exempt-outside"
        else gate.required(gate.exempt(view))
    )
    app.add_url_rule("/both", "both", wrapped)
    assert app.test_client().get("/both").status_code == 401
    assert gate.protection("both", app=app) == "required"


def test_protection_answers(app: Flask) -> None:
    gate = gate_of(app)
    with app.app_context():
        assert gate.protection("thing") == "required"
        assert gate.protection("optional_route") == "optional"
        assert gate.protection("open_route") is None
        assert gate.protection("thing", "options") is None
        assert gate.protection("static") is None
        assert gate.protection(None) == "required"


def test_protection_answers_without_protect_all(app_factory: AppFactory) -> None:
    app = app_factory({"BASIC_GATE_PROTECT_ALL": False})
    gate = gate_of(app)
    assert gate.protection("thing", app=app) is None
    assert gate.protection("decorated", app=app) == "required"


def test_optional_auth(app: Flask, auth: Any) -> None:
    client = app.test_client()
    assert client.get("/optional").get_json() == {"key": None}
    assert client.get("/optional", headers=auth("criticalmix", "topsecret")).get_json() == {
        "key": "criticalmix"
    }
    bad = client.get("/optional", headers=auth("criticalmix", "wrong"))
    assert bad.status_code == 403
    assert bad.get_json()["errorCode"] == "invalid-credentials"
    assert client.get("/optional", headers={"Authorization": "Bearer x"}).status_code == 401


def test_optional_auth_without_protect_all(app_factory: AppFactory, auth: Any) -> None:
    app = app_factory({"BASIC_GATE_PROTECT_ALL": False})
    provision(app)
    client = app.test_client()
    assert client.get("/optional").get_json() == {"key": None}
    assert client.get("/optional", headers={"Authorization": "Basic ###"}).status_code == 401


def test_async_view(app: Flask, auth: Any) -> None:
    client = app.test_client()
    assert client.get("/async").status_code == 401
    response = client.get("/async", headers=auth("criticalmix", "topsecret"))
    assert response.get_json() == {"key": "criticalmix"}


def test_decorator_without_init_app_on_app() -> None:
    gate = BasicGate(db=SQLAlchemy())
    app = Flask(__name__)

    @app.get("/x")
    @gate.required
    def x() -> str:
        return "never"

    app.config["PROPAGATE_EXCEPTIONS"] = True
    with pytest.raises(RuntimeError, match="not initialised on this app"):
        app.test_client().get("/x")


# -- one check per request, state per request ------------------------------


def test_guard_and_decorator_query_once(app_factory: AppFactory, auth: Any) -> None:
    app = app_factory({"BASIC_GATE_CACHE_TTL": 0})
    provision(app)
    counter = QueryCounter(app)
    try:
        client = app.test_client()
        for _ in range(3):
            assert (
                client.get("/decorated", headers=auth("criticalmix", "topsecret")).status_code
                == 200
            )
        assert client.get("/decorated", headers=auth("criticalmix", "wrong")).status_code == 403
    finally:
        counter.close()
    assert counter.count == 4


def test_identity_not_seen_by_next_request(app: Flask, auth: Any) -> None:
    client = app.test_client()
    with app.app_context():  # one app context around both requests shares g
        assert client.get("/thing", headers=auth("criticalmix", "topsecret")).status_code == 200
        assert client.get("/open").get_json() == {"open": True, "key": False}
        assert client.get("/optional").get_json() == {"key": None}
    with app.test_request_context("/"):
        assert get_current_key() is None
        assert not current_key
    assert get_current_key() is None


def test_two_apps_two_databases_one_gate(app_factory: AppFactory, tmp_path: Any, auth: Any) -> None:
    gate = BasicGate()
    first = app_factory(url=f"sqlite:///{tmp_path / 'one.sqlite'}", gate=gate)
    gate.db = None
    with pytest.raises(RuntimeError):
        gate.init_app(Flask(__name__))
    second_db = SQLAlchemy()
    second = Flask(__name__)
    second.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'two.sqlite'}",
        BASIC_GATE_HASH_METHOD="pbkdf2:sha256:1000",
    )
    second_db.init_app(second)
    gate.db = second_db
    gate.init_app(second)

    @second.get("/thing")
    def thing() -> Any:
        return jsonify(key=current_key.key)

    with second.app_context():
        second_db.create_all()
    provision(first, key="first-key", secret="one")
    provision(second, key="second-key", secret="two")
    assert BasicGate.state(first).store is not BasicGate.state(second).store
    one, two = first.test_client(), second.test_client()
    assert one.get("/thing", headers=auth("first-key", "one")).status_code == 200
    assert two.get("/thing", headers=auth("second-key", "two")).status_code == 200
    assert one.get("/thing", headers=auth("second-key", "two")).status_code == 403
    assert two.get("/thing", headers=auth("first-key", "one")).status_code == 403
    with second.app_context():
        second_db.engine.dispose()


def test_one_db_object_two_apps(tmp_path: Any, auth: Any) -> None:
    db = SQLAlchemy()
    gate = BasicGate(db=db)
    apps = []
    for name in ("a", "b"):
        app = Flask(name)
        app.config.update(
            SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / name}.sqlite",
            BASIC_GATE_HASH_METHOD="pbkdf2:sha256:1000",
        )
        db.init_app(app)
        gate.init_app(app)
        app.add_url_rule("/thing", "thing", lambda: jsonify(key=current_key.key))
        with app.app_context():
            db.create_all()
            gate.store.create_package("members")
            gate.store.create_key("members", key=f"key-{name}", secret="s")
        apps.append(app)
    a, b = (app.test_client() for app in apps)
    assert a.get("/thing", headers=auth("key-a", "s")).get_json() == {"key": "key-a"}
    assert b.get("/thing", headers=auth("key-a", "s")).status_code == 403
    for app in apps:
        with app.app_context():
            db.engine.dispose()


# -- fail closed ----------------------------------------------------------


@pytest.mark.parametrize("mashery", [False, True], ids=["rfc", "mashery"])
def test_tables_dropped_gives_503(
    app_factory: AppFactory, auth: Any, caplog: pytest.LogCaptureFixture, mashery: bool
) -> None:
    app = app_factory({"BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE": mashery})
    provision(app)
    with app.app_context():
        app.extensions["sqlalchemy"].drop_all()
    with caplog.at_level(logging.ERROR, logger="flask_basic_gate"):
        response = app.test_client().get("/thing", headers=auth("criticalmix", "topsecret"))
    assert response.status_code == 503
    assert response.get_json()["errorCode"] == "gate-unavailable"
    assert "WWW-Authenticate" not in response.headers
    assert "X-Mashery-Error-Code" not in response.headers
    assert caplog.records and caplog.records[0].exc_info is not None
    assert "topsecret" not in caplog.text
    assert "Y3JpdGljYWxtaXg6dG9wc2VjcmV0" not in caplog.text  # the raw header


def test_database_unreachable_gives_503(app_factory: AppFactory, auth: Any) -> None:
    app = app_factory(
        {"SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"connect_timeout": 2}}},
        url="postgresql+psycopg://nobody@127.0.0.1:1/none",
        create=False,
    )
    app.extensions["sqlalchemy"].drop_all = lambda: None  # nothing to drop at the end
    response = app.test_client().get("/thing", headers=auth("criticalmix", "topsecret"))
    assert response.status_code == 503
    assert response.get_json()["errorCode"] == "gate-unavailable"


# -- errors, signals, logs, policy ----------------------------------------


def test_errorhandler_can_restyle(app: Flask) -> None:
    @app.errorhandler(GateError)
    def restyle(error: GateError) -> Any:
        return jsonify(problem=error.error_code), error.code

    response = app.test_client().get("/thing")
    assert response.status_code == 401
    assert response.get_json() == {"problem": "authorization-required"}


def test_signals(app: Flask, auth: Any) -> None:
    seen: list[tuple[str, Any]] = []

    def on_ok(sender: Flask, key: Any) -> None:
        seen.append(("ok", key.key))

    def on_reject(sender: Flask, error_code: str, status: int) -> None:
        seen.append(("rejected", (error_code, status)))

    with (
        request_authenticated.connected_to(on_ok, app),
        request_rejected.connected_to(on_reject, app),
    ):
        client = app.test_client()
        client.get("/thing", headers=auth("criticalmix", "topsecret"))
        client.get("/thing", headers=auth("criticalmix", "wrong"))
        client.get("/thing")
    assert seen == [
        ("ok", "criticalmix"),
        ("rejected", ("invalid-credentials", 403)),
        ("rejected", ("authorization-required", 401)),
    ]


def test_rejection_logged_without_secret(
    app: Flask, auth: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="flask_basic_gate"):
        app.test_client().get("/thing", headers=auth("criticalmix", "hunter2-wrong"))
    assert "error_code='invalid-credentials'" in caplog.text
    assert "key='criticalmix'" in caplog.text
    assert "hunter2-wrong" not in caplog.text
    assert "Authorization" not in caplog.text
    (record,) = caplog.records
    assert record.basic_gate == {  # type: ignore[attr-defined]
        "event": "rejected",
        "key": "criticalmix",
        "package": None,
        "client": "127.0.0.1",
        "error_code": "invalid-credentials",
        "status": 403,
    }


def test_inactive_and_success_logged_with_package(
    app: Flask, auth: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = app.test_client()
    with caplog.at_level(logging.DEBUG, logger="flask_basic_gate"):
        client.get("/thing", headers=auth("criticalmix", "topsecret"))
        with app.app_context():
            BasicGate.state().store.disable_key("criticalmix")
        client.get("/thing", headers=auth("criticalmix", "topsecret"))
    events = [r.basic_gate for r in caplog.records if hasattr(r, "basic_gate")]  # type: ignore[attr-defined]
    assert [(e["event"], e["package"], e.get("error_code")) for e in events] == [
        ("authenticated", "members", None),
        ("rejected", "members", "key-inactive"),
    ]
    assert "topsecret" not in caplog.text


def test_hostile_key_cannot_forge_log_lines(
    app: Flask, auth: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="flask_basic_gate"):
        app.test_client().get("/thing", headers=auth("x\nrejected key='admin'", "s"))
    assert len(caplog.text.strip().splitlines()) == 1


def test_policy_subclass(app_factory: AppFactory, auth: Any) -> None:
    class NoMondays(GatePolicy):
        def is_active(self, record: Any, now: float) -> bool:
            return record.owner_email != "blocked@example.com" and super().is_active(record, now)

    app = app_factory(policy_class=NoMondays)
    provision(app, key="blocked", secret="s", owner_email="blocked@example.com")
    provision(app, key="fine", secret="s", owner_email="fine@example.com")
    client = app.test_client()
    assert isinstance(BasicGate.state(app).policy, NoMondays)
    assert (
        client.get("/thing", headers=auth("blocked", "s")).get_json()["errorCode"] == "key-inactive"
    )
    assert client.get("/thing", headers=auth("fine", "s")).get_json()["owner"] == "fine@example.com"


@pytest.mark.parametrize("command", [["basic-gate", "list-keys"], ["run"]])
def test_a_bad_setting_is_one_error_line_under_the_flask_command(
    tmp_path: Any, command: list[str]
) -> None:
    """Any app (here the docs' hello.py), not only the example: the
    ConfigurationError is a click error, so Flask's command prints it."""
    import shutil
    import subprocess
    import sys

    from .support import ROOT
    from .support.servers import child_env

    shutil.copy(ROOT / "docs" / "quickstart" / "hello.py", tmp_path / "hello.py")
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "hello", *command],
        cwd=tmp_path,
        env=child_env(FLASK_BASIC_GATE_CACHE_TTL="abc"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "Error: BASIC_GATE_CACHE_TTL = 'abc' (set by the environment variable"
        " FLASK_BASIC_GATE_CACHE_TTL) is not valid: expected a number."
    ]

"""The OpenAPI helper: the document says what the gate does.

Tested with APIFlask and flask-smorest (both in the ``test`` extra); every
documented operation is also requested without credentials, so the document
and the guard cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Optional

import pytest
from flask import Blueprint, Flask
from flask_sqlalchemy import SQLAlchemy

from flask_basic_gate import BasicGate
from flask_basic_gate.openapi import (
    OPTIONAL,
    REQUIRED,
    add_security,
    register_security_scheme,
    route_packages,
    route_protection,
    security_scheme,
)
from flask_basic_gate.testing import basic_auth_headers

from .support.apps import FAST_KDF, dispose

GATE = [{"basicGate": []}]
GATE_OR_ANONYMOUS = [{"basicGate": []}, {}]


def _configure(app: Flask, tmp_path: Any, config: Optional[dict[str, Any]]) -> BasicGate:
    app.config.update(
        TESTING=True,
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'openapi.sqlite'}",
        BASIC_GATE_HASH_METHOD=FAST_KDF,
        **(config or {}),
    )
    db = SQLAlchemy(app)
    gate = BasicGate(app, db)
    with app.app_context():
        db.create_all()
        gate.store.create_package("members")
        gate.store.create_key("members", key="reader", secret="s3cret")
    return gate


@pytest.fixture
def engines() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for app in made:
        dispose(app)


def _apiflask_app(tmp_path: Any, engines: list[Any], config: Optional[dict[str, Any]] = None):
    apiflask = pytest.importorskip("apiflask")
    app = apiflask.APIFlask(__name__, title="Members", version="1")
    gate = _configure(app, tmp_path, config)
    engines.append(app)
    # The document and its viewer stay readable without credentials.
    gate.exempt(app.blueprints["openapi"])

    @app.get("/members/<member_id>")
    def member(member_id: str) -> Any:
        return {"memberId": member_id}

    @app.post("/members")
    def add_member() -> Any:
        return {}, 201

    @app.get("/health")
    @gate.exempt
    def health() -> Any:
        return {"status": "ok"}

    @app.get("/greeting")
    @gate.required(optional=True)
    def greeting() -> Any:
        return {"hello": "world"}

    @app.get("/decorated")
    @gate.required
    def decorated() -> Any:
        return {}

    public = apiflask.APIBlueprint("public", __name__, url_prefix="/public")

    @public.get("/info")
    def info() -> Any:
        return {}

    @public.get("/inside")
    @gate.required
    def inside() -> Any:
        return {}

    gate.exempt(public)
    app.register_blueprint(public)

    private = apiflask.APIBlueprint("private", __name__, url_prefix="/private")

    @private.get("/report")
    def report() -> Any:
        return {}

    gate.protect(private)
    app.register_blueprint(private)

    @app.get("/reports")
    @gate.required(packages=["reports", "audit"])
    def reports() -> Any:
        return {}

    return app, gate


def _operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if method in {"get", "post", "put", "patch", "delete"}
    }


def _security(spec: dict[str, Any]) -> dict[tuple[str, str], Any]:
    return {where: op.get("security") for where, op in _operations(spec).items()}


def test_security_scheme_is_http_basic() -> None:
    scheme = security_scheme()
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "basic"
    assert security_scheme("mine")["description"] == "mine"


def test_apiflask_protect_all(tmp_path: Any, engines: list[Any]) -> None:
    app, gate = _apiflask_app(tmp_path, engines)
    register_security_scheme(app, gate)
    spec = app.test_client().get("/openapi.json").get_json()

    assert spec["components"]["securitySchemes"]["basicGate"] == security_scheme()
    assert "security" not in spec  # never a global requirement
    assert _security(spec) == {
        ("get", "/members/{member_id}"): GATE,
        ("post", "/members"): GATE,
        ("get", "/health"): None,
        ("get", "/greeting"): GATE_OR_ANONYMOUS,
        ("get", "/decorated"): GATE,
        ("get", "/public/info"): None,
        ("get", "/public/inside"): GATE,
        ("get", "/private/report"): GATE,
        ("get", "/reports"): GATE,
    }
    packages = {
        where: op["x-basic-gate-packages"]
        for where, op in _operations(spec).items()
        if "x-basic-gate-packages" in op
    }
    assert packages == {("get", "/reports"): ["audit", "reports"]}
    assert route_packages(gate, app, "reports") == ["audit", "reports"]
    assert route_packages(gate, app, "member") is None
    assert route_packages(gate, app, "health") is None


def test_apiflask_protect_all_off(tmp_path: Any, engines: list[Any]) -> None:
    app, gate = _apiflask_app(tmp_path, engines, {"BASIC_GATE_PROTECT_ALL": "false"})
    register_security_scheme(app, gate, name="keys", description="Package keys")
    spec = app.spec
    assert isinstance(spec, dict)

    assert spec["components"]["securitySchemes"]["keys"]["description"] == "Package keys"
    keys = [{"keys": []}]
    assert _security(spec) == {
        ("get", "/members/{member_id}"): None,
        ("post", "/members"): None,
        ("get", "/health"): None,
        ("get", "/greeting"): [{"keys": []}, {}],
        ("get", "/decorated"): keys,
        ("get", "/public/info"): None,
        ("get", "/public/inside"): keys,
        ("get", "/private/report"): keys,
        ("get", "/reports"): keys,
    }


@pytest.mark.parametrize("protect_all", [True, False])
def test_document_matches_the_gate(tmp_path: Any, engines: list[Any], protect_all: bool) -> None:
    """Each operation answers 401 without credentials exactly when the
    document requires them, and lets valid credentials through."""
    app, gate = _apiflask_app(tmp_path, engines, {"BASIC_GATE_PROTECT_ALL": protect_all})
    register_security_scheme(app, gate)
    client = app.test_client()
    spec = client.get("/openapi.json").get_json()
    checked = 0
    for (method, path), operation in _operations(spec).items():
        url = path.replace("{member_id}", "M0001")
        anonymous = client.open(url, method=method.upper())
        required = operation.get("security") == GATE
        assert (anonymous.status_code == 401) is required, (method, path)
        if operation.get("security"):
            authorised = client.open(
                url, method=method.upper(), headers=basic_auth_headers("reader", "s3cret")
            )
            if "members" in operation.get("x-basic-gate-packages", ["members"]):
                assert authorised.status_code < 400, (method, path)
            else:  # the reader's package is not among the route's
                assert authorised.status_code == 403, (method, path)
        checked += 1
    assert checked == 9


def test_apiflask_keeps_the_apps_processor(tmp_path: Any, engines: list[Any]) -> None:
    app, gate = _apiflask_app(tmp_path, engines)

    @app.spec_processor
    def retitle(spec: dict[str, Any]) -> dict[str, Any]:
        spec["info"]["title"] = "Renamed"
        return spec

    register_security_scheme(app, gate)
    spec = app.spec
    assert isinstance(spec, dict)
    assert spec["info"]["title"] == "Renamed"
    assert spec["paths"]["/decorated"]["get"]["security"] == GATE


def test_apiflask_spec_object(tmp_path: Any, engines: list[Any]) -> None:
    app, gate = _apiflask_app(tmp_path, engines, {"SPEC_PROCESSOR_PASS_OBJECT": True})
    register_security_scheme(app, gate)
    spec = app.spec
    assert isinstance(spec, dict)
    assert spec["components"]["securitySchemes"]["basicGate"]["scheme"] == "basic"
    assert spec["paths"]["/members/{member_id}"]["get"]["security"] == GATE
    assert "security" not in spec["paths"]["/health"]["get"]


def test_apiflask_other_auth_is_kept(tmp_path: Any, engines: list[Any]) -> None:
    apiflask = pytest.importorskip("apiflask")
    app, gate = _apiflask_app(tmp_path, engines)
    token = apiflask.HTTPTokenAuth()

    @token.verify_token
    def verify(value: str) -> Optional[str]:
        return value or None

    @app.get("/both")
    @app.auth_required(token)
    def both() -> Any:
        return {}

    @app.get("/token-only")
    @gate.exempt
    @app.auth_required(token)
    def token_only() -> Any:
        return {}

    register_security_scheme(app, gate)
    spec = app.spec
    assert isinstance(spec, dict)
    assert spec["paths"]["/both"]["get"]["security"] == [{"BearerAuth": [], "basicGate": []}]
    assert spec["paths"]["/token-only"]["get"]["security"] == [{"BearerAuth": []}]


def test_flask_smorest(tmp_path: Any, engines: list[Any]) -> None:
    smorest = pytest.importorskip("flask_smorest")
    app = Flask(__name__)
    app.config.update(API_TITLE="Members", API_VERSION="1", OPENAPI_VERSION="3.0.3")
    gate = _configure(app, tmp_path, None)
    engines.append(app)
    api = smorest.Api(app)

    before = smorest.Blueprint("members", __name__, url_prefix="/members")

    @before.route("/<member_id>")
    def member(member_id: str) -> Any:
        return {"memberId": member_id}

    @before.route("/health")
    @gate.exempt
    def health() -> Any:
        return {}

    api.register_blueprint(before)
    register_security_scheme(api, gate)

    after = smorest.Blueprint("reports", __name__, url_prefix="/reports")

    @after.route("/daily")
    @gate.required(optional=True)
    def daily() -> Any:
        return {}

    @after.route("/open")
    @gate.exempt
    def open_report() -> Any:
        return {}

    api.register_blueprint(after)
    spec = api.spec.to_dict()
    assert spec["components"]["securitySchemes"]["basicGate"]["scheme"] == "basic"
    assert _security(spec) == {
        ("get", "/members/{member_id}"): GATE,
        ("get", "/members/health"): None,
        ("get", "/reports/daily"): GATE_OR_ANONYMOUS,
        ("get", "/reports/open"): None,
    }


def test_flask_smorest_needs_an_app() -> None:
    smorest = pytest.importorskip("flask_smorest")
    with pytest.raises(RuntimeError, match="init_app"):
        register_security_scheme(smorest.Api(), BasicGate())


def test_route_protection(tmp_path: Any, engines: list[Any]) -> None:
    app = Flask(__name__, static_folder=str(tmp_path))
    gate = _configure(app, tmp_path, None)
    engines.append(app)
    parent = Blueprint("parent", __name__)
    child = Blueprint("child", __name__)

    @child.get("/nested")
    def nested() -> Any:
        return {}

    parent.register_blueprint(child, url_prefix="/child")
    app.register_blueprint(parent, url_prefix="/parent")
    gate.exempt(parent)

    @app.get("/plain")
    def plain() -> Any:
        return {}

    assert route_protection(gate, app, "plain") == REQUIRED
    assert route_protection(gate, app, "plain", "OPTIONS") is None
    assert route_protection(gate, app, "static") is None
    # An exempt parent blueprint opens its children too, as in the guard.
    assert route_protection(gate, app, "parent.child.nested") is None
    assert app.test_client().get("/parent/child/nested").status_code == 200
    assert app.test_client().get("/plain").status_code == 401
    assert route_protection(gate, app, "no-such-endpoint") == REQUIRED
    assert OPTIONAL == "optional"

    with pytest.raises(RuntimeError, match="init_app"):
        route_protection(gate, Flask(__name__), "plain")


def test_add_security_on_any_document(tmp_path: Any, engines: list[Any]) -> None:
    app = Flask(__name__)
    gate = _configure(app, tmp_path, None)
    engines.append(app)

    @app.route("/items/<int:item_id>", methods=["GET", "DELETE"])
    def item(item_id: int) -> Any:
        return {}

    @app.get("/ping")
    @gate.exempt
    def ping() -> Any:
        return {}

    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "security": [{"other": []}],
        "paths": {
            "/items/{item_id}": {"get": {}, "delete": {}, "parameters": []},
            "/ping": {"get": {"security": [{"basicGate": []}]}},
            "/elsewhere": {"get": {}},
        },
    }
    assert add_security(spec, gate, app) is spec
    assert spec["paths"]["/items/{item_id}"]["get"]["security"] == GATE
    assert spec["paths"]["/items/{item_id}"]["delete"]["security"] == GATE
    # Open under a global requirement: says so with an empty list.
    assert spec["paths"]["/ping"]["get"]["security"] == []
    assert spec["paths"]["/elsewhere"]["get"] == {}
    assert spec["security"] == [{"other": []}]


def test_register_refuses_other_objects() -> None:
    with pytest.raises(TypeError, match="add_security"):
        register_security_scheme(Flask(__name__), BasicGate())

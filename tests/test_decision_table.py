"""Every row of the decision table, in RFC mode and in Mashery mode."""

from __future__ import annotations

import datetime as dt
import json
from base64 import b64encode
from typing import Any, Optional

import pytest
from flask import Flask

from flask_basic_gate import BasicGate
from flask_basic_gate.testing import basic_auth_header

from .support.apps import AppFactory, provision

CHALLENGE = 'Basic realm="api", charset="UTF-8"'
NOT_AUTHORIZED = {
    "X-Mashery-Error-Code": "ERR_403_NOT_AUTHORIZED",
    "X-Error-Detail-Header": "Not Authorized",
}
INACTIVE = {
    "X-Mashery-Error-Code": "ERR_403_DEVELOPER_INACTIVE",
    "X-Error-Detail-Header": "Account Inactive",
}
MESSAGES = {
    "authorization-required": "Authorization is Required",
    "basic-authorization-required": "Authorization must be HTTP Basic Authorization",
    "invalid-credentials": "Invalid Authentication Credentials",
}


def b64(text: str) -> str:
    return b64encode(text.encode()).decode()


# name: (Authorization header or None, RFC status, errorCode)
ROWS: dict[str, tuple[Optional[str], int, str]] = {
    "no-header": (None, 401, "authorization-required"),
    "empty-header": ("", 401, "authorization-required"),
    "bearer-scheme": ("Bearer abc.def", 401, "basic-authorization-required"),
    "digest-scheme": ('Digest username="criticalmix"', 401, "basic-authorization-required"),
    "basic-glued-to-token": (
        "Basic" + b64("criticalmix:topsecret"),
        401,
        "basic-authorization-required",
    ),
    "basic-no-token": ("Basic", 401, "invalid-authorization"),
    "basic-blank-token": ("Basic    ", 401, "invalid-authorization"),
    "token-not-base64": ("Basic ###", 401, "invalid-authorization"),
    "token-missing-padding": (
        "Basic " + b64("criticalmix:topsecretx").rstrip("="),
        401,
        "invalid-authorization",
    ),
    "token-urlsafe-alphabet": ("Basic ab-_", 401, "invalid-authorization"),
    "token-data-after-padding": ("Basic YQ==YQ==", 401, "invalid-authorization"),
    "token-with-inner-space": ("Basic YWJj ZGVm", 401, "invalid-authorization"),
    "no-colon": ("Basic " + b64("criticalmix"), 403, "invalid-credentials"),
    "unknown-key": (basic_auth_header("nobody", "topsecret"), 403, "invalid-credentials"),
    "empty-key": (basic_auth_header("", "topsecret"), 403, "invalid-credentials"),
    "wrong-secret": (basic_auth_header("criticalmix", "wrong"), 403, "invalid-credentials"),
    "empty-secret": (basic_auth_header("criticalmix", ""), 403, "invalid-credentials"),
    "key-other-case": (basic_auth_header("CriticalMix", "topsecret"), 403, "invalid-credentials"),
    "key-trailing-space": (
        basic_auth_header("criticalmix ", "topsecret"),
        403,
        "invalid-credentials",
    ),
    "key-with-nul": (basic_auth_header("critical\x00mix", "topsecret"), 403, "invalid-credentials"),
    "key-too-long": (basic_auth_header("k" * 300, "topsecret"), 403, "invalid-credentials"),
}


def headers_for(value: Optional[str]) -> dict[str, str]:
    return {} if value is None else {"Authorization": value}


def check_failure(response: Any, status: int, code: str, mashery: bool) -> None:
    body = response.get_json()
    assert response.content_type == "application/json"
    assert body["errorCode"] == code
    assert body["errors"] == []
    if code in MESSAGES:
        assert body["errorMessage"] == MESSAGES[code]
    assert isinstance(body["errorMessage"], str) and body["errorMessage"]
    if mashery:
        assert response.status_code == 403
        assert "WWW-Authenticate" not in response.headers
        expected = INACTIVE if code == "key-inactive" else NOT_AUTHORIZED
        for name, value in expected.items():
            assert response.headers[name] == value
    else:
        assert response.status_code == status
        assert "X-Mashery-Error-Code" not in response.headers
        if status == 401:
            assert response.headers["WWW-Authenticate"] == CHALLENGE
        else:
            assert "WWW-Authenticate" not in response.headers


@pytest.fixture(params=[False, True], ids=["rfc", "mashery"])
def mashery(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def mode_app(app_factory: AppFactory, mashery: bool) -> Flask:
    app = app_factory({"BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE": mashery})
    provision(app)
    return app


@pytest.mark.parametrize("row", list(ROWS), ids=list(ROWS))
def test_failure_rows(mode_app: Flask, mashery: bool, row: str) -> None:
    header, status, code = ROWS[row]
    response = mode_app.test_client().get("/thing", headers=headers_for(header))
    check_failure(response, status, code, mashery)


def test_success_forwards_header_and_identity(mode_app: Flask) -> None:
    header = basic_auth_header("criticalmix", "topsecret")
    response = mode_app.test_client().get("/thing", headers={"Authorization": header})
    assert response.status_code == 200
    assert response.get_json() == {
        "key": "criticalmix",
        "package": "members",
        "owner": None,
        "authorization": header,
    }


@pytest.mark.parametrize("scheme", ["basic", "BASIC", "bAsIc"], ids=["lower", "upper", "mixed"])
def test_scheme_case_insensitive_and_many_spaces(mode_app: Flask, scheme: str) -> None:
    token = b64("criticalmix:topsecret")
    client = mode_app.test_client()
    for spaces in (" ", "   "):
        response = client.get("/thing", headers={"Authorization": f"{scheme}{spaces}{token}"})
        assert response.status_code == 200, spaces


@pytest.mark.parametrize(
    "state", ["disabled", "not-yet-valid", "expired"], ids=["disabled", "not-yet-valid", "expired"]
)
def test_inactive_key_after_secret_matched(
    app_factory: AppFactory, mashery: bool, state: str
) -> None:
    app = app_factory({"BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE": mashery})
    now = dt.datetime.now(dt.timezone.utc)
    window: dict[str, Any] = {
        "disabled": {},
        "not-yet-valid": {"not_before": now + dt.timedelta(days=1)},
        "expired": {"expires_at": now - dt.timedelta(seconds=1)},
    }[state]
    provision(app, **window)
    if state == "disabled":
        with app.app_context():
            BasicGate.state().store.disable_key("criticalmix")
    client = app.test_client()
    right = client.get(
        "/thing", headers={"Authorization": basic_auth_header("criticalmix", "topsecret")}
    )
    check_failure(right, 403, "key-inactive", mashery)
    # The key's status is told only to a caller who knows its secret.
    wrong = client.get(
        "/thing", headers={"Authorization": basic_auth_header("criticalmix", "nope")}
    )
    check_failure(wrong, 403, "invalid-credentials", mashery)


def test_enable_again(app: Flask, auth: Any) -> None:
    client = app.test_client()
    with app.app_context():
        BasicGate.state().store.disable_key("criticalmix")
    assert client.get("/thing", headers=auth("criticalmix", "topsecret")).status_code == 403
    with app.app_context():
        BasicGate.state().store.enable_key("criticalmix")
    assert client.get("/thing", headers=auth("criticalmix", "topsecret")).status_code == 200


def test_unknown_key_and_wrong_secret_identical(mode_app: Flask, auth: Any) -> None:
    client = mode_app.test_client()
    unknown = client.get("/thing", headers=auth("nobody", "topsecret"))
    wrong = client.get("/thing", headers=auth("criticalmix", "not-it"))
    no_colon = client.get("/thing", headers={"Authorization": "Basic " + b64("criticalmix")})
    assert unknown.status_code == wrong.status_code == no_colon.status_code == 403
    assert unknown.get_data() == wrong.get_data() == no_colon.get_data()
    assert sorted(unknown.headers.items()) == sorted(wrong.headers.items())


def test_first_colon_splits(app_factory: AppFactory, auth: Any) -> None:
    app = app_factory()
    provision(app, key="a", secret="b:c")
    client = app.test_client()
    assert client.get("/thing", headers=auth("a", "b:c")).get_json()["key"] == "a"
    # "a:b:c" is key "a" with secret "b:c", never key "a:b" with secret "c".
    assert client.get("/thing", headers=auth("a", "b")).status_code == 403


@pytest.mark.parametrize("encoding", ["utf-8", "iso-8859-1"])
def test_non_ascii_credentials(app_factory: AppFactory, encoding: str) -> None:
    app = app_factory()
    provision(app, key="jürgen", secret="päss wörd")
    header = basic_auth_header("jürgen", "päss wörd", encoding=encoding)
    response = app.test_client().get("/thing", headers={"Authorization": header})
    assert response.status_code == 200
    assert response.get_json()["key"] == "jürgen"


def test_utf8_beyond_latin1(app_factory: AppFactory) -> None:
    app = app_factory()
    provision(app, key="ключ", secret="秘密")
    header = basic_auth_header("ключ", "秘密")
    assert app.test_client().get("/thing", headers={"Authorization": header}).status_code == 200


def test_realm_setting(app_factory: AppFactory) -> None:
    app = app_factory({"BASIC_GATE_REALM": "members api"})
    response = app.test_client().get("/thing")
    assert response.headers["WWW-Authenticate"] == 'Basic realm="members api", charset="UTF-8"'


def test_mode_read_once_at_init_app(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/thing").status_code == 401
    app.config["BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE"] = "true"
    assert client.get("/thing").status_code == 401


def test_body_is_exact_json(app: Flask) -> None:
    response = app.test_client().get("/thing")
    assert json.loads(response.get_data()) == {
        "errorCode": "authorization-required",
        "errorMessage": "Authorization is Required",
        "errors": [],
    }

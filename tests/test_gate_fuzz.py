"""Property-based tests over arbitrary ``Authorization`` bytes."""

from __future__ import annotations

import base64
from typing import Any

from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_basic_gate.header import BasicCredentials, HeaderProblem, parse_basic
from flask_basic_gate.testing import basic_auth_header

from .conftest import AppFactory, provision

VALID = basic_auth_header("criticalmix", "topsecret")
FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def header_values() -> st.SearchStrategy[str]:
    """Raw bytes as a WSGI server hands them over (ISO-8859-1 text), and
    near misses of valid headers."""
    raw = st.binary(max_size=120).map(lambda b: b.decode("iso-8859-1"))
    scheme = st.sampled_from(["Basic", "basic", "BASIC", "Bearer", "Digest", "", "Basic:"])
    spaces = st.sampled_from(["", " ", "  ", "\t"])
    token = st.one_of(
        st.binary(max_size=80).map(lambda b: base64.b64encode(b).decode()),
        st.text(alphabet="ABCabc0189+/=-_#: ", max_size=40),
    )
    built = st.builds(lambda s, sp, t: f"{s}{sp}{t}", scheme, spaces, token)
    return st.one_of(raw, built)


@given(value=st.one_of(st.none(), header_values()))
def test_parser_total(value: Any) -> None:
    result = parse_basic(value)
    assert isinstance(result, (BasicCredentials, HeaderProblem))
    if isinstance(result, BasicCredentials):
        assert ":" not in result.key


def fuzz_app(app_factory: AppFactory) -> Flask:
    app = app_factory()
    provision(app)
    return app


def test_gate_never_5xx_never_lets_through(app_factory: AppFactory) -> None:
    app = fuzz_app(app_factory)
    client = app.test_client()

    @FUZZ
    @given(value=header_values())
    def check(value: str) -> None:
        response = client.get("/thing", environ_overrides={"HTTP_AUTHORIZATION": value})
        if parse_basic(value) == BasicCredentials("criticalmix", "topsecret"):
            assert response.status_code == 200
            return
        assert response.status_code in (401, 403), value
        assert response.get_json()["errorCode"] in {
            "authorization-required",
            "basic-authorization-required",
            "invalid-authorization",
            "invalid-credentials",
        }

    check()
    # The same client still lets the right credentials in.
    assert client.get("/thing", headers={"Authorization": VALID}).status_code == 200


def test_fuzzed_mashery_mode_only_403(app_factory: AppFactory) -> None:
    app = app_factory({"BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE": True})
    provision(app)
    client = app.test_client()

    @FUZZ
    @given(value=header_values())
    def check(value: str) -> None:
        response = client.get("/thing", environ_overrides={"HTTP_AUTHORIZATION": value})
        assert response.status_code == 403
        assert "WWW-Authenticate" not in response.headers
        assert response.headers["X-Mashery-Error-Code"] == "ERR_403_NOT_AUTHORIZED"

    check()


@given(key=st.text(max_size=30), secret=st.text(max_size=30))
def test_parse_round_trip(key: str, secret: str) -> None:
    key = key.replace(":", "")
    for encoding in ("utf-8", "iso-8859-1"):
        try:
            raw = f"{key}:{secret}".encode(encoding)
        except UnicodeEncodeError:
            continue
        if encoding != "utf-8" and _is_utf8(raw):
            continue  # bytes valid in both encodings are read as UTF-8, by design
        header = basic_auth_header(key, secret, encoding=encoding)
        assert parse_basic(header) == BasicCredentials(key, secret)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True

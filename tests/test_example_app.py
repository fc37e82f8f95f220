"""The example app end to end, through Flask's test client."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from example_app.members import MEMBERS
from example_app.provision import DEMO_KEY, DEMO_SECRET, install_demo_key
from flask_basic_gate import BasicGate
from flask_basic_gate.testing import basic_auth_headers

from .support import ROOT
from .support.example import M0001, MEMBER_PATH, MakeApp
from .support.servers import child_env

pytestmark = pytest.mark.usefixtures("no_flask_environment")

DEMO = basic_auth_headers(DEMO_KEY, DEMO_SECRET)


@pytest.fixture
def app(make_example_app: MakeApp) -> Flask:
    """The example app on a new database (so with the demo key)."""
    return make_example_app()


def error(code: str, message: str) -> dict[str, Any]:
    return {"errorCode": code, "errorMessage": message, "errors": []}


# -- the members API -----------------------------------------------------------


def test_member_exactly_as_published(app: Flask) -> None:
    response = app.test_client().get(MEMBER_PATH, headers=DEMO)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body == M0001
    assert list(body) == list(M0001)
    assert list(body["address"]) == list(M0001["address"])


def test_unknown_member_is_404_json_after_auth(app: Flask) -> None:
    response = app.test_client().get("/api/v2/members/M9999", headers=DEMO)
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert response.get_json() == error("member-not-found", "No member with id 'M9999'")


def test_unknown_member_without_credentials_is_401(app: Flask) -> None:
    # The gate answers first: nothing about members leaks without a key.
    response = app.test_client().get("/api/v2/members/M9999")
    assert response.status_code == 401
    assert response.get_json()["errorCode"] == "authorization-required"


def test_unknown_url_after_auth_is_404_json(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/nowhere").status_code == 401
    response = client.get("/nowhere", headers=DEMO)
    assert response.status_code == 404
    assert response.get_json() == error("not-found", "The requested URL was not found")


def test_wrong_method_after_auth_is_405_json(app: Flask) -> None:
    response = app.test_client().post(MEMBER_PATH, headers=DEMO)
    assert response.status_code == 405
    assert response.get_json()["errorCode"] == "method-not-allowed"
    assert "GET" in response.headers["Allow"]


def test_health_is_open(app: Flask) -> None:
    client = app.test_client()
    for headers in ({}, {"Authorization": "Basic ###"}, basic_auth_headers(DEMO_KEY, "wrong")):
        response = client.get("/health", headers=headers)
        assert response.status_code == 200
        assert response.get_json() == {"status": "ok"}


def test_no_credentials_401_with_challenge(app: Flask) -> None:
    response = app.test_client().get(MEMBER_PATH)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="api", charset="UTF-8"'
    assert response.mimetype == "application/json"
    assert response.get_json() == error("authorization-required", "Authorization is Required")


def test_wrong_secret_403(app: Flask) -> None:
    response = app.test_client().get(MEMBER_PATH, headers=basic_auth_headers(DEMO_KEY, "wrong"))
    assert response.status_code == 403
    assert "WWW-Authenticate" not in response.headers
    assert response.get_json() == error("invalid-credentials", "Invalid Authentication Credentials")


def test_cors_preflight_passes(app: Flask) -> None:
    response = app.test_client().options(MEMBER_PATH)
    assert response.status_code == 200
    assert "GET" in response.headers["Allow"]


# -- settings ----------------------------------------------------------------------


def assert_mashery(app: Flask) -> None:
    response = app.test_client().get(MEMBER_PATH)
    assert response.status_code == 403
    assert "WWW-Authenticate" not in response.headers
    assert response.headers["X-Mashery-Error-Code"] == "ERR_403_NOT_AUTHORIZED"
    assert response.headers["X-Error-Detail-Header"] == "Not Authorized"
    assert response.get_json() == error("authorization-required", "Authorization is Required")
    assert app.test_client().get(MEMBER_PATH, headers=DEMO).status_code == 200


def assert_rfc(app: Flask) -> None:
    response = app.test_client().get(MEMBER_PATH)
    assert response.status_code == 401
    assert "X-Mashery-Error-Code" not in response.headers


def test_mashery_mode_from_config(make_example_app: MakeApp) -> None:
    assert_mashery(make_example_app(BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE=True))


def test_mashery_mode_by_connector_name(make_example_app: MakeApp) -> None:
    assert_mashery(make_example_app(Keep_Mashery_Default_Response_Code="true"))


@pytest.mark.parametrize(("value", "mashery"), [("true", True), ("false", False), ("1", True)])
def test_mashery_mode_from_environment(
    make_example_app: MakeApp, monkeypatch: pytest.MonkeyPatch, value: str, mashery: bool
) -> None:
    monkeypatch.setenv("FLASK_BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE", value)
    app = make_example_app()
    if mashery:
        assert_mashery(app)
    else:
        assert_rfc(app)


def test_mashery_mode_by_connector_name_from_environment(
    make_example_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_Keep_Mashery_Default_Response_Code", "true")
    assert_mashery(make_example_app())


def test_config_argument_overrides_environment(
    make_example_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE", "true")
    assert_rfc(make_example_app(BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE=False))


def test_database_from_environment(
    make_example_app: MakeApp, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "from-env.sqlite"
    monkeypatch.setenv("FLASK_SQLALCHEMY_DATABASE_URI", f"sqlite:///{path}")
    app = make_example_app(database=False)
    assert path.exists()
    assert app.test_client().get(MEMBER_PATH, headers=DEMO).status_code == 200


def test_bad_gate_setting_from_environment_fails_at_start(
    make_example_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE", "maybe")
    with pytest.raises(ValueError, match="BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE"):
        make_example_app()


# -- first start -------------------------------------------------------------------


def keys(app: Flask) -> list[tuple[str, str, str]]:
    with app.app_context():
        return [(k.key, k.package, k.status) for k in BasicGate.state().store.list_keys()]


def test_demo_key_on_new_database_logged_without_secret(
    make_example_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        app = make_example_app()
    assert keys(app) == [("criticalmix", "members", "active")]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "DEMO credential" in text
    assert "'criticalmix'" in text
    assert DEMO_SECRET not in text


def test_demo_key_only_when_database_is_new(
    make_example_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    first = make_example_app()
    with first.app_context():
        BasicGate.state().store.disable_key(DEMO_KEY)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = make_example_app()
    assert keys(again) == [("criticalmix", "members", "disabled")]
    assert not caplog.records
    response = again.test_client().get(MEMBER_PATH, headers=DEMO)
    assert (response.status_code, response.get_json()["errorCode"]) == (403, "key-inactive")


def test_demo_key_off_by_setting(make_example_app: MakeApp) -> None:
    app = make_example_app(EXAMPLE_DEMO_KEY=False)
    assert keys(app) == []
    # The tables were made, and a later start does not add the demo key.
    assert keys(make_example_app()) == []
    assert make_example_app().test_client().get(MEMBER_PATH, headers=DEMO).status_code == 403


def test_demo_key_off_by_environment(
    make_example_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_EXAMPLE_DEMO_KEY", "false")
    assert keys(make_example_app()) == []


def test_demo_key_provisioning_races_are_harmless(app: Flask) -> None:
    # A second worker that also saw a new database finds the key made.
    with app.app_context():
        assert install_demo_key(app, BasicGate.state().store) is False
    assert keys(app) == [("criticalmix", "members", "active")]


def test_cli_is_available_on_the_example_app(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["basic-gate", "list-keys"])
    assert result.exit_code == 0
    assert "criticalmix" in result.output
    assert DEMO_SECRET not in result.output


def test_key_created_later_works_at_once(app: Flask) -> None:
    with app.app_context():
        new = BasicGate.state().store.create_key("members")
    headers = basic_auth_headers(new.key, new.secret)
    assert app.test_client().get(MEMBER_PATH, headers=headers).status_code == 200


def test_member_report_is_reserved_for_the_reports_package(app: Flask) -> None:
    client = app.test_client()
    refused = client.get("/api/v2/reports/members", headers=DEMO)
    assert refused.status_code == 403
    assert refused.get_json() == error("package-not-authorized", "Not Authorized")
    with app.app_context():
        store = BasicGate.state().store
        store.create_package("reports")
        new = store.create_key("reports")
    ok = client.get("/api/v2/reports/members", headers=basic_auth_headers(new.key, new.secret))
    assert ok.status_code == 200
    assert ok.get_json() == {"members": len(MEMBERS)}
    assert client.get("/api/v2/reports/members").status_code == 401


# -- starting without a database -----------------------------------------------------


def test_starts_without_its_database_then_serves_when_it_answers(
    make_example_app: MakeApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # SQLite cannot open a file in a folder that does not exist yet: the
    # database is unreachable until the folder is made.
    folder = tmp_path / "later"
    with caplog.at_level(logging.WARNING):
        app = make_example_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{folder / 'example.sqlite'}")
    [line] = [r for r in caplog.records if r.name == app.logger.name]
    assert "not reachable at start" in line.getMessage()
    assert line.exc_info is None and "\n" not in line.getMessage()
    client = app.test_client()
    response = client.get(MEMBER_PATH, headers=DEMO)
    assert response.status_code == 503
    assert response.get_json()["errorCode"] == "gate-unavailable"
    assert int(response.headers["Retry-After"]) >= 1
    assert client.get("/health").status_code == 200

    folder.mkdir()
    deadline = time.monotonic() + 5
    while (response := client.get(MEMBER_PATH, headers=DEMO)).status_code != 200:
        assert response.status_code == 503, response.get_data(as_text=True)
        assert time.monotonic() < deadline, "the example app did not become ready"
        time.sleep(0.05)
    assert response.get_json() == M0001
    assert keys(app) == [("criticalmix", "members", "active")]


def test_cli_help_needs_no_database(tmp_path: Path) -> None:
    # Nothing listens on port 1: a start that tried would log the failure.
    env = child_env(FLASK_SQLALCHEMY_DATABASE_URI="postgresql+psycopg://nobody@127.0.0.1:1/none")
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "example_app", "basic-gate", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize(
    "command", [["basic-gate", "list-keys"], ["run", "--port", "0"]], ids=["basic-gate", "run"]
)
def test_a_bad_setting_is_one_clean_line_on_the_command_line(
    tmp_path: Path, command: list[str]
) -> None:
    env = child_env(
        FLASK_SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'example.sqlite'}",
        FLASK_BASIC_GATE_CACHE_TTL="soon",
    )
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "example_app", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "Error: BASIC_GATE_CACHE_TTL = 'soon' (set by the environment variable"
        " FLASK_BASIC_GATE_CACHE_TTL) is not valid: expected a number."
    ]

"""BASIC_GATE_REPORT_ONLY: every decision runs, no request is refused."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from flask import Flask, jsonify

from flask_basic_gate import BasicGate, current_key, request_rejected
from flask_basic_gate.testing import basic_auth_headers

from .support.apps import AppFactory, provision


def reporting_app(app_factory: AppFactory, **config: Any) -> Flask:
    app = app_factory({"BASIC_GATE_REPORT_ONLY": True, **config}, routes=False)
    gate: BasicGate = app.extensions["test_gate"]

    @app.get("/thing")
    def thing() -> Any:
        return jsonify(key=current_key.key, package=current_key.package)

    @app.get("/reports")
    @gate.required(packages=["reports"])
    def reports() -> Any:
        return jsonify(key=current_key.key)

    provision(app)
    return app


@pytest.mark.parametrize("mashery", [False, True], ids=["rfc", "mashery"])
def test_every_refusal_is_reported_and_let_through(
    app_factory: AppFactory, caplog: pytest.LogCaptureFixture, mashery: bool
) -> None:
    app = reporting_app(app_factory, BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE=mashery)
    seen: list[tuple[str, int, Any]] = []

    def rejected(sender: Flask, error_code: str, status: int, **extra: Any) -> None:
        seen.append((error_code, status, extra.get("enforced")))

    client = app.test_client()
    caplog.set_level(logging.INFO, logger="flask_basic_gate")
    with request_rejected.connected_to(rejected, app):
        no_header = client.get("/thing", environ_base={"REMOTE_ADDR": "192.0.2.7"})
        wrong = client.get("/thing", headers=basic_auth_headers("criticalmix", "wrong"))
        other_package = client.get(
            "/reports", headers=basic_auth_headers("criticalmix", "topsecret")
        )
        good = client.get("/thing", headers=basic_auth_headers("criticalmix", "topsecret"))
    # Nothing refused; current_key is the key only where its credentials were good.
    assert [r.status_code for r in (no_header, wrong, other_package, good)] == [200] * 4
    assert no_header.get_json() == {"key": None, "package": None}
    assert wrong.get_json() == {"key": None, "package": None}
    assert other_package.get_json() == {"key": "criticalmix"}
    assert good.get_json() == {"key": "criticalmix", "package": "members"}
    status = 403 if mashery else 401
    assert seen == [
        ("authorization-required", status, False),
        ("invalid-credentials", 403, False),
        ("package-not-authorized", 403, False),
    ]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("would-refuse")]
    assert len(lines) == 3
    assert "error_code='authorization-required'" in lines[0]
    assert "client='192.0.2.7'" in lines[0]
    assert "key='criticalmix'" in lines[1] and "error_code='invalid-credentials'" in lines[1]
    assert all("topsecret" not in line and "wrong" not in line for line in lines)


def test_the_throttle_and_plans_still_count(app_factory: AppFactory) -> None:
    app = reporting_app(app_factory, BASIC_GATE_FAILURE_LIMIT="2/minute")
    with app.app_context():
        BasicGate.state().store.update_package("members", quota="1/day")
    client = app.test_client()
    seen: list[str] = []

    def rejected(sender: Flask, error_code: str, **extra: Any) -> None:
        seen.append(error_code)

    right = basic_auth_headers("criticalmix", "topsecret")
    with request_rejected.connected_to(rejected, app):
        assert client.get("/thing", headers=right).status_code == 200
        assert client.get("/thing", headers=right).status_code == 200  # over the quota
        for _ in range(3):
            client.get("/thing", headers=basic_auth_headers("criticalmix", "wrong"))
    assert seen == [
        "quota-exceeded",
        "invalid-credentials",
        "invalid-credentials",
        "too-many-failures",
    ]


def test_start_up_warns_that_nothing_is_enforced(
    app_factory: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flask_basic_gate")
    app_factory({"BASIC_GATE_REPORT_ONLY": "true"})
    assert any("BASIC_GATE_REPORT_ONLY is on" in r.getMessage() for r in caplog.records)


def test_off_by_default(app_factory: AppFactory) -> None:
    app = app_factory()
    assert BasicGate.state(app).settings.report_only is False
    assert app.test_client().get("/thing").status_code == 401


def test_the_gates_own_pages_are_still_guarded(app_factory: AppFactory) -> None:
    pytest.importorskip("prometheus_client")
    app = reporting_app(app_factory, BASIC_GATE_METRICS=True, BASIC_GATE_ADMIN=True)
    client = app.test_client()
    member = basic_auth_headers("criticalmix", "topsecret")
    for path in ("/basic-gate/metrics", "/basic-gate/admin/"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=member).status_code == 403, path
    answer = client.get("/basic-gate/metrics", headers=member)
    assert answer.get_json()["errorCode"] == "package-not-authorized"
    # The app's own routes are still let through.
    assert client.get("/thing").status_code == 200

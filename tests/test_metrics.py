"""Prometheus metrics: the endpoint the gate guards, and each metric moving.

Everything here runs in-process on one app's own registry; the sum over
gunicorn's workers is in test_telemetry_workers.py.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Optional

import pytest
from flask import Flask

from flask_basic_gate import BasicGate, ConfigurationError
from flask_basic_gate.errors import failure
from flask_basic_gate.kdf import KdfBudget
from flask_basic_gate.metrics import GateMetrics, metrics_of

from .support import ROOT
from .support.apps import AppFactory, drop_tables, provision
from .support.servers import child_env, free_port

pytest.importorskip("prometheus_client")

METRICS = {"BASIC_GATE_METRICS": True}
PATH = "/basic-gate/metrics"


def metrics_app(app_factory: AppFactory, **config: Any) -> Flask:
    """An app with metrics on, key ``criticalmix`` in ``members`` and
    ``boss`` in ``admin``."""
    app = app_factory({**METRICS, **config})
    provision(app)
    provision(app, "boss", "bosssecret", package="admin")
    return app


def value(app: Flask, name: str, **labels: str) -> float:
    """A sample of the app's registry (0 when it has none yet)."""
    metrics = metrics_of(BasicGate.state(app).telemetry)
    assert metrics is not None
    found: Optional[float] = metrics.registry.get_sample_value(name, labels)
    return found or 0.0


def requests_total(app: Flask, outcome: str, error_code: str = "", package: str = "") -> float:
    return value(
        app, "basic_gate_requests_total", outcome=outcome, error_code=error_code, package=package
    )


# -- the endpoint ---------------------------------------------------------------


@pytest.mark.parametrize("protect_all", [True, False], ids=["protect-all", "decorated-only"])
def test_metrics_endpoint_is_guarded_by_the_gate(
    app_factory: AppFactory, auth: Any, protect_all: bool
) -> None:
    app = metrics_app(app_factory, BASIC_GATE_PROTECT_ALL=protect_all)
    client = app.test_client()

    admin = client.get(PATH, headers=auth("boss", "bosssecret"))
    assert admin.status_code == 200
    assert admin.mimetype == "text/plain"
    assert "version=" in admin.content_type
    assert admin.headers["Cache-Control"] == "no-store"
    text = admin.get_data(as_text=True)
    assert "# TYPE basic_gate_requests_total counter" in text
    # The scrape itself was checked, and counted, before the page was made.
    assert 'basic_gate_requests_total{error_code="",outcome="allowed",package="admin"} 1.0' in text

    member = client.get(PATH, headers=auth("criticalmix", "topsecret"))
    assert member.status_code == 403
    assert member.get_json()["errorCode"] == "package-not-authorized"

    nobody = client.get(PATH)
    assert nobody.status_code == 401
    assert nobody.get_json()["errorCode"] == "authorization-required"
    assert "WWW-Authenticate" in nobody.headers

    wrong = client.get(PATH, headers=auth("boss", "wrong"))
    assert wrong.get_json()["errorCode"] == "invalid-credentials"


def test_metrics_path_and_admin_packages_are_settings(app_factory: AppFactory, auth: Any) -> None:
    app = app_factory(
        {
            **METRICS,
            "BASIC_GATE_METRICS_PATH": "/ops/metrics",
            "BASIC_GATE_ADMIN_PACKAGES": "ops, monitoring",
        }
    )
    provision(app, "prom", "promsecret", package="monitoring")
    provision(app, "boss", "bosssecret", package="admin")
    client = app.test_client()
    assert client.get("/ops/metrics", headers=auth("prom", "promsecret")).status_code == 200
    refused = client.get("/ops/metrics", headers=auth("boss", "bosssecret"))
    assert refused.get_json()["errorCode"] == "package-not-authorized"
    assert client.get(PATH, headers=auth("prom", "promsecret")).status_code == 404


def test_metrics_are_off_by_default(app_factory: AppFactory, auth: Any) -> None:
    app = app_factory()
    provision(app, "boss", "bosssecret", package="admin")
    assert metrics_of(BasicGate.state(app).telemetry) is None
    assert app.test_client().get(PATH, headers=auth("boss", "bosssecret")).status_code == 404


def test_prometheus_client_is_imported_only_when_metrics_are_on(tmp_path: Any) -> None:
    script = (
        "import sys\n"
        "from tests.support.apps import gate_app\n"
        f"gate_app('sqlite:///{tmp_path / 'gate.sqlite'}')\n"
        "assert 'prometheus_client' not in sys.modules, 'imported with metrics off'\n"
        f"gate_app('sqlite:///{tmp_path / 'gate.sqlite'}', {{'BASIC_GATE_METRICS': True}})\n"
        "assert 'prometheus_client' in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_metrics_without_prometheus_client_name_the_setting(
    app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigurationError) as raised:
        app_factory(METRICS)
    message = str(raised.value)
    assert "BASIC_GATE_METRICS" in message
    assert "flask-basic-gate[metrics]" in message


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("BASIC_GATE_METRICS_PATH", "metrics"),
        ("BASIC_GATE_METRICS_PATH", "/a b"),
        ("BASIC_GATE_ADMIN_PACKAGES", []),
        ("BASIC_GATE_ADMIN_PACKAGES", [""]),
        ("BASIC_GATE_ADMIN_PACKAGES", "[1]"),
        ("BASIC_GATE_USAGE_FLUSH", 0),
        ("BASIC_GATE_USAGE_FLUSH", "soon"),
    ],
)
def test_bad_settings_are_refused(app_factory: AppFactory, name: str, bad: Any) -> None:
    with pytest.raises(ConfigurationError, match=name):
        app_factory({name: bad})


def test_two_apps_count_on_registries_of_their_own(app_factory: AppFactory, auth: Any) -> None:
    first = metrics_app(app_factory)
    second = app_factory(METRICS, url=f"sqlite:///{app_factory.tmp_path / 'second.sqlite'}")
    provision(second)
    for _ in range(3):
        first.test_client().get("/thing", headers=auth("criticalmix", "topsecret"))
    second.test_client().get("/thing", headers=auth("criticalmix", "topsecret"))
    assert requests_total(first, "allowed", package="members") == 3
    assert requests_total(second, "allowed", package="members") == 1


# -- each metric ---------------------------------------------------------------


def test_requests_by_outcome_error_code_and_package(app_factory: AppFactory, auth: Any) -> None:
    app = metrics_app(app_factory)
    client = app.test_client()
    for _ in range(2):
        assert client.get("/thing", headers=auth("criticalmix", "topsecret")).status_code == 200
    client.get("/thing", headers=auth("criticalmix", "wrong"))
    client.get("/thing", headers=auth("nobody", "wrong"))
    client.get("/thing")
    client.get(PATH, headers=auth("criticalmix", "topsecret"))
    client.get("/optional")  # let through without credentials
    assert requests_total(app, "allowed", package="members") == 2
    assert requests_total(app, "allowed", package="") == 1
    # A wrong secret is told apart from an unknown key by no label.
    assert requests_total(app, "refused", "invalid-credentials") == 2
    assert requests_total(app, "refused", "authorization-required") == 1
    assert requests_total(app, "refused", "package-not-authorized", "members") == 1

    # A refusal only reported (the request went on).
    telemetry = BasicGate.state(app).telemetry
    reported = failure("key-inactive", mashery=False, challenge="", key="k", package="members")
    telemetry.decided(None, reported, enforced=False)
    assert requests_total(app, "report_only", "key-inactive", "members") == 1

    # The store gone: 503, counted as unavailable, and a store error.
    drop_tables(app.config["SQLALCHEMY_DATABASE_URI"])
    assert client.get("/thing", headers=auth("other", "secret")).status_code == 503
    assert requests_total(app, "unavailable", "gate-unavailable") == 1
    assert value(app, "basic_gate_store_errors_total") == 1


def test_cache_and_store_lookups(app_factory: AppFactory, auth: Any) -> None:
    app = metrics_app(app_factory)
    client = app.test_client()
    for _ in range(3):
        client.get("/thing", headers=auth("criticalmix", "topsecret"))
    assert value(app, "basic_gate_cache_total", result="miss") == 1
    assert value(app, "basic_gate_cache_total", result="hit") == 2
    assert value(app, "basic_gate_store_lookup_seconds_count") == 1
    assert value(app, "basic_gate_store_lookup_seconds_sum") > 0
    assert value(app, "basic_gate_store_lookup_seconds_bucket", le="+Inf") == 1
    assert value(app, "basic_gate_store_errors_total") == 0


def test_kdf_runs_and_refusals(app_factory: AppFactory, auth: Any) -> None:
    app = metrics_app(app_factory, BASIC_GATE_FAILURE_LIMIT="off")
    client = app.test_client()
    client.get("/thing", headers=auth("criticalmix", "topsecret"))
    client.get("/thing", headers=auth("criticalmix", "wrong"))
    assert value(app, "basic_gate_kdf_seconds_count", result="matched") == 1
    assert value(app, "basic_gate_kdf_seconds_count", result="not_matched") == 1
    assert value(app, "basic_gate_kdf_refusals_total") == 0
    budget = BasicGate.state(app).policy.kdf_budget
    assert isinstance(budget, KdfBudget)
    budget.spend(budget.burst * 2)
    budget.spend(budget.burst * 2)
    refused = client.get("/thing", headers=auth("criticalmix", "guess"))
    assert refused.get_json()["errorCode"] == "too-many-failures"
    assert value(app, "basic_gate_kdf_refusals_total") == 1
    assert value(app, "basic_gate_kdf_seconds_count", result="not_matched") == 1


def test_plan_refusals_by_limit(app_factory: AppFactory, auth: Any) -> None:
    app = metrics_app(app_factory)
    with app.app_context():
        store = BasicGate.state().store
        store.create_package("gold", quota="1/day")
        store.create_key("gold", key="g", secret="gsecret")
        store.create_package("zero", qps=0)
        store.create_key("zero", key="z", secret="zsecret")
    client = app.test_client()
    assert client.get("/thing", headers=auth("g", "gsecret")).status_code == 200
    assert client.get("/thing", headers=auth("g", "gsecret")).status_code == 429
    assert client.get("/thing", headers=auth("z", "zsecret")).status_code == 429
    assert value(app, "basic_gate_plan_refusals_total", limit="quota") == 1
    assert value(app, "basic_gate_plan_refusals_total", limit="qps") == 1
    assert requests_total(app, "refused", "quota-exceeded", "gold") == 1
    assert requests_total(app, "refused", "rate-limit-exceeded", "zero") == 1


def test_redis_errors_by_use(app_factory: AppFactory, auth: Any) -> None:
    pytest.importorskip("redis")
    app = metrics_app(
        app_factory,
        BASIC_GATE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        # Only the plan counts on Redis here (the failure counters would too).
        BASIC_GATE_FAILURE_LIMIT="off",
    )
    state = BasicGate.state(app)
    try:
        with app.app_context():
            state.store.update_package("members", qps=100)
        answer = app.test_client().get("/thing", headers=auth("criticalmix", "topsecret"))
        assert answer.status_code == 503  # the plan cannot be counted: fail closed
        assert value(app, "basic_gate_redis_errors_total", use="counters") == 1
        assert requests_total(app, "unavailable", "gate-unavailable", "members") == 1
        # The change above could not be announced either.
        assert value(app, "basic_gate_redis_errors_total", use="revocation") >= 1
    finally:
        state.revocation.close()


def test_metrics_listener_is_found_among_several(app_factory: AppFactory) -> None:
    app = app_factory(METRICS)
    telemetry = BasicGate.state(app).telemetry
    assert isinstance(metrics_of(telemetry), GateMetrics)
    assert metrics_of(telemetry) is not telemetry  # with usage on, a Fanout of both

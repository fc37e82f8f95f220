"""Metrics and usage under gunicorn: two workers add up.

One scrape gives the counts of both workers (prometheus_client's
multiprocess mode, its directory in ``tmp_path``), and the usage each
worker counted reaches the table when gunicorn is stopped with SIGTERM (its
workers exit cleanly and write what they hold), on each backend.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from example_app import create_app, db
from flask_basic_gate import BasicGate
from flask_basic_gate.usage import read_usage, today

from .support.apps import FAST_KDF, dispose
from .support.example import MEMBER_PATH
from .support.servers import child_env, gunicorn_run, http_session

pytestmark = pytest.mark.server

prometheus = pytest.importorskip("prometheus_client")

WORKERS = 2
#: Longest the test sends requests to hear from both workers.
DEADLINE = 30.0
ADMIN = ("prometheus", "scrape-secret")
MEMBER = ("criticalmix", "topsecret")


@pytest.fixture
def example_db(database_url: str) -> Iterator[Flask]:
    """The example app's tables made afresh on the backend, with a member
    key and an admin key; dropped after."""
    app: Flask = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": database_url,
            "BASIC_GATE_HASH_METHOD": FAST_KDF,
            "EXAMPLE_DEMO_KEY": False,
        }
    )
    try:
        with app.app_context():
            db.drop_all()
            db.create_all()
            store = BasicGate.state().store
            store.create_package("members")
            store.create_key("members", key=MEMBER[0], secret=MEMBER[1])
            store.create_package("admin")
            store.create_key("admin", key=ADMIN[0], secret=ADMIN[1])
        yield app
    finally:
        with app.app_context():
            db.drop_all()
        dispose(app)


def call(url: str, auth: tuple[str, str]) -> tuple[int, int]:
    """One request on a new connection: (worker PID, status)."""
    with http_session() as client:
        response = client.get(url + MEMBER_PATH, auth=auth, timeout=10)
    return int(response.headers["X-Worker"]), response.status_code


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The metrics page, as {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with http_session() as client:
        response = client.get(url + "/basic-gate/metrics", auth=ADMIN, timeout=10)
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def requests_total(page: dict[Any, float], outcome: str, code: str, package: str) -> float:
    labels = (("error_code", code), ("outcome", outcome), ("package", package))
    return page.get(("basic_gate_requests_total", labels), 0.0)


def test_two_workers_add_up_in_one_scrape_and_in_the_usage_table(
    example_db: Flask, database_url: str, tmp_path: Path
) -> None:
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    env = child_env(
        FLASK_SQLALCHEMY_DATABASE_URI=database_url,
        FLASK_BASIC_GATE_HASH_METHOD=FAST_KDF,
        FLASK_EXAMPLE_DEMO_KEY="false",
        FLASK_BASIC_GATE_METRICS="true",
        # Written only when the workers stop: the test sees that write.
        FLASK_BASIC_GATE_USAGE_FLUSH="3600",
        FLASK_BASIC_GATE_FAILURE_LIMIT="off",
        PROMETHEUS_MULTIPROC_DIR=str(multiproc),
    )
    store = BasicGate.state(example_db).store
    with gunicorn_run(
        "tests.support.workerapp:create_app()", ["--preload"], env, workers=WORKERS
    ) as server:
        allowed: dict[int, int] = {}
        wrong: dict[int, int] = {}
        end = time.monotonic() + DEADLINE
        # New connections until each worker has served at least 3 of each.
        while len(allowed) < WORKERS or min(allowed.values()) < 3 or len(wrong) < WORKERS:
            assert time.monotonic() < end, f"only workers {sorted(allowed)} answered"
            pid, status = call(server.url, MEMBER)
            assert status == 200
            allowed[pid] = allowed.get(pid, 0) + 1
            pid, status = call(server.url, (MEMBER[0], "wrong"))
            assert status == 403
            wrong[pid] = wrong.get(pid, 0) + 1
        served, refused = sum(allowed.values()), sum(wrong.values())

        page = scrape(server.url)
        assert requests_total(page, "allowed", "", "members") == served
        assert requests_total(page, "refused", "invalid-credentials", "") == refused
        # Each worker's first request missed the cache; every other member call hit.
        assert page[("basic_gate_cache_total", (("result", "miss"),))] >= WORKERS
        # One file per worker (and the master's, which counted nothing).
        assert len(list(multiproc.glob("counter_*.db"))) >= WORKERS

        # Nothing is written while the server runs (the interval is an hour).
        assert read_usage(store.engine, store.models) == []
        worker_pids = server.worker_pids
        server.stop()  # SIGTERM to the master, by its PID: the workers exit cleanly
        assert server.process.returncode == 0, server.output[-3000:]
        for pid in worker_pids:
            assert f"Worker exiting (pid: {pid})" in server.output

    rows = {row.key: row for row in read_usage(store.engine, store.models)}
    assert set(rows) == {MEMBER[0], ADMIN[0]}, rows
    member = rows[MEMBER[0]]
    assert member.day == today()
    assert (member.package, member.allowed, member.blocked, member.other) == (
        "members",
        served,
        0,
        refused,
    )
    assert member.codes == {"invalid-credentials": refused}
    assert rows[ADMIN[0]].allowed == 1  # the scrape

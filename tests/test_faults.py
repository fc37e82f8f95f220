"""A database that is killed, hangs or comes back, through a proxy the test controls.

Every request that needs the store during a fault is answered 503
``gate-unavailable`` with ``Retry-After`` (or from the verification cache,
for credentials that succeeded before), within the store timeout and one
second; never a 500, an empty reply or a 200 that should not be; and
service returns within 2 s of the database, with nothing restarted.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import event, text
from sqlalchemy.engine import make_url

from flask_basic_gate import BasicGate
from flask_basic_gate.store import lookup as lookup_module
from flask_basic_gate.store import timeouts
from flask_basic_gate.testing import basic_auth_headers

from .support.apps import AppFactory, drop_tables, provision
from .support.backends import backend_url
from .support.faultproxy import FaultProxy, fault_proxy
from .support.servers import serve_in_thread

#: Short, so a hung lookup costs a test little (PostgreSQL's connect
#: timeout counts whole seconds, 2 at least).
STORE_TIMEOUT = 2
#: The longest a request may take during a fault.
BOUND = STORE_TIMEOUT + 1
#: How soon service must return after the database does.
RECOVERY = 2.0

CACHED = ("criticalmix", "topsecret")
COLD = [(f"cold-{n}", f"secret-{n}") for n in range(3)]


@pytest.fixture(params=["postgresql", "mariadb"])
def proxy(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[str, FaultProxy]]:
    """A proxy in front of each server; set up before (so closed after) the apps."""
    with fault_proxy(backend_url(request.param, tmp_path)) as proxy:
        yield request.param, proxy


@pytest.fixture
def served(
    proxy: tuple[str, FaultProxy], app_factory: AppFactory, tmp_path: Any
) -> Iterator[tuple[str, FaultProxy, Flask]]:
    """The gate's test app on the proxy, served on 127.0.0.1, one key cached."""
    backend, faults = proxy
    url = faults.url(backend_url(backend, tmp_path))
    app = app_factory({"BASIC_GATE_STORE_TIMEOUT": STORE_TIMEOUT}, url=url)
    provision(app, *CACHED)
    for key, secret in COLD:
        provision(app, key, secret)
    try:
        with serve_in_thread(app) as base:
            app.config["TEST_BASE_URL"] = base
            assert get(app, *CACHED).status_code == 200  # now in the cache
            app.config["TEST_CACHED"] = {CACHED}
            yield backend, faults, app
    finally:
        # The factory drops the tables through the proxy after the test.
        faults.resume()


def get(app: Flask, key: str, secret: str) -> requests.Response:
    """GET /thing with these credentials, failing if no answer within BOUND."""
    return requests.get(
        app.config["TEST_BASE_URL"] + "/thing",
        headers=basic_auth_headers(key, secret),
        timeout=BOUND,
    )


def check_refused(response: requests.Response) -> None:
    """A fail-closed answer: 503 gate-unavailable with Retry-After."""
    assert response.status_code == 503, response.text
    assert response.json()["errorCode"] == "gate-unavailable"
    assert int(response.headers["Retry-After"]) >= 1


def check_during_fault(app: Flask, rounds: int) -> None:
    """Cached credentials still pass; everything that needs the store is refused."""
    cached_before = app.config["TEST_CACHED"]
    for n in range(rounds):
        for key, secret in (CACHED, COLD[n % len(COLD)]):
            response = get(app, key, secret)
            if (key, secret) in cached_before:
                assert response.status_code == 200, response.text
                assert response.json()["key"] == key
            else:
                check_refused(response)
        check_refused(get(app, CACHED[0], "wrong"))  # a wrong secret is never cached
        check_refused(get(app, "no-such-key", "x"))


def check_recovers(app: Flask) -> None:
    """The store answers again within RECOVERY seconds, and every key works."""
    deadline = time.monotonic() + RECOVERY
    while True:
        # A wrong secret is never cached: only the store can answer 403.
        response = get(app, CACHED[0], "wrong")
        if response.status_code == 403:
            break
        check_refused(response)
        assert time.monotonic() < deadline, "the gate did not recover in time"
        time.sleep(0.02)
    for key, secret in COLD:
        response = get(app, key, secret)
        assert response.status_code == 200, response.text
        assert response.json()["key"] == key
        app.config["TEST_CACHED"].add((key, secret))


def test_killed_database(served: tuple[str, FaultProxy, Flask]) -> None:
    _, faults, app = served
    faults.kill()
    check_during_fault(app, rounds=10)
    faults.resume()
    check_recovers(app)


def test_hung_database(served: tuple[str, FaultProxy, Flask]) -> None:
    _, faults, app = served
    faults.pause()
    # The kept connection is silent: the watchdog cuts the lookup off.
    check_during_fault(app, rounds=2)
    faults.resume()
    check_recovers(app)


def test_hung_database_on_connect(served: tuple[str, FaultProxy, Flask]) -> None:
    _, faults, app = served
    faults.pause()
    # No connection left open: the next lookup connects to a silent server.
    BasicGate.state(app).store.engine.dispose()
    check_refused(get(app, *COLD[0]))
    faults.resume()
    check_recovers(app)


def test_hung_database_under_concurrent_requests(served: tuple[str, FaultProxy, Flask]) -> None:
    _, faults, app = served
    faults.pause()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        cold = list(pool.map(lambda n: get(app, *COLD[n % len(COLD)]), range(16)))
        cached = list(pool.map(lambda n: get(app, *CACHED), range(8)))
    for response in cold:
        check_refused(response)
    assert [response.status_code for response in cached] == [200] * 8
    faults.resume()
    check_recovers(app)


def test_database_that_restarts_twice(served: tuple[str, FaultProxy, Flask]) -> None:
    _, faults, app = served
    for _ in range(2):
        faults.kill()
        check_during_fault(app, rounds=2)
        faults.resume()
        check_recovers(app)


# -- SQLite: a writer holding the lock -----------------------------------------------


def test_sqlite_busy(app_factory: AppFactory, tmp_path: Any) -> None:
    app = app_factory({"BASIC_GATE_STORE_TIMEOUT": 1})
    provision(app, *CACHED)
    provision(app, *COLD[0])
    database = make_url(app.config["SQLALCHEMY_DATABASE_URI"]).database
    with serve_in_thread(app) as base:
        app.config["TEST_BASE_URL"] = base
        assert get(app, *CACHED).status_code == 200
        writer = sqlite3.connect(str(database), isolation_level=None)
        try:
            writer.execute("BEGIN EXCLUSIVE")
            check_refused(get(app, *COLD[0]))
            assert get(app, *CACHED).status_code == 200
        finally:
            writer.rollback()
            writer.close()
        deadline = time.monotonic() + RECOVERY
        while get(app, *COLD[0]).status_code != 200:
            assert time.monotonic() < deadline, "the gate did not recover in time"
            time.sleep(0.02)


# -- back-off and logs ---------------------------------------------------------------


def count_connects(app: Flask) -> list[int]:
    """A one-item list counting the store engine's new connections."""
    engine = BasicGate.state(app).store.engine
    engine.dispose()
    count = [0]

    def connected(dbapi_connection: Any, record: Any) -> None:
        count[0] += 1

    event.listen(engine, "connect", connected)
    return count


def test_back_off_refuses_without_dialling(
    app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A back-off longer than the test: after the first failure and the one
    # probe that may follow at once, nothing reaches the database.
    monkeypatch.setattr(lookup_module, "BACKOFF_FIRST", 60.0)
    monkeypatch.setattr(lookup_module, "BACKOFF_MAX", 60.0)
    app = app_factory({"BASIC_GATE_CACHE_TTL": 0})
    provision(app)
    drop_tables(app.config["SQLALCHEMY_DATABASE_URI"])
    connects = count_connects(app)
    client = app.test_client()
    for _ in range(20):
        response = client.get("/thing", headers=basic_auth_headers(*CACHED))
        assert response.status_code == 503
        assert response.get_json()["errorCode"] == "gate-unavailable"
        assert int(response.headers["Retry-After"]) >= 1
    assert connects[0] == 2
    # The last answers tell the client how long the back-off still lasts.
    assert int(response.headers["Retry-After"]) > 30


def test_outage_logs_one_traceback_then_summaries_then_recovery(
    app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(lookup_module, "SUMMARY_INTERVAL", 0.0)
    app = app_factory({"BASIC_GATE_CACHE_TTL": 0})
    provision(app)
    client = app.test_client()
    drop_tables(app.config["SQLALCHEMY_DATABASE_URI"])
    with caplog.at_level(logging.WARNING, logger="flask_basic_gate"):
        for _ in range(30):
            assert client.get("/thing", headers=basic_auth_headers(*CACHED)).status_code == 503
        with app.app_context():
            app.extensions["sqlalchemy"].create_all()
        provision(app)
        deadline = time.monotonic() + RECOVERY
        while client.get("/thing", headers=basic_auth_headers(*CACHED)).status_code != 200:
            assert time.monotonic() < deadline, "the gate did not recover in time"
            time.sleep(0.02)
    records = [r for r in caplog.records if r.name == "flask_basic_gate"]
    tracebacks = [r for r in records if r.exc_info]
    assert len(tracebacks) == 1
    assert tracebacks[0].levelno == logging.ERROR
    summaries = [r.getMessage() for r in records if "still unavailable" in r.getMessage()]
    assert summaries
    assert all("requests refused" in line and "\n" not in line for line in summaries)
    recovered = [r.getMessage() for r in records if "available again" in r.getMessage()]
    assert len(recovered) == 1
    assert "\n" not in recovered[0]
    assert "topsecret" not in caplog.text


# -- MariaDB with a narrower connection character set ----------------------------------


@pytest.mark.parametrize(
    ("charset", "key"),
    [("utf8", "k\N{GRINNING FACE}y"), ("utf8mb3", "\N{PILE OF POO}"), ("latin1", "ключ")],
)
def test_mariadb_key_the_charset_cannot_carry_is_403(
    app_factory: AppFactory, tmp_path: Any, charset: str, key: str
) -> None:
    url = make_url(backend_url("mariadb", tmp_path)).update_query_dict({"charset": charset})
    app = app_factory(url=url.render_as_string(hide_password=False))
    provision(app, *CACHED)
    client = app.test_client()
    assert client.get("/thing", headers=basic_auth_headers(*CACHED)).status_code == 200
    response = client.get("/thing", headers=basic_auth_headers(key, "secret"))
    assert response.status_code == 403, response.get_data(as_text=True)
    assert response.get_json()["errorCode"] == "invalid-credentials"


# -- the app's own queries -----------------------------------------------------------

SLEEP = {"postgresql": "SELECT pg_sleep(1.5)", "mariadb": "SELECT SLEEP(1.5)"}


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_app_queries_are_not_bound_by_the_store_timeout(
    app_factory: AppFactory, tmp_path: Any, backend: str
) -> None:
    # Only connects and the gate's own lookups get the store timeout: the
    # app's longer queries, on new and on pooled connections, still run.
    app = app_factory({"BASIC_GATE_STORE_TIMEOUT": 1}, url=backend_url(backend, tmp_path))
    provision(app, *CACHED)
    client = app.test_client()
    assert client.get("/thing", headers=basic_auth_headers(*CACHED)).status_code == 200
    db = app.extensions["sqlalchemy"]
    with app.app_context():
        db.engine.dispose()
        for _ in range(2):
            db.session.execute(text(SLEEP[backend])).all()
            db.session.commit()
        db.session.remove()
    assert client.get("/thing", headers=basic_auth_headers(*COLD[0])).status_code == 403


def test_watchdog_cuts_off_at_the_deadline_only() -> None:
    late, cut_late = object(), threading.Event()
    soon, cut_soon = object(), threading.Event()
    timeouts.watch(late, time.monotonic() + 60, cut_late.set)
    timeouts.watch(soon, time.monotonic(), cut_soon.set)
    try:
        assert cut_soon.wait(10 * timeouts.WATCHDOG_TICK)
        assert not timeouts.unwatch(soon)  # cut off first: not to be used again
        assert not cut_late.is_set()
    finally:
        assert timeouts.unwatch(late)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_has_its_own_watchdog() -> None:
    # The parent's watchdog thread does not run in a child, and the parent's
    # lookups in flight are not the child's to cut off.
    parent = object()
    timeouts.watch(parent, time.monotonic() + 60, lambda: None)
    try:
        read_end, write_end = os.pipe()
        with warnings.catch_warnings():
            # Python 3.12+ warns about fork() when other threads exist; the
            # child only starts a watchdog and leaves.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: report, then leave without running pytest's exit
            try:
                watchdog = timeouts._watchdog
                fresh = watchdog.thread is None and not watchdog.waiting
                cut = threading.Event()
                timeouts.watch(object(), time.monotonic(), cut.set)
                os.write(write_end, f"{fresh} {cut.wait(5)}".encode())
            finally:
                os._exit(0)
        os.close(write_end)
        os.waitpid(pid, 0)
        with os.fdopen(read_end) as reader:
            assert reader.read() == "True True"
    finally:
        assert timeouts.unwatch(parent)

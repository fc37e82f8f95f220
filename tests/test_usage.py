"""Usage per key and UTC day: the report's classes, the row of unknown keys,
writes that fail and writes that add up on every backend, and the report
commands.

Processes that stop and gunicorn's workers adding up are in
test_telemetry_workers.py.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify
from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool

from flask_basic_gate import BasicGate
from flask_basic_gate import usage as usage_module
from flask_basic_gate.errors import MESSAGES, failure
from flask_basic_gate.identity import KeyIdentity
from flask_basic_gate.models import USAGE_CODES, get_models
from flask_basic_gate.policy import Decision
from flask_basic_gate.usage import (
    BLOCKED_CODES,
    UsageCounter,
    read_usage,
    today,
    usage_counter,
)

from .support import ROOT
from .support.apps import AppFactory, gate_of, provision, store_of
from .support.cli import gate as run_cli
from .support.cli import ok, refused
from .support.servers import child_env

#: A flush interval no test waits for: only explicit writes happen.
NEVER = {"BASIC_GATE_USAGE_FLUSH": 3600}


def counter_of(app: Flask) -> UsageCounter:
    counter = usage_counter(BasicGate.state(app).telemetry)
    assert counter is not None
    return counter


def report(app: Flask, **filters: Any) -> dict[str | None, Any]:
    """The app's usage table by key (today's rows only)."""
    store = store_of(app)
    rows = read_usage(store.engine, store.models, **filters)
    assert all(row.day == today() for row in rows)
    return {row.key: row for row in rows}


def usage_app(app_factory: AppFactory, **config: Any) -> Flask:
    app = app_factory({**NEVER, **config})
    gate = gate_of(app)

    @app.get("/reports")
    @gate.required(packages=["reports"])
    def reports() -> Any:
        return jsonify(ok=True)

    provision(app)
    return app


def test_every_code_is_in_a_class_and_a_column() -> None:
    assert set(USAGE_CODES) == set(MESSAGES)
    assert set(BLOCKED_CODES) < set(MESSAGES)


def test_usage_is_on_by_default_and_can_be_turned_off(app_factory: AppFactory) -> None:
    assert isinstance(usage_counter(BasicGate.state(app_factory()).telemetry), UsageCounter)
    off = app_factory({"BASIC_GATE_USAGE": False}, url=f"sqlite:///{app_factory.tmp_path / 'o.db'}")
    assert usage_counter(BasicGate.state(off).telemetry) is None


def test_allowed_blocked_and_other_per_key_with_each_error_code(
    app_factory: AppFactory, auth: Any
) -> None:
    app = usage_app(app_factory)
    with app.app_context():
        store = BasicGate.state().store
        store.create_key("members", key="sleeper", secret="zzz")
        store.disable_key("sleeper")
        store.create_package("gold", quota="1/day")
        store.create_key("gold", key="g", secret="gsecret")
    client = app.test_client()
    statuses = [
        client.get("/thing", headers=auth("criticalmix", "topsecret")).status_code,
        client.get("/thing", headers=auth("criticalmix", "topsecret")).status_code,  # cached
        client.get("/thing", headers=auth("criticalmix", "wrong")).status_code,
        client.get("/reports", headers=auth("criticalmix", "topsecret")).status_code,
        client.get("/thing", headers=auth("sleeper", "zzz")).status_code,
        client.get("/thing", headers=auth("sleeper", "wrong")).status_code,
        client.get("/thing", headers=auth("g", "gsecret")).status_code,
        client.get("/thing", headers=auth("g", "gsecret")).status_code,
        client.get("/optional").status_code,  # no credentials, optional: not counted
        client.get("/open").status_code,  # exempt: never checked
    ]
    assert statuses == [200, 200, 403, 403, 403, 403, 200, 429, 200, 200]
    assert counter_of(app).flush()
    rows = report(app)
    assert set(rows) == {"criticalmix", "sleeper", "g"}
    critical = rows["criticalmix"]
    assert (critical.package, critical.allowed, critical.blocked, critical.other) == (
        "members",
        2,
        1,
        1,
    )
    assert critical.codes == {"invalid-credentials": 1, "package-not-authorized": 1}
    sleeper = rows["sleeper"]
    assert (sleeper.allowed, sleeper.blocked, sleeper.other) == (0, 1, 1)
    assert sleeper.codes == {"key-inactive": 1, "invalid-credentials": 1}
    gold = rows["g"]
    assert (gold.package, gold.allowed, gold.blocked, gold.other) == ("gold", 1, 1, 0)
    assert gold.codes == {"quota-exceeded": 1}


def test_unknown_keys_share_one_row(app_factory: AppFactory, auth: Any) -> None:
    app = usage_app(app_factory, BASIC_GATE_FAILURE_LIMIT="off")
    client = app.test_client()
    for n in range(50):
        client.get("/thing", headers=auth(f"made-up-{n}", "guess"))
    client.get("/thing")
    client.get("/thing", headers={"Authorization": "Bearer x"})
    client.get("/thing", headers={"Authorization": "Basic !!"})
    counter = counter_of(app)
    assert counter.pending == 1  # one row, however many keys were made up
    assert counter.flush()
    rows = report(app)
    assert set(rows) == {None}
    unknown = rows[None]
    assert (unknown.package, unknown.allowed, unknown.blocked, unknown.other) == (None, 0, 0, 53)
    assert unknown.codes == {
        "invalid-credentials": 50,
        "authorization-required": 1,
        "basic-authorization-required": 1,
        "invalid-authorization": 1,
    }
    # Stored under the empty key, which no key can be.
    with app.app_context():
        table = BasicGate.state().store.models.Usage.__table__
        with BasicGate.state().store.engine.connect() as conn:
            assert conn.execute(select(table.c.key)).scalars().all() == [""]


def test_a_throttled_key_is_counted_for_the_key(app_factory: AppFactory, auth: Any) -> None:
    app = usage_app(app_factory, BASIC_GATE_FAILURE_LIMIT="2/minute")
    client = app.test_client()
    for _ in range(2):
        assert client.get("/thing", headers=auth("criticalmix", "wrong")).status_code == 403
    # The pair is throttled before the store is asked; the key was seen to exist.
    assert client.get("/thing", headers=auth("criticalmix", "topsecret")).status_code == 429
    for _ in range(3):
        client.get("/thing", headers=auth("stranger", "wrong"))
    assert counter_of(app).flush()
    rows = report(app)
    critical = rows["criticalmix"]
    assert (critical.allowed, critical.blocked, critical.other) == (0, 1, 2)
    assert critical.codes == {"invalid-credentials": 2, "too-many-failures": 1}
    assert rows[None].codes == {"invalid-credentials": 2, "too-many-failures": 1}


def test_a_refusal_only_reported_is_counted_as_the_refusal(app_factory: AppFactory) -> None:
    app = usage_app(app_factory)
    counter = counter_of(app)
    error = failure("quota-exceeded", mashery=False, challenge="", key="k", package="members")
    counter.decided(None, error, enforced=False)
    counted = counter.counts()[(today(), "k")]
    assert (counted["blocked"], counted["quota_exceeded"], counted["allowed"]) == (1, 1, 0)


def test_a_failed_write_keeps_the_counts_and_logs_once(
    app_factory: AppFactory, auth: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = usage_app(app_factory)
    client = app.test_client()
    client.get("/thing", headers=auth("criticalmix", "topsecret"))
    store = store_of(app)
    table = store.models.Usage.__table__
    table.drop(store.engine)
    counter = counter_of(app)
    with caplog.at_level(logging.WARNING, logger="flask_basic_gate"):
        assert not counter.flush()
        client.get("/thing", headers=auth("criticalmix", "topsecret"))
        assert not counter.flush()
        # The request path never noticed.
        assert client.get("/thing", headers=auth("criticalmix", "topsecret")).status_code == 200
        failures = [r for r in caplog.records if "could not write" in r.getMessage()]
        assert len(failures) == 1
        assert "BASIC_GATE_USAGE" in failures[0].getMessage()
        assert counter.counts()[(today(), "criticalmix")]["allowed"] == 3
        table.create(store.engine)
        assert counter.flush()
    assert "counts written again" in caplog.text
    assert counter.pending == 0
    assert report(app)["criticalmix"].allowed == 3
    assert counter.flush()  # nothing left: nothing written twice
    assert report(app)["criticalmix"].allowed == 3


def test_counts_beyond_the_bound_are_dropped_and_logged(
    app_factory: AppFactory,
    auth: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(usage_module, "MAX_PENDING", 2)
    app = usage_app(app_factory)
    provision(app, "second", "s2")
    provision(app, "third", "s3")
    client = app.test_client()
    for key, secret in [("criticalmix", "topsecret"), ("second", "s2"), ("third", "s3")]:
        assert client.get("/thing", headers=auth(key, secret)).status_code == 200
    counter = counter_of(app)
    assert counter.pending == 2
    with caplog.at_level(logging.ERROR, logger="flask_basic_gate"):
        assert counter.flush()
    assert "1 decisions were not counted" in caplog.text
    assert set(report(app)) == {"criticalmix", "second"}


def test_allowed_counts_are_exact_under_threads_that_fold_meanwhile(
    app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Requests let through are appended without a lock and folded into
    # their rows by whoever reads or writes the counts: 8 threads append
    # while another reads the counts over and over, and none is lost.
    monkeypatch.setattr(usage_module, "FOLD_AT", 97)  # requests fold too
    app = usage_app(app_factory)
    counter = counter_of(app)
    identities = [KeyIdentity(f"k{n}", "p", None, None, n) for n in range(3)]
    now = time.time()
    done = threading.Event()

    def let_through() -> None:
        for n in range(3000):
            counter.decided(Decision(identities[n % 3], None, now), None)

    def read() -> None:
        while not done.is_set():
            counter.counts()

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=let_through) for _ in range(8)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    reader.join()
    counts = counter.counts()
    day = dt.datetime.fromtimestamp(now, dt.timezone.utc).date()
    assert {key: counts[(day, key)]["allowed"] for _, key in counts} == {
        "k0": 8000,
        "k1": 8000,
        "k2": 8000,
    }


def test_requests_let_through_count_on_their_own_utc_day(app_factory: AppFactory) -> None:
    app = usage_app(app_factory)
    counter = counter_of(app)
    identity = KeyIdentity("k", "p", None, None, 1)
    midnight = dt.datetime(2026, 12, 3, tzinfo=dt.timezone.utc).timestamp()
    for at in (midnight - 1, midnight - 0.5, midnight, midnight + 1, midnight - 2):
        counter.decided(Decision(identity, None, at), None)
    counts = counter.counts()
    assert counts[(dt.date(2026, 12, 2), "k")]["allowed"] == 3
    assert counts[(dt.date(2026, 12, 3), "k")]["allowed"] == 2


def test_upsert_adds_up(app_factory: AppFactory, database_url: str, auth: Any) -> None:
    """Two processes' counters (two apps on one database) write the same
    rows: every count adds up, and a package learnt later fills the row."""
    first = app_factory(NEVER, url=database_url)
    provision(first)
    second = app_factory(NEVER, url=database_url, create=False)
    a, b = counter_of(first), counter_of(second)
    wrong = failure("invalid-credentials", mashery=False, challenge="", key="criticalmix")
    wrong.key_known = True
    b.decided(None, wrong)  # counted without the key's package
    assert b.flush()
    clients = {a: first.test_client(), b: second.test_client()}
    for counter, calls in ((a, 3), (b, 2), (a, 1)):
        for _ in range(calls):
            answer = clients[counter].get("/thing", headers=auth("criticalmix", "topsecret"))
            assert answer.status_code == 200
        assert counter.flush()
    critical = report(first)["criticalmix"]
    assert (critical.package, critical.allowed, critical.other) == ("members", 6, 1)
    assert critical.codes == {"invalid-credentials": 1}
    # The stored row holds the package the later writes knew.
    store = store_of(first)
    with store.engine.connect() as conn:
        stored = conn.execute(select(store.models.Usage.__table__.c.package)).scalar_one()
    assert stored == "members"


def test_update_or_insert_adds_up_where_there_is_no_upsert(
    app_factory: AppFactory, auth: Any
) -> None:
    app = usage_app(app_factory)
    counter = counter_of(app)
    counter._statement = None  # as on a database without ON CONFLICT
    client = app.test_client()
    for calls in (2, 3):
        for _ in range(calls):
            client.get("/thing", headers=auth("criticalmix", "topsecret"))
        assert counter.flush()
    assert report(app)["criticalmix"].allowed == 5


def test_the_flusher_thread_writes_every_interval(app_factory: AppFactory, auth: Any) -> None:
    app = usage_app(app_factory, BASIC_GATE_USAGE_FLUSH=0.05)
    client = app.test_client()
    for _ in range(4):
        client.get("/thing", headers=auth("criticalmix", "topsecret"))
    deadline = time.monotonic() + 10
    while report(app).get("criticalmix") is None or report(app)["criticalmix"].allowed < 4:
        assert time.monotonic() < deadline, "the flusher thread wrote nothing"
        time.sleep(0.02)
    assert counter_of(app).pending == 0
    client.get("/thing", headers=auth("criticalmix", "topsecret"))
    while report(app)["criticalmix"].allowed < 5:
        assert time.monotonic() < deadline, "the flusher thread wrote nothing more"
        time.sleep(0.02)
    assert report(app)["criticalmix"].allowed == 5


def test_close_writes_the_rest_and_ends_the_writes(app_factory: AppFactory, auth: Any) -> None:
    app = usage_app(app_factory)
    app.test_client().get("/thing", headers=auth("criticalmix", "topsecret"))
    counter = counter_of(app)
    BasicGate.state(app).telemetry.close()
    assert counter.closed
    assert counter not in usage_module.counters()
    assert report(app)["criticalmix"].allowed == 1


def test_a_process_writes_its_counts_at_exit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'exit.sqlite'}"
    script = f"""
from tests.support.apps import add_routes, gate_app, provision
from flask_basic_gate.testing import basic_auth_headers
app, gate = gate_app({url!r}, {{"BASIC_GATE_USAGE_FLUSH": 3600}})
add_routes(app, gate)
with app.app_context():
    app.extensions["sqlalchemy"].create_all()
provision(app)
client = app.test_client()
for _ in range(7):
    assert client.get("/thing", headers=basic_auth_headers("criticalmix", "topsecret")).status_code == 200
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    engine = create_engine(url, poolclass=NullPool)
    try:
        from flask_sqlalchemy import SQLAlchemy

        models = get_models(SQLAlchemy())
        rows = read_usage(engine, models)
    finally:
        engine.dispose()
    assert [(row.key, row.allowed) for row in rows] == [("criticalmix", 7)]


# -- the commands ------------------------------------------------------------------


def counted_app(app_factory: AppFactory, auth: Any) -> Flask:
    """Today: criticalmix 2 allowed, 1 wrong secret; an unknown key; a
    row of three days ago written by hand."""
    app = usage_app(app_factory)
    client = app.test_client()
    for headers in (
        auth("criticalmix", "topsecret"),
        auth("criticalmix", "topsecret"),
        auth("criticalmix", "wrong"),
        auth("nobody", "wrong"),
    ):
        client.get("/thing", headers=headers)
    counter = counter_of(app)
    assert counter.flush()
    with store_of(app).engine.begin() as conn:
        conn.execute(
            store_of(app).models.Usage.__table__.insert(),
            {
                "key": "criticalmix",
                "day": today() - dt.timedelta(days=3),
                "package": "members",
                "allowed": 10,
                "blocked": 4,
                "rate_limit_exceeded": 4,
            },
        )
    return app


def test_usage_command_table_csv_and_json(app_factory: AppFactory, auth: Any) -> None:
    app = counted_app(app_factory, auth)
    day, before = today().isoformat(), (today() - dt.timedelta(days=3)).isoformat()
    assert ok(run_cli(app, "usage")) == [
        "DAY         KEY          PACKAGE  ALLOWED  BLOCKED  OTHER",
        f"{before}  criticalmix  members  10       4        0",
        f"{day}  -            -        0        0        1",
        f"{day}  criticalmix  members  2        0        1",
    ]
    assert ok(run_cli(app, "usage", "--key", "criticalmix", "--since", day, "--format", "csv")) == [
        "day,key,package,allowed,blocked,other",
        f"{day},criticalmix,members,2,0,1",
    ]
    listed = json.loads(run_cli(app, "usage", "--format", "json", "--until", before).stdout)
    assert listed == [
        {
            "day": before,
            "key": "criticalmix",
            "package": "members",
            "allowed": 10,
            "blocked": 4,
            "other": 0,
            "errorCodes": {"rate-limit-exceeded": 4},
        }
    ]
    unknown = json.loads(run_cli(app, "usage", "--format", "json", "--since", day).stdout)[0]
    assert unknown["key"] is None
    assert unknown["errorCodes"] == {"invalid-credentials": 1}
    assert ok(run_cli(app, "usage", "--package", "members", "--since", day)) == [
        "DAY         KEY          PACKAGE  ALLOWED  BLOCKED  OTHER",
        f"{day}  criticalmix  members  2        0        1",
    ]
    assert ok(run_cli(app, "usage", "--package", "gold")) == ["no usage in package 'gold'"]
    assert ok(run_cli(app, "usage", "--format", "json", "--key", "none")) == ["[]"]
    refused(run_cli(app, "usage", "--since", "yesterday"), "--since 'yesterday' is not a day")


def test_show_key_shows_the_last_seven_days(app_factory: AppFactory, auth: Any) -> None:
    app = counted_app(app_factory, auth)
    lines = ok(run_cli(app, "show-key", "criticalmix"))
    at = lines.index("usage:        last 7 days (UTC)")
    assert lines[at + 1 :] == [
        f"  {(today() - dt.timedelta(days=3)).isoformat()}  allowed 10, blocked 4, other 0",
        f"  {today().isoformat()}  allowed 2, blocked 0, other 1",
    ]


def test_show_key_without_the_usage_table(app_factory: AppFactory) -> None:
    app = usage_app(app_factory)
    store = store_of(app)
    store.models.Usage.__table__.drop(store.engine)
    lines = ok(run_cli(app, "show-key", "criticalmix"))
    assert lines[-1].startswith("usage:        unknown: basic_gate_usage cannot be read")
    refused(run_cli(app, "usage"), "flask basic-gate init-db")


def test_show_key_with_usage_off_says_nothing_of_it(app_factory: AppFactory) -> None:
    app = app_factory({"BASIC_GATE_USAGE": False})
    provision(app)
    assert not any(
        line.startswith("usage:") for line in ok(run_cli(app, "show-key", "criticalmix"))
    )

"""What metrics and usage counting cost: the warm path, and one flush of 10,000 keys.

``python -m bench.usage [--rounds N] [--keys N] [--no-warm]``

1. The warm path, in-process WSGI calls in interleaved rounds (as
   ``python -m bench`` times them): the hook floor, the gate with metrics and
   usage off, the gate with its defaults (usage on), and the gate with
   metrics and usage on, each as a ratio to the floor (issue 19's bound:
   1.15x).
2. One flush of ``--keys`` active keys (10,000), each with a count for
   today: on SQLite (a file), and on PostgreSQL and MariaDB when their URL is
   set (``BASIC_GATE_BENCH_<SERVER>_URL``, else the tests'
   ``BASIC_GATE_TEST_<SERVER>_URL``), in a scratch schema dropped after.
   The first flush inserts every row, the second adds to every row; each is
   timed once per trial, the median printed.

Wrap a run in ``flock /tmp/bench.lock``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import create_engine, func, select

from bench import cases, peers, servers
from bench.gateapps import gate_app, provision
from bench.report import Bound, Row, Target, timing_table
from bench.timing import Case, calibrate, interleave, make_environ
from flask_basic_gate.identity import KeyIdentity
from flask_basic_gate.models import get_models
from flask_basic_gate.policy import Decision
from flask_basic_gate.testing import basic_auth_header
from flask_basic_gate.usage import UsageCounter

OFF = "gate warm, metrics and usage off"
DEFAULTS = "gate warm, defaults (usage on)"
#: Trials of each flush.
TRIALS = 3


def warm_rows(workdir: Path, rounds: int) -> list[Row]:
    """The warm path with telemetry off, by default and all on, beside the hook floor."""
    floor_environ = make_environ(basic_auth_header(peers.KEY, peers.SECRET))
    timed = [
        cases.bare_case(),
        Case(cases.HOOK_FLOOR, peers.hook_floor_app(workdir / "floor.sqlite"), [floor_environ]),
    ]
    for name, config in (
        (OFF, {"BASIC_GATE_USAGE": False}),
        (DEFAULTS, {}),
        (cases.WARM_METRICS, {"BASIC_GATE_METRICS": True, "BASIC_GATE_USAGE": True}),
    ):
        app, _ = gate_app(workdir / f"{len(timed)}.sqlite", f"bench_usage_{len(timed)}", **config)
        new = provision(app)
        timed.append(Case(name, app, [make_environ(basic_auth_header(new.key, new.secret))]))
    for case in timed:
        calibrate(case, 0.04, 200)
    interleave(timed, rounds)
    bound = Target((Bound(cases.HOOK_FLOOR, 1.15),))
    gated = (OFF, DEFAULTS, cases.WARM_METRICS)
    return [Row(case.name, case.samples, bound if case.name in gated else None) for case in timed]


def fill(counter: UsageCounter, keys: int) -> None:
    """Count one allowed call today for each of ``keys`` keys, in package ``members``."""
    now = time.time()
    for index in range(keys):
        identity = KeyIdentity(f"key-{index:06d}", "members", None, None, index, None)
        counter.decided(Decision(identity, None, now), None)


def flush_seconds(
    url: str, keys: int, connect_args: Optional[dict[str, Any]] = None
) -> list[float]:
    """Median seconds of the inserting flush and of the adding flush, on ``url``."""
    engine = create_engine(url, connect_args=connect_args or {})
    models = get_models(SQLAlchemy())
    table = models.Usage.__table__
    inserting: list[float] = []
    adding: list[float] = []
    try:
        for _ in range(TRIALS):
            table.drop(engine, checkfirst=True)
            table.create(engine)
            counter = UsageCounter(engine, models, 3600)
            counter.closed = True  # never written by the process's flusher
            for times in (inserting, adding):
                fill(counter, keys)
                started = time.perf_counter()
                if not counter.flush():
                    raise RuntimeError(f"the flush failed on {engine.url.get_backend_name()}")
                times.append(time.perf_counter() - started)
            with engine.connect() as conn:
                total = conn.execute(select(func.sum(table.c.allowed))).scalar_one()
            if int(total) != 2 * keys:
                raise RuntimeError(f"the table holds {total} calls, not {2 * keys}")
        table.drop(engine)
    finally:
        engine.dispose()
    return [statistics.median(inserting), statistics.median(adding)]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.usage", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved warm-path rounds")
    parser.add_argument("--keys", type=int, default=10_000, help="active keys in one flush")
    parser.add_argument("--no-warm", action="store_true", help="only the flush")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-usage-") as tmp:
        workdir = Path(tmp)
        if not args.no_warm:
            rows = warm_rows(workdir, args.rounds)
            print(f"warm path: median µs per request over {args.rounds} interleaved rounds")
            for line in timing_table(rows, cases.BARE, cases.HOOK_FLOOR):
                print(f"  {line}")
        print(f"one flush of {args.keys:,} active keys (median of {TRIALS}):")
        targets = [("SQLite (file)", f"sqlite:///{workdir / 'flush.sqlite'}", None)]
        for label, server in servers.SERVERS:
            url, _ = servers.server_url(server)
            if url is None:
                print(f"  {label}: skipped, no URL")
                continue
            targets.append((label, url, server))
        for label, url, server in targets:
            if server is None:
                inserting, adding = flush_seconds(url, args.keys)
            else:
                with servers.scratch_schema(url) as (scratch, connect_args):
                    inserting, adding = flush_seconds(
                        scratch.render_as_string(hide_password=False), args.keys, connect_args
                    )
            print(
                f"  {label}: {inserting * 1000:,.0f} ms inserting, {adding * 1000:,.0f} ms adding"
                f" ({adding / args.keys * 1e6:.0f} µs a key)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

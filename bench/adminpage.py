"""How long the admin pages take to render over many keys.

``python -m bench.adminpage [--keys N] [--rounds N] [--round-seconds S]``
serves the admin pages in-process (``BASIC_GATE_ADMIN`` on, SQLite) over a
key store of ``--keys`` keys (100,000 by default, built once by
:mod:`bench.keydb` and copied, so the cached store stays unchanged), signed
in with an admin key, and prints the median time per page beside the
yardstick: the member route served to the same key (one guarded request
that renders nothing). The keys page is timed on its first page, a page
deep into the keys (keyset pagination), a search that matches one key, a
state filter that matches none (both read every row), and one package; the
key page and the usage page too, with a usage row for every key today and
yesterday (every key called every day: the usage page's worst case).

Wrap a run in ``flock /tmp/bench.lock``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Optional

from flask import Flask
from sqlalchemy import insert

from bench.gateapps import gate_app
from bench.keydb import CHUNK, PACKAGE, ensure_store, key_name
from bench.timing import PATH, Case, calibrate, interleave, make_environ
from flask_basic_gate import BasicGate
from flask_basic_gate.testing import basic_auth_header
from flask_basic_gate.usage import today
from tests.support.apps import dispose, provision

PREFIX = "/basic-gate/admin"
ADMIN, ADMIN_SECRET = "bench-admin", "bench-admin-secret"


def cases(keys: int) -> list[tuple[str, str]]:
    """(name, path) of each timed request, the yardstick first."""
    middle = key_name(keys * 9 // 10)
    return [
        ("yardstick: the member route", PATH),
        ("keys page, first page", PREFIX + "/"),
        ("keys page, 90% in (after=)", f"{PREFIX}/?after={middle}"),
        ("keys page, search one key", f"{PREFIX}/?q=dev{keys // 2}%40"),
        ("keys page, state disabled (none)", f"{PREFIX}/?state=disabled"),
        (f"keys page, package {PACKAGE}", f"{PREFIX}/?package={PACKAGE}"),
        ("key page (30-day chart)", f"{PREFIX}/key?key={key_name(keys // 2)}"),
        ("usage page", PREFIX + "/usage"),
    ]


def add_usage(app: Flask, keys: int) -> None:
    """A usage row for each key today and yesterday, with made-up counts."""
    store = BasicGate.state(app).store
    table = store.models.Usage.__table__
    store.create_tables()
    rows: list[dict[str, object]] = []
    with store.engine.begin() as conn:
        for day in (today(), today() - dt.timedelta(days=1)):
            for index in range(keys):
                blocked = index % 7
                rows.append(
                    {
                        "key": key_name(index),
                        "day": day,
                        "package": PACKAGE,
                        "allowed": (index * 7919) % 1000,
                        "blocked": blocked,
                        "other": index % 3,
                        "quota_exceeded": blocked,
                        "invalid_credentials": index % 3,
                    }
                )
                if len(rows) == CHUNK:
                    conn.execute(insert(table), rows)
                    rows = []
        if rows:
            conn.execute(insert(table), rows)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.adminpage", description=__doc__)
    parser.add_argument("--keys", type=int, default=100_000, help="keys in the store")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per case")
    parser.add_argument(
        "--round-seconds", type=float, default=0.5, help="length of one case's round"
    )
    args = parser.parse_args(argv)

    source, built = ensure_store(args.keys)
    if built:
        print(f"built {source}")
    with tempfile.TemporaryDirectory(prefix="bench-adminpage-") as folder:
        path = Path(folder) / "keys.sqlite"
        shutil.copyfile(source, path)
        app, _ = gate_app(path, "bench_adminpage", BASIC_GATE_ADMIN=True)
        try:
            provision(app, ADMIN, ADMIN_SECRET, package="admin")
            add_usage(app, args.keys)
            authorization = basic_auth_header(ADMIN, ADMIN_SECRET)
            timed = [
                Case(name, app, [make_environ(authorization, path)])
                for name, path in cases(args.keys)
            ]
            for case in timed:
                calibrate(case, args.round_seconds, min_calls=3)
            interleave(timed, args.rounds)
        finally:
            dispose(app)
    yardstick = statistics.median(timed[0].samples)
    print(f"admin pages over {args.keys:,} keys (SQLite), median of {args.rounds} rounds")
    print(f"{'case':<36}{'ms per page':>12}{'x yardstick':>13}")
    for case in timed:
        median = statistics.median(case.samples)
        print(f"{case.name:<36}{median / 1000:>12.2f}{median / yardstick:>13.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

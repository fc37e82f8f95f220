"""Cold lookups on PostgreSQL and MariaDB, beside the driver's own round trip.

For each server whose URL is set (``BASIC_GATE_BENCH_<SERVER>_URL``, else
the tests' ``BASIC_GATE_TEST_<SERVER>_URL``), a scratch schema of its own
(on MariaDB a schema is a database) gets the gate's tables, made with
:meth:`~flask_basic_gate.store.KeyStore.create_tables`, and
:data:`KEYS` keys. Four cases then take turns over the same keys:

- the floor: the raw DBAPI driver running the gate's own lookup SELECT on
  one open connection in autocommit, ``fetchall`` and all;
- :meth:`~flask_basic_gate.store.KeyLookup.lookup`, the gate's read path alone;
- the bare route, and a cold request (cache off) through the gate app.

The scratch schema is dropped afterwards, whatever happened in between.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, Callable, Optional

from sqlalchemy import URL, Engine, create_engine, make_url, text
from sqlalchemy.pool import NullPool

from bench import cases, keydb
from bench.gateapps import gate_app
from bench.report import Bound, Row, Target, timing_table
from bench.timing import Case, calibrate, interleave, run_each
from flask_basic_gate.store import KeyLookup

#: Keys in each server's store.
KEYS = cases.SMALL_KEYS
#: The servers, as printed and as named in the URL variables.
SERVERS = (("PostgreSQL", "POSTGRESQL"), ("MariaDB", "MARIADB"))
FLOOR = "driver floor"
LOOKUP = "gate lookup"
COLD = cases.cold_name(KEYS)
#: The issue's target: the gate's read path within 30% of the driver's round trip.
TARGETS = {LOOKUP: Target((Bound(FLOOR, 1.30),))}

SQL = Callable[[str], list[Any]]


def server_url(server: str) -> tuple[Optional[str], str]:
    """The URL to bench ``server`` on (``None`` when unset), and the variable read or missing."""
    bench, test = f"BASIC_GATE_BENCH_{server}_URL", f"BASIC_GATE_TEST_{server}_URL"
    for name in (bench, test):
        url = os.environ.get(name)
        if url:
            return url, name
    return None, f"{bench} (nor {test})"


@contextlib.contextmanager
def scratch_schema(url: str) -> Iterator[tuple[URL, dict[str, Any]]]:
    """Create an empty schema named after this process, yield how to connect to it, drop it.

    :return: the URL and the DBAPI ``connect_args`` whose connections see
        only the scratch schema.
    """
    admin = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        server = admin.url
        name = f"{server.database or 'gate'}_bench_{os.getpid()}"
        quoted = admin.dialect.identifier_preparer.quote(name)
        postgresql = admin.dialect.name == "postgresql"
        with admin.connect() as conn:
            conn.execute(text(f"CREATE SCHEMA {quoted}"))
        try:
            if postgresql:
                yield server, {"options": f"-c search_path={quoted}"}
            else:
                yield server.set(database=name), {}
        finally:
            with admin.connect() as conn:
                drop = f"DROP SCHEMA IF EXISTS {quoted}" + (" CASCADE" if postgresql else "")
                conn.execute(text(drop))
    finally:
        admin.dispose()


def floor_query(engine: Engine, connect_args: dict[str, Any], lookup: KeyLookup) -> tuple[SQL, Any]:
    """The driver's round trip of the gate's lookup SELECT, and the connection it runs on.

    The connection is the driver's own (``psycopg.connect``,
    ``pymysql.connect``) with the arguments SQLAlchemy would pass, in
    autocommit as the gate keeps its lookup connections.
    """
    dialect = engine.dialect
    compiled = lookup._lookup.compile(dialect=dialect)
    sql, positional = compiled.string, bool(compiled.positional)
    cargs, cparams = dialect.create_connect_args(engine.url)
    conn = dialect.loaded_dbapi.connect(*cargs, **{**cparams, **connect_args})
    dialect.set_isolation_level(conn, "AUTOCOMMIT")

    def round_trip(key: str) -> list[Any]:
        # The gate's own calls: a cursor per lookup, the key bound the
        # dialect's way, every row fetched.
        cursor = conn.cursor()
        try:
            cursor.execute(sql, (key,) if positional else {"key": key})
            rows: list[Any] = cursor.fetchall()
            return rows
        finally:
            cursor.close()

    return round_trip, conn


def _checked(name: str, answer: object, key: str) -> None:
    if not answer:
        raise RuntimeError(f"case {name!r} did not find key {key!r}")


def server_rows(
    label: str, url: str, rounds: int, round_seconds: float, min_calls: int
) -> tuple[str, list[Row]]:
    """Build the store in a scratch schema on ``url``, time the cases; the server and its rows."""
    with contextlib.ExitStack() as stack:
        server, connect_args = stack.enter_context(scratch_schema(url))
        app, gate = gate_app(
            server.render_as_string(hide_password=False),
            f"bench_gate_{label.lower()}",
            SQLALCHEMY_ENGINE_OPTIONS={"connect_args": connect_args},
            BASIC_GATE_CACHE_TTL=0,
        )
        with app.app_context():
            store = gate.store
            engine = store.engine
            # Closes the gate's connections, held ones too, before the drop.
            stack.callback(engine.dispose)
            store.create_tables()
            with engine.begin() as conn:
                keydb.add_keys(conn, store.models, KEYS)
            floor, floor_conn = floor_query(engine, connect_args, store.reader)
        stack.callback(floor_conn.close)
        keys = [keydb.key_name(index) for index in cases.cold_sample(KEYS)]
        _checked(FLOOR, floor(keys[0]), keys[0])
        _checked(LOOKUP, store.reader.lookup(keys[0]), keys[0])
        timed = [
            Case(FLOOR, floor, keys, warmup=len(keys), runner=run_each),
            Case(LOOKUP, store.reader.lookup, keys, warmup=len(keys), runner=run_each),
            cases.bare_case(),
            cases.cold_request_case(COLD, app, KEYS),
        ]
        for case in timed:
            calibrate(case, round_seconds, min_calls)
        interleave(timed, rounds)
        version = ".".join(str(part) for part in engine.dialect.server_version_info or ())
    driver = make_url(url).get_driver_name()
    notes = {
        FLOOR: f"{driver}: the gate's SELECT, autocommit, fetchall",
        LOOKUP: "KeyLookup.lookup: the read path alone",
        COLD: "WSGI request, cache off",
    }
    rows = [Row(c.name, c.samples, TARGETS.get(c.name), notes.get(c.name, "")) for c in timed]
    return f"{label} {version}".rstrip(), rows


def sections(rounds: int, round_seconds: float, min_calls: int) -> Iterator[tuple[str, list[str]]]:
    """One table per server (title and lines), or a one-line title saying why it was skipped."""
    for label, server in SERVERS:
        url, variable = server_url(server)
        if url is None:
            yield f"cold lookup on {label}: skipped, {variable} not set", []
            continue
        name, rows = server_rows(label, url, rounds, round_seconds, min_calls)
        title = (
            f"cold lookup on {name}, {KEYS:,} keys: median µs per call over {rounds}"
            f" interleaved rounds (read from {variable})"
        )
        yield title, timing_table(rows, FLOOR, cases.BARE)

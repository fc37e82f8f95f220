"""Usage per key and UTC day, as the gateway's activity report counts it.

:class:`UsageCounter` is a :class:`~flask_basic_gate.telemetry.Telemetry`
listener. Each decision on a known key is added, in memory, to its key's
row for the day: **allowed**; **blocked** (the key is known and its secret
matched, or it was throttled: ``key-inactive``, ``package-not-authorized``,
``rate-limit-exceeded``, ``quota-exceeded``, ``too-many-failures``); or
**other** (``invalid-credentials`` for an existing key,
``gate-unavailable``), with the count of each errorCode. A throttled
request, or one the store could not answer, is counted for its key when the
store said earlier in this process that the key exists. Every request that
named no known key (an unknown key, no credentials, a malformed header) is
added to one row of its own, whose key is empty (shown as ``-``), so a
client sending made-up keys cannot grow the table. A request without
credentials on an optional route is not counted.

A request let through costs one ``list.append`` of its identity, without a
lock (an append is atomic, and the list is only ever cut from the front,
under the lock); the appended identities are added to their rows once a
second by the flusher thread, before every write and read of the counts, and
by the request that brings the list to :data:`FOLD_AT`. A refusal costs a
few dict operations under the lock. Nothing is written on the request path.
One daemon thread per process (started by the first counted request, so
after a pre-forking server's fork) writes what each
app's counter holds every ``BASIC_GATE_USAGE_FLUSH`` seconds, and
:meth:`UsageCounter.close` (at interpreter exit, or from the app's
:meth:`Telemetry.close <flask_basic_gate.telemetry.Telemetry.close>`)
writes the rest. Each write is one transaction of upserts, one per (key,
day), that *add* to the row (``ON CONFLICT ... DO UPDATE SET allowed =
allowed + excluded.allowed`` on PostgreSQL and SQLite, ``ON DUPLICATE KEY
UPDATE`` on MySQL and MariaDB), so any number of processes and hosts add up.
A write that fails puts its counts back for the next one and logs once per
outage; it never touches a request.

:func:`read_usage` reads the table back for ``flask basic-gate usage`` and
``show-key``.
"""

from __future__ import annotations

import atexit
import csv
import datetime as dt
import io
import json
import logging
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

from sqlalchemy import Engine, and_, bindparam, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import SingletonThreadPool, StaticPool

from .bounded import BoundedMap
from .models import USAGE_CODES, Models
from .store.timeouts import cutter, unwatch, watch
from .telemetry import Fanout, Telemetry

if TYPE_CHECKING:
    from sqlalchemy import Connection, Table
    from sqlalchemy.sql import Executable

    from .errors import GateError
    from .identity import KeyIdentity
    from .policy import Decision

__all__ = [
    "BLOCKED_CODES",
    "FLUSH_TIMEOUT",
    "FOLD_AT",
    "MAX_PENDING",
    "UNKNOWN_KEY",
    "UsageCounter",
    "UsageRow",
    "close_all",
    "counters",
    "parse_day",
    "read_usage",
    "recent_usage",
    "today",
    "upsert_statement",
    "usage_counter",
    "usage_csv",
    "usage_json",
    "usage_table",
]

logger = logging.getLogger("flask_basic_gate")

#: The stored key of the row that counts the requests naming no known key:
#: empty, which no key can be. Reports show it as ``-``.
UNKNOWN_KEY = ""
#: The errorCodes of the report's *blocked* class; every other one is *other*.
BLOCKED_CODES = frozenset(
    {
        "key-inactive",
        "package-not-authorized",
        "rate-limit-exceeded",
        "quota-exceeded",
        "too-many-failures",
    }
)
#: Most (key, day) rows held in memory: with writes failing for days, past
#: this many the counts of new rows are dropped (and the drop logged).
MAX_PENDING = 200_000
#: Longest one write may wait on the database, in seconds, before the
#: process's watchdog cuts its connection off.
FLUSH_TIMEOUT = 30.0
#: The flusher thread looks at the counters at least this often, in seconds.
TICK = 1.0
#: Tries of the last write at close, within :data:`CLOSE_SECONDS`: two
#: processes stopping at once may deadlock each other's upserts on MariaDB.
CLOSE_ATTEMPTS = 3
CLOSE_SECONDS = 2.0

#: Allowed requests appended before the request that appends the last one
#: adds them to their rows itself (the flusher does it every :data:`TICK`).
FOLD_AT = 10_000

#: Most keys remembered as existing (oldest forgotten first).
MAX_KNOWN = 100_000
# Refusals that may come before the store was asked whether the key exists
# (a throttled pair, a spent KDF budget, a store that could not answer): a
# key counted as existing before is counted for them too.
_UNCHECKED = frozenset({"too-many-failures", "gate-unavailable"})
_DAY = 86_400
_EPOCH = dt.date(1970, 1, 1)
# A row in memory: [package, allowed, blocked, other, one count per errorCode].
_PACKAGE, _ALLOWED, _BLOCKED, _OTHER = 0, 1, 2, 3
_FIRST_CODE = 4
_CODE_SLOT = {code: _FIRST_CODE + index for index, code in enumerate(USAGE_CODES)}
_CLASS_SLOT = {code: _BLOCKED if code in BLOCKED_CODES else _OTHER for code in USAGE_CODES}
_ZEROS = (0,) * len(USAGE_CODES)
#: The table's count columns, in the order of a row in memory.
CODE_COLUMNS = tuple(code.replace("-", "_") for code in USAGE_CODES)
_COUNT_COLUMNS = ("allowed", "blocked", "other", *CODE_COLUMNS)
_KEY_AND_PACKAGE = attrgetter("key", "package")


class UsageCounter(Telemetry):
    """Counts decisions per key and UTC day in memory and writes them to
    ``basic_gate_usage`` every ``interval`` seconds (see the module).

    Made by ``init_app`` when ``BASIC_GATE_USAGE`` is on.

    :param engine: the engine of the bind that holds the gate's tables.
    :param models: the gate's models; ``models.Usage`` is written.
    :param interval: seconds between two writes (``BASIC_GATE_USAGE_FLUSH``).

    .. versionadded:: 0.1
    """

    def __init__(self, engine: Engine, models: Models, interval: float) -> None:
        self.engine = engine
        self.table: Table = models.Usage.__table__
        self.interval = interval
        #: :func:`time.monotonic` time of the next periodic write.
        self.due = time.monotonic() + interval
        #: Closed: written out for the last time, never written again.
        self.closed = False
        # A pool that shares its connection with the app's own sessions (an
        # in-memory SQLite database) must not be written from another
        # thread: such a counter is written at close only.
        self.periodic = not isinstance(engine.pool, (StaticPool, SingletonThreadPool))
        self._statement = upsert_statement(engine.dialect.name, self.table)
        self._reset()
        _register(self)

    def _reset(self) -> None:
        # At start and in a forked child: the parent's counts are the
        # parent's to write, and its locks may be held by a thread that
        # does not exist here.
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._pending: dict[tuple[int, str], list[Any]] = {}
        # The identities let through since the last fold, all on day
        # ``_day`` (UTC days since the epoch), whose POSIX times are
        # [_day_starts, _day_ends); a request of another day folds first.
        self._allowed: list[KeyIdentity] = []
        self._day = -1
        self._day_starts = self._day_ends = 0.0
        # Keys the store said exist, so that a refusal given before (or
        # without) a lookup is counted for its key (see _UNCHECKED); only
        # keys that exist get in, so no client can grow it.
        self._known: BoundedMap[str, bool] = BoundedMap(MAX_KNOWN)
        self._dropped = 0
        self._failing = False
        self.due = time.monotonic() + self.interval

    # -- counting, on the request path -----------------------------------------

    def decided(
        self,
        decision: Optional[Decision],
        error: Optional[GateError],
        *,
        enforced: bool = True,
    ) -> None:
        """Add the decision to its key's row (see the module)."""
        if error is None:
            if decision is None:
                return
            identity = decision.identity
            if identity is None:
                return  # an optional route without credentials
            now = decision.now
            if now >= self._day_ends or now < self._day_starts:
                self._new_day(now)
            allowed = self._allowed
            allowed.append(identity)
            if len(allowed) >= FOLD_AT:
                with self._lock:
                    self._fold()
            return
        # A refusal reported only (``enforced`` false) is counted as the
        # refusal it would have been: the report says what the gate decided.
        code = error.error_code
        key = error.key
        if key is None or not (error.key_known or (code in _UNCHECKED and key in self._known)):
            key = UNKNOWN_KEY
        package = error.package if key != UNKNOWN_KEY else None
        slot = (int(time.time() // _DAY), key)
        with self._lock:
            row = self._pending.get(slot)
            if row is None:
                row = self._add(slot, package)
                if row is None:
                    return
            elif row[_PACKAGE] is None:
                row[_PACKAGE] = package
            row[_CLASS_SLOT.get(code, _OTHER)] += 1
            where = _CODE_SLOT.get(code)
            if where is not None:
                row[where] += 1

    def _new_day(self, now: float) -> None:
        # The first request let through, or one on another UTC day than the
        # last: what was appended belongs to the day it was appended on.
        with self._lock:
            self._fold()
            day = int(now // _DAY)
            self._day = day
            self._day_starts = float(day * _DAY)
            self._day_ends = float((day + 1) * _DAY)
        if self.periodic and _flusher.thread is None:
            _flusher.start()

    def _fold(self) -> None:
        # Under the lock: add the appended identities to their rows. Only
        # the front is cut, so an append made meanwhile stays for the next.
        allowed = self._allowed
        taken = len(allowed)
        if not taken:
            return
        batch = Counter(map(_KEY_AND_PACKAGE, allowed[:taken]))
        del allowed[:taken]
        pending = self._pending
        day = self._day
        for (key, package), calls in batch.items():
            slot = (day, key)
            row = pending.get(slot)
            if row is None:
                row = self._add(slot, package, calls)
                if row is None:
                    continue
            elif row[_PACKAGE] is None:
                row[_PACKAGE] = package
            row[_ALLOWED] += calls

    def _add(
        self, slot: tuple[int, str], package: Optional[str], calls: int = 1
    ) -> Optional[list[Any]]:
        # Called with the lock held, once per (key, day) between two writes.
        pending = self._pending
        if len(pending) >= MAX_PENDING:
            self._dropped += calls
            return None
        row = [package, 0, 0, 0, *_ZEROS]
        pending[slot] = row
        if slot[1] != UNKNOWN_KEY and slot[1] not in self._known:
            self._known.put(slot[1], True)
        if self.periodic and _flusher.thread is None:
            _flusher.start()
        return row

    # -- writing ---------------------------------------------------------------

    @property
    def pending(self) -> int:
        """How many (key, day) rows wait to be written."""
        with self._lock:
            self._fold()
            return len(self._pending)

    def counts(self) -> dict[tuple[dt.date, str], dict[str, Any]]:
        """What waits to be written, by (day, stored key): the row's
        ``package`` and its counts by column name."""
        with self._lock:
            self._fold()
            items = [(slot, list(row)) for slot, row in self._pending.items()]
        return {(_date(day), key): _values(row) for (day, key), row in items}

    def flush(self, wait: Optional[float] = None) -> bool:
        """Write what is held now, in one transaction.

        :param wait: longest to wait, in seconds, for a write under way in
            another thread (``None``: as long as it takes).
        :return: whether it was written (or there was nothing to write).
            On a database error the counts are kept for the next write, and
            the first failure of an outage is logged; nothing is raised.
        """
        if not self._flushing.acquire(timeout=-1 if wait is None else wait):
            return False
        try:
            return self._flush()
        finally:
            self._flushing.release()

    def _flush(self) -> bool:
        self.due = time.monotonic() + self.interval
        with self._lock:
            self._fold()
            pending, self._pending = self._pending, {}
            dropped, self._dropped = self._dropped, 0
        if dropped:
            logger.error(
                "usage: %d decisions were not counted: %d (key, day) rows were waiting"
                " to be written",
                dropped,
                MAX_PENDING,
            )
        if not pending:
            return True
        try:
            self._write(pending)
        except BaseException as exc:
            self._keep(pending)
            if not isinstance(exc, (SQLAlchemyError, OSError)):
                raise
            if not self._failing:
                self._failing = True
                logger.warning(
                    "usage: could not write the counts of %d keys to %s (%s); they are"
                    " kept for the next write. Create the table with 'flask basic-gate"
                    " init-db' or migration 0003, let the app's database user insert and"
                    " update it, or set BASIC_GATE_USAGE = False.",
                    len({key for _, key in pending}),
                    self.table.name,
                    type(exc).__name__,
                )
            return False
        if self._failing:
            self._failing = False
            logger.warning("usage: counts written again to %s", self.table.name)
        return True

    def _keep(self, pending: dict[tuple[int, str], list[Any]]) -> None:
        with self._lock:
            current = self._pending
            for slot, row in pending.items():
                mine = current.get(slot)
                if mine is None:
                    current[slot] = row
                else:
                    if mine[_PACKAGE] is None:
                        mine[_PACKAGE] = row[_PACKAGE]
                    for index in range(_ALLOWED, len(row)):
                        mine[index] += row[index]

    def _write(self, pending: dict[tuple[int, str], list[Any]]) -> None:
        # Sorted, so two processes writing the same rows lock them in the
        # same order and cannot deadlock each other on PostgreSQL.
        rows = [
            {"key": key, "day": _date(day), **_values(row)}
            for (day, key), row in sorted(pending.items(), key=lambda item: item[0][::-1])
        ]
        with self.engine.connect() as conn:
            dbapi = conn.connection.dbapi_connection
            cut = cutter(dbapi) if dbapi is not None else None
            if cut is not None:
                watch(dbapi, time.monotonic() + FLUSH_TIMEOUT, cut)
            try:
                with conn.begin():
                    if self._statement is not None:
                        conn.execute(self._statement, rows)
                    else:
                        _update_or_insert(conn, self.table, rows)
            finally:
                if cut is not None and not unwatch(dbapi):
                    conn.invalidate()

    def close(self) -> None:
        """Write what is held, for the last time (trying again briefly if
        the write fails), and stop the periodic writes."""
        if self.closed:
            return
        self.closed = True
        started = time.monotonic()
        for attempt in range(CLOSE_ATTEMPTS):
            if self.flush(wait=CLOSE_SECONDS):
                return
            if time.monotonic() - started > CLOSE_SECONDS or attempt + 1 == CLOSE_ATTEMPTS:
                break
            time.sleep(0.05 * (attempt + 1))
        with self._lock:
            self._fold()
            keys = len({key for _, key in self._pending})
        logger.error("usage: the counts of %d keys could not be written and are lost", keys)


def _date(day: int) -> dt.date:
    return _EPOCH + dt.timedelta(days=day)


def _values(row: list[Any]) -> dict[str, Any]:
    values: dict[str, Any] = {"package": row[_PACKAGE]}
    values.update(zip(_COUNT_COLUMNS, row[_ALLOWED:]))
    return values


def upsert_statement(dialect: str, table: Table) -> Optional[Executable]:
    """The statement that adds a row's counts to the stored row, or
    ``None`` for a database with neither ``ON CONFLICT`` nor ``ON DUPLICATE
    KEY`` (then each row is updated, and inserted if it was not there).

    .. versionadded:: 0.1
    """
    columns = table.c
    if dialect in ("postgresql", "sqlite"):
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            statement: Any = pg_insert(table)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            statement = sqlite_insert(table)
        new = statement.excluded
        added = {name: columns[name] + new[name] for name in _COUNT_COLUMNS}
        upsert: Executable = statement.on_conflict_do_update(
            index_elements=[columns.key, columns.day],
            set_={**added, "package": func.coalesce(new.package, columns.package)},
        )
        return upsert
    if dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        statement = mysql_insert(table)
        new = statement.inserted
        added = {name: columns[name] + new[name] for name in _COUNT_COLUMNS}
        upsert = statement.on_duplicate_key_update(
            {**added, "package": func.coalesce(new.package, columns.package)}
        )
        return upsert
    return None


def _update_or_insert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    # Elsewhere: an update that adds, and an insert when it found no row. A
    # row inserted meanwhile by another process fails the transaction, and
    # its counts wait for the next write, which then updates.
    columns = table.c
    update = (
        table.update()
        .where(and_(columns.key == bindparam("b_key"), columns.day == bindparam("b_day")))
        .values(
            {
                **{name: columns[name] + bindparam(f"b_{name}") for name in _COUNT_COLUMNS},
                "package": func.coalesce(bindparam("b_package"), columns.package),
            }
        )
    )
    for row in rows:
        found = conn.execute(update, {f"b_{name}": value for name, value in row.items()})
        if found.rowcount == 0:
            conn.execute(table.insert(), row)


# -- the flusher: one thread per process ---------------------------------------


class _Flusher:
    """Writes every live counter when it is due."""

    def __init__(self) -> None:
        self.thread: Optional[threading.Thread] = None
        self.stop = threading.Event()
        self._starting = threading.Lock()

    def start(self) -> None:
        with self._starting:
            if self.thread is None:
                thread = threading.Thread(
                    target=self._run, name="flask-basic-gate-usage", daemon=True
                )
                self.thread = thread
                thread.start()

    def _run(self) -> None:
        stop = self.stop
        while not stop.is_set():
            stop.wait(max(self._write_due(), 0.01))

    @staticmethod
    def _write_due() -> float:
        """Write the counters that are due; seconds until the next one is.

        No counter is referred to once this returns: an app that goes away
        is collected, and its counter leaves the weak set.
        """
        wait = TICK
        for counter in list(_COUNTERS):
            if counter.closed or not counter.periodic:
                continue
            with counter._lock:
                counter._fold()
            left = counter.due - time.monotonic()
            if left <= 0:
                try:
                    counter.flush()
                except Exception:  # a bug, not the database: keep the thread going
                    logger.exception("usage: the write failed")
                left = counter.interval
            wait = min(wait, left)
        return wait


_COUNTERS: weakref.WeakSet[UsageCounter] = weakref.WeakSet()
_flusher = _Flusher()
_hooked = False


def _register(counter: UsageCounter) -> None:
    global _hooked
    _COUNTERS.add(counter)
    if not _hooked:
        _hooked = True
        atexit.register(close_all)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)


def _after_fork_in_child() -> None:
    global _flusher
    _flusher = _Flusher()
    for counter in list(_COUNTERS):
        counter._reset()


def close_all() -> None:
    """Stop the flusher thread and :meth:`~UsageCounter.close` every
    counter of the process (run at interpreter exit).

    .. versionadded:: 0.1
    """
    flusher = _flusher
    flusher.stop.set()
    thread = flusher.thread
    if thread is not None and thread is not threading.current_thread():
        # A write under way ends on its own; one stuck on the database is
        # left to its watchdog (each counter's close waits a little for it).
        thread.join(timeout=CLOSE_SECONDS)
    for counter in list(_COUNTERS):
        counter.close()


def counters() -> list[UsageCounter]:
    """The process's counters that are not closed yet.

    .. versionadded:: 0.1
    """
    return [counter for counter in list(_COUNTERS) if not counter.closed]


def usage_counter(telemetry: Telemetry) -> Optional[UsageCounter]:
    """The :class:`UsageCounter` among an app's listeners
    (``get_state(app).telemetry``), or ``None`` when usage is off.

    .. versionadded:: 0.1
    """
    listeners = telemetry.listeners if isinstance(telemetry, Fanout) else (telemetry,)
    return next((one for one in listeners if isinstance(one, UsageCounter)), None)


# -- reading the table back -----------------------------------------------------


class UsageRow(NamedTuple):
    """One key's usage on one UTC day, as :func:`read_usage` returns it.

    .. versionadded:: 0.1
    """

    day: dt.date
    #: The key, or ``None`` for the row of requests that named no known key.
    key: Optional[str]
    #: The key's package (as counted, else as the key is now), or ``None``.
    package: Optional[str]
    allowed: int
    blocked: int
    other: int
    #: The count of each errorCode met that day (those above zero).
    codes: dict[str, int]


def read_usage(
    engine: Engine,
    models: Models,
    *,
    key: Optional[str] = None,
    package: Optional[str] = None,
    since: Optional[dt.date] = None,
    until: Optional[dt.date] = None,
) -> list[UsageRow]:
    """The rows of ``basic_gate_usage``, by day then key.

    :param key: only this key's rows.
    :param package: only the rows of this package's keys.
    :param since: from this UTC day on (inclusive).
    :param until: up to this UTC day (inclusive).
    :raises sqlalchemy.exc.SQLAlchemyError: the table cannot be read.

    .. versionadded:: 0.1
    """
    usage = models.Usage.__table__
    keys = models.PackageKey.__table__
    packages = models.Package.__table__
    # The package counted with the row, else the key's package now (a row
    # that only ever saw a wrong secret was counted without it).
    package_now = func.coalesce(usage.c.package, packages.c.name)
    query = (
        select(usage, package_now.label("package_now"))
        .select_from(
            usage.outerjoin(keys, keys.c.key == usage.c.key).outerjoin(
                packages, packages.c.id == keys.c.package_id
            )
        )
        .order_by(usage.c.day, usage.c.key)
    )
    if key is not None:
        query = query.where(usage.c.key == key)
    if package is not None:
        query = query.where(package_now == package)
    if since is not None:
        query = query.where(usage.c.day >= since)
    if until is not None:
        query = query.where(usage.c.day <= until)
    with engine.connect() as conn:
        found = conn.execute(query).mappings().all()
    rows = []
    for row in found:
        codes = {
            code: int(row[column]) for code, column in zip(USAGE_CODES, CODE_COLUMNS) if row[column]
        }
        rows.append(
            UsageRow(
                row["day"],
                None if row["key"] == UNKNOWN_KEY else row["key"],
                row["package_now"],
                int(row["allowed"]),
                int(row["blocked"]),
                int(row["other"]),
                codes,
            )
        )
    return rows


def parse_day(value: str, option: str) -> dt.date:
    """Read a ``YYYY-MM-DD`` day.

    :raises ValueError: naming ``option`` when it is not one.

    .. versionadded:: 0.1
    """
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{option} {value!r} is not a day such as 2027-01-31") from None


def today() -> dt.date:
    """The current UTC day.

    .. versionadded:: 0.1
    """
    return _date(int(time.time() // _DAY))


def _shown(key: Optional[str]) -> str:
    return "-" if key is None else key


#: The header of the table and CSV reports.
HEADER = ("DAY", "KEY", "PACKAGE", "ALLOWED", "BLOCKED", "OTHER")


def usage_table(rows: Sequence[UsageRow]) -> list[tuple[str, ...]]:
    """The report as text cells, :data:`HEADER` first.

    .. versionadded:: 0.1
    """
    cells: list[tuple[str, ...]] = [HEADER]
    for row in rows:
        cells.append(
            (
                row.day.isoformat(),
                _shown(row.key),
                row.package or "-",
                str(row.allowed),
                str(row.blocked),
                str(row.other),
            )
        )
    return cells


def usage_csv(rows: Sequence[UsageRow]) -> str:
    """The report as CSV, a header line first.

    .. versionadded:: 0.1
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([name.lower() for name in HEADER])
    for row in rows:
        writer.writerow(
            [
                row.day.isoformat(),
                _shown(row.key),
                row.package or "",
                row.allowed,
                row.blocked,
                row.other,
            ]
        )
    return out.getvalue()


def usage_json(rows: Sequence[UsageRow]) -> str:
    """The report as a JSON list, with each row's counts per errorCode.

    .. versionadded:: 0.1
    """
    return json.dumps(
        [
            {
                "day": row.day.isoformat(),
                "key": row.key,
                "package": row.package,
                "allowed": row.allowed,
                "blocked": row.blocked,
                "other": row.other,
                "errorCodes": row.codes,
            }
            for row in rows
        ],
        indent=2,
    )


#: Days of usage ``show-key`` shows, today included.
RECENT_DAYS = 7


def recent_usage(engine: Engine, models: Models, key: str) -> list[str]:
    """``show-key``'s lines about the key's last :data:`RECENT_DAYS` days.

    .. versionadded:: 0.1
    """
    since = today() - dt.timedelta(days=RECENT_DAYS - 1)
    try:
        rows = read_usage(engine, models, key=key, since=since)
    except SQLAlchemyError as exc:
        return [
            f"{'usage:':<14}unknown: {models.Usage.__tablename__} cannot be read"
            f" ({type(exc).__name__}); run 'flask basic-gate init-db' or migration 0003"
        ]
    if not rows:
        return [f"{'usage:':<14}none in the last {RECENT_DAYS} days"]
    lines = [f"{'usage:':<14}last {RECENT_DAYS} days (UTC)"]
    for row in rows:
        lines.append(
            f"  {row.day.isoformat()}  allowed {row.allowed}, blocked {row.blocked},"
            f" other {row.other}"
        )
    return lines

"""The key store's hot read path: one prebuilt statement, kept connections.

Reads take one prebuilt SQLAlchemy Core statement that touches one indexed
key row, its package and its secrets, on a pooled DBAPI connection; no ORM
session is made on the request path. A few pooled connections
(``BASIC_GATE_LOOKUP_CONNECTIONS``) stay checked out between lookups, in
autocommit, so a lookup skips the pool's checkout and rollback. A forked
child never touches its parent's connections.

Every lookup is bounded by ``BASIC_GATE_STORE_TIMEOUT``, with the bounds of
:mod:`flask_basic_gate.store.timeouts` (connect timeouts, a statement bound
on the kept connections, the watchdog). After a failure the store backs
off: requests are refused at once for a short, growing interval, then one
request probes.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from typing import Any, Callable, Optional, cast

from sqlalchemy import Engine, bindparam, event, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import PoolProxiedConnection, QueuePool

from ..config import Settings
from ..errors import UNAVAILABLE_RETRY_AFTER, StoreUnavailable
from ..models import Models
from ..records import KeyRecord, SecretRecord, effective_plan
from .timeouts import bound_connects, bound_statements, cutter, unwatch, watch

__all__ = ["MAX_KEY_LENGTH", "KeyLookup"]

logger = logging.getLogger("flask_basic_gate")

#: Longest key the tables hold; a longer one cannot exist, so it is never queried.
MAX_KEY_LENGTH = 255

#: Back-off after a failed lookup: the next request may probe at once (a
#: passing glitch costs one 503), then the interval starts here and doubles
#: after each failed probe up to the last. Short, so service returns within
#: about a second of the database.
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 1.0
#: Seconds between the one-line summaries logged during an outage.
SUMMARY_INTERVAL = 5.0


def _posix(when: Optional[dt.datetime]) -> Optional[float]:
    if when is None:
        return None
    return when.replace(tzinfo=dt.timezone.utc).timestamp()


class KeyLookup:
    """The read path of one app's key store: :meth:`lookup` and its connections.

    :param models: the model classes from :func:`~flask_basic_gate.models.get_models`.
    :param engine: the engine of the bind holding the tables.
    :param settings: the gate's frozen settings.

    .. versionadded:: 0.1
    """

    def __init__(self, models: Models, engine: Engine, settings: Settings) -> None:
        self.models = models
        self.engine = engine
        self.settings = settings
        key_t = models.PackageKey.__table__
        package_t = models.Package.__table__
        secret_t = models.KeySecret.__table__
        self._lookup = (
            select(
                key_t.c.id,
                key_t.c.key,
                package_t.c.name,
                key_t.c.status,
                key_t.c.not_before,
                key_t.c.expires_at,
                key_t.c.owner_name,
                key_t.c.owner_email,
                secret_t.c.id,
                secret_t.c.method,
                secret_t.c.value,
                secret_t.c.expires_at,
                package_t.c.qps,
                package_t.c.quota,
                package_t.c.quota_period,
                key_t.c.qps,
                key_t.c.quota,
                key_t.c.qps_exempt,
                key_t.c.quota_exempt,
            )
            .select_from(
                key_t.join(package_t, package_t.c.id == key_t.c.package_id).outerjoin(
                    secret_t, secret_t.c.key_id == key_t.c.id
                )
            )
            .where(key_t.c.key == bindparam("key"))
        )
        self._prepared: Optional[tuple[str, bool, list[Any], type[Exception]]] = None
        self._timeout = settings.store_timeout
        # Connections kept checked out between lookups. They go back to the
        # pool when the engine is disposed or the store is collected; a
        # forked child never touches its parent's (see _forget_after_fork).
        self._held: deque[PoolProxiedConnection] = deque()
        # Only a QueuePool hands each connection to one user at a time.
        # NullPool means "keep nothing open"; StaticPool and
        # SingletonThreadPool share a connection with the app's own sessions.
        self._can_hold = isinstance(engine.pool, QueuePool)
        dialect = engine.dialect
        self._mysql = dialect.name in ("mysql", "mariadb")
        #: The outage in progress, or ``None`` while the store answers.
        self._outage: Optional[_Outage] = None
        self._outage_lock = threading.Lock()
        weakref.finalize(self, _release_all, self._held, dialect)
        event.listen(engine, "engine_disposed", _on_dispose(self._held))
        bound_connects(engine, self._timeout)
        _LOOKUPS.add(self)

    # -- reading ---------------------------------------------------------

    def lookup(self, key: str) -> Optional[KeyRecord]:
        """The key and its secrets, or ``None`` when there is no such key.

        Takes at most ``BASIC_GATE_STORE_TIMEOUT`` seconds (plus the
        watchdog's tick). After a failure, lookups are refused at once for a
        short, growing interval, then one lookup probes the database.

        :raises StoreUnavailable: when the database cannot be read in time,
            or the store is backing off after a failure; its
            ``retry_after`` is the 503's ``Retry-After``.
        """
        if not key or len(key) > MAX_KEY_LENGTH or "\x00" in key:
            # Cannot be stored, and PostgreSQL rejects NUL in a query.
            return None
        outage = self._outage
        if outage is not None:
            rows = self._probe(outage, key)
        else:
            started = time.monotonic()
            try:
                rows = self._fetch(key, started + self._timeout)
            except StoreUnavailable as exc:
                self._failed(exc, started)
                raise
        # MySQL and MariaDB ignore trailing spaces even under a binary
        # collation; only an exact match counts.
        rows = [row for row in rows if row[1] == key]
        if not rows:
            return None
        first = rows[0]
        secrets = tuple(
            SecretRecord(row[8], row[9], row[10], _posix(row[11]))
            for row in rows
            if row[8] is not None
        )
        return KeyRecord(
            id=first[0],
            key=first[1],
            package=first[2],
            status=first[3],
            not_before=_posix(first[4]),
            expires=_posix(first[5]),
            owner_name=first[6],
            owner_email=first[7],
            secrets=secrets,
            plan=effective_plan(*first[12:19]),
        )

    def _fetch(self, key: str, deadline: float, *, retry: bool = True) -> list[Any]:
        # The hot path runs the prebuilt statement, compiled once for this
        # dialect, on a DBAPI connection from the pool: the same SQL as
        # Connection.execute, without its per-call compilation cache lookup,
        # events and result wrapping. Result processors (SQLite keeps
        # datetimes as text) come from the column types.
        prepared = self._prepared or self._prepare()
        sql, positional, processors, dbapi_error = prepared
        held = self._held
        try:
            conn = held.pop()
        except IndexError:
            conn = self._checkout(dbapi_error, deadline)
        cut = conn.info.get(_CUT)
        if cut is not None:
            watch(conn, deadline, cut)
        try:
            if self._mysql and not key.isascii() and _unsendable(conn.dbapi_connection, key):
                # The connection's character set cannot carry this key
                # (MySQL's 3-byte utf8 and a character past U+FFFF), so no
                # row can match it; the server would refuse the query.
                raw: Any = ()
            else:
                cursor = conn.cursor()
                try:
                    cursor.execute(sql, (key,) if positional else {"key": key})
                    raw = cursor.fetchall()
                finally:
                    cursor.close()
        except dbapi_error as exc:
            cut_off = cut is not None and not unwatch(conn)
            # A pooled connection the server dropped (a restart, a failover)
            # is thrown away and the lookup tried once on a fresh one, as
            # SQLAlchemy's own Connection would; any other error fails closed,
            # and so does a lookup the watchdog cut off.
            disconnected = not cut_off and self.engine.dialect.is_disconnect(
                cast(Any, exc), conn.dbapi_connection, None
            )
            conn.invalidate(exc)
            conn.close()
            if cut_off:
                raise StoreUnavailable(
                    f"the key store did not answer within {self._timeout:g} s"
                ) from exc
            if not (disconnected and retry and time.monotonic() < deadline):
                raise StoreUnavailable(
                    f"the key store could not be read: {type(exc).__name__}"
                ) from exc
            return self._fetch(key, deadline, retry=False)
        except BaseException:
            if cut is not None and not unwatch(conn):
                conn.invalidate()
                conn.close()
            else:
                _release(conn, self.engine.dialect)
            raise
        if cut is not None and not unwatch(conn):
            # The answer came as the watchdog cut the connection off: the
            # answer stands, the connection does not.
            conn.invalidate()
            conn.close()
        elif conn.info.get(_AUTOCOMMIT) and len(held) < self.settings.lookup_connections:
            held.append(conn)
        else:
            _release(conn, self.engine.dialect)
        return [
            [
                value if fn is None or value is None else fn(value)
                for fn, value in zip(processors, row)
            ]
            for row in raw
        ]

    def _checkout(self, dbapi_error: type[Exception], deadline: float) -> PoolProxiedConnection:
        # A connection that will be held runs in autocommit: between lookups
        # it sits in no transaction, so it holds no locks and no snapshot,
        # and every lookup sees the latest commit (a revoked key at once).
        try:
            conn = self.engine.raw_connection()
        except (SQLAlchemyError, dbapi_error) as exc:
            raise StoreUnavailable(f"the key store is unreachable: {type(exc).__name__}") from exc
        dbapi_connection = conn.dbapi_connection
        cut = cutter(dbapi_connection)
        conn.info[_CUT] = cut
        if self._can_hold and len(self._held) < self.settings.lookup_connections:
            # A connection made by the app may have gone silent in the pool.
            if cut is not None:
                watch(conn, deadline, cut)
            try:
                self.engine.dialect.set_isolation_level(cast(Any, dbapi_connection), "AUTOCOMMIT")
                restore = bound_statements(
                    self.engine.dialect.name, dbapi_connection, self._timeout
                )
            except (SQLAlchemyError, dbapi_error) as exc:
                if cut is not None:
                    unwatch(conn)
                conn.invalidate(exc)
                conn.close()
                raise StoreUnavailable(
                    f"the key store is unreachable: {type(exc).__name__}"
                ) from exc
            if cut is not None and not unwatch(conn):
                conn.invalidate()
                conn.close()
                raise StoreUnavailable(f"the key store did not answer within {self._timeout:g} s")
            conn.info[_AUTOCOMMIT] = True
            if restore is not None:
                conn.info[_RESTORE] = restore
        return conn

    # -- outages ---------------------------------------------------------

    def _probe(self, outage: _Outage, key: str) -> list[Any]:
        # During an outage one request at a time, and none before the back-off
        # interval is over, tries the database; the others are refused
        # without dialling, so a dead or silent server costs them nothing.
        now = time.monotonic()
        with outage.lock:
            if outage.probing or now < outage.retry_at:
                outage.refused += 1
                outage.summarise(now)
                raise StoreUnavailable(
                    "the key store is unavailable (backing off)",
                    retry_after=max(UNAVAILABLE_RETRY_AFTER, math.ceil(outage.retry_at - now)),
                )
            outage.probing = True
        try:
            rows = self._fetch(key, now + self._timeout)
        except StoreUnavailable as exc:
            self._failed(exc, now)
            raise
        finally:
            outage.probing = False
        with self._outage_lock:
            if self._outage is outage:
                self._outage = None
        logger.warning(
            "Key store available again after %.1f s; %d requests were refused meanwhile.",
            time.monotonic() - outage.since,
            outage.refused_total + outage.refused,
        )
        return rows

    def _failed(self, exc: StoreUnavailable, started: float) -> None:
        # Starts or extends the outage, sets the 503's Retry-After and logs:
        # one traceback for the first failure, then a summary now and then.
        now = time.monotonic()
        # A failure that took long (a silent server, a connect timeout) has
        # already cost this worker that long: the next probe waits the
        # longest interval, so a sync worker never runs two in a row and a
        # request queued behind one is answered in time.
        slow = now - started >= BACKOFF_MAX
        with self._outage_lock:
            outage = self._outage
            first = outage is None
            if outage is None:
                outage = self._outage = _Outage(now)
        with outage.lock:
            outage.failures += 1
            outage.refused += 1
            if slow:
                interval = BACKOFF_MAX
            elif outage.failures == 1:
                interval = 0.0
            else:
                interval = min(BACKOFF_FIRST * 2 ** (outage.failures - 2), BACKOFF_MAX)
            outage.retry_at = now + interval
            outage.last_error = str(exc)
            if not first:
                outage.summarise(now)
        exc.retry_after = max(UNAVAILABLE_RETRY_AFTER, math.ceil(interval))
        if first:
            logger.error(
                "Key store unavailable; requests that need it get 503 until it answers"
                " (fail closed).",
                exc_info=exc,
            )

    def release_connections(self) -> None:
        """Give the connections kept for lookups back to the pool.

        The store closes them itself when the engine is disposed; call this
        to free them sooner. The next lookup checks one out again. (A forked
        child needs no call: it drops whatever it inherited.)

        .. versionadded:: 0.1
        """
        _release_all(self._held, self.engine.dialect)

    def _prepare(self) -> tuple[str, bool, list[Any], type[Exception]]:
        dialect = self.engine.dialect
        compiled = self._lookup.compile(dialect=dialect)
        if compiled.positional and list(compiled.positiontup or ()) != ["key"]:
            raise RuntimeError(f"unexpected parameters in the lookup: {compiled.positiontup}")
        processors = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in self._lookup.selected_columns
        ]
        dbapi_error: type[Exception] = dialect.loaded_dbapi.Error
        self._prepared = (compiled.string, bool(compiled.positional), processors, dbapi_error)
        return self._prepared


class _Outage:
    """Back-off and log state of one store while its database fails."""

    def __init__(self, now: float) -> None:
        self.lock = threading.Lock()
        self.since = now
        self.failures = 0
        self.retry_at = now
        self.probing = False
        #: Refused since the last summary, and before it.
        self.refused = 0
        self.refused_total = 0
        self.logged_at = now
        self.last_error = ""

    def summarise(self, now: float) -> None:
        # Called under self.lock: at most one line every SUMMARY_INTERVAL.
        if now - self.logged_at < SUMMARY_INTERVAL:
            return
        logger.warning(
            "Key store still unavailable after %.0f s: %d requests refused in the last %.0f s"
            " (last error: %s).",
            now - self.since,
            self.refused,
            now - self.logged_at,
            self.last_error,
        )
        self.refused_total += self.refused
        self.refused = 0
        self.logged_at = now


def _unsendable(dbapi_connection: Any, key: str) -> bool:
    """Whether a MySQL connection's character set cannot carry ``key``."""
    charset = getattr(dbapi_connection, "charset", None)  # PyMySQL
    if charset is None:
        name = getattr(dbapi_connection, "character_set_name", None)  # mysqlclient
        charset = name() if callable(name) else None
    if not isinstance(charset, str) or charset.startswith("utf8mb4"):
        return False
    if charset in ("utf8", "utf8mb3"):
        return any(ord(char) > 0xFFFF for char in key)
    encoding = getattr(dbapi_connection, "encoding", None) or charset
    try:
        key.encode(encoding)
    except UnicodeEncodeError:
        return True
    except LookupError:
        return False  # a character set Python does not know: let the server judge
    return False


#: Marks (in ``PoolProxiedConnection.info``) a connection the store switched
#: to autocommit; its isolation level is reset before it goes back.
_AUTOCOMMIT = "flask_basic_gate.autocommit"
#: The SQL that undoes the store's statement bound on a kept connection.
_RESTORE = "flask_basic_gate.restore"
#: How the watchdog cuts the connection off (see timeouts.cutter).
_CUT = "flask_basic_gate.cut"

#: Every lookup path, to drop held connections in a forked child.
_LOOKUPS: weakref.WeakSet[KeyLookup] = weakref.WeakSet()
#: What a forked child inherited: the held connections and the engines'
#: pools. Never used and never given back, since either would talk over
#: the parent's socket or file handle; kept referenced so that garbage
#: collection does not close them while the child runs.
_INHERITED: list[Any] = []


def _release(conn: PoolProxiedConnection, dialect: Any) -> None:
    try:
        restore = conn.info.pop(_RESTORE, None)
        if restore is not None:
            cursor = cast(Any, conn.dbapi_connection).cursor()
            try:
                cursor.execute(restore)
            finally:
                cursor.close()
        if conn.info.pop(_AUTOCOMMIT, False):
            dialect.reset_isolation_level(conn.dbapi_connection)
    except Exception:  # whatever the driver raises: close it rather than reuse it
        conn.invalidate()
    finally:
        conn.close()


def _drain(held: deque[PoolProxiedConnection]) -> Iterator[PoolProxiedConnection]:
    # pop() until empty: safe while another thread also takes from the deque.
    while True:
        try:
            yield held.pop()
        except IndexError:
            return


def _release_all(held: deque[PoolProxiedConnection], dialect: Any) -> None:
    for conn in _drain(held):
        _release(conn, dialect)


def _on_dispose(held: deque[PoolProxiedConnection]) -> Callable[[Engine], None]:
    # Engine.dispose() has closed the old pool by now, so a connection given
    # back to it would never be closed: close each one here instead. The
    # listener holds the deque, not the store, so the engine does not keep
    # the store alive.
    def close_held(engine: Engine) -> None:
        for conn in _drain(held):
            conn.invalidate()
            conn.close()

    return close_held


def _forget_after_fork() -> None:
    # Whatever the parent did (gunicorn --preload, an app factory that
    # queried), the child starts with no connection of its parent: the held
    # ones are set aside first (so the dispose listener has nothing to
    # close over the parent's socket), then each engine gets a fresh pool
    # with the parent's left untouched, as SQLAlchemy documents for fork.
    engines: dict[int, Engine] = {}
    for store in list(_LOOKUPS):
        _INHERITED.extend(store._held)
        store._held.clear()
        store._outage = None
        store._outage_lock = threading.Lock()
        engines[id(store.engine)] = store.engine
    for engine in engines.values():
        _INHERITED.append(engine.pool)
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)

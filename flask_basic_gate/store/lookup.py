"""The key store's hot read path: one prebuilt statement, kept connections.

Reads take one prebuilt SQLAlchemy Core statement that touches one indexed
key row, its package and its secrets, on a pooled DBAPI connection; no ORM
session is made on the request path. A few pooled connections
(``BASIC_GATE_LOOKUP_CONNECTIONS``) stay checked out between lookups, in
autocommit, so a lookup skips the pool's checkout and rollback. A forked
child never touches its parent's connections.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import weakref
from collections import deque
from collections.abc import Iterator
from typing import Any, Callable, Optional, cast

from sqlalchemy import Engine, bindparam, event, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import PoolProxiedConnection, QueuePool

from ..config import Settings
from ..errors import StoreUnavailable
from ..models import Models
from ..records import KeyRecord, SecretRecord, effective_plan

__all__ = ["MAX_KEY_LENGTH", "KeyLookup"]

logger = logging.getLogger("flask_basic_gate")

#: Longest key the tables hold; a longer one cannot exist, so it is never queried.
MAX_KEY_LENGTH = 255


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
        # Connections kept checked out between lookups. They go back to the
        # pool when the engine is disposed or the store is collected; a
        # forked child never touches its parent's (see _forget_after_fork).
        self._held: deque[PoolProxiedConnection] = deque()
        # Only a QueuePool hands each connection to one user at a time.
        # NullPool means "keep nothing open"; StaticPool and
        # SingletonThreadPool share a connection with the app's own sessions.
        self._can_hold = isinstance(engine.pool, QueuePool)
        dialect = engine.dialect
        weakref.finalize(self, _release_all, self._held, dialect)
        event.listen(engine, "engine_disposed", _on_dispose(self._held))
        _LOOKUPS.add(self)

    # -- reading ---------------------------------------------------------

    def lookup(self, key: str) -> Optional[KeyRecord]:
        """The key and its secrets, or ``None`` when there is no such key.

        :raises StoreUnavailable: when the database cannot be read.
        """
        if not key or len(key) > MAX_KEY_LENGTH or "\x00" in key:
            # Cannot be stored, and PostgreSQL rejects NUL in a query.
            return None
        try:
            rows = self._fetch(key)
        except StoreUnavailable:
            logger.exception("Key store unavailable; refusing the request (fail closed).")
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

    def _fetch(self, key: str, *, retry: bool = True) -> list[Any]:
        # The hot path runs the prebuilt statement, compiled once for this
        # dialect, on a DBAPI connection from the pool: a third of the cost of
        # Connection.execute, and the same SQL. Result processors (SQLite
        # keeps datetimes as text) come from the column types.
        prepared = self._prepared or self._prepare()
        sql, positional, processors, dbapi_error = prepared
        held = self._held
        try:
            conn = held.pop()
        except IndexError:
            conn = self._checkout(dbapi_error)
        disconnected = False
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(sql, (key,) if positional else {"key": key})
                raw = cursor.fetchall()
            finally:
                cursor.close()
        except dbapi_error as exc:
            # A pooled connection the server dropped (a restart, a failover)
            # is thrown away and the lookup tried once on a fresh one, as
            # SQLAlchemy's own Connection would; any other error fails closed.
            disconnected = self.engine.dialect.is_disconnect(
                cast(Any, exc), conn.dbapi_connection, None
            )
            conn.invalidate(exc)
            conn.close()
            if not (disconnected and retry):
                raise StoreUnavailable(
                    f"the key store could not be read: {type(exc).__name__}"
                ) from exc
            return self._fetch(key, retry=False)
        except BaseException:
            _release(conn, self.engine.dialect)
            raise
        if conn.info.get(_AUTOCOMMIT) and len(held) < self.settings.lookup_connections:
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

    def _checkout(self, dbapi_error: type[Exception]) -> PoolProxiedConnection:
        # A connection that will be held runs in autocommit: between lookups
        # it sits in no transaction, so it holds no locks and no snapshot,
        # and every lookup sees the latest commit (a revoked key at once).
        try:
            conn = self.engine.raw_connection()
        except (SQLAlchemyError, dbapi_error) as exc:
            raise StoreUnavailable(f"the key store is unreachable: {type(exc).__name__}") from exc
        if self._can_hold and len(self._held) < self.settings.lookup_connections:
            try:
                self.engine.dialect.set_isolation_level(
                    cast(Any, conn.dbapi_connection), "AUTOCOMMIT"
                )
            except (SQLAlchemyError, dbapi_error) as exc:
                conn.invalidate(exc)
                conn.close()
                raise StoreUnavailable(
                    f"the key store is unreachable: {type(exc).__name__}"
                ) from exc
            conn.info[_AUTOCOMMIT] = True
        return conn

    def release_connections(self) -> None:
        """Give the connections kept for lookups back to the pool.

        The store closes them itself when the engine is disposed; call this
        to free them sooner, for example before forking. The next lookup
        checks one out again.

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


#: Marks (in ``PoolProxiedConnection.info``) a connection the store switched
#: to autocommit; its isolation level is reset before it goes back.
_AUTOCOMMIT = "flask_basic_gate.autocommit"

#: Every lookup path, to drop held connections in a forked child.
_LOOKUPS: weakref.WeakSet[KeyLookup] = weakref.WeakSet()
#: Held connections a forked child inherited: never used and never given
#: back, since either would talk over the parent's socket or file handle.
#: Kept referenced so that garbage collection does not give them back
#: while the child runs (as with any pooled connection a child inherits,
#: SQLAlchemy may still reset them when the child exits).
_INHERITED: list[PoolProxiedConnection] = []


def _release(conn: PoolProxiedConnection, dialect: Any) -> None:
    try:
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
    for store in list(_LOOKUPS):
        _INHERITED.extend(store._held)
        store._held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)

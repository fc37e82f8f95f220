"""How the key store bounds a lookup by ``BASIC_GATE_STORE_TIMEOUT``.

Three bounds, each for a way a database can keep a request waiting:

- connecting: :func:`bound_connects` gives the drivers a connect timeout
  when the app set none (they wait for a server forever by default);
- a statement stuck on the server: :func:`bound_statements` sets
  PostgreSQL's ``statement_timeout`` and SQLite's busy timeout on the
  connections the store keeps;
- a server that accepts and then says nothing: one :class:`Watchdog`
  thread per process shuts down the socket of a lookup still waiting at
  its deadline (:func:`watch`, :func:`unwatch`, :func:`cutter`).

The read path (:mod:`flask_basic_gate.store.lookup`) decides when each
applies; nothing here reads the gate's tables. The app's own queries are
not bound: the connect timeout is the only setting they share, and only
when the app gave none.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
import weakref
from typing import Any, Callable, Optional, cast

from sqlalchemy import Engine, event

__all__ = [
    "WATCHDOG_TICK",
    "Watchdog",
    "bound_connects",
    "bound_statements",
    "cutter",
    "unwatch",
    "watch",
]

logger = logging.getLogger("flask_basic_gate")

#: How often the watchdog looks at the lookups in flight, in seconds: a
#: silent lookup ends at most this long after its deadline.
WATCHDOG_TICK = 0.1


class Watchdog:
    """One thread that cuts off lookups still waiting at their deadline.

    A lookup registers its connection with a deadline and a function that
    cuts the connection (shuts its socket down, so the driver's blocked
    read fails at once): one dict write, no timer per lookup. The thread
    starts with the first lookup that needs it.

    .. versionadded:: 0.1
    """

    def __init__(self) -> None:
        #: connection -> (deadline, cut): the lookups in flight.
        self.waiting: dict[Any, tuple[float, Callable[[], None]]] = {}
        # Held while cutting: a lookup that finds itself cut off waits for
        # the cut to end before closing its connection, so the socket's
        # number cannot be reused by another in between.
        self.cutting = threading.Lock()
        self.starting = threading.Lock()
        self.thread: Optional[threading.Thread] = None

    def start(self) -> None:
        """Start the thread, unless it runs already."""
        with self.starting:
            if self.thread is None:
                thread = threading.Thread(
                    target=self._run, name="flask-basic-gate-watchdog", daemon=True
                )
                thread.start()
                self.thread = thread

    def watch(self, conn: Any, deadline: float, cut: Callable[[], None]) -> None:
        """Cut ``conn`` off with ``cut`` if it is still registered at
        ``deadline`` (on the :func:`time.monotonic` clock)."""
        if self.thread is None:
            self.start()
        self.waiting[conn] = (deadline, cut)

    def finish(self, conn: Any) -> bool:
        """Unregister; ``False`` when the watchdog cut ``conn`` off first."""
        if self.waiting.pop(conn, None) is not None:
            return True
        with self.cutting:
            return False

    def _run(self) -> None:
        waiting = self.waiting
        while True:
            time.sleep(WATCHDOG_TICK)
            if not waiting:
                continue
            now = time.monotonic()
            for conn, (deadline, cut) in list(waiting.items()):
                if deadline > now:
                    continue
                with self.cutting:
                    if waiting.pop(conn, None) is None:
                        continue  # it finished meanwhile
                    try:
                        cut()
                    except Exception:  # whatever the driver raises; the lookup fails closed anyway
                        logger.debug("Could not cut off a key lookup.", exc_info=True)


#: The process's watchdog; a forked child gets its own (threads do not
#: survive a fork, and the parent's lookups in flight are not the child's).
_watchdog = Watchdog()


def watch(conn: Any, deadline: float, cut: Callable[[], None]) -> None:
    """Have the process's watchdog cut ``conn`` off at ``deadline`` (see
    :meth:`Watchdog.watch`); every call is ended by :func:`unwatch`.

    .. versionadded:: 0.1
    """
    _watchdog.watch(conn, deadline, cut)


def unwatch(conn: Any) -> bool:
    """End :func:`watch`; ``False`` when the watchdog cut ``conn`` off first,
    and then the connection must not be used again.

    .. versionadded:: 0.1
    """
    return _watchdog.finish(conn)


def _new_watchdog_after_fork() -> None:
    global _watchdog
    _watchdog = Watchdog()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_watchdog_after_fork)


def _shutdown_fd(fd: int) -> None:
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return  # already closed
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected any more: nothing left to cut
    finally:
        sock.close()


def _shutdown_socket(sock: socket.socket) -> None:
    # OSError: closed or not connected, nothing left to cut.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def cutter(dbapi_connection: Any) -> Optional[Callable[[], None]]:
    """How the watchdog cuts a driver's connection off, or ``None`` when it cannot.

    .. versionadded:: 0.1
    """
    pgconn = getattr(dbapi_connection, "pgconn", None)  # psycopg 3
    if pgconn is not None:
        fd = pgconn.socket
        return lambda: _shutdown_fd(fd)
    sock = getattr(dbapi_connection, "_sock", None)  # PyMySQL
    if isinstance(sock, socket.socket):
        return lambda: _shutdown_socket(sock)
    interrupt = getattr(dbapi_connection, "interrupt", None)  # sqlite3
    if callable(interrupt):
        return cast(Callable[[], None], interrupt)
    fileno = getattr(dbapi_connection, "fileno", None)  # psycopg2
    if callable(fileno):
        fd = fileno()
        return lambda: _shutdown_fd(fd)
    return None


def bound_statements(dialect_name: str, dbapi_connection: Any, timeout: float) -> Optional[str]:
    """Bound a kept connection's statements on the server by ``timeout``
    seconds; return the SQL that undoes it (``None``: nothing was set).

    .. versionadded:: 0.1
    """
    ms = max(1, int(timeout * 1000))
    cursor = dbapi_connection.cursor()
    try:
        if dialect_name == "postgresql":
            # The server cancels a lookup stuck behind a lock (a migration's
            # ACCESS EXCLUSIVE) and the connection stays usable.
            cursor.execute(f"SET statement_timeout = {ms}")
            return "RESET statement_timeout"
        if dialect_name == "sqlite":
            # A writer's exclusive lock makes readers wait; the default is
            # 5 s and interrupt() does not end the wait.
            cursor.execute("PRAGMA busy_timeout")
            (before,) = cursor.fetchone()
            cursor.execute(f"PRAGMA busy_timeout = {ms}")
            return f"PRAGMA busy_timeout = {int(before)}"
        return None
    finally:
        cursor.close()


#: Engines whose connects the store already bounds.
_BOUND: weakref.WeakSet[Engine] = weakref.WeakSet()
#: Marks (in a connection record's ``info``) a PyMySQL connection whose read
#: timeout was set only to bound the handshake.
_HANDSHAKE = "flask_basic_gate.handshake"


def bound_connects(engine: Engine, timeout: float) -> None:
    """Give every connect of ``engine`` a timeout of ``timeout`` seconds,
    unless the app set its own; once per engine.

    .. versionadded:: 0.1
    """
    # The drivers wait for a server forever by default (PyMySQL's handshake
    # after the TCP connect, psycopg without connect_timeout).
    if engine in _BOUND:
        return
    _BOUND.add(engine)
    driver = engine.dialect.driver
    owned: list[bool] = []

    def do_connect(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        if driver in ("psycopg", "psycopg2"):
            if "connect_timeout" not in cparams and not any(
                "connect_timeout" in str(a) for a in cargs
            ):
                # libpq counts whole seconds and never less than 2.
                cparams["connect_timeout"] = max(2, math.ceil(timeout))
        elif driver == "pymysql":
            cparams.setdefault("connect_timeout", timeout)
            # SQLAlchemy 2.0.0 hands every connect the same dict, so what
            # was set here once is found again: remember that it is ours.
            if "read_timeout" not in cparams or owned:
                cparams["read_timeout"] = timeout
                owned[:] = [True]
                record.info[_HANDSHAKE] = True
        elif driver == "mysqldb":
            cparams.setdefault("connect_timeout", max(1, math.ceil(timeout)))

    def connected(dbapi_connection: Any, record: Any) -> None:
        # The read timeout bounded the handshake only: the app's own queries
        # keep PyMySQL's default (none); lookups have the watchdog.
        if record.info.pop(_HANDSHAKE, False):
            dbapi_connection._read_timeout = None

    event.listen(engine, "do_connect", do_connect)
    event.listen(engine, "connect", connected)

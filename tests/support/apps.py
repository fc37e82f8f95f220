"""Flask apps with a gate on a database, the keys in them, and what they run.

:func:`gate_app` is the one way an app gets Flask-SQLAlchemy and a gate, for
the tests' :class:`AppFactory` and for ``bench/``; the factory adds what
tests want (``TESTING``, the cheap :data:`FAST_KDF`, the routes of
:func:`add_routes`, fresh tables, and closing it all after).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Optional

from flask import Flask, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import create_engine, event, text
from sqlalchemy.pool import NullPool

from flask_basic_gate import AdminError, BasicGate, current_key, get_current_key
from flask_basic_gate.store import KeyStore, NewSecret

#: A cheap KDF for person-chosen secrets in tests (scrypt takes ~0.1 s each).
FAST_KDF = "pbkdf2:sha256:1000"
#: The gate's tables, those that point at another first.
GATE_TABLES = ("basic_gate_usage", "basic_gate_secret", "basic_gate_key", "basic_gate_package")


def gate_app(
    url: str,
    config: Optional[Mapping[str, Any]] = None,
    *,
    name: str = __name__,
    gate: Optional[BasicGate] = None,
    **gate_args: Any,
) -> tuple[Flask, BasicGate]:
    """A Flask app named ``name`` with Flask-SQLAlchemy on the database
    ``url`` and a gate initialised on it; no route, no table made.

    :param config: more settings (applied after the URL, so they may replace it).
    :param gate: the gate to initialise (given the app's ``db`` if it has
        none); by default a new ``BasicGate(db=db, **gate_args)``.
    """
    app = Flask(name)
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    app.config.update(config or {})
    db = SQLAlchemy()
    db.init_app(app)
    gate = gate if gate is not None else BasicGate(db=db, **gate_args)
    if gate.db is None:
        gate.db = db
    gate.init_app(app)
    return app, gate


def add_routes(app: Flask, gate: BasicGate) -> None:
    """The routes the gate tests call."""

    @app.get("/thing")
    def thing() -> Any:
        key = get_current_key()
        assert key is not None
        return jsonify(
            key=current_key.key,
            package=current_key.package,
            owner=key.owner_email,
            authorization=request.headers.get("Authorization"),
        )

    @app.get("/open")
    @gate.exempt
    def open_route() -> Any:
        return jsonify(open=True, key=get_current_key() is not None)

    @app.get("/optional")
    @gate.required(optional=True)
    def optional_route() -> Any:
        key = get_current_key()
        return jsonify(key=None if key is None else key.key)

    @app.get("/decorated")
    @gate.required
    def decorated() -> Any:
        return jsonify(key=current_key.key)

    @app.get("/async")
    @gate.required
    async def async_route() -> Any:
        return jsonify(key=current_key.key)


class AppFactory:
    """Builds apps with a gate on a database, and drops the tables after."""

    def __init__(self, tmp_path: Any) -> None:
        self.tmp_path = tmp_path
        self._made: list[tuple[Flask, SQLAlchemy]] = []

    def __call__(
        self,
        config: Optional[dict[str, Any]] = None,
        *,
        url: Optional[str] = None,
        gate: Optional[BasicGate] = None,
        routes: bool = True,
        create: bool = True,
        **gate_args: Any,
    ) -> Flask:
        app, gate = gate_app(
            url or f"sqlite:///{self.tmp_path / 'gate.sqlite'}",
            {"TESTING": True, "BASIC_GATE_HASH_METHOD": FAST_KDF, **(config or {})},
            gate=gate,
            **gate_args,
        )
        db = app.extensions["sqlalchemy"]
        app.extensions["test_gate"] = gate
        if routes:
            add_routes(app, gate)
        if create:
            with app.app_context():
                db.drop_all()
                db.create_all()
        self._made.append((app, db))
        return app

    def close(self) -> None:
        for app, db in self._made:
            # The usage counts are written while the tables exist, and the
            # app's counter is written no more.
            close_telemetry(app)
            # Listener threads stop, and calls held from Redis go back.
            state = BasicGate.state(app)
            state.revocation.close()
            state.policy.plans.close()
            with app.app_context():
                try:
                    db.drop_all()
                finally:
                    db.session.remove()
                    for engine in db.engines.values():
                        engine.dispose()


def gate_of(app: Flask) -> BasicGate:
    """The gate the factory put on ``app``."""
    gate: BasicGate = app.extensions["test_gate"]
    return gate


def store_of(app: Flask) -> KeyStore:
    """The key store of the gate on ``app``."""
    return BasicGate.state(app).store


def provision(
    app: Flask,
    key: Optional[str] = "criticalmix",
    secret: Optional[str] = "topsecret",
    *,
    package: str = "members",
    **kw: Any,
) -> NewSecret:
    """Package ``package`` (made once) and one key in it.

    :param key: the key's name; ``None`` generates one.
    :param secret: a person-chosen secret (hashed with the KDF); ``None``
        generates one (stored as SHA-256).
    :return: the key and its secret.
    """
    with app.app_context():
        store = BasicGate.state().store
        with contextlib.suppress(AdminError):
            store.create_package(package)
        return store.create_key(package, key=key, secret=secret, **kw)


def drop_tables(url: str) -> None:
    """Drop the gate's tables from the database ``url`` (those that exist),
    on a connection of its own, closed after."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            for table in GATE_TABLES:
                conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    finally:
        engine.dispose()


def close_telemetry(app: Flask) -> None:
    """Close the listeners of the gate on ``app``: its usage counts are
    written now and never again (the app's tables may go next)."""
    state = app.extensions.get("basic_gate")
    if state is not None:
        state.telemetry.close()


def dispose(app: Flask) -> None:
    """Close the gate's listeners and the database connections of ``app``'s
    Flask-SQLAlchemy."""
    close_telemetry(app)
    with app.app_context():
        for engine in app.extensions["sqlalchemy"].engines.values():
            engine.dispose()


def call_wsgi(
    app: Callable[..., Iterable[bytes]], environ: dict[str, Any]
) -> tuple[str, list[tuple[str, str]], bytes]:
    """Call the WSGI ``app`` on ``environ`` the way a WSGI server does.

    :return: the status line (``"no status"`` if no response was started),
        the headers and the whole body, closed after.
    """
    started: list[Any] = ["no status", []]

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [status, headers]
        return lambda data: None

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return started[0], list(started[1]), body


class QueryCounter:
    """Counts the key lookups SQLite runs (its trace callback sees every statement).

    Stops counting on :meth:`close`, or on leaving a ``with`` block.
    """

    def __init__(self, app: Flask) -> None:
        self.count = 0
        self.engine = BasicGate.state(app).store.engine
        # Connections made from now on are traced; drop the ones made so far.
        self.engine.dispose()
        event.listen(self.engine, "connect", self._connected)

    def _connected(self, dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.set_trace_callback(self._traced)

    def _traced(self, sql: str) -> None:
        if sql.startswith("SELECT basic_gate_key.id"):
            self.count += 1

    def close(self) -> None:
        event.remove(self.engine, "connect", self._connected)

    def __enter__(self) -> QueryCounter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

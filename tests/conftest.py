"""Shared fixtures: an app factory over real databases.

``BASIC_GATE_TEST_POSTGRESQL_URL`` and ``BASIC_GATE_TEST_MARIADB_URL`` name
the servers to test against; without them those backends are skipped with
the reason, except under ``CI=true`` where a missing URL fails the run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, Callable, Optional

import pytest
from flask import Flask, jsonify
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event

from flask_basic_gate import AdminError, BasicGate, current_key, get_current_key
from flask_basic_gate.testing import basic_auth_headers

from .serverutil import REDIS_SERVER, RedisServer

#: A cheap KDF for person-chosen secrets in tests (scrypt takes ~0.1 s each).
FAST_KDF = "pbkdf2:sha256:1000"

BACKEND_ENV = {
    "postgresql": "BASIC_GATE_TEST_POSTGRESQL_URL",
    "mariadb": "BASIC_GATE_TEST_MARIADB_URL",
    "redis": "BASIC_GATE_TEST_REDIS_URL",
}


def backend_url(name: str, tmp_path: Any) -> str:
    """The database URL of a backend, skipping (or failing in CI) when unset."""
    if name == "sqlite":
        return f"sqlite:///{tmp_path / 'gate.sqlite'}"
    variable = BACKEND_ENV[name]
    url = os.environ.get(variable)
    if not url:
        reason = f"{variable} is not set: set it to a {name} URL to run these tests"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must not skip them)")
        pytest.skip(reason)
    return url


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """Each backend in turn."""
    return backend_url(request.param, tmp_path)


@pytest.fixture
def redis_url(tmp_path: Any) -> str:
    """The shared Redis of the test run (``BASIC_GATE_TEST_REDIS_URL``)."""
    return backend_url("redis", tmp_path)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis server of the test's own, on a free port, that it may stop."""
    if REDIS_SERVER is None:
        reason = "redis-server is not on PATH"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must not skip these tests)")
        pytest.skip(reason)
    server = RedisServer()
    server.start()
    yield server
    server.stop()


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
            authorization=_authorization(),
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


def _authorization() -> Optional[str]:
    from flask import request

    return request.headers.get("Authorization")


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
        app = Flask(__name__)
        app.config.update(
            TESTING=True,
            SQLALCHEMY_DATABASE_URI=url or f"sqlite:///{self.tmp_path / 'gate.sqlite'}",
            BASIC_GATE_HASH_METHOD=FAST_KDF,
        )
        app.config.update(config or {})
        db = SQLAlchemy()
        db.init_app(app)
        gate = gate if gate is not None else BasicGate(db=db, **gate_args)
        if gate.db is None:
            gate.db = db
        gate.init_app(app)
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
            with app.app_context():
                try:
                    db.drop_all()
                finally:
                    db.session.remove()
                    for engine in db.engines.values():
                        engine.dispose()


@pytest.fixture
def app_factory(tmp_path: Any) -> Iterator[AppFactory]:
    """``app_factory(config=..., url=...)`` makes an app with a gate."""
    factory = AppFactory(tmp_path)
    yield factory
    factory.close()


@pytest.fixture
def app(app_factory: AppFactory) -> Flask:
    """An app on SQLite with package ``members`` and key ``criticalmix``."""
    app = app_factory()
    provision(app)
    return app


def gate_of(app: Flask) -> BasicGate:
    """The gate the factory put on ``app``."""
    gate: BasicGate = app.extensions["test_gate"]
    return gate


def provision(app: Flask, key: str = "criticalmix", secret: str = "topsecret", **kw: Any) -> None:
    """Package ``members`` (made once) and one key in it."""
    with app.app_context():
        store = BasicGate.state().store
        with contextlib.suppress(AdminError):
            store.create_package("members")
        store.create_key("members", key=key, secret=secret, **kw)


@pytest.fixture
def auth() -> Callable[..., dict[str, str]]:
    """``auth(key, secret)``: headers with Basic credentials."""
    return basic_auth_headers


class QueryCounter:
    """Counts the key lookups SQLite runs (its trace callback sees every statement)."""

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

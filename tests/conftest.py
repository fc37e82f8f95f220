"""Shared fixtures: apps over real databases, Redis, the example app.

The helpers behind them are in :mod:`tests.support`, which test modules
import from; this file holds fixtures only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from flask import Flask

from flask_basic_gate.testing import basic_auth_headers
from flask_basic_gate.usage import counters

from .support.apps import AppFactory, dispose, provision
from .support.backends import backend_url, missing
from .support.example import MakeApp, example_app_at
from .support.servers import REDIS_SERVER, RedisServer, redis_server


@pytest.fixture(autouse=True)
def usage_counters_end_with_their_test() -> Iterator[None]:
    """No app's usage counter outlives its test: the flusher thread of the
    test process would write it later, into tables another test may have
    dropped (the factory's apps write theirs before their tables go)."""
    before = set(counters())
    yield
    for counter in counters():
        if counter not in before:
            counter.closed = True


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
        missing("redis-server is not on PATH")
    with redis_server() as server:
        yield server


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


@pytest.fixture
def auth() -> Callable[..., dict[str, str]]:
    """``auth(key, secret)``: headers with Basic credentials."""
    return basic_auth_headers


@pytest.fixture
def no_flask_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings from the environment of the test run must not leak in
    (``pytestmark = pytest.mark.usefixtures("no_flask_environment")``)."""
    for name in list(os.environ):
        if name.startswith("FLASK_"):
            monkeypatch.delenv(name)


@pytest.fixture
def make_example_app(tmp_path: Path) -> Iterator[MakeApp]:
    """``make_example_app(**kw)``: :func:`~tests.support.example.example_app_at`
    ``tmp_path``; each app's connections are closed after the test."""
    made: list[Flask] = []

    def make(**kw: Any) -> Flask:
        app = example_app_at(tmp_path, **kw)
        made.append(app)
        return app

    yield make
    for app in made:
        dispose(app)

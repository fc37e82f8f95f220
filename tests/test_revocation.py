"""Revocation across processes on Redis, and what happens when Redis fails.

Two apps on one database stand for two processes: each has its own gate
state (cache, throttle, listener), as two workers would. The shared Redis
of the run is ``BASIC_GATE_TEST_REDIS_URL``; the fault tests start a
``redis-server`` of their own on a free port and stop it by its PID.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from flask import Flask

from flask_basic_gate import BasicGate
from flask_basic_gate.backends import redis_client
from flask_basic_gate.revocation import TRUST_WINDOW, RedisRevocation, Revocation
from flask_basic_gate.testing import basic_auth_headers

from .support.apps import AppFactory, provision
from .support.servers import RedisServer

#: Long enough for a message or a reconnection on a loaded machine, far
#: shorter than the cache's 30 s: an answer that changes before it came
#: through Redis, not through expiry.
DEADLINE = 5.0


class Pair:
    """Two apps on one database and one Redis: two processes."""

    def __init__(self, factory: AppFactory, redis_url: str, **config: Any) -> None:
        settings = {"BASIC_GATE_REDIS_URL": redis_url, **config}
        self.here = factory(settings)
        self.there = factory(settings, create=False)
        self.key = f"k-{uuid.uuid4().hex[:12]}"
        provision(self.here, key=self.key, secret="topsecret")

    def close(self) -> None:
        for app in (self.here, self.there):
            BasicGate.state(app).revocation.close()


@pytest.fixture
def pair_factory(app_factory: AppFactory) -> Iterator[Callable[..., Pair]]:
    made: list[Pair] = []

    def make(redis_url: str, **config: Any) -> Pair:
        pair = Pair(app_factory, redis_url, **config)
        made.append(pair)
        return pair

    yield make
    for pair in made:
        pair.close()


def wait_until(condition: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline:g} s: {what}")
        time.sleep(0.01)


def trusted(app: Flask) -> bool:
    return time.time() < BasicGate.state(app).revocation.trusted_until


def get(app: Flask, key: str, secret: str = "topsecret") -> tuple[int, Any]:
    response = app.test_client().get("/thing", headers=basic_auth_headers(key, secret))
    return response.status_code, response.get_json()


def serve_cached(app: Flask, key: str) -> None:
    """Start the app's listener, wait until it trusts its cache, and cache a success."""
    assert get(app, key)[0] == 200
    wait_until(lambda: trusted(app), "the listener subscribed")
    assert get(app, key)[0] == 200
    assert len(BasicGate.state(app).cache) == 1


def test_without_redis_revocation_is_local_and_always_trusted(app: Flask) -> None:
    state = BasicGate.state(app)
    assert type(state.revocation) is Revocation
    assert state.revocation.trusted_until == float("inf")
    assert get(app, "criticalmix")[0] == 200


def test_key_disabled_in_another_process_is_refused_here(
    pair_factory: Callable[..., Pair], redis_url: str
) -> None:
    pair = pair_factory(redis_url)
    serve_cached(pair.here, pair.key)
    with pair.there.app_context():
        BasicGate.state().store.disable_key(pair.key)
    wait_until(lambda: len(BasicGate.state(pair.here).cache) == 0, "the key evicted here")
    status, body = get(pair.here, pair.key)
    assert (status, body["errorCode"]) == (403, "key-inactive")


def test_secret_rotated_in_another_process_stops_here(
    pair_factory: Callable[..., Pair], redis_url: str
) -> None:
    pair = pair_factory(redis_url)
    serve_cached(pair.here, pair.key)
    with pair.there.app_context():
        new = BasicGate.state().store.rotate_secret(pair.key)
    wait_until(lambda: len(BasicGate.state(pair.here).cache) == 0, "the key evicted here")
    status, body = get(pair.here, pair.key)
    assert (status, body["errorCode"]) == (403, "invalid-credentials")
    assert get(pair.here, pair.key, new.secret)[0] == 200


def test_pair_throttled_in_another_process_is_refused_from_the_cache_here(
    pair_factory: Callable[..., Pair], redis_url: str
) -> None:
    pair = pair_factory(redis_url, BASIC_GATE_FAILURE_LIMIT="2/minute")
    serve_cached(pair.here, pair.key)
    statuses = [get(pair.there, pair.key, "wrong")[0] for _ in range(3)]
    assert statuses == [403, 403, 429]
    # Only a cache hit, which reads no counter, is left to refuse it here.
    wait_until(lambda: get(pair.here, pair.key)[0] == 429, "the pair blocked here")
    status, body = get(pair.here, pair.key)
    assert (status, body["errorCode"]) == (429, "too-many-failures")


def test_malformed_messages_are_ignored(
    pair_factory: Callable[..., Pair], redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    pair = pair_factory(redis_url)
    serve_cached(pair.here, pair.key)
    revocation = BasicGate.state(pair.here).revocation
    assert isinstance(revocation, RedisRevocation)
    publisher = redis_client(redis_url)
    try:
        for bad in (b"\xff", b"[]", json.dumps({"key": 1}), json.dumps({"key": "x", "until": "z"})):
            publisher.publish(revocation.channel, bad)
        wait_until(lambda: caplog.text.count("ignored a malformed message") == 4, "four warnings")
    finally:
        publisher.close()
    assert trusted(pair.here)
    assert len(BasicGate.state(pair.here).cache) == 1
    assert get(pair.here, pair.key)[0] == 200


# -- Redis stopped under a running app ----------------------------------------------


def test_redis_stopped_the_cache_is_trusted_one_second_and_reconnects(
    pair_factory: Callable[..., Pair], own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "flask_basic_gate")
    pair = pair_factory(own_redis.url)
    serve_cached(pair.here, pair.key)
    own_redis.stop()
    wait_until(lambda: not trusted(pair.here), "the cache no longer trusted")
    # Changed while nobody can hear it: the message is lost (and logged).
    with pair.there.app_context():
        BasicGate.state().store.disable_key(pair.key)
    assert "could not announce a change of key" in caplog.text
    status, body = get(pair.here, pair.key)
    assert (status, body["errorCode"]) == (403, "key-inactive")
    with pair.there.app_context():
        BasicGate.state().store.enable_key(pair.key)
    # Authentication goes on against the store, for right and wrong secrets.
    for _ in range(3):
        assert get(pair.here, pair.key)[0] == 200
        assert get(pair.here, pair.key, "wrong")[0] == 403
    assert caplog.text.count("Redis unreachable") == 1

    own_redis.start()
    wait_until(lambda: trusted(pair.here), "trusted again after Redis came back")
    assert "Redis reachable again" in caplog.text
    serve_cached(pair.here, pair.key)
    with pair.there.app_context():
        BasicGate.state().store.disable_key(pair.key)
    wait_until(lambda: len(BasicGate.state(pair.here).cache) == 0, "the key evicted here")
    assert get(pair.here, pair.key)[0] == 403


def test_success_cached_while_untrusted_lasts_the_trust_window(
    pair_factory: Callable[..., Pair], own_redis: RedisServer
) -> None:
    pair = pair_factory(own_redis.url)
    own_redis.stop()
    state = BasicGate.state(pair.here)
    now = time.time()
    state.policy.clock = lambda: now
    assert get(pair.here, pair.key)[0] == 200
    assert len(state.cache) == 1
    state.policy.clock = lambda: now + TRUST_WINDOW
    with pair.there.app_context():
        BasicGate.state().store.disable_key(pair.key)
    status, body = get(pair.here, pair.key)
    assert (status, body["errorCode"]) == (403, "key-inactive")


def test_redis_stopped_failures_are_counted_per_process(
    pair_factory: Callable[..., Pair], own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "flask_basic_gate")
    pair = pair_factory(own_redis.url, BASIC_GATE_FAILURE_LIMIT="2/minute")
    assert get(pair.here, pair.key, "wrong")[0] == 403
    own_redis.stop()
    # The count starts over in memory here: two more failures are allowed.
    statuses = [get(pair.here, pair.key, "wrong")[0] for _ in range(3)]
    assert statuses == [403, 403, 429]
    status, body = get(pair.here, pair.key)
    assert (status, body["errorCode"]) == (429, "too-many-failures")
    assert caplog.text.count("counting in this process") == 1
    # The other process counts on its own meanwhile.
    assert get(pair.there, pair.key, "wrong")[0] == 403

    own_redis.start()
    probes = iter(range(1_000_000))
    # A new name each time: a pair blocked in memory would not ask Redis.
    wait_until(
        lambda: (
            get(pair.here, f"probe-{next(probes)}", "wrong")[0] == 403
            and "shared through Redis again" in caplog.text
        ),
        "counting on Redis again",
    )
    wait_until(
        lambda: (
            get(pair.there, f"probe-{next(probes)}", "wrong")[0] == 403
            and caplog.text.count("shared through Redis again") == 2
        ),
        "the other process counting on Redis again",
    )
    shared = f"shared-{uuid.uuid4().hex[:8]}"
    assert get(pair.there, shared, "wrong")[0] == 403
    assert get(pair.here, shared, "wrong")[0] == 403
    status, body = get(pair.there, shared, "wrong")
    assert (status, body["errorCode"]) == (429, "too-many-failures")

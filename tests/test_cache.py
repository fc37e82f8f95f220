"""The verification cache: hits, eviction, lifetime, and never a wrong answer."""

from __future__ import annotations

import base64
import datetime as dt
import tracemalloc
from typing import Any

import pytest
from flask import Flask

from flask_basic_gate import BasicGate
from flask_basic_gate.cache import VerificationCache, canonical_token
from flask_basic_gate.identity import KeyIdentity
from flask_basic_gate.testing import basic_auth_headers

from .support.apps import AppFactory, QueryCounter, provision


@pytest.fixture
def cached_app(app_factory: AppFactory) -> Any:
    app = app_factory({"BASIC_GATE_CACHE_TTL": 30})
    provision(app)
    with QueryCounter(app) as counter:
        yield app, counter


def ok(app: Flask, auth: Any, secret: str = "topsecret", key: str = "criticalmix") -> int:
    status: int = app.test_client().get("/thing", headers=auth(key, secret)).status_code
    return status


def test_hit_skips_store(cached_app: Any, auth: Any) -> None:
    app, counter = cached_app
    assert [ok(app, auth) for _ in range(5)] == [200] * 5
    assert counter.count == 1
    assert len(BasicGate.state(app).cache) == 1


def test_cache_off_queries_every_time(app_factory: AppFactory, auth: Any) -> None:
    app = app_factory({"BASIC_GATE_CACHE_TTL": 0})
    provision(app)
    counter = QueryCounter(app)
    try:
        assert [ok(app, auth) for _ in range(3)] == [200] * 3
    finally:
        counter.close()
    assert counter.count == 3
    assert len(BasicGate.state(app).cache) == 0


def test_cached_entry_never_serves_wrong_secret(cached_app: Any, auth: Any) -> None:
    app, _ = cached_app
    assert ok(app, auth) == 200
    for wrong in ("topsecreT", "topsecret ", "", "topsecre", "other"):
        assert ok(app, auth, wrong) == 403
    assert ok(app, auth, key="CRITICALMIX") == 403


def test_failures_not_cached(cached_app: Any, auth: Any) -> None:
    app, counter = cached_app
    assert ok(app, auth, "wrong") == 403
    assert ok(app, auth, "wrong") == 403
    assert counter.count == 2
    assert len(BasicGate.state(app).cache) == 0


def test_disable_evicts_at_once(cached_app: Any, auth: Any) -> None:
    app, _ = cached_app
    assert ok(app, auth) == 200
    with app.app_context():
        BasicGate.state().store.disable_key("criticalmix")
    assert ok(app, auth) == 403


def test_rotate_evicts_at_once(cached_app: Any, auth: Any) -> None:
    app, _ = cached_app
    assert ok(app, auth) == 200
    with app.app_context():
        new = BasicGate.state().store.rotate_secret("criticalmix")
    assert ok(app, auth) == 403
    assert ok(app, auth, new.secret) == 200


def test_delete_and_validity_change_evict(cached_app: Any, auth: Any) -> None:
    app, _ = cached_app
    assert ok(app, auth) == 200
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    with app.app_context():
        BasicGate.state().store.set_validity("criticalmix", expires_at=past)
    assert ok(app, auth) == 403
    with app.app_context():
        BasicGate.state().store.delete_key("criticalmix")
    assert ok(app, auth) == 403


def test_ttl(cached_app: Any, auth: Any) -> None:
    app, counter = cached_app
    policy = BasicGate.state(app).policy
    real = policy.clock
    assert ok(app, auth) == 200
    policy.clock = lambda: real() + 29
    assert ok(app, auth) == 200
    assert counter.count == 1
    policy.clock = lambda: real() + 31
    assert ok(app, auth) == 200
    assert counter.count == 2


def test_entry_never_outlives_secret_expiry(cached_app: Any, auth: Any) -> None:
    app, _ = cached_app
    policy = BasicGate.state(app).policy
    with app.app_context():
        new = BasicGate.state().store.rotate_secret("criticalmix", grace=5)
    assert ok(app, auth) == 200  # the old secret, cached until its expiry
    real = policy.clock
    policy.clock = lambda: real() + 6
    assert ok(app, auth) == 403
    assert ok(app, auth, new.secret) == 200


def test_entry_never_outlives_key_expiry(cached_app: Any, auth: Any) -> None:
    app, _ = cached_app
    soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)
    with app.app_context():
        BasicGate.state().store.set_validity("criticalmix", expires_at=soon)
    assert ok(app, auth) == 200
    policy = BasicGate.state(app).policy
    real = policy.clock
    policy.clock = lambda: real() + 6
    assert ok(app, auth) == 403


def test_size_bound() -> None:
    cache = VerificationCache(3)
    for n in range(5):
        cache.put(f"k{n}", "s", KeyIdentity(f"k{n}", "p", None, None, n), 1e12)
    assert len(cache) == 3
    assert cache.lookup("k0", "s", 0.0) is None
    assert cache.lookup("k4", "s", 0.0) is not None


def test_digest_keyed_one_way() -> None:
    one, two = VerificationCache(1), VerificationCache(1)
    digest = one._digest("criticalmix", "topsecret")
    assert digest != two._digest("criticalmix", "topsecret")
    assert digest == one._digest("criticalmix", "topsecret")
    assert digest != one._digest("criticalmix", "topsecreT")
    assert b"topsecret" not in digest
    assert one._digest("k", "\udcff") != one._digest("k", "\xff")  # any text, no crash


def test_ten_thousand_entries_under_ten_megabytes() -> None:
    cache = VerificationCache(10_000)
    identities = [
        KeyIdentity(f"key-{n:06d}", "members", "Dev", "dev@example.com", n) for n in range(10_000)
    ]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for identity in identities:
        cache.put(identity.key, "secret", identity, 1e12)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(cache) == 10_000
    assert used < 10 * 1024 * 1024, used


def test_the_token_as_sent_finds_only_the_canonical_spelling() -> None:
    cache = VerificationCache(10)
    identity = KeyIdentity("clé", "p", None, None, 1)
    cache.put("clé", "sécret", identity, 1e12)
    utf8 = base64.b64encode("clé:sécret".encode()).decode()
    latin1 = base64.b64encode("clé:sécret".encode("latin-1")).decode()
    assert canonical_token("clé", "sécret") == utf8
    assert cache.lookup_token(utf8, 0) is identity
    # Other bytes for the same text, or the wrong secret: not found by the
    # token; the parsed lookup finds the first and never the second.
    assert cache.lookup_token(latin1, 0) is None
    assert cache.lookup("clé", "sécret", 0) is identity
    assert cache.lookup_token(base64.b64encode(b"cl\xc3\xa9:wrong").decode(), 0) is None
    assert cache.lookup_token(utf8, 2e12) is None  # expired


def test_a_parsed_lookup_skips_the_token_already_tried() -> None:
    cache = VerificationCache(10)
    identity = KeyIdentity("clé", "p", None, None, 1)
    cache.put("clé", "sécret", identity, 1e12)
    utf8 = canonical_token("clé", "sécret")
    latin1 = base64.b64encode("clé:sécret".encode("latin-1")).decode()
    # The guard tried the token as sent; a parse of the same token is the
    # same lookup, so its miss stands; another spelling is looked up.
    assert cache.lookup("clé", "sécret", 0, tried=utf8) is None
    assert cache.lookup("clé", "sécret", 0, tried=latin1) is identity
    assert cache.lookup("clé", "sécret", 0, tried=None) is identity


def test_a_latin1_client_is_served_from_the_cache(cached_app: Any) -> None:
    app, counter = cached_app
    provision(app, "latin", "sécret")
    headers = basic_auth_headers("latin", "sécret", encoding="latin-1")
    client = app.test_client()
    before = counter.count
    assert [client.get("/thing", headers=headers).status_code for _ in range(3)] == [200] * 3
    assert counter.count == before + 1

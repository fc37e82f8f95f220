"""The benchmark's cases: the peers, and the gate on each of its paths."""

from __future__ import annotations

import importlib.util
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any, Optional

from flask import Flask
from sqlalchemy import event

from bench import keydb, peers
from bench.gateapps import add_key, gate_app, provision
from bench.report import Bound, Target
from bench.timing import Case, Environ, check, make_environ
from flask_basic_gate import BasicGate, GateError
from flask_basic_gate.testing import basic_auth_header

BARE = "bare"
BARE_DB = "bare + Flask-SQLAlchemy, no auth"
HOOK_FLOOR = "bare + Flask-SQLAlchemy + empty hook"
HTTPAUTH = "flask-httpauth"
BASICAUTH = "flask-basicauth"
NAIVE_DB = "naive-db (ORM query, 1k keys)"
WARM = "gate warm (cache hit)"
WARM_REDIS = "gate warm, Redis revocation on"
WARM_METRICS = "gate warm, metrics and usage on"
#: Where the Redis case's Redis is (the test suite's, when this is unset).
REDIS_ENV = ("BENCH_REDIS_URL", "BASIC_GATE_TEST_REDIS_URL")
#: A request without credentials: the guard answers the refusal itself, or,
#: when the app has a handler for GateError, raises it to Flask.
REFUSED = "gate refusal (401), answered by the guard"
REFUSED_RAISED = "gate refusal (401), raised to the app's handler"
KDF_FIRST = "gate scrypt, first request"
KDF_AFTER = "gate scrypt, after first"
MIXED = "gate mixed, 10k keys zipf"

#: Keys in the small cold store (and the small peak-RSS probe).
SMALL_KEYS = 1000
#: A secret a person might choose; it is hashed with scrypt.
PERSON_SECRET = "correct horse battery staple"
#: Distinct keys each cold case cycles through (a seeded sample of its
#: store): the same number in every cold case, so the size of the store is
#: the only difference between them.
COLD_SAMPLE = SMALL_KEYS
#: Keys in the mixed case, and requests drawn over them.
MIXED_KEYS = 10_000
MIXED_DRAWS = 200_000


def keys_label(keys: int) -> str:
    """A store size as printed: ``1k``, ``100k``, ``1M``."""
    return f"{keys // 1_000_000:,}M" if keys >= 1_000_000 else f"{keys // 1000:,}k"


def cold_name(keys: int) -> str:
    """The name of the cold case over a store of ``keys`` keys."""
    return f"gate cold, {keys_label(keys)} keys"


COLD_1K = cold_name(SMALL_KEYS)
#: SQLite's mmap_size in the memory-mapped cold case, as docs/deployment.rst sets it.
MMAP_SIZE = 1 << 30


def mmap_name(keys: int) -> str:
    """The name of the cold case over a memory-mapped store of ``keys`` keys."""
    return f"{cold_name(keys)}, mmap"


def targets(big_keys: int) -> dict[str, Target]:
    """The issue's targets, by case name."""
    return {
        # Issues 9 and 11 restate the warm bound against the floor of any
        # before_request guard on a Flask-SQLAlchemy app.
        WARM: Target((Bound(HOOK_FLOOR, 1.10),)),
        WARM_REDIS: Target((Bound(HOOK_FLOOR, 1.10),)),
        # Issue 19: Prometheus metrics and usage counting cost a few dict
        # increments per request.
        WARM_METRICS: Target((Bound(HOOK_FLOOR, 1.15),)),
        COLD_1K: Target((Bound(BARE, 2.0),)),
        cold_name(big_keys): Target((Bound(BARE, 2.0), Bound(COLD_1K, 1.10, 0.90))),
        mmap_name(big_keys): Target((Bound(BARE, 2.0), Bound(COLD_1K, 1.10, 0.90))),
        KDF_AFTER: Target((Bound(WARM, 1.10, 0.90),)),
    }


def peer_cases(workdir: Path, notes: list[str]) -> list[Case]:
    """The cases that do not use the gate."""
    environ = make_environ(basic_auth_header(peers.KEY, peers.SECRET))
    cases = [
        bare_case(),
        Case(BARE_DB, peers.bare_db_app(workdir / "bare.sqlite"), [environ]),
        Case(HOOK_FLOOR, peers.hook_floor_app(workdir / "floor.sqlite"), [environ]),
        Case(HTTPAUTH, peers.httpauth_app(), [environ]),
    ]
    basicauth = peers.basicauth_app()
    if basicauth is None:
        notes.append(f"{BASICAUTH}: skipped, Flask-BasicAuth is not installed")
    else:
        cases.append(Case(BASICAUTH, basicauth, [environ]))
    naive = peers.naive_db_app(workdir / "naive.sqlite", SMALL_KEYS)
    cases.append(Case(NAIVE_DB, naive, [environ]))
    return cases


def bare_case() -> Case:
    """The bare route, the yardstick of every table."""
    return Case(BARE, peers.bare_app(), [make_environ(basic_auth_header(peers.KEY, peers.SECRET))])


def cold_sample(keys: int) -> list[int]:
    """The keys (by number) a cold case over a store of ``keys`` keys cycles through, seeded."""
    return random.Random(1).sample(range(keys), min(COLD_SAMPLE, keys))


def key_environs(indexes: Sequence[int]) -> list[Environ]:
    """One request per key number, with the key's own secret; a repeated key shares its environ."""
    built: dict[int, Environ] = {}
    for index in indexes:
        if index not in built:
            built[index] = make_environ(
                basic_auth_header(keydb.key_name(index), keydb.secret_for(index))
            )
    return [built[index] for index in indexes]


def cold_case(name: str, keys: int, *, mmap: bool = False) -> Case:
    """Cache off, generated secrets, over the cached store of ``keys`` keys.

    :param mmap: memory-map the SQLite file (``PRAGMA mmap_size`` in a
        ``connect`` event), as docs/deployment.rst advises for large stores.
    """
    path, _ = keydb.ensure_store(keys)
    app, gate = gate_app(path, "bench_gate_cold", BASIC_GATE_CACHE_TTL=0)
    if mmap:
        with app.app_context():
            event.listen(gate.store.engine, "connect", _map_sqlite)
    return cold_request_case(name, app, keys)


def cold_request_case(name: str, app: Flask, keys: int) -> Case:
    """Requests over :func:`cold_sample` on ``app``, a gate with its cache off; all keys warmed."""
    sample = cold_sample(keys)
    return Case(name, app, key_environs(sample), warmup=len(sample))


def _map_sqlite(dbapi_connection: Any, record: Any) -> None:
    dbapi_connection.execute(f"PRAGMA mmap_size={MMAP_SIZE}")


def warm_case(workdir: Path) -> Case:
    """Cache on, one key with a generated secret, so every timed request is a cache hit."""
    app, _ = gate_app(workdir / "warm.sqlite", "bench_gate_warm")
    new = provision(app)
    return Case(WARM, app, [make_environ(basic_auth_header(new.key, new.secret))])


def refusal_cases(workdir: Path) -> list[Case]:
    """The same refusal, rendered by the guard and raised to an app handler
    that returns the error as Flask renders any HTTP exception."""
    answered, _ = gate_app(workdir / "refused.sqlite", "bench_gate_refused")
    raised, _ = gate_app(workdir / "refused-raised.sqlite", "bench_gate_refused_raised")
    raised.register_error_handler(GateError, lambda error: error)
    return [
        Case(REFUSED, answered, [make_environ()], expect="401"),
        Case(REFUSED_RAISED, raised, [make_environ()], expect="401"),
    ]


def warm_metrics_case(workdir: Path, notes: list[str]) -> Optional[Case]:
    """The warm case with ``BASIC_GATE_METRICS`` and ``BASIC_GATE_USAGE`` on:
    each request counted in Prometheus counters and in the key's usage row.
    ``None`` (with a note) when prometheus_client is not installed."""
    if importlib.util.find_spec("prometheus_client") is None:
        notes.append(f"{WARM_METRICS}: skipped, prometheus_client is not installed")
        return None
    app, _ = gate_app(
        workdir / "warm-metrics.sqlite",
        "bench_gate_warm_metrics",
        BASIC_GATE_METRICS=True,
        BASIC_GATE_USAGE=True,
    )
    new = provision(app)
    return Case(WARM_METRICS, app, [make_environ(basic_auth_header(new.key, new.secret))])


def warm_redis_case(workdir: Path, notes: list[str]) -> Optional[Case]:
    """The warm case with ``BASIC_GATE_REDIS_URL`` set: a listener thread
    per process, and the warm path's trust check; timed once the listener
    has subscribed. ``None`` (with a note) when no Redis URL is given."""
    url = next((os.environ[name] for name in REDIS_ENV if os.environ.get(name)), None)
    if url is None:
        notes.append(f"{WARM_REDIS}: skipped, set {REDIS_ENV[0]} to a redis:// URL")
        return None
    app, _ = gate_app(
        workdir / "warm-redis.sqlite", "bench_gate_warm_redis", BASIC_GATE_REDIS_URL=url
    )
    new = provision(app)
    environ = make_environ(basic_auth_header(new.key, new.secret))
    check(app, environ, WARM_REDIS)  # starts the listener
    revocation = BasicGate.state(app).revocation
    deadline = time.monotonic() + 10
    while time.time() >= revocation.trusted_until:
        if time.monotonic() > deadline:
            raise RuntimeError(f"case {WARM_REDIS!r}: Redis at the given URL never answered")
        time.sleep(0.01)
    return Case(WARM_REDIS, app, [environ])


def mixed_case() -> Case:
    """Cache on (default size), requests over 10k keys drawn with weights 1/rank."""
    path, _ = keydb.ensure_store(MIXED_KEYS)
    app, _ = gate_app(path, "bench_gate_mixed")
    weights = accumulate(1 / rank for rank in range(1, MIXED_KEYS + 1))
    draws = random.Random(2).choices(range(MIXED_KEYS), cum_weights=list(weights), k=MIXED_DRAWS)
    return Case(MIXED, app, key_environs(draws))


@dataclass
class KdfCase:
    """A key with a person-chosen (scrypt) secret, and the request that presents it."""

    app: Flask
    environ: Environ


def kdf_case(workdir: Path) -> KdfCase:
    """An app whose store holds a scrypt-hashed key, warmed up with a generated key."""
    # The KDF budget would refuse the repeated first requests this times.
    app, _ = gate_app(workdir / "kdf.sqlite", "bench_gate_kdf", BASIC_GATE_KDF_BUDGET="off")
    warmup = provision(app)
    person = add_key(app, secret=PERSON_SECRET)
    # Connections, compiled statements and lazy imports are made by this
    # request, so the first scrypt request pays only for its own path.
    check(app, make_environ(basic_auth_header(warmup.key, warmup.secret)), KDF_FIRST)
    return KdfCase(app, make_environ(basic_auth_header(person.key, person.secret)))


def time_first_requests(case: KdfCase, trials: int) -> list[float]:
    """Time the scrypt key's request on an emptied cache, ``trials`` times (µs each)."""
    cache = BasicGate.state(case.app).cache
    samples = []
    for _ in range(trials):
        cache.clear()
        started = time.perf_counter_ns()
        check(case.app, case.environ, KDF_FIRST)
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples

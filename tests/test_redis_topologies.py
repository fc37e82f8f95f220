"""Redis as operators run it: a Sentinel and a Cluster.

Each is started from Debian's ``redis-server`` and ``redis-sentinel`` on
free ports by :mod:`tests.support.redisnodes` and stopped by PID. Two apps
on one database stand for two processes, as in test_revocation.py: plan
counters, failure counters and revocation work on each; a Sentinel failover
(the master killed) loses no revocation and never lets a plan be exceeded.
"""

from __future__ import annotations

import hashlib
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from flask import Flask

from flask_basic_gate import BasicGate
from flask_basic_gate.config import ConfigurationError, load_settings
from flask_basic_gate.testing import basic_auth_headers

from .support.apps import AppFactory, provision
from .support.backends import missing
from .support.redisnodes import Cluster, SentinelSet, ask, cluster, missing_tools, sentinel_set

#: Longest a test waits for a message, a reconnection or a failover.
DEADLINE = 15.0


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    """A master, a replica and a sentinel of this module's own."""
    why = missing_tools()
    if why is not None:
        missing(why)
    with sentinel_set(tmp_path_factory.mktemp("sentinel")) as made:
        yield made


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three cluster masters of this module's own."""
    why = missing_tools()
    if why is not None:
        missing(why)
    with cluster(tmp_path_factory.mktemp("cluster")) as made:
        yield made


@pytest.fixture(params=["sentinel", "cluster"])
def topology(request: pytest.FixtureRequest) -> str:
    """The ``BASIC_GATE_REDIS_URL`` of each topology in turn."""
    made = request.getfixturevalue("sentinel" if request.param == "sentinel" else "redis_cluster")
    url: str = made.url
    return url


def wait_until(condition: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline:g} s: {what}")
        time.sleep(0.02)


def get(app: Flask, key: str, secret: str = "topsecret") -> tuple[int, Any]:
    response = app.test_client().get("/thing", headers=basic_auth_headers(key, secret))
    return response.status_code, response.get_json()


def two_processes(app_factory: AppFactory, url: str, **config: Any) -> tuple[Flask, Flask]:
    settings = {"BASIC_GATE_REDIS_URL": url, **config}
    return app_factory(settings), app_factory(settings, create=False)


def new_key(app: Flask, **package: Any) -> str:
    """A key of its own in a package of its own, with ``package``'s limits."""
    key = f"k-{uuid.uuid4().hex[:12]}"
    name = f"p-{key}"
    with app.app_context():
        BasicGate.state().store.create_package(name, **package)
    provision(app, key=key, secret="topsecret", package=name)
    return key


def trusted(app: Flask) -> bool:
    return time.time() < BasicGate.state(app).revocation.trusted_until


def serve_cached(app: Flask, key: str) -> None:
    """A success cached while the listener trusts its cache."""
    assert get(app, key)[0] == 200
    wait_until(lambda: trusted(app), "the listener subscribed")
    assert get(app, key)[0] == 200


# -- each topology --------------------------------------------------------------


@pytest.mark.server
def test_plan_counters_are_shared(app_factory: AppFactory, topology: str) -> None:
    here, there = two_processes(app_factory, topology)
    # QPS and quota: both windows go in one script, so in one slot.
    key = new_key(here, qps=100, quota="3/day")
    assert [get(app, key)[0] for app in (here, there, here, there)] == [200, 200, 200, 429]
    assert get(there, key)[1]["errorCode"] == "quota-exceeded"


@pytest.mark.server
def test_failure_counters_are_shared(app_factory: AppFactory, topology: str) -> None:
    here, there = two_processes(app_factory, topology, BASIC_GATE_FAILURE_LIMIT="2/minute")
    key = new_key(here)
    assert [get(there, key, "wrong")[0] for _ in range(3)] == [403, 403, 429]
    # Read from the shared counters here, where nothing failed.
    status, body = get(here, key, "wrong")
    assert (status, body["errorCode"]) == (429, "too-many-failures")


@pytest.mark.server
def test_revocation_reaches_the_other_process(app_factory: AppFactory, topology: str) -> None:
    here, there = two_processes(app_factory, topology)
    key = new_key(here)
    serve_cached(here, key)
    with there.app_context():
        BasicGate.state().store.disable_key(key)
    wait_until(lambda: get(here, key)[0] == 403, "the key refused here")
    assert get(here, key)[1]["errorCode"] == "key-inactive"


@pytest.mark.server
def test_cluster_keeps_a_key_in_one_slot_and_spreads_keys(
    app_factory: AppFactory, redis_cluster: Cluster
) -> None:
    app = app_factory({"BASIC_GATE_REDIS_URL": redis_cluster.url})
    keys = [new_key(app, qps=100, quota="100/day") for _ in range(8)]
    for key in keys:
        assert get(app, key)[0] == 200
    tags = {hashlib.blake2b(key.encode(), digest_size=16).hexdigest() for key in keys}
    nodes: dict[str, set[int]] = {}
    for port in redis_cluster.ports:
        for name in ask(port, "KEYS", "basic-gate-plan:*"):
            tag = name[name.index("{") + 1 : name.index("}")]
            if tag in tags:
                nodes.setdefault(tag, set()).add(port)
    assert set(nodes) == tags
    # A key's second and quota window on one node; the keys on several.
    assert all(len(ports) == 1 for ports in nodes.values()), nodes
    assert len(set().union(*nodes.values())) > 1, nodes


# -- a Sentinel failover ------------------------------------------------------------


@pytest.fixture
def own_sentinel(tmp_path: Path) -> Iterator[SentinelSet]:
    """A master, a replica and a sentinel that the test may break."""
    why = missing_tools()
    if why is not None:
        missing(why)
    with sentinel_set(tmp_path) as made:
        yield made


@pytest.mark.server
def test_sentinel_failover_loses_no_revocation_and_never_exceeds_a_plan(
    app_factory: AppFactory, own_sentinel: SentinelSet
) -> None:
    quota = 40
    here, there = two_processes(app_factory, own_sentinel.url)
    planned = new_key(here, quota=f"{quota}/day")
    before, during = new_key(here), new_key(here)
    served = 0
    for _ in range(quota // 4):
        for app in (here, there):
            served += get(app, planned)[0] == 200
    assert served == quota // 2
    for key in (before, during):
        serve_cached(here, key)
        serve_cached(there, key)

    killed = time.monotonic()
    old = own_sentinel.master()
    own_sentinel.servers[old].kill()
    # A change while no master answers: it cannot be announced.
    with there.app_context():
        BasicGate.state().store.disable_key(during)
    wait_until(lambda: get(here, during)[0] == 403, "the change made during the failover")
    own_sentinel.wait_for_master(
        own_sentinel.replica_port if old == own_sentinel.master_port else own_sentinel.master_port
    )
    failed_over = time.monotonic() - killed
    wait_until(lambda: trusted(here) and trusted(there), "both listening on the new master")
    with there.app_context():
        BasicGate.state().store.disable_key(before)
    wait_until(lambda: get(here, before)[0] == 403, "the change made after the failover")
    assert get(here, before)[1]["errorCode"] == "key-inactive"

    # Half the quota was served before the master died; the rest is served
    # once, however the calls go now.
    statuses = []
    for _ in range(quota):
        for app in (here, there):
            statuses.append(get(app, planned)[0])
    assert served + statuses.count(200) <= quota, (served, statuses)
    assert set(statuses) <= {200, 429, 503}, statuses
    assert failed_over < DEADLINE


@pytest.mark.server
def test_sentinel_serves_no_call_a_replica_does_not_have(
    app_factory: AppFactory, own_sentinel: SentinelSet
) -> None:
    """A take waits until a replica has it: with the replica stopped
    (SIGSTOP), a failover could lose it, so it is not served."""
    app = app_factory({"BASIC_GATE_REDIS_URL": own_sentinel.url})
    key = new_key(app, quota="100/day")
    assert get(app, key)[0] == 200
    replica = own_sentinel.servers[own_sentinel.replica_port]
    fresh = new_key(app, quota="100/day")
    replica.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
    try:
        status, body = get(app, fresh)
        assert (status, body["errorCode"]) == (503, "gate-unavailable")
    finally:
        replica.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
    wait_until(lambda: get(app, fresh)[0] == 200, "served again once the replica answers")


# -- the URL ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://:secret@redis.internal:6380/1",
        "unix:///run/redis.sock?db=2",
        "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster",
        "redis+sentinel://user:secret@sentinel:26379/mymaster",
        "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
    ],
)
def test_redis_url_forms_are_taken(url: str) -> None:
    settings = load_settings({"BASIC_GATE_REDIS_URL": url})
    assert settings.redis_url == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("localhost:6379", "scheme"),
        ("http://localhost:6379", "scheme"),
        ("redis+sentinel://:hunter2@127.0.0.1:26379", "service name"),
        ("redis+sentinel://127.0.0.1/mymaster", "port"),
        ("redis+cluster://127.0.0.1:7000,:hunter2@:x", "port"),
    ],
)
def test_redis_url_refused_without_showing_it(url: str, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why) as refused:
        load_settings({"BASIC_GATE_REDIS_URL": url})
    assert "hunter2" not in str(refused.value)
    assert "BASIC_GATE_REDIS_URL" in str(refused.value)

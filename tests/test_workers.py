"""Many workers: gunicorn with four pre-forked workers on PostgreSQL and Redis.

Every worker must hear a change made with the CLI in another process: a
key disabled, or a secret rotated without grace, is refused by each worker
within :data:`~flask_basic_gate.revocation.TRUST_WINDOW` of the command's
end, also when Redis has stopped under the running server. Responses carry
the answering worker's PID (``tests/support/workerapp.py``).
"""

from __future__ import annotations

import contextlib
import itertools
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from flask import Flask

from example_app import create_app, db
from flask_basic_gate import BasicGate
from flask_basic_gate.revocation import TRUST_WINDOW

from .support import ROOT
from .support.apps import FAST_KDF, dispose
from .support.backends import backend_url, missing
from .support.example import MEMBER_PATH
from .support.redisnodes import cluster, missing_tools, sentinel_set
from .support.servers import RedisServer, ServerProcess, child_env, gunicorn_run, http_session
from .support.workerapp import WORKER_PATH

pytestmark = pytest.mark.server

WORKERS = 4
#: Longest a test waits to have heard every worker.
DEADLINE = 20.0


@dataclass
class Deployment:
    """gunicorn serving ``tests.support.workerapp`` on one database and one Redis."""

    server: ServerProcess
    env: dict[str, str]
    key: str
    secret: str
    workers: int = WORKERS

    @property
    def url(self) -> str:
        return self.server.url

    def cli(self, *args: str) -> str:
        """``flask --app example_app basic-gate ARGS`` in a process of its own."""
        done = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "example_app", "basic-gate", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


def call(
    secret: Optional[str], deployment: Deployment, key: Optional[str] = None
) -> tuple[int, int, Any]:
    """One request on a new connection: (worker PID, status, JSON body)."""
    with http_session() as client:
        response = client.get(
            deployment.url + MEMBER_PATH, auth=(key or deployment.key, secret or ""), timeout=10
        )
    return int(response.headers["X-Worker"]), response.status_code, response.json()


def until_every_worker(
    deployment: Deployment, ask: Callable[[], tuple[int, bool]], what: str
) -> dict[int, float]:
    """Ask until each worker has said yes; returns when each first did
    (``time.monotonic()``)."""
    seen: dict[int, float] = {}
    end = time.monotonic() + DEADLINE
    while len(seen) < deployment.workers:
        pid, yes = ask()
        if yes:
            seen.setdefault(pid, time.monotonic())
        if time.monotonic() > end:
            raise AssertionError(f"{what}: only workers {sorted(seen)} within {DEADLINE:g} s")
    return seen


def worker_state(deployment: Deployment) -> dict[str, Any]:
    with http_session() as client:
        state: dict[str, Any] = client.get(deployment.url + WORKER_PATH, timeout=10).json()
    return state


def served(deployment: Deployment, secret: str) -> None:
    """Every worker has accepted ``secret``."""
    until_every_worker(
        deployment,
        lambda: (lambda pid, status, _: (pid, status == 200))(*call(secret, deployment)),
        "accepted the secret",
    )


def every_worker_says(
    deployment: Deployment, what: str, test: Callable[[dict[str, Any]], bool]
) -> None:
    until_every_worker(
        deployment, lambda: ((state := worker_state(deployment))["pid"], test(state)), what
    )


def warm(deployment: Deployment) -> None:
    """Every worker trusts its cache and has the key's success cached."""
    # A worker's listener starts with its first authenticated request, and
    # empties the cache once subscribed: what is cached after that was
    # cached while trusted, for the cache's full lifetime.
    served(deployment, deployment.secret)
    every_worker_says(deployment, "trusted", lambda state: state["trusted"])
    served(deployment, deployment.secret)
    every_worker_says(
        deployment, "cached while trusted", lambda state: state["trusted"] and state["cached"] >= 1
    )


def refused_everywhere(
    deployment: Deployment, secret: str, error_code: str, since: float
) -> dict[int, float]:
    """Ask until every worker refuses ``secret``; no success may come later
    than :data:`TRUST_WINDOW` after ``since``. Returns each worker's first
    refusal, in seconds after ``since``."""

    def ask() -> tuple[int, bool]:
        sent = time.monotonic()
        pid, status, body = call(secret, deployment)
        if status == 200:
            assert sent - since <= TRUST_WINDOW, f"worker {pid} accepted it {sent - since:.3f} s on"
            return pid, False
        assert (status, body["errorCode"]) == (403, error_code)
        return pid, True

    return {
        pid: when - since for pid, when in until_every_worker(deployment, ask, error_code).items()
    }


@pytest.fixture
def database(tmp_path: Path) -> str:
    """PostgreSQL (the tables are made afresh by :func:`deploy`)."""
    return backend_url("postgresql", tmp_path)


@contextlib.contextmanager
def deploy(
    database: str,
    redis_url: Optional[str],
    *,
    quota: Optional[str] = None,
    qps: Optional[int] = None,
    workers: int = WORKERS,
    preload: bool = True,
) -> Iterator[Deployment]:
    """The example's tables and one key made afresh, served by gunicorn
    with ``workers`` workers, with ``--preload`` (every worker forked from
    an initialised app) or without (each worker loads its own).

    :param redis_url: ``None`` for no Redis (each worker on its own).
    :param quota: the package's quota, such as ``"20/day"``.
    :param qps: the package's calls per second.
    """
    env = child_env(
        FLASK_SQLALCHEMY_DATABASE_URI=database,
        **({"FLASK_BASIC_GATE_REDIS_URL": redis_url} if redis_url else {}),
        FLASK_BASIC_GATE_HASH_METHOD=FAST_KDF,
        FLASK_EXAMPLE_DEMO_KEY="false",
        # The refusals polled for are not to be cut short by the throttle.
        FLASK_BASIC_GATE_FAILURE_LIMIT="1000/minute",
    )
    app: Flask = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": database,
            "BASIC_GATE_HASH_METHOD": FAST_KDF,
            "EXAMPLE_DEMO_KEY": False,
        }
    )
    try:
        with app.app_context():
            db.drop_all()
            db.create_all()
            store = BasicGate.state().store
            store.create_package("members", quota=quota, qps=qps)
            new = store.create_key("members")
        with gunicorn_run(
            "tests.support.workerapp:create_app()",
            ["--preload"] if preload else [],
            env,
            workers=workers,
        ) as server:
            deployment = Deployment(server, env, new.key, new.secret, workers)
            # Without --preload each worker loads the app after it booted.
            every_worker_says(deployment, "serving", lambda state: True)
            yield deployment
    finally:
        BasicGate.state(app).revocation.close()
        with app.app_context():
            db.drop_all()
        dispose(app)


@pytest.fixture
def deployment(database: str, redis_url: str) -> Iterator[Deployment]:
    with deploy(database, redis_url) as deployed:
        yield deployed


def test_key_disabled_with_the_cli_is_refused_by_every_worker(deployment: Deployment) -> None:
    warm(deployment)
    deployment.cli("disable-key", deployment.key)
    refused_everywhere(deployment, deployment.secret, "key-inactive", time.monotonic())


def test_secret_rotated_with_the_cli_is_refused_by_every_worker(deployment: Deployment) -> None:
    warm(deployment)
    output = deployment.cli("rotate-secret", deployment.key)
    done = time.monotonic()
    new_secret = re.search(r"secret: (\S+)", output)
    assert new_secret is not None
    refused_everywhere(deployment, deployment.secret, "invalid-credentials", done)
    until_every_worker(
        deployment,
        lambda: (lambda pid, status, _: (pid, status == 200))(*call(new_secret[1], deployment)),
        "the new secret accepted",
    )


def test_redis_stopped_under_the_workers(database: str, own_redis: RedisServer) -> None:
    with deploy(database, own_redis.url) as deployment:
        warm(deployment)
        own_redis.stop()
        every_worker_says(deployment, "stopped trusting", lambda state: not state["trusted"])
        # Authentication goes on against the store, and fails closed.
        served(deployment, deployment.secret)
        _, status, body = call("wrong", deployment)
        assert (status, body["errorCode"]) == (403, "invalid-credentials")
        # The CLI cannot announce it; every worker must still refuse it.
        deployment.cli("disable-key", deployment.key)
        refused_everywhere(deployment, deployment.secret, "key-inactive", time.monotonic())
        output = deployment.server.output
        assert output.count("Redis unreachable") == WORKERS, output

        own_redis.start()
        every_worker_says(deployment, "trusted again", lambda state: state["trusted"])
        assert deployment.server.output.count("Redis reachable again") == WORKERS


# -- a package quota across the workers -------------------------------------------

#: How many requests a burst sends, per call of its quota.
BURST_FACTOR = 3


def burst(deployment: Deployment, requests: int) -> list[tuple[int, int, Any]]:
    """``requests`` requests from 8 threads at once: (worker, status, body) each."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda _: call(deployment.secret, deployment), range(requests)))


def assert_exact(answers: list[tuple[int, int, Any]], quota: int) -> None:
    """Exactly ``quota`` successes, every other answer over the quota, and
    more than one worker answering."""
    statuses = [(status, body.get("errorCode")) for _, status, body in answers]
    served = sum(1 for status, _ in statuses if status == 200)
    assert served == quota, statuses
    assert statuses.count((429, "quota-exceeded")) == len(answers) - quota, statuses
    assert len({pid for pid, _, _ in answers}) > 1  # the burst did spread over workers


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
@pytest.mark.parametrize(("workers", "quota"), [(2, 20), (2, 50), (4, 20), (4, 50)])
def test_a_quota_holds_exactly_across_workers_on_redis(
    database: str, redis_url: str, workers: int, quota: int, preload: bool
) -> None:
    """A burst three times the quota gets exactly the quota: the calls a
    worker holds are served by it or come back to the others."""
    with deploy(
        database, redis_url, quota=f"{quota}/day", workers=workers, preload=preload
    ) as deployment:
        answers = burst(deployment, BURST_FACTOR * quota)
    assert_exact(answers, quota)


@pytest.fixture(scope="module")
def topologies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A Sentinel and a Cluster of this module's own: their URLs by name."""
    why = missing_tools()
    if why is not None:
        missing(why)
    with contextlib.ExitStack() as stack:
        made = stack.enter_context(sentinel_set(tmp_path_factory.mktemp("sentinel")))
        grid = stack.enter_context(cluster(tmp_path_factory.mktemp("cluster")))
        yield {"sentinel": made.url, "cluster": grid.url}


@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
def test_a_quota_holds_exactly_across_workers_on_sentinel_and_cluster(
    database: str, topologies: dict[str, str], topology: str
) -> None:
    quota = 50
    with deploy(database, topologies[topology], quota=f"{quota}/day") as deployment:
        answers = burst(deployment, BURST_FACTOR * quota)
    assert_exact(answers, quota)


def test_without_redis_each_worker_counts_on_its_own(database: str) -> None:
    """Without Redis the quota holds per process: each worker grants up to
    the quota of its own, so the deployment as a whole may grant more."""
    quota = 20
    with deploy(database, None, quota=f"{quota}/day") as deployment:
        answers = burst(deployment, BURST_FACTOR * quota)
    per_worker: dict[int, list[int]] = {}
    for pid, status, _ in answers:
        per_worker.setdefault(pid, []).append(status)
    for pid, statuses in per_worker.items():
        assert statuses.count(200) == min(quota, len(statuses)), (pid, statuses)
        assert statuses.count(429) == len(statuses) - statuses.count(200)


# -- batches: few round trips, still exact -------------------------------------------


def load(
    deployment: Deployment,
    seconds: float,
    clients: int = 8,
    calls: Optional[int] = None,
) -> list[tuple[int, int, float]]:
    """``clients`` threads, each on one kept-alive connection, calling for
    ``seconds``, or, given ``calls``, until that many calls are made (with
    ``seconds`` as the bound): (worker, status, when the gate decided or 0)
    per answer. A count, not a time, is what a test of counts needs: a slow
    machine makes fewer calls in a second."""
    from concurrent.futures import ThreadPoolExecutor

    end = time.monotonic() + seconds
    tickets = itertools.count()

    def client(_: int) -> list[tuple[int, int, float]]:
        answers = []
        with http_session() as session:
            while time.monotonic() < end and (calls is None or next(tickets) < calls):
                response = session.get(
                    deployment.url + MEMBER_PATH,
                    auth=(deployment.key, deployment.secret),
                    timeout=10,
                )
                decided = float(response.headers.get("X-Decided-At", "0"))
                answers.append((int(response.headers["X-Worker"]), response.status_code, decided))
        return answers

    with ThreadPoolExecutor(max_workers=clients) as pool:
        answers = [answer for answers in pool.map(client, range(clients)) for answer in answers]
    if calls is not None:
        assert len(answers) == calls, f"{len(answers)} of {calls} calls in {seconds} s"
    return answers


#: Commands of connections and of revocation's pub/sub, not of counting.
NOT_COUNTING = ("info", "ping", "subscribe", "unsubscribe", "publish", "hello", "client", "select")


def commands(redis: Any, names: tuple[str, ...] = ()) -> int:
    """Commands the server ran so far (``INFO commandstats``, those a script
    runs included): those named, or all that count calls."""
    stats = redis.info("commandstats")
    return sum(
        entry["calls"]
        for name, entry in stats.items()
        if (name[len("cmdstat_") :] in names if names else name[8:] not in NOT_COUNTING)
    )


def test_a_busy_key_costs_at_most_100_redis_commands_per_1000_calls(
    database: str, own_redis: RedisServer
) -> None:
    """Two workers under steady load on a key far from its limits: the
    commands Redis runs to count them (the scripts' own included) are at
    most one per 10 calls."""
    import redis

    client = redis.Redis.from_url(own_redis.url)
    try:
        with deploy(
            database, own_redis.url, qps=10**6, quota=f"{10**6}/day", workers=2
        ) as deployment:
            load(deployment, 60, calls=400)  # busy: each worker knows the rate
            before = commands(client)
            answers = load(deployment, 60, calls=1500)
            spent = commands(client) - before
    finally:
        client.close()
    served = sum(1 for _, status, _ in answers if status == 200)
    assert served == len(answers)
    per_1000 = 1000 * spent / served
    print(f"{spent} Redis commands for {served} calls: {per_1000:.0f} per 1,000")
    assert per_1000 <= 100


def test_a_busy_key_through_its_quota_is_served_exactly(
    database: str, own_redis: RedisServer
) -> None:
    """Steady load through a quota of 1,000 on four workers: exactly 1,000
    served, with at most one round trip (a script run) per 10 calls."""
    import redis

    quota = 1000
    client = redis.Redis.from_url(own_redis.url)
    try:
        with deploy(database, own_redis.url, quota=f"{quota}/day") as deployment:
            before = commands(client, ("evalsha", "eval"))
            answers = load(deployment, 60, calls=quota + quota // 4)
            trips = commands(client, ("evalsha", "eval")) - before
    finally:
        client.close()
    assert sum(1 for _, status, _ in answers if status == 200) == quota
    print(f"{trips} round trips for {quota} calls, {len(answers)} requests")
    assert trips <= quota / 10


def test_qps_admits_at_least_nine_tenths_of_its_limit_each_second(
    database: str, redis_url: str
) -> None:
    """Load above a QPS limit, spread over four workers: each whole second
    serves at most the limit and at least 90 % of it."""
    qps = 40
    with deploy(database, redis_url, qps=qps) as deployment:
        answers = load(deployment, 4.5)
    per_second: dict[int, int] = {}
    for _, status, decided in answers:
        if status == 200:
            per_second[int(decided)] = per_second.get(int(decided), 0) + 1
    statuses = {status for _, status, _ in answers}
    assert statuses == {200, 429}, statuses
    seconds = sorted(per_second)
    # The first and last seconds are cut by the load's start and end.
    whole = seconds[1:-1]
    assert len(whole) >= 3, per_second
    served = [per_second[second] for second in whole]
    print(f"QPS {qps}: served per whole second {served}")
    assert all(qps * 0.9 <= count <= qps for count in served), per_second
    assert max(per_second.values()) <= qps, per_second

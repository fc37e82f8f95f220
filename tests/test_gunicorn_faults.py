"""The example app under gunicorn while its database is killed, hangs or comes back.

Real workers, through a proxy the test controls: with ``--preload`` each
worker talks to the server on connections of its own, and a worker
restarted during an outage boots, answers 503 and serves again once the
database returns. Each run is bounded in requests and seconds, and every
process is stopped by PID.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from example_app.provision import DEMO_KEY, DEMO_SECRET

from .support.apps import FAST_KDF, drop_tables
from .support.backends import backend_url
from .support.example import MEMBER_PATH
from .support.faultproxy import FaultProxy, fault_proxy
from .support.servers import ServerProcess, child_env, gunicorn_run

pytestmark = pytest.mark.server

STORE_TIMEOUT = 2
BOUND = STORE_TIMEOUT + 1
RECOVERY = 2.0
CONNECTIONS = {
    "postgresql": "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()",
    "mariadb": "SELECT count(*) FROM information_schema.processlist"
    " WHERE db = database() AND id <> connection_id()",
}


@pytest.fixture(params=["postgresql", "mariadb"])
def database(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[str, str]]:
    """A backend's URL with none of the gate's tables, dropped again after."""
    url = backend_url(request.param, tmp_path)
    drop_tables(url)
    yield request.param, url
    drop_tables(url)


def server_connections(backend: str, url: str) -> int:
    """How many connections the server has to the test's database (besides this one)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(CONNECTIONS[backend])).scalar_one())
    finally:
        engine.dispose()


def gate_env(faults: FaultProxy, url: str) -> dict[str, str]:
    return child_env(
        FLASK_SQLALCHEMY_DATABASE_URI=faults.url(url),
        FLASK_BASIC_GATE_HASH_METHOD=FAST_KDF,
        FLASK_BASIC_GATE_STORE_TIMEOUT=str(STORE_TIMEOUT),
    )


class Tally:
    """Every answer of a run, sorted into what it may and may not be."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.session = requests.Session()
        self.counts = {"sent": 0, "200": 0, "403": 0, "503": 0, "500": 0, "wrong": 0}
        self.lock = threading.Lock()

    def get(self, secret: str) -> int:
        """One request: the demo key, or (any other secret) a key that does not exist.

        Each missing key is new, so the failure throttle never steps in.
        """
        with self.lock:
            self.counts["sent"] += 1
            sent = self.counts["sent"]
        key = DEMO_KEY if secret == DEMO_SECRET else f"missing-{sent}"
        try:
            response = requests.get(
                self.server.url + MEMBER_PATH, auth=(key, secret), timeout=BOUND
            )
        except requests.RequestException:
            # No answer in time, or an empty reply: never acceptable.
            self.count("wrong")
            return 0
        status = response.status_code
        if status == 503:
            ok = (
                response.json()["errorCode"] == "gate-unavailable"
                and int(response.headers["Retry-After"]) >= 1
            )
        elif status == 200:
            ok = secret == DEMO_SECRET
        elif status == 403:
            ok = secret != DEMO_SECRET and response.json()["errorCode"] == "invalid-credentials"
        else:
            ok = False
        self.count(str(status) if str(status) in self.counts else "500")
        if not ok:
            self.count("wrong")
        return status

    def count(self, outcome: str) -> None:
        with self.lock:
            self.counts[outcome] += 1

    def during_fault(self, requests_: int, clients: int = 1) -> None:
        """The demo key and missing keys: 200 only from a worker's cache, else 503.

        With several clients, requests also wait behind a worker busy on a
        lookup; they must still be answered within BOUND.
        """
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            statuses = list(
                pool.map(lambda n: self.get(DEMO_SECRET if n % 2 else "wrong"), range(requests_))
            )
        assert set(statuses) <= {200, 503}, (statuses, self.server.output[-3000:])

    def recovered(self, answers: int = 6) -> None:
        """Missing keys answered 403 (only the store can) by every worker in time."""
        deadline = time.monotonic() + RECOVERY
        good = 0
        while good < answers:
            status = self.get("wrong")
            if status == 403:
                good += 1
                continue
            assert status == 503, self.server.output[-3000:]
            good = 0
            assert time.monotonic() < deadline, "the workers did not recover in time"
            time.sleep(0.02)
        assert self.get(DEMO_SECRET) == 200

    def check(self) -> None:
        assert self.counts["wrong"] == 0, (self.counts, self.server.output[-3000:])
        assert self.counts["500"] == 0, self.counts


@pytest.fixture
def proxied(database: tuple[str, str]) -> Iterator[tuple[str, str, FaultProxy]]:
    backend, url = database
    with fault_proxy(url) as faults:
        yield backend, url, faults


def test_preload_workers_on_their_own_connections_through_faults(
    proxied: tuple[str, str, FaultProxy],
) -> None:
    backend, url, faults = proxied
    workers = 2
    args = ["--preload", "--workers", str(workers), "--timeout", "30"]
    with gunicorn_run("example_app:create_app()", args, gate_env(faults, url)) as server:
        tally = Tally(server)
        # Load from several clients at once: with a shared socket some would
        # hang or fail (DuplicatePreparedStatement on PostgreSQL).
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            statuses = list(
                pool.map(lambda n: tally.get("wrong" if n % 3 else DEMO_SECRET), range(120))
            )
        assert set(statuses) <= {200, 403}, server.output[-3000:]
        # The master's connection (its start provisioned the database) and
        # at least one more per worker: none is shared.
        assert server_connections(backend, url) >= workers + 1

        faults.kill()
        tally.during_fault(20)
        faults.resume()
        tally.recovered()

        faults.pause()
        tally.during_fault(24, clients=4)
        faults.resume()
        tally.recovered()
        tally.check()
        assert server.process.poll() is None


def test_worker_restarted_during_an_outage(proxied: tuple[str, str, FaultProxy]) -> None:
    _, url, faults = proxied
    args = ["--workers", "1", "--max-requests", "5", "--max-requests-jitter", "0"]
    with gunicorn_run("example_app:create_app()", args, gate_env(faults, url)) as server:
        tally = Tally(server)
        assert tally.get(DEMO_SECRET) == 200
        faults.kill()
        # Three restarts while the database is away.
        tally.during_fault(16)
        assert len(server.worker_pids) >= 4, server.output[-3000:]
        assert server.process.poll() is None, server.output[-3000:]
        faults.resume()
        tally.recovered()
        tally.check()
        assert "not reachable at start" in server.output

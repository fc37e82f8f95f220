"""Redis as operators run it, for tests: a Sentinel (a master, a replica and
one or three sentinels) and a three-node Cluster, each made of Debian's
``redis-server`` and ``redis-sentinel`` processes on free ports of
127.0.0.1, without persistence, in a folder of the test's own.

Every process is started here and stopped by its PID (terminated, killed
after 10 s), also when a test fails: use them as context managers.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from .servers import REDIS_SERVER, START_TIMEOUT, free_port

REDIS_SENTINEL = shutil.which("redis-sentinel")
REDIS_CLI = shutil.which("redis-cli")
#: The service name the sentinels watch.
SERVICE = "gate"
#: How long a sentinel waits before it calls the master down, and the most a
#: failover may take: short, so a test sees one within seconds.
DOWN_AFTER_MS = 400
FAILOVER_TIMEOUT_MS = 2000


def ask(port: int, *command: str, timeout: float = 1.0) -> Any:
    """One command to the server on ``port``, by redis-py (decoded answer)."""
    import redis

    client = redis.Redis(port=port, socket_timeout=timeout, decode_responses=True)
    try:
        return client.execute_command(*command)
    finally:
        client.close()


def answers(port: int) -> bool:
    """Whether something on ``port`` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def wait_for(condition: Any, what: str, timeout: float = START_TIMEOUT) -> None:
    """Poll ``condition`` until it is true, or fail after ``timeout`` seconds."""
    import redis

    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError, LookupError, ValueError, TypeError):
            pass  # a node still starting answers with errors, or nothing
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)


class Node:
    """One ``redis-server`` or ``redis-sentinel`` process of a test's own."""

    def __init__(self, command: Sequence[str], port: int) -> None:
        self.port = port
        self.process: Optional[subprocess.Popen[bytes]] = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def wait_until_answering(self) -> None:
        process = self.process
        assert process is not None
        wait_for(
            lambda: process.poll() is None and answers(self.port),
            f"a Redis process on port {self.port}",
        )

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is flushed or handed over."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _server_args(port: int, folder: Path, *more: str) -> list[str]:
    assert REDIS_SERVER is not None
    return [
        REDIS_SERVER,
        *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)),
        *("--save", "", "--appendonly", "no"),
        *more,
    ]


def missing_tools() -> Optional[str]:
    """Why the Sentinel and Cluster cannot run here, or ``None``."""
    for name, path in (
        ("redis-server", REDIS_SERVER),
        ("redis-sentinel", REDIS_SENTINEL),
        ("redis-cli", REDIS_CLI),
    ):
        if path is None:
            return f"{name} is not on PATH"
    return None


class SentinelSet:
    """A master, one replica, and ``sentinels`` sentinels watching them.

    :attr:`url` is the gate's ``redis+sentinel://`` URL.
    """

    def __init__(self, folder: Path, sentinels: int = 1) -> None:
        self.folder = folder
        self.nodes: list[Node] = []
        self.master_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        self.url = f"redis+sentinel://{hosts}/{SERVICE}"
        self.servers: dict[int, Node] = {}

    def start(self) -> None:
        assert REDIS_SENTINEL is not None
        master = Node(_server_args(self.master_port, self.folder), self.master_port)
        replica = Node(
            _server_args(
                self.replica_port,
                self.folder,
                *("--replicaof", "127.0.0.1", str(self.master_port)),
            ),
            self.replica_port,
        )
        self.servers = {self.master_port: master, self.replica_port: replica}
        self.nodes += [master, replica]
        for node in (master, replica):
            node.wait_until_answering()
        wait_for(
            lambda: ask(self.replica_port, "INFO", "replication")["master_link_status"] == "up",
            "the replica in sync",
        )
        quorum = len(self.sentinel_ports) // 2 + 1
        for port in self.sentinel_ports:
            config = self.folder / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.folder}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} {quorum}\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {SERVICE} 1\n",
                encoding="utf-8",
            )
            node = Node([REDIS_SENTINEL, str(config)], port)
            self.nodes.append(node)
            node.wait_until_answering()
        others = len(self.sentinel_ports) - 1
        for port in self.sentinel_ports:
            wait_for(
                lambda port=port: (
                    len(ask(port, "SENTINEL", "REPLICAS", SERVICE)) == 1
                    and len(ask(port, "SENTINEL", "SENTINELS", SERVICE)) == others
                ),
                f"sentinel {port} seeing the replica and the other sentinels",
            )

    def master(self) -> int:
        """The master's port, as the first sentinel tells it."""
        _, port = ask(self.sentinel_ports[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(port)

    def kill_master(self) -> int:
        """Kill the master by its PID (SIGKILL) and wait until it is
        replaced; returns the new master's port."""
        old = self.master()
        new = self.replica_port if old == self.master_port else self.master_port
        self.servers[old].kill()
        self.wait_for_master(new)
        return new

    def wait_for_master(self, port: int) -> None:
        """Wait until every sentinel names the server on ``port`` the master,
        and it acts as one."""
        for sentinel in self.sentinel_ports:
            wait_for(
                lambda sentinel=sentinel: (
                    int(ask(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)[1]) == port
                ),
                f"sentinel {sentinel} naming {port} the master",
            )
        wait_for(lambda: ask(port, "ROLE")[0] == "master", f"the server on {port} acting as master")

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()


def _cluster_port() -> int:
    # A cluster node also listens on its port + 10000 (the cluster bus).
    while True:
        port = free_port()
        if port + 10000 <= 65535:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


class Cluster:
    """A Redis Cluster of ``size`` masters (no replicas), slots spread by
    ``redis-cli --cluster create``. :attr:`url` is the gate's
    ``redis+cluster://`` URL, naming two of the nodes."""

    def __init__(self, folder: Path, size: int = 3) -> None:
        self.folder = folder
        self.ports = [_cluster_port() for _ in range(size)]
        self.nodes: list[Node] = []
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports[:2])

    def start(self) -> None:
        assert REDIS_CLI is not None
        for port in self.ports:
            node = Node(
                _server_args(
                    port,
                    self.folder,
                    *("--cluster-enabled", "yes"),
                    *("--cluster-config-file", f"nodes-{port}.conf"),
                    *("--cluster-node-timeout", "2000"),
                ),
                port,
            )
            self.nodes.append(node)
        for node in self.nodes:
            node.wait_until_answering()
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                *("--cluster-replicas", "0", "--cluster-yes"),
            ],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=START_TIMEOUT,
        )
        for port in self.ports:
            wait_for(
                lambda port=port: "cluster_state:ok" in ask(port, "CLUSTER", "INFO"),
                f"cluster node {port} ready",
            )

    def node_of(self, name: str) -> int:
        """The port of the node that holds ``name``'s slot."""
        slot = int(ask(self.ports[0], "CLUSTER", "KEYSLOT", name))
        for start, end, (_, port, *_), *_ in ask(self.ports[0], "CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(port)
        raise AssertionError(f"no node holds slot {slot}")

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()


@contextmanager
def sentinel_set(folder: Path, sentinels: int = 1) -> Iterator[SentinelSet]:
    """A started :class:`SentinelSet`, stopped after."""
    made = SentinelSet(folder, sentinels)
    try:
        made.start()
        yield made
    finally:
        made.stop()


@contextmanager
def cluster(folder: Path, size: int = 3) -> Iterator[Cluster]:
    """A started :class:`Cluster`, stopped after."""
    made = Cluster(folder, size)
    try:
        made.start()
        yield made
    finally:
        made.stop()

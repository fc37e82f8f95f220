"""Run an app as a real HTTP server on 127.0.0.1, in a thread or a process,
and a Redis server of a test's own."""

from __future__ import annotations

import functools
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import requests
from werkzeug.serving import make_server

from . import ROOT

#: How long a server process may take to start listening.
START_TIMEOUT = 60.0
_RUNNING = re.compile(r"Running on (http://127\.0\.0\.1:\d+)")
_GUNICORN_LISTENING = re.compile(r"Listening at: (http://127\.0\.0\.1:\d+)")
_GUNICORN_WORKER = re.compile(r"Booting worker with pid: (\d+)")
REDIS_SERVER = shutil.which("redis-server")


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Serve ``app`` with werkzeug's threaded server on a free port.

    Yields the base URL; the socket listens before the URL is handed out.
    """
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-server", daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def http_session() -> requests.Session:
    """A requests session that ignores proxy settings of the environment."""
    client = requests.Session()
    client.trust_env = False
    return client


class ServerProcess:
    """A server started as a child process, with everything it printed."""

    def __init__(
        self, process: subprocess.Popen[str], listening: re.Pattern[str] = _RUNNING
    ) -> None:
        self.process = process
        self.url = ""
        self._listening = listening
        self._lines: queue.Queue[Optional[str]] = queue.Queue()
        self._output: list[str] = []
        self._reader = threading.Thread(target=self._read, name="server-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_until_listening(self, timeout: float = START_TIMEOUT) -> str:
        """The base URL, read from the server's "Running on" line."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"the server did not start:\n{self.output}") from None
            if line is None:
                raise AssertionError(f"the server exited:\n{self.output}")
            self._output.append(line)
            found = self._listening.search(line)
            if found:
                self.url = found[1]
                return self.url

    def wait_for_lines(self, pattern: re.Pattern[str], count: int, timeout: float) -> list[str]:
        """The first group of the first ``count`` matches of ``pattern`` in
        the output, waiting up to ``timeout`` seconds for them."""
        deadline = time.monotonic() + timeout
        while True:
            found = pattern.findall(self.output)
            if len(found) >= count:
                return found[:count]
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(
                    f"expected {count} lines like {pattern.pattern}:\n{self.output}"
                )
            time.sleep(0.05)

    @property
    def output(self) -> str:
        """What the server printed so far (stdout and stderr together)."""
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self._output.append(line)
        return "".join(self._output)

    @property
    def worker_pids(self) -> list[int]:
        """The PIDs of every gunicorn worker booted so far."""
        return [int(pid) for pid in _GUNICORN_WORKER.findall(self.output)]

    def stop(self) -> None:
        """Stop the process (by its own PID), then any worker it left, and close its pipe."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in self.worker_pids:
            _kill_if_alive(pid)
        self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _kill_if_alive(pid: int) -> None:
    # A worker whose master died may outlive it for a moment; never a
    # process of anyone else: only PIDs the master announced as its workers.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process, without any ``FLASK_*`` setting."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("FLASK_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _start(
    module_args: Sequence[str], cwd: Path, env: Optional[Mapping[str, str]]
) -> subprocess.Popen[str]:
    """``python -m MODULE ARGS`` in ``cwd``, its output (stdout and stderr
    together) readable as text, without standard input."""
    return subprocess.Popen(
        [sys.executable, "-m", *module_args],
        cwd=cwd,
        env=dict(env) if env is not None else child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
    )


@contextmanager
def flask_run(
    cwd: Path, args: Sequence[str] = (), env: Optional[Mapping[str, str]] = None
) -> Iterator[ServerProcess]:
    """``python -m flask --app example_app run --port 0`` in ``cwd``."""
    process = _start(["flask", "--app", "example_app", "run", "--port", "0", *args], cwd, env)
    server = ServerProcess(process)
    try:
        server.wait_until_listening()
        yield server
    finally:
        server.stop()


@functools.cache
def _no_control_socket() -> tuple[str, ...]:
    # gunicorn 24 and later open a control socket in the working folder;
    # older ones (Python 3.9 gets 23) do not know the option. Asked on the
    # first start, so importing this module does not need gunicorn.
    from gunicorn.config import KNOWN_SETTINGS

    known = any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS)
    return ("--no-control-socket",) if known else ()


@contextmanager
def gunicorn_run(
    app: str,
    args: Sequence[str] = (),
    env: Optional[Mapping[str, str]] = None,
    *,
    workers: Optional[int] = None,
) -> Iterator[ServerProcess]:
    """``gunicorn app`` on a free port of 127.0.0.1, from the project's root.

    :param workers: sync workers to start, and to wait for before yielding.

    Stops the master and every worker it announced by PID, also when the
    test fails.
    """
    more = ["--workers", str(workers)] if workers is not None else []
    process = _start(
        [
            "gunicorn",
            "--bind",
            "127.0.0.1:0",
            *_no_control_socket(),
            "--graceful-timeout",
            "5",
            *more,
            *args,
            app,
        ],
        ROOT,
        env,
    )
    server = ServerProcess(process, _GUNICORN_LISTENING)
    try:
        server.wait_until_listening()
        if workers is not None:
            server.wait_for_lines(_GUNICORN_WORKER, workers, START_TIMEOUT)
        yield server
    finally:
        server.stop()


def free_port() -> int:
    """A TCP port of 127.0.0.1 nothing listens on (just now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class RedisServer:
    """A ``redis-server`` of the test's own, on its own port, without
    persistence: started, stopped and started again by its PID."""

    def __init__(self, port: Optional[int] = None) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not on PATH")
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> None:
        """Start it and wait until it answers."""
        assert REDIS_SERVER is not None and self.process is None
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.answers():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def answers(self) -> bool:
        """Whether it answers PING."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop it (by its PID) and wait for it to exit."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, stopped after."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()

"""Run an app as a real HTTP server on 127.0.0.1, in a thread or a process."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from werkzeug.serving import make_server

#: How long a server process may take to start listening.
START_TIMEOUT = 60.0
_RUNNING = re.compile(r"Running on (http://127\.0\.0\.1:\d+)")


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


class ServerProcess:
    """A server started as a child process, with everything it printed."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.url = ""
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
            found = _RUNNING.search(line)
            if found:
                self.url = found[1]
                return self.url

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

    def stop(self) -> None:
        """Stop the process (by its own PID) and close its pipe."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process, without any ``FLASK_*`` setting."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("FLASK_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@contextmanager
def flask_run(
    cwd: Path, args: Sequence[str] = (), env: Optional[Mapping[str, str]] = None
) -> Iterator[ServerProcess]:
    """``python -m flask --app example_app run --port 0`` in ``cwd``."""
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "example_app", "run", "--port", "0", *args],
        cwd=cwd,
        env=dict(env) if env is not None else child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
    )
    server = ServerProcess(process)
    try:
        server.wait_until_listening()
        yield server
    finally:
        server.stop()

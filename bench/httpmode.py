"""HTTP mode: gunicorn (sync workers, 127.0.0.1 only) under wrk.

Each server runs in its own process group, started with :mod:`subprocess`
and always terminated (then killed if it lingers) when its ``with`` block
ends, whatever happened inside.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bench.serve import STORE_ENV

HOST = "127.0.0.1"
#: Sync workers: one per core but one, which wrk keeps busy.
WORKERS = max(1, (os.cpu_count() or 1) - 1)
#: wrk connections: two per worker, so none idles between requests.
CONNECTIONS = 2 * WORKERS
_STARTUP_SECONDS = 15.0


@dataclass(frozen=True)
class WrkResult:
    """What wrk measured against one server."""

    requests_per_second: float
    #: Responses that were not 2xx or 3xx (should be 0).
    errors: int
    #: Connect, read and write errors and timeouts.
    socket_errors: int = 0
    #: What wrk printed, including anything its Lua script wrote.
    output: str = ""


def missing_tools() -> Optional[str]:
    """Why the HTTP mode cannot run here, or ``None`` when it can."""
    if importlib.util.find_spec("gunicorn") is None:
        return "gunicorn is not installed"
    if shutil.which("wrk") is None:
        return "wrk is not on PATH"
    return None


def exit_on_sigterm() -> None:
    """Turn SIGTERM into :class:`SystemExit`, so ``with`` blocks stop their servers.

    By default SIGTERM ends Python without unwinding, which would leave
    gunicorn (in a session of its own) running.
    """

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_serving(process: subprocess.Popen[bytes], url: str, authorization: str) -> None:
    deadline = time.monotonic() + _STARTUP_SECONDS
    request = urllib.request.Request(url, headers={"Authorization": authorization})
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with status {process.returncode} before serving")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status != 200:
                    raise RuntimeError(f"{url} answered {response.status}")
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"gunicorn did not serve {url} within {_STARTUP_SECONDS:g}s"
                ) from None
            time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the server's process group (master and workers), then kill it if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wrk_command(
    url: str,
    seconds: float,
    *,
    connections: int = CONNECTIONS,
    authorization: Optional[str] = None,
    script: Optional[Path] = None,
    script_args: Sequence[str] = (),
) -> list[str]:
    """The wrk command line: one thread, ``connections`` connections for ``seconds``.

    :param authorization: the ``Authorization`` header of every request.
    :param script: a Lua script (``-s``); ``script_args`` reach its ``init``.
    """
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s"]
    if authorization is not None:
        command += ["-H", f"Authorization: {authorization}"]
    if script is not None:
        command += ["-s", str(script)]
    command.append(url)
    if script_args:
        command += ["--", *script_args]
    return command


def read_wrk(output: str) -> WrkResult:
    """What wrk measured, from its output."""
    rate = re.search(r"Requests/sec:\s*([\d.]+)", output)
    if rate is None:
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    errors = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        float(rate.group(1)),
        int(errors.group(1)) if errors else 0,
        sum(int(count) for count in sockets.groups()) if sockets else 0,
        output,
    )


def wrk(
    url: str, authorization: str, seconds: float, *, connections: int = CONNECTIONS
) -> WrkResult:
    """Run wrk against ``url`` for ``seconds`` with the given ``Authorization`` header."""
    output = subprocess.run(
        wrk_command(url, seconds, connections=connections, authorization=authorization),
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    return read_wrk(output)


@contextmanager
def serving(
    factory: str,
    authorization: str,
    log: Path,
    store: Optional[Path] = None,
    *,
    workers: int = WORKERS,
    env: Optional[dict[str, str]] = None,
) -> Iterator[str]:
    """Serve ``bench.serve:<factory>()`` with gunicorn; yield the member URL.

    The server is stopped on leaving the block, whatever happened in it.

    :param authorization: sent with the request that checks the server answers 200.
    :param log: where gunicorn's output goes (shown if it fails to start).
    :param store: the SQLite store of the gate app.
    :param workers: gunicorn's sync workers.
    :param env: more environment variables for the server.
    """
    port = _free_port()
    url = f"http://{HOST}:{port}/api/v2/members/M0001"
    extra = env or {}
    env = dict(os.environ)
    env.update(extra)
    if store is not None:
        env[STORE_ENV] = str(store)
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--worker-class",
        "sync",
        "--workers",
        str(workers),
        "--bind",
        f"{HOST}:{port}",
        "--log-level",
        "warning",
        f"bench.serve:{factory}()",
    ]
    root = Path(__file__).resolve().parent.parent
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            try:
                _wait_until_serving(process, url, authorization)
            except RuntimeError as exc:
                out.flush()
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{exc}; gunicorn's log:\n{tail}") from None
            yield url
        finally:
            _stop(process)

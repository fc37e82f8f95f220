"""HTTP mode: gunicorn (sync workers, 127.0.0.1 only) under wrk.

Each server is started by the tests' :func:`tests.support.servers.gunicorn_run`,
on a port gunicorn picks, and always stopped (its master, then every worker
it announced, by PID) when its ``with`` block ends, whatever happened inside.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bench.serve import STORE_ENV
from bench.timing import PATH
from tests.support.servers import child_env, gunicorn_run

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
    #: Requests completed.
    requests: int = 0


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
    gunicorn running.
    """

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)


def _check_serves(url: str, authorization: str) -> None:
    """One request with ``authorization``; raise unless it answers 200.

    It waits, in the listening socket's backlog, for a worker that has loaded the app.
    """
    request = urllib.request.Request(url, headers={"Authorization": authorization})
    with urllib.request.urlopen(request, timeout=_STARTUP_SECONDS) as response:
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}")


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
    total = re.search(r"(\d+) requests in", output)
    return WrkResult(
        float(rate.group(1)),
        int(errors.group(1)) if errors else 0,
        sum(int(count) for count in sockets.groups()) if sockets else 0,
        output,
        int(total.group(1)) if total else 0,
    )


#: A wrk script that counts the 200 answers of each second (the client's
#: clock) and prints them as ``second <POSIX second> <count>`` lines.
PER_SECOND_LUA = """
local threads = {}
counts = {}
function setup(thread)
  table.insert(threads, thread)
end
function response(status, headers, body)
  if status == 200 then
    local now = os.time()
    counts[now] = (counts[now] or 0) + 1
  end
end
function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for second, count in pairs(thread:get("counts")) do
      io.write(string.format("second %d %d\\n", second, count))
    end
  end
end
"""


def read_per_second(output: str) -> dict[int, int]:
    """The 200 answers of each second, from a :data:`PER_SECOND_LUA` run."""
    return {int(second): int(count) for second, count in re.findall(r"second (\d+) (\d+)", output)}


def wrk(
    url: str,
    authorization: str,
    seconds: float,
    *,
    connections: int = CONNECTIONS,
    script: Optional[Path] = None,
) -> WrkResult:
    """Run wrk against ``url`` for ``seconds`` with the given ``Authorization`` header."""
    output = subprocess.run(
        wrk_command(
            url, seconds, connections=connections, authorization=authorization, script=script
        ),
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
    store: Optional[Path] = None,
    *,
    workers: int = WORKERS,
    env: Optional[dict[str, str]] = None,
) -> Iterator[str]:
    """Serve ``bench.serve:<factory>()`` with gunicorn; yield the member URL.

    The server is stopped on leaving the block, whatever happened in it.

    :param authorization: sent with the request that checks the server answers 200.
    :param store: the SQLite store of the gate app.
    :param workers: gunicorn's sync workers, booted before the check.
    :param env: more environment variables for the server.
    """
    extra = dict(env or {})
    if store is not None:
        extra[STORE_ENV] = str(store)
    with gunicorn_run(
        f"bench.serve:{factory}()", env=child_env(**extra), workers=workers
    ) as server:
        url = server.url + PATH
        try:
            _check_serves(url, authorization)
        except (OSError, RuntimeError) as exc:
            raise RuntimeError(f"{exc}; gunicorn's output:\n{server.output[-2000:]}") from None
        yield url

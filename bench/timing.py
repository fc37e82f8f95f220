"""Call WSGI apps in-process and time them over interleaved rounds.

Every case runs the same loop: copy a prebuilt environ (werkzeug mutates it),
call the app with a no-op ``start_response``, drain the body and close it. The
cases take turns (round-robin, with the starting case rotated each round) so
that drift in the machine's speed touches all of them alike, and the reported
figure is the median over rounds of the mean time per call within a round.
The garbage collector is off inside every timed loop and a collection runs
between loops, for every case alike. A case can also time a plain function
on each of its inputs (:func:`run_each`), such as a driver's round trip
against the gate's read path on the same keys.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import cycle, islice
from typing import Any, Optional

from werkzeug.test import EnvironBuilder

from tests.support.apps import call_wsgi

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

#: The path every benchmark app serves, after the members API of the example app.
PATH = "/api/v2/members/M0001"


def make_environ(authorization: Optional[str] = None, path: str = PATH) -> Environ:
    """Build a GET environ for ``path``, with an ``Authorization`` header if given."""
    headers = [("Authorization", authorization)] if authorization is not None else []
    builder = EnvironBuilder(path=path, base_url="http://127.0.0.1/", headers=headers)
    try:
        return builder.get_environ()
    finally:
        builder.close()


def _discard_start_response(
    status: str, headers: Any, exc_info: Any = None
) -> Callable[[bytes], None]:
    return _discard_write


def _discard_write(data: bytes) -> None:
    """The ``write`` callable handed back by the no-op ``start_response``."""


def serve(app: WSGIApp, environ: Environ) -> tuple[str, bytes]:
    """Call ``app`` once on a copy of ``environ``; return the status line and the body."""
    status, _, payload = call_wsgi(app, environ.copy())
    return status, payload


def check(app: WSGIApp, environ: Environ, name: str, expect: str = "200") -> None:
    """Call ``app`` once and raise unless it answers ``expect``, so no case
    times an answer it did not mean to."""
    status, payload = serve(app, environ)
    if not status.startswith(expect):
        raise RuntimeError(f"case {name!r} answered {status}: {payload[:200]!r}")


def run_calls(app: WSGIApp, environs: Sequence[Environ]) -> int:
    """Serve every environ in order and return the elapsed nanoseconds.

    ``environs`` is prebuilt by the caller so that choosing the next request
    costs the same (one list step) in every case.
    """
    start_response = _discard_start_response
    with _collector_off():
        started = time.perf_counter_ns()
        for environ in environs:
            body = app(environ.copy(), start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return time.perf_counter_ns() - started


def run_each(function: Callable[[Any], object], arguments: Sequence[Any]) -> int:
    """Call ``function`` on every argument in order and return the elapsed nanoseconds.

    The loop of :func:`run_calls` for a case that is not a WSGI app: the
    same collector handling, one call per input.
    """
    with _collector_off():
        started = time.perf_counter_ns()
        for argument in arguments:
            function(argument)
        return time.perf_counter_ns() - started


@contextlib.contextmanager
def _collector_off() -> Iterator[None]:
    # A collection now, none while timing: every case starts from the same
    # heap and no round pays for another's garbage.
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


#: Times one batch of a case's inputs on its ``app``; returns nanoseconds.
Runner = Callable[[Any, Sequence[Any]], int]


@dataclass
class Case:
    """One line of the table: a WSGI app and the requests it is timed on.

    With ``runner=run_each``, ``app`` is any function and ``environs`` its
    arguments (keys, say); the builder checks its answers, :func:`calibrate`
    checks only WSGI answers.
    """

    name: str
    #: A WSGI app, or the function a :func:`run_each` case times.
    app: Callable[..., Any]
    #: The request sequence, cycled; most cases have one request, the mixed
    #: and cold cases a long draw over many keys.
    environs: Sequence[Environ]
    #: Calls per round, set by :func:`calibrate`.
    calls: int = 0
    #: Mean microseconds per call, one figure per round.
    samples: list[float] = field(default_factory=list)
    #: Where the next batch starts in the request sequence.
    cursor: int = 0
    #: Calls made before timing, at least; the cold cases warm every key
    #: they sample, so no round pays for reading pages from disk.
    warmup: int = 0
    #: How a batch is timed: :func:`run_calls` serves WSGI requests,
    #: :func:`run_each` calls a function.
    runner: Runner = run_calls
    #: The status every request of the case gets (a refusal case expects one).
    expect: str = "200"

    def batch(self, calls: int) -> list[Environ]:
        """Return the next ``calls`` requests of the sequence, so no round replays another."""
        start = self.cursor % len(self.environs)
        self.cursor = start + calls
        return list(islice(cycle(self.environs), start, start + calls))


def calibrate(case: Case, round_seconds: float, min_calls: int) -> None:
    """Check a WSGI case answers as expected, warm it up, size its rounds to ``round_seconds``."""
    if case.runner is run_calls:
        check(case.app, case.environs[0], case.name, case.expect)
    case.runner(case.app, case.batch(max(0, case.warmup - min_calls)))
    elapsed = case.runner(case.app, case.batch(min_calls))
    per_call = elapsed / min_calls / 1e9
    case.calls = max(min_calls, int(round_seconds / per_call))


def interleave(cases: Sequence[Case], rounds: int) -> None:
    """Run ``rounds`` rounds over all cases, rotating which case goes first."""
    for index in range(rounds):
        start = index % len(cases)
        for case in [*cases[start:], *cases[:start]]:
            elapsed = case.runner(case.app, case.batch(case.calls))
            case.samples.append(elapsed / case.calls / 1000)

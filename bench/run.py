"""Run the benchmark and print its tables.

``python -m bench [--quick] [--http] [--profile] [--flood]``, or
``python bench/run.py`` from the repository root. The exit status is 0
whatever the numbers are; only a crash fails the run. ``--flood`` adds
hostile traffic (:mod:`bench.flood`), and ``--quick`` runs a shorter flood
too, so CI sees it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):
    # Run as a script: make the repository root importable instead of bench/,
    # whose module names would otherwise shadow top-level ones.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import cases, flood, httpmode, keydb, machine, peers, profiling, serve, servers
from bench.gateapps import gate_app, provision
from bench.keydb import PACKAGE
from bench.report import Figure, Row, figure_table, timing_table
from bench.timing import Case, calibrate, interleave
from flask_basic_gate.testing import basic_auth_header

_ROOT = Path(__file__).resolve().parent.parent
_MB = 1e6
#: Requests each peak-RSS probe serves, on as many distinct keys: the same
#: work and the same cache size whatever the size of the store.
_RSS_REQUESTS = 1000


@dataclass(frozen=True)
class Settings:
    """How long and how large a run is."""

    #: Interleaved rounds per case.
    rounds: int
    #: Wall time each case spends in one round.
    round_seconds: float
    #: Fewest calls per round (and the warm-up length).
    min_calls: int
    #: Keys in the large cold store.
    big_keys: int
    #: First requests timed for the scrypt secret.
    kdf_trials: int
    #: Seconds of each wrk run in ``--http`` mode.
    http_seconds: float
    #: wrk runs per server in ``--http`` mode.
    http_rounds: int
    #: Requests profiled per case in ``--profile`` mode.
    profile_calls: int
    #: Seconds of each flood scenario (wrk takes whole seconds).
    flood_seconds: int
    #: Interleaved rounds of the cases on database servers: more than
    #: ``rounds`` in quick mode, since a round trip flips between a fast and
    #: a slow mode (the server's process woken or still running) on a busy
    #: machine, and a few rounds can put two cases in different modes.
    server_rounds: int


QUICK = Settings(
    rounds=9,
    round_seconds=0.04,
    min_calls=200,
    big_keys=100_000,
    kdf_trials=3,
    http_seconds=2,
    http_rounds=2,
    profile_calls=5000,
    flood_seconds=flood.QUICK_SECONDS,
    server_rounds=21,
)
FULL = Settings(
    rounds=31,
    round_seconds=0.12,
    min_calls=500,
    big_keys=1_000_000,
    kdf_trials=7,
    http_seconds=5,
    http_rounds=3,
    profile_calls=20_000,
    flood_seconds=flood.FULL_SECONDS,
    server_rounds=31,
)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short run for CI: fewer rounds, 100k keys instead of 1M",
    )
    parser.add_argument(
        "--http", action="store_true", help="also serve bare and gate apps with gunicorn under wrk"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also show, under cProfile, what the warm and cold paths add to the bare route",
    )
    parser.add_argument(
        "--flood",
        action="store_true",
        help=(
            "also flood gunicorn (2 workers) with hostile requests and show a valid client's"
            " requests/s under each kind, against an exempt-route flood (--quick runs it shorter)"
        ),
    )
    return parser.parse_args(argv)


def _say(message: str) -> None:
    """Report progress on stderr, after whatever the tables have printed so far."""
    sys.stdout.flush()
    print(message, file=sys.stderr, flush=True)


def _stores(settings: Settings) -> None:
    """Build the cached key stores that are missing, saying how long it took."""
    for count in sorted({cases.SMALL_KEYS, cases.MIXED_KEYS, settings.big_keys}):
        started = time.perf_counter()
        path, built = keydb.ensure_store(count)
        if built:
            seconds = time.perf_counter() - started
            _say(f"built {path.relative_to(_ROOT)} ({count:,} keys) in {seconds:.1f}s")


def time_cases(settings: Settings, workdir: Path, notes: list[str]) -> tuple[list[Row], list[Case]]:
    """Build every case, time them in interleaved rounds; return the rows and the cases."""
    kdf = cases.kdf_case(workdir)
    kdf_first = cases.time_first_requests(kdf, settings.kdf_trials)
    big = cases.cold_name(settings.big_keys)
    timed: list[Case] = [
        *cases.peer_cases(workdir, notes),
        cases.warm_case(workdir),
        *cases.refusal_cases(workdir),
        cases.cold_case(cases.COLD_1K, cases.SMALL_KEYS),
        cases.cold_case(big, settings.big_keys),
        cases.cold_case(cases.mmap_name(settings.big_keys), settings.big_keys, mmap=True),
        Case(cases.KDF_AFTER, kdf.app, [kdf.environ]),
        cases.mixed_case(),
    ]
    warm_at = timed.index(next(c for c in timed if c.name == cases.WARM)) + 1
    for extra in (cases.warm_metrics_case(workdir, notes), cases.warm_redis_case(workdir, notes)):
        if extra is not None:
            timed.insert(warm_at, extra)
    for case in timed:
        calibrate(case, settings.round_seconds, settings.min_calls)
    _say(f"timing {len(timed)} cases over {settings.rounds} rounds")
    interleave(timed, settings.rounds)

    targets = cases.targets(settings.big_keys)
    rows = [Row(case.name, case.samples, targets.get(case.name)) for case in timed]
    kdf_row = Row(
        cases.KDF_FIRST,
        kdf_first,
        note=f"{len(kdf_first)} requests on an emptied cache, one KDF each",
    )
    rows.insert([row.name for row in rows].index(cases.KDF_AFTER), kdf_row)
    if settings.big_keys < 1_000_000:
        notes.append(
            f"quick mode: the large cold store has {settings.big_keys:,} keys, not 1,000,000"
        )
    return rows, timed


def _probe(*args: str) -> dict[str, int]:
    """Run a :mod:`bench.memprobe` probe in a child process and return its JSON result."""
    command = [sys.executable, "-m", "bench.memprobe", *args]
    done = subprocess.run(command, cwd=_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe {args[0]} failed:\n{done.stderr[-3000:]}")
    result: dict[str, int] = json.loads(done.stdout)
    return result


def _peak_rss_mb(keys: int) -> float:
    """Peak RSS of a child process serving the cached store of ``keys`` keys."""
    path, _ = keydb.ensure_store(keys)
    result = _probe("rss", str(path), str(keys), str(_RSS_REQUESTS))
    return result["peak_rss_kib"] * 1024 / _MB


def memory_figures(settings: Settings) -> list[Figure]:
    """Peak RSS with a small and a large store, and the size of a cache of 10k entries."""
    small = _peak_rss_mb(cases.SMALL_KEYS)
    big = _peak_rss_mb(settings.big_keys)
    mixed_path, _ = keydb.ensure_store(cases.MIXED_KEYS)
    filled = _probe("cache", str(mixed_path), str(cases.MIXED_KEYS))
    per_entry = filled["cache_bytes"] // filled["entries"]
    big_label = cases.keys_label(settings.big_keys)
    served = f"{_RSS_REQUESTS:,} requests on distinct keys, cache on"
    return [
        Figure(
            f"peak RSS, {cases.keys_label(cases.SMALL_KEYS)}-key store", small, "MB", note=served
        ),
        Figure(f"peak RSS, {big_label}-key store", big, "MB", note=served),
        Figure(
            f"RSS added by {big_label} keys",
            big - small,
            "MB",
            limit=10,
            note="bounded caches only",
        ),
        Figure(
            f"cache holding {filled['entries']:,} entries",
            filled["cache_bytes"] / _MB,
            "MB",
            limit=10,
            note=f"tracemalloc diff, {per_entry:,} bytes per entry",
        ),
    ]


def _alternating_wrk(
    settings: Settings,
    servers: dict[str, tuple[str, Optional[Path]]],
    *,
    workers: int = httpmode.WORKERS,
    env: Optional[dict[str, str]] = None,
) -> tuple[dict[str, list[float]], int, str]:
    """Serve each of ``servers`` (factory name: its ``Authorization`` and its
    store) with gunicorn at once, then run wrk against them in turn.

    :return: the requests per second of each run by server, the non-2xx
        responses in all, and a line that says how it was measured.
    """
    connections = 2 * workers
    rates: dict[str, list[float]] = {name: [] for name in servers}
    errors = 0
    with contextlib.ExitStack() as stack:
        urls = {
            name: stack.enter_context(
                httpmode.serving(
                    name,
                    authorization,
                    store=store,
                    workers=workers,
                    env=env,
                )
            )
            for name, (authorization, store) in servers.items()
        }
        for name, url in urls.items():  # warm-up: workers import lazily, caches fill
            httpmode.wrk(url, servers[name][0], 1, connections=connections)
        for _ in range(settings.http_rounds):
            for name, url in urls.items():
                result = httpmode.wrk(
                    url, servers[name][0], settings.http_seconds, connections=connections
                )
                rates[name].append(result.requests_per_second)
                errors += result.errors
    setup = (
        f"median of {settings.http_rounds} alternating wrk runs -c{connections}"
        f" -d{settings.http_seconds:g}s, gunicorn {workers} sync worker(s)"
    )
    return rates, errors, setup


def http_figures(settings: Settings, workdir: Path) -> list[Figure]:
    """Requests per second of gunicorn serving the bare and the gate app, wrk runs alternating."""
    store = workdir / "http.sqlite"
    app, _ = gate_app(store, "bench_http_setup")
    new = provision(app)
    rates, errors, setup = _alternating_wrk(
        settings,
        {
            "bare": (basic_auth_header(peers.KEY, peers.SECRET), None),
            "gate": (basic_auth_header(new.key, new.secret), store),
        },
    )
    bare, gated = (statistics.median(rates[name]) for name in ("bare", "gate"))
    runs = {name: f"runs {min(r):,.0f}-{max(r):,.0f}" for name, r in rates.items()}
    return [
        Figure("bare, requests/s", bare, "req/s", note=runs["bare"]),
        Figure("gate warm, requests/s", gated, "req/s", note=runs["gate"]),
        Figure("gate / bare", gated / bare, "x", precision=2, note=setup),
        Figure("non-2xx responses", errors, "", limit=1, precision=0),
    ]


#: gunicorn workers of the many-workers comparison (issue 11 asks for 4).
MANY_WORKERS = 4


def http_redis_figures(settings: Settings, workdir: Path) -> list[Figure]:
    """Requests per second of 4 gunicorn workers serving the bare route and
    the gate with a plan (calls per second and a quota) counted on Redis,
    wrk runs alternating. Empty when no Redis URL is given."""
    url = next((os.environ[name] for name in cases.REDIS_ENV if os.environ.get(name)), None)
    if url is None:
        return []
    store = workdir / "http-redis.sqlite"
    app, gate = gate_app(store, "bench_http_redis_setup")
    new = provision(app)
    with app.app_context():
        # High enough that no timed call is refused: every call is counted.
        gate.store.update_package(PACKAGE, qps=10**9, quota="2000000000/month")
    rates, errors, setup = _alternating_wrk(
        settings,
        {
            "bare": (basic_auth_header(peers.KEY, peers.SECRET), None),
            "gate_redis": (basic_auth_header(new.key, new.secret), store),
        },
        workers=MANY_WORKERS,
        env={serve.REDIS_URL_ENV: url},
    )
    bare, gated = (statistics.median(rates[name]) for name in ("bare", "gate_redis"))
    return [
        Figure(f"bare, {MANY_WORKERS} workers, requests/s", bare, "req/s"),
        Figure("gate + plan on Redis, requests/s", gated, "req/s", note="QPS and quota counted"),
        Figure("gate + plan on Redis / bare", gated / bare, "x", precision=2, note=setup),
        Figure("non-2xx responses", errors, "", limit=1, precision=0),
    ]


def _print_table(title: str, lines: list[str]) -> None:
    print()
    print(title)
    for line in lines:
        print(f"  {line}")


def main(argv: Optional[list[str]] = None) -> int:
    """Run the benchmark and print its tables; returns 0 unless something crashed."""
    args = parse_args(argv)
    httpmode.exit_on_sigterm()
    settings = QUICK if args.quick else FULL
    print("flask-basic-gate benchmark" + (" --quick" if args.quick else ""))
    for line in machine.describe():
        print(f"  {line}")
    notes: list[str] = []
    _stores(settings)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        rows, timed = time_cases(settings, workdir, notes)
        _print_table(
            f"in-process WSGI calls: median µs per request over {settings.rounds}"
            " interleaved rounds (iqr: spread of the rounds)",
            timing_table(rows, cases.BARE, cases.HTTPAUTH),
        )
        notes.append(f"load average after timing: {machine.load()}")
        for note in notes:
            print(f"  note: {note}")
        _say("timing cold lookups on the database servers")
        for title, lines in servers.sections(
            settings.server_rounds, settings.round_seconds, settings.min_calls
        ):
            _print_table(title, lines)
        if args.profile:
            by_name = {case.name: case for case in timed}
            for name in (cases.WARM, cases.COLD_1K):
                _print_table(
                    "profile",
                    profiling.overhead(by_name[name], by_name[cases.BARE], settings.profile_calls),
                )
        _say("measuring memory in child processes")
        _print_table("memory", figure_table(memory_figures(settings)))
        if args.http:
            missing = httpmode.missing_tools()
            if missing is not None:
                print(f"\nhttp: skipped, {missing}")
            else:
                _say("serving with gunicorn under wrk")
                _print_table("http (127.0.0.1)", figure_table(http_figures(settings, workdir)))
                many = http_redis_figures(settings, workdir)
                if many:
                    _print_table(
                        f"http, {MANY_WORKERS} workers, plan on Redis (127.0.0.1)",
                        figure_table(many),
                    )
                else:
                    print(f"\nhttp on Redis: skipped, set {cases.REDIS_ENV[0]} to a redis:// URL")
        if args.flood or args.quick:
            missing = httpmode.missing_tools()
            if missing is not None:
                print(f"\nflood: skipped, {missing}")
            else:
                _say(f"flooding gunicorn, {settings.flood_seconds} s per scenario")
                outcomes = flood.run(workdir, settings.flood_seconds)
                _print_table(flood.title(settings.flood_seconds), flood.flood_table(outcomes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

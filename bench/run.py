"""Run the benchmark and print its tables.

``python -m bench [--quick] [--http] [--profile] [--flood]``, or
``python bench/run.py`` from the repository root. The exit status is 0
whatever the numbers are; only a crash fails the run. ``--flood`` adds
hostile traffic (:mod:`bench.flood`), and ``--quick`` runs a shorter flood
too, so CI sees it. ``--http`` and ``--quick`` serve the gate with a plan
counted on a Redis of the run's own beside the exempt route of the same
server, on 2 and 4 gunicorn workers (``python -m bench.plans --http`` runs
that table alone).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urljoin

if __package__ in (None, ""):
    # Run as a script: make the repository root importable instead of bench/,
    # whose module names would otherwise shadow top-level ones.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import (
    cases,
    flood,
    httpmode,
    instructions,
    keydb,
    machine,
    peers,
    profiling,
    serve,
    servers,
)
from bench.gateapps import gate_app, provision
from bench.keydb import PACKAGE
from bench.report import Figure, Row, figure_table, table, timing_table
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


#: gunicorn workers of the plan-on-Redis comparison.
PLAN_WORKERS = (2, 4)
#: The calls per second of the key whose admission is measured: well below
#: what the server answers, so demand stays above it.
ADMISSION_QPS = 500
#: Targets: the gate with a plan on Redis against the exempt route of the
#: same server, and the Redis commands a busy key costs.
PLAN_RATIO_TARGET = 0.9
PLAN_COMMANDS_TARGET = 100.0
#: Commands of connections and of revocation's pub/sub, not of counting.
NOT_COUNTING = ("info", "ping", "subscribe", "unsubscribe", "publish", "hello", "client", "select")


def _commands(client: Any) -> tuple[int, int]:
    """Commands Redis ran so far (``INFO commandstats``, those scripts run
    included): those that count calls, and all but ``INFO``."""
    stats = client.info("commandstats")
    counting = everything = 0
    for name, entry in stats.items():
        command = name[len("cmdstat_") :]
        if command != "info":
            everything += entry["calls"]
        if command not in NOT_COUNTING:
            counting += entry["calls"]
    return counting, everything


def plan_redis_tables(settings: Settings, workdir: Path) -> tuple[list[str], list[str]]:
    """The gate with a plan (QPS and quota, far from both) counted on a
    Redis of its own against the exempt route of the same gunicorn server,
    on 2 and 4 workers, wrk runs alternating; the Redis commands per 1,000
    counted calls (``INFO commandstats`` deltas); and how much of a QPS
    limit a key under more demand gets each second.

    :return: the table's lines, and notes.
    """
    import redis

    from bench.serve import EXEMPT_PATH
    from tests.support.apps import provision as add_package_key
    from tests.support.servers import redis_server

    store = workdir / "plan-redis.sqlite"
    app, gate = gate_app(store, "bench_plan_redis_setup")
    busy = provision(app)
    limited = add_package_key(app, None, None, package="limited")
    free = add_package_key(app, None, None, package="free")
    with app.app_context():
        # Far from both limits: every timed call is counted and served.
        gate.store.update_package(PACKAGE, qps=10**9, quota="2000000000/month")
        gate.store.update_package("limited", qps=ADMISSION_QPS)
    busy_auth = basic_auth_header(busy.key, busy.secret)
    limited_auth = basic_auth_header(limited.key, limited.secret)
    free_auth = basic_auth_header(free.key, free.secret)
    rows: list[list[str]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-lua-") as scripts:
        per_second = Path(scripts) / "per-second.lua"
        per_second.write_text(httpmode.PER_SECOND_LUA, encoding="utf-8")
        for workers in PLAN_WORKERS:
            connections = 2 * workers
            exempt: list[float] = []
            gated: list[float] = []
            unplanned: list[float] = []
            counted = spent = spent_all = errors = 0
            with (
                redis_server() as server,
                httpmode.serving(
                    "plan_redis",
                    busy_auth,
                    store=store,
                    workers=workers,
                    env={serve.REDIS_URL_ENV: server.url},
                ) as member_url,
            ):
                client = redis.Redis.from_url(server.url)
                try:
                    exempt_url = urljoin(member_url, EXEMPT_PATH)
                    # Warm-up: workers import lazily, caches fill, rates are seen.
                    httpmode.wrk(exempt_url, busy_auth, 1, connections=connections)
                    httpmode.wrk(member_url, busy_auth, 1, connections=connections)
                    httpmode.wrk(member_url, free_auth, 1, connections=connections)
                    for _ in range(settings.http_rounds):
                        run = httpmode.wrk(
                            exempt_url, busy_auth, settings.http_seconds, connections=connections
                        )
                        exempt.append(run.requests_per_second)
                        run = httpmode.wrk(
                            member_url, free_auth, settings.http_seconds, connections=connections
                        )
                        unplanned.append(run.requests_per_second)
                        before = _commands(client)
                        run = httpmode.wrk(
                            member_url, busy_auth, settings.http_seconds, connections=connections
                        )
                        after = _commands(client)
                        gated.append(run.requests_per_second)
                        counted += run.requests
                        errors += run.errors
                        spent += after[0] - before[0]
                        spent_all += after[1] - before[1]
                    admission = httpmode.wrk(
                        member_url,
                        limited_auth,
                        settings.http_seconds + 2,
                        connections=connections,
                        script=per_second,
                    )
                finally:
                    client.close()
            counts = httpmode.read_per_second(admission.output)
            # The first and last seconds are cut by the run's start and end.
            whole = [counts[second] for second in sorted(counts)[1:-1]]
            exempt_rate, gate_rate = statistics.median(exempt), statistics.median(gated)
            ratio = gate_rate / exempt_rate
            free_ratio = statistics.median(unplanned) / exempt_rate
            per_1000 = 1000 * spent / max(counted, 1)
            met = ratio >= PLAN_RATIO_TARGET and per_1000 <= PLAN_COMMANDS_TARGET
            rows.append(
                [
                    str(workers),
                    f"{exempt_rate:,.0f}",
                    f"{gate_rate:,.0f}",
                    f"{ratio:.2f}x",
                    f"{free_ratio:.2f}x",
                    f"{per_1000:.1f}",
                    f"{1000 * spent_all / max(counted, 1):.1f}",
                    f"{min(whole, default=0)}-{max(whole, default=0)} of {ADMISSION_QPS}",
                    "PASS" if met else "MISS",
                ]
            )
            if errors:
                notes.append(f"{workers} workers: {errors} non-2xx answers on the busy key")
    notes.append(
        f"median of {settings.http_rounds} alternating wrk runs -c(2 x workers)"
        f" -d{settings.http_seconds:g}s per route; targets: >= {PLAN_RATIO_TARGET:.2f}x the"
        f" exempt route, <= {PLAN_COMMANDS_TARGET:g} Redis commands per 1,000 calls"
        " (scripts' own included; 'all' adds revocation's pings); 'no plan': a key without a"
        " plan on the same server, the gate's own cost; QPS admitted: 200s in each"
        f" whole second of a {settings.http_seconds + 2:g} s run on a key limited to"
        f" {ADMISSION_QPS}/s"
    )
    header = [
        "workers",
        "exempt req/s",
        "gate+plan req/s",
        "x exempt",
        "no plan x exempt",
        "cmds/1k calls",
        "all cmds/1k",
        "QPS admitted/s",
        "result",
    ]
    right = [True, True, True, True, True, True, True, True, False]
    return table(header, rows, right), notes


def _plan_redis(settings: Settings, workdir: Path) -> None:
    """Print the plan-on-Redis table, or why it was skipped."""
    from tests.support.servers import REDIS_SERVER

    missing = httpmode.missing_tools() or (
        "redis-server is not on PATH" if REDIS_SERVER is None else None
    )
    if missing is not None:
        print(f"\nhttp, plan on Redis: skipped, {missing}")
        return
    _say("serving the gate with a plan on Redis, and its exempt route, under wrk")
    lines, notes = plan_redis_tables(settings, workdir)
    _print_table("http, gate with a plan on Redis vs the exempt route (127.0.0.1)", lines)
    for note in notes:
        print(f"  note: {note}")


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
        _say("counting instructions per request under callgrind")
        instructions.main([])
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
        if args.http or args.quick:
            _plan_redis(settings, workdir)
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

"""What a package plan costs a warm request: counter round trips and time.

``python -m bench.plans [--redis URL] [--rounds N] [--calls N]`` serves the
member route in-process with a cached key and counts, per request, the
round trips to the counters' storage (``incr`` calls, or one per pipeline;
on Redis, one per batch the process takes) and the median time per
request, for: no plan, QPS only, and QPS and quota, beside a bare redis-py
``PING`` round trip when a Redis URL is given (the floor).

``python -m bench.plans --http [--quick]`` runs only the HTTP table of
``python -m bench --http``: gunicorn on 2 and 4 workers, the gate with a
plan on a Redis of its own against the exempt route of the same server,
Redis commands per 1,000 calls, and a QPS limit's admission per second.

Wrap a run in ``flock /tmp/bench.lock``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from bench.gateapps import gate_app, provision
from bench.keydb import PACKAGE
from bench.timing import check, make_environ, serve
from flask_basic_gate import BasicGate
from flask_basic_gate.plans import PlanCounter
from flask_basic_gate.testing import basic_auth_header

#: Limits high enough that no timed call is refused.
_QPS = 10**9
_QUOTA = "2000000000/month"


class _Counted:
    """A storage that counts the round trips made through it: each ``incr``,
    and each executed pipeline."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.trips = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        self.trips += 1
        return int(self.inner.incr(key, expiry, amount=amount))

    def get_connection(self, readonly: bool = False) -> Any:
        counted, client = self, self.inner.get_connection()

        class _Client:
            def __getattr__(self, name: str) -> Any:
                return getattr(client, name)

            def pipeline(self, *args: Any, **kwargs: Any) -> Any:
                pipe = client.pipeline(*args, **kwargs)
                execute = pipe.execute

                def counted_execute(*a: Any, **k: Any) -> Any:
                    counted.trips += 1
                    return execute(*a, **k)

                pipe.execute = counted_execute
                return pipe

        return _Client()


class _CountedBatches(PlanCounter):
    """Batches on Redis, counting the round trips: one per take or give-back."""

    trips = 0

    def _take(self, takes: Any, now: float) -> Any:
        self.trips += 1
        return super()._take(takes, now)

    def _give(self, name: str, calls: int) -> bool:
        self.trips += 1
        return super()._give(name, calls)


def _case(
    workdir: Path, name: str, redis: Optional[str], plan: dict[str, Any]
) -> tuple[Any, dict[str, Any], Any]:
    from flask_basic_gate.backends import make_storage

    app, gate = gate_app(workdir / f"{name}.sqlite", name)
    new = provision(app)
    with app.app_context():
        if plan:
            gate.store.update_package(PACKAGE, **plan)
        policy = BasicGate.state().policy
    counted: Any
    if redis is None:
        counted = _Counted(make_storage(None))
        policy.plans = PlanCounter(counted)
    else:
        counted = policy.plans = _CountedBatches(redis_url=redis)
    environ = make_environ(basic_auth_header(new.key, new.secret))
    check(app, environ, name)  # warms the cache
    return app, environ, counted


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plans")
    parser.add_argument("--redis", help="a Redis URL for the counters (default: memory)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument(
        "--http", action="store_true", help="run the HTTP table of python -m bench --http only"
    )
    parser.add_argument("--quick", action="store_true", help="with --http: shorter wrk runs")
    args = parser.parse_args(argv)
    if args.http:
        return _http(quick=args.quick)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("no plan", {}),
        ("qps only", {"qps": _QPS}),
        ("qps+quota", {"qps": _QPS, "quota": _QUOTA}),
    ]
    storage = args.redis or "memory://"
    print(f"counters on {storage}; {args.rounds} rounds of {args.calls} warm calls per case")
    with tempfile.TemporaryDirectory() as tmp:
        built = [
            (name, *_case(Path(tmp), f"plans{i}", args.redis, plan))
            for i, (name, plan) in enumerate(cases)
        ]
        times: dict[str, list[float]] = {name: [] for name, *_ in built}
        trips: dict[str, float] = {}
        for turn in range(args.rounds):
            for name, app, environ, counted in (
                built[turn % len(built) :] + built[: turn % len(built)]
            ):
                before = counted.trips
                gc.collect()
                gc.disable()
                try:
                    started = time.perf_counter()
                    for _ in range(args.calls):
                        serve(app, environ)
                    elapsed = time.perf_counter() - started
                finally:
                    gc.enable()
                times[name].append(elapsed / args.calls)
                trips[name] = (counted.trips - before) / args.calls
        for name, *_ in built:
            median = statistics.median(times[name]) * 1e6
            print(f"{name:22} {trips[name]:.2f} round trips/request  {median:8.1f} us/request")
    if args.redis:
        print(f"{'redis-py PING (floor)':22} 1.00 round trips/request  {_ping(args.redis):8.1f} us")
    return 0


def _http(*, quick: bool) -> int:
    from bench import httpmode, run

    httpmode.exit_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        run._plan_redis(run.QUICK if quick else run.FULL, Path(tmp))
    return 0


def _ping(url: str, calls: int = 2000) -> float:
    """The median µs of a bare redis-py round trip, over 5 rounds."""
    import redis

    client = redis.Redis.from_url(url)
    client.ping()
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            client.ping()
        rounds.append((time.perf_counter() - started) / calls)
    client.close()
    return statistics.median(rounds) * 1e6


if __name__ == "__main__":
    raise SystemExit(main())

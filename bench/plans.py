"""What a package plan costs a warm request: counter round trips and time.

``python -m bench.plans [--redis URL] [--rounds N] [--calls N]`` serves the
member route in-process with a cached key and counts, per request, the
round trips to the counters' storage (``incr`` calls, or one per pipeline)
and the median time per request, for: no plan, QPS only, QPS and quota on
the default :meth:`~flask_basic_gate.plans.PlanCounter.incr_many`, and (on
Redis) QPS and quota with a pipelined ``incr_many``, the seam the plan
counter leaves to a Redis deployment.

Wrap a run in ``flock /tmp/bench.lock``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from bench.gateapps import gate_app, provision
from bench.keydb import PACKAGE
from bench.timing import basic_authorization, check, make_environ, serve
from flask_basic_gate import BasicGate
from flask_basic_gate.plans import PlanCounter

#: Limits high enough that no timed call is refused.
_QPS = 10**9
_QUOTA = "2000000000/month"


class _Counted:
    """Counts the round trips made to a storage (each ``incr``)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.trips = 0

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        self.trips += 1
        return int(self.inner.incr(key, expiry, amount=amount))


class _Pipelined(PlanCounter):
    """incr_many as one Redis pipeline of limits' own incr-and-expire script."""

    def incr_many(self, counters: Sequence[tuple[str, int]]) -> list[int]:
        counted: Any = self.storage
        redis_storage = counted.inner
        counted.trips += 1
        pipe = redis_storage.get_connection().pipeline(transaction=False)
        for name, expiry in counters:
            redis_storage.lua_incr_expire(
                [redis_storage.prefixed_key(name)], [expiry, 1], client=pipe
            )
        return [int(count) for count in pipe.execute()]


def _case(
    workdir: Path, name: str, redis: Optional[str], plan: dict[str, Any], pipelined: bool
) -> tuple[Any, dict[str, Any], _Counted]:
    from flask_basic_gate.throttle import make_storage

    app, gate = gate_app(workdir / f"{name}.sqlite", name)
    new = provision(app, gate)
    with app.app_context():
        if plan:
            gate.store.update_package(PACKAGE, **plan)
        policy = BasicGate.state().policy
    counted = _Counted(make_storage(redis))
    factory = _Pipelined if pipelined else PlanCounter
    policy.plans = factory(counted)  # type: ignore[arg-type]
    environ = make_environ(basic_authorization(new.key, new.secret))
    check(app, environ, name)  # warms the cache
    return app, environ, counted


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plans")
    parser.add_argument("--redis", help="a Redis URL for the counters (default: memory)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args(argv)
    cases: list[tuple[str, dict[str, Any], bool]] = [
        ("no plan", {}, False),
        ("qps only", {"qps": _QPS}, False),
        ("qps+quota", {"qps": _QPS, "quota": _QUOTA}, False),
    ]
    if args.redis:
        cases.append(("qps+quota pipelined", {"qps": _QPS, "quota": _QUOTA}, True))
    storage = args.redis or "memory://"
    print(f"counters on {storage}; {args.rounds} rounds of {args.calls} warm calls per case")
    with tempfile.TemporaryDirectory() as tmp:
        built = [
            (name, *_case(Path(tmp), f"plans{i}", args.redis, plan, pipe))
            for i, (name, plan, pipe) in enumerate(cases)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

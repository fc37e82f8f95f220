"""What hashing an import's secrets costs, on one core and on every core.

``python -m bench.importing [--secrets N] [--quick] [--method METHOD]``
hashes N person-chosen secrets (default 2,000; ``--quick``: 200) with
``METHOD`` (default ``scrypt``, the gate's default ``BASIC_GATE_HASH_METHOD``)
as ``flask basic-gate import-keys`` does: in this process only
(``--workers 1``), and on every core the process may use
(:func:`flask_basic_gate.hashpool.hash_secrets`, the pool's start
included). On a shared machine the load drifts, so each way hashes half the
secrets twice, in the order one, all, all, one, and the halves are added
up. It prints both times, their ratio (target: at most 0.6 on two cores),
the cost per 1,000 keys and the time 50,000 keys would take. Nothing is
asserted: the numbers are for the docs.

Wrap a run in ``flock /tmp/bench.lock``.
"""

from __future__ import annotations

import argparse
import secrets
import time
from typing import Optional

from flask_basic_gate.hashpool import available_cores, hash_secrets

#: The target of all cores against one, on a machine with two cores or more.
TARGET = 0.6


def timed(passwords: list[str], method: str, workers: Optional[int]) -> float:
    """Seconds to hash ``passwords`` on ``workers`` processes."""
    started = time.perf_counter()
    hashes = hash_secrets(passwords, method, workers=workers)
    elapsed = time.perf_counter() - started
    assert len(hashes) == len(passwords)
    return elapsed


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.importing")
    parser.add_argument("--secrets", type=int, help="how many secrets (default 2000)")
    parser.add_argument("--quick", action="store_true", help="200 secrets")
    parser.add_argument("--method", default="scrypt", help="a werkzeug.security method")
    args = parser.parse_args(argv)
    count = args.secrets or (200 if args.quick else 2000)
    # Like secrets people choose: short, all different.
    passwords = [secrets.token_urlsafe(9) for _ in range(count)]
    halves = [passwords[: count // 2], passwords[count // 2 :]]
    cores = available_cores()
    print(f"hashing {count} secrets with {args.method}; {cores} cores; one, all, all, one")
    times = {1: 0.0, None: 0.0}
    for half, workers in zip([0, 0, 1, 1], [1, None, None, 1]):
        elapsed = timed(halves[half], args.method, workers)
        times[workers] += elapsed
        where = "one core" if workers else "all cores"
        print(f"  {len(halves[half])} secrets on {where}: {elapsed:.1f} s")
    one, every = times[1], times[None]
    ratio = every / one
    verdict = (
        "" if cores < 2 else f"  (target <= {TARGET}: {'pass' if ratio <= TARGET else 'miss'})"
    )
    print(f"one core:  {one:8.1f} s  ({one / count * 1000:.1f} ms per secret)")
    print(f"all cores: {every:8.1f} s  = {ratio:.2f} x one core{verdict}")
    per_thousand = every / count * 1000
    print(
        f"per 1,000 keys: {per_thousand:.0f} s on all cores ({one / count * 1000:.0f} s on one);"
        f" 50,000 keys: {per_thousand * 50 / 60:.0f} min on all cores"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where a case's extra time goes: cProfile of the case against the bare route.

Both apps serve the same number of requests under :mod:`cProfile`. The
functions the case calls more often than the bare route (the guard, the
parser, the store, SQLAlchemy, the hooks Flask runs for them) are listed by
the own time (``tottime``) they add, in µs per request. Functions called
equally often in both are left out: their difference is noise. cProfile slows
every call down, so the figures are larger than unprofiled ones; read them as
shares, not as absolute costs.
"""

from __future__ import annotations

import cProfile
import pstats
from pathlib import Path

from bench.timing import Case, run_calls

# (file, line, function) -> (primitive calls, total calls, tottime, cumtime, callers)
_Stats = dict[tuple[str, int, str], tuple[int, int, float, float, object]]


def _location(file: str, line: int, function: str) -> str:
    parts = Path(file).parts
    for anchor in ("site-packages", "flask_basic_gate", "bench"):
        if anchor in parts:
            # Keep the package path: "flask/app.py", "flask_basic_gate/store.py".
            start = parts.index(anchor) + (1 if anchor == "site-packages" else 0)
            file = "/".join(parts[start:])
            break
    else:
        file = Path(file).name
    return f"{file}:{line}({function})" if line else function


def _profile(case: Case, calls: int) -> _Stats:
    run_calls(case.app, case.batch(min(calls, 1000)))
    profiler = cProfile.Profile()
    batch = case.batch(calls)
    profiler.enable()
    run_calls(case.app, batch)
    profiler.disable()
    stats: _Stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    return stats


def overhead(case: Case, reference: Case, calls: int, limit: int = 20) -> list[str]:
    """The ``limit`` functions that add the most own time to ``case`` over ``reference``."""
    base = _profile(reference, calls)
    mine = _profile(case, calls)
    added = []
    for where in base.keys() | mine.keys():
        _, calls_mine, own_mine, *_ = mine.get(where, (0, 0, 0.0, 0.0, None))
        _, calls_base, own_base, *_ = base.get(where, (0, 0, 0.0, 0.0, None))
        if calls_mine != calls_base:
            added.append((own_mine - own_base, calls_mine - calls_base, where))
    added.sort(reverse=True)
    total = sum(entry[0] for entry in added)
    lines = [
        f"{case.name} over {reference.name}, {calls:,} requests each under cProfile:"
        f" +{total * 1e6 / calls:.2f} µs/req in functions called more often",
        f"{'µs/req':>8}  {'calls/req':>9}  function",
    ]
    for seconds, count, where in added[:limit]:
        lines.append(f"{seconds * 1e6 / calls:8.2f}  {count / calls:9.1f}  {_location(*where)}")
    return lines

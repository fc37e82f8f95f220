"""Instructions per request under callgrind: the warm and cold paths against
their yardsticks, in counts that do not drift with the machine.

This machine's speed swings by a factor of two from one tenth of a second to
the next (a virtual machine sharing its cores), so the in-process table's
ratios move by 10 % between runs. ``valgrind --tool=callgrind`` counts the
instructions a request executes instead: the same count for the same code
and inputs, whatever else the machine does. The table times nothing; it is
the steady half of the picture the timed table gives (cache misses and
branch mispredictions cost time that no instruction count shows).

``python -m bench.instructions`` runs one child Python under callgrind. The
child builds every app, serves each case's warm-up requests, and then for
each case calls ``os.getppid()``, serves :data:`CALLS` requests with the
collector off, and calls ``os.getppid()`` again; ``--dump-before=getppid``
makes callgrind write a part at each of those calls, so each case's
requests are one part, counted apart from building and warming up.
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

from bench import cases, peers
from bench.report import table
from bench.timing import Case, check, make_environ
from flask_basic_gate.testing import basic_auth_header
from flask_basic_gate.usage import close_all

#: Requests counted per case (a count is exact: more would only add time).
CALLS = 500
#: Requests served before counting; a cold case serves each of its keys once.
WARMUP = 200
#: The cases, in the order they run; each ratio's yardstick comes first.
NAMES = (
    cases.BARE,
    cases.HOOK_FLOOR,
    cases.WARM,
    cases.WARM_METRICS,
    cases.COLD_1K,
)
_ROOT = Path(__file__).resolve().parent.parent


def build(workdir: Path) -> list[Case]:
    """The cases of :data:`NAMES` (the metrics case only when
    prometheus_client is installed)."""
    notes: list[str] = []
    environ = make_environ(basic_auth_header(peers.KEY, peers.SECRET))
    built = [
        cases.bare_case(),
        Case(cases.HOOK_FLOOR, peers.hook_floor_app(workdir / "floor.sqlite"), [environ]),
        cases.warm_case(workdir),
    ]
    metrics = cases.warm_metrics_case(workdir, notes)
    if metrics is not None:
        built.append(metrics)
    built.append(cases.cold_case(cases.COLD_1K, cases.SMALL_KEYS))
    return built


def _serve(case: Case, calls: int) -> None:
    for environ in case.batch(calls):
        body = case.app(environ.copy(), _start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()


def _start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
    return lambda data: None


def child(workdir: Path) -> None:
    """Under callgrind: build, warm up, then one marked part per case."""
    built = build(workdir)
    for case in built:
        check(case.app, case.environs[0], case.name)
        _serve(case, max(WARMUP, case.warmup))
    print("\n".join(case.name for case in built), flush=True)
    # The usage flusher thread would write to SQLite in whichever part its
    # interval ends (callgrind counts every thread); the counters go on
    # counting, and nothing writes meanwhile.
    close_all()
    gc.collect()
    gc.disable()
    for case in built:
        os.getppid()  # callgrind dumps the part before this call
        _serve(case, CALLS)
        os.getppid()
    # The usage counters' exit writes would go to stores removed by then.
    os._exit(0)


def count(workdir: Path) -> tuple[dict[str, float], Optional[str]]:
    """Instructions per request by case name, or an empty dict and why not."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return {}, "valgrind is not on PATH (Debian's valgrind package)"
    out = workdir / "callgrind.out"
    command = [
        valgrind,
        "--tool=callgrind",
        "--dump-before=getppid",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "bench.instructions",
        "--child",
        str(workdir),
    ]
    done = subprocess.run(command, cwd=_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        return {}, f"callgrind failed: {done.stderr[-500:]}"
    names = [line for line in done.stdout.splitlines() if line]
    # Parts: 1 is start-up and building; then, per case, its requests
    # (even parts from 2) and the gap to the next marker (odd parts).
    parts = sorted(
        (int(path.name.rsplit(".", 1)[1]), path) for path in workdir.glob("callgrind.out.*")
    )
    totals = {number: _total(path) for number, path in parts}
    per_call = {}
    for index, name in enumerate(names):
        part = 2 + 2 * index
        if part in totals:
            per_call[name] = totals[part] / CALLS
    return per_call, None


def _total(path: Path) -> int:
    match = re.search(r"^(?:summary|totals): (\d+)", path.read_text(), re.MULTILINE)
    return int(match.group(1)) if match else 0


def instruction_table(per_call: dict[str, float]) -> list[str]:
    """Instructions per request, with each target's ratio and verdict."""
    targets = cases.targets(0)
    rows = []
    for name in NAMES:
        if name not in per_call:
            continue
        target = targets.get(name)
        bound = target.bounds[0] if target is not None else None
        ratio = ""
        verdict = ""
        goal = ""
        if bound is not None and bound.reference in per_call:
            value = per_call[name] / per_call[bound.reference]
            ratio = f"{value:.3f}x {bound.reference}"
            goal = f"<={bound.high:.2f}x"
            verdict = "PASS" if value <= bound.high else "MISS"
        rows.append([name, f"{per_call[name] / 1000:,.1f}k", ratio, goal, verdict])
    header = ["case", "instructions/req", "ratio", "target", "result"]
    return table(header, rows, [False, True, False, False, False])


def main(argv: Optional[list[str]] = None) -> int:
    """Count and print the table; ``--child DIR`` is the run under callgrind."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--child"]:
        child(Path(args[1]))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        per_call, why = count(Path(tmp))
    title = f"instructions per request under callgrind ({CALLS:,} requests per case)"
    if why is not None:
        print(f"\n{title}: skipped, {why}")
        return 0
    print(f"\n{title}")
    for line in instruction_table(per_call):
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Hostile traffic: what a valid client gets while attackers flood the gate.

gunicorn serves :func:`bench.serve.flood` with two sync workers on 127.0.0.1.
In each scenario two wrk processes run side by side for the same time: the
valid client (``-c2``, a key with a generated secret, so its verification is
cached) and four attacker connections whose Lua script builds each request.
The attackers ask for the exempt route (the yardstick), send random unknown
keys, random wrong secrets for a key whose secret is hashed with scrypt, and
the same with a new ``X-Forwarded-For`` address on every request.

A second group serves the gate with a one-second decision cache to a valid
client whose secret a person chose (scrypt): its key is read again every
second and its secret verified as known good. Its attackers cycle wrong
secrets through 40 scrypt keys, from one address (so no pair reaches the
failure limit quickly) and from many. Meanwhile first-time logins with right
scrypt secrets arrive from new addresses, in the yardstick's runs as well
(they are valid traffic, so the ratio measures only the attackers); the
table prints the share of them accepted.

Each group's yardstick runs again before each of its scenarios (the
machine's speed drifts by 10 % within a minute), and the table gives the
client's requests per second as a ratio to the yardstick run just before,
and the attackers' answers by status.

Also runs alone: ``python -m bench.flood [--quick] [--runs N]``; with
``--runs`` it prints each run's table and then the median ratio of each
scenario over the runs.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import urljoin

from bench import httpmode
from bench.cases import PERSON_SECRET
from bench.gateapps import add_key, gate_app, provision
from bench.report import table, verdict
from bench.serve import EXEMPT_PATH
from flask_basic_gate.testing import basic_auth_header

#: gunicorn sync workers, as issue 9 asks.
WORKERS = 2
#: The valid client's connections: one per worker.
CLIENT_CONNECTIONS = 2
#: The attackers' connections: two per worker, so no worker waits for them.
ATTACKER_CONNECTIONS = 4
#: Lowest ratio of the client's rate to the yardstick's that meets the target.
TARGET = 0.90
#: The scrypt keys the second group's attackers cycle through.
CYCLED_KEYS = 40
#: Seconds the attackers run before the valid client is measured: a flood
#: lasts longer than the KDF budget's burst, and the table measures the
#: flood, not its first seconds. The burst is 1.28 s of scrypt per worker
#: (about twelve verifications), and a sync worker spends it between the
#: other requests in about three seconds on this 2-core machine.
ATTACK_LEAD = 4
#: First-time logins per second during each of the second group's attacks.
FIRST_TIMERS_PER_SECOND = 1
#: Seconds per scenario in a full and in a quick run (wrk takes whole seconds).
FULL_SECONDS = 5
QUICK_SECONDS = 2
#: The address of the one-address attackers; the many-address attackers draw
#: theirs from 198.18.0.0/15. Both ranges are reserved for benchmarks (RFC
#: 2544) and only ever appear in the header: the traffic goes to 127.0.0.1.
ONE_ADDRESS = "198.18.0.1"
#: How long the workers get to finish the attackers' last requests (a KDF each,
#: already in their sockets when wrk stops) before the next scenario starts.
_SETTLE_SECONDS = 0.5
#: Seconds wrk may overrun its duration before it is killed.
_WRK_GRACE = 15.0

#: Shared by every scenario: random text, Base64, and the answers by status.
#: ``init`` runs in wrk's thread, ``done`` in its main state, which reads the
#: thread's table through ``thread:get``.
_LUA_PRELUDE = """\
-- Written by bench/flood.py for one wrk run; args: seed, key, address.
local URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local threads = {}

local function random_text(length)
  local chars = {}
  for i = 1, length do
    local n = math.random(64)
    chars[i] = URLSAFE:sub(n, n)
  end
  return table.concat(chars)
end

local function base64(text)
  local out = {}
  for i = 1, #text, 3 do
    local a, b, c = text:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    for shift = 18, 0, -6 do
      local index = math.floor(n / 2 ^ shift) % 64 + 1
      out[#out + 1] = BASE64:sub(index, index)
    end
  end
  local pad = (3 - #text % 3) % 3
  local encoded = table.concat(out)
  return encoded:sub(1, #encoded - pad) .. string.rep("=", pad)
end

local function basic(key, secret)
  return "Basic " .. base64(key .. ":" .. secret)
end

local function random_address()
  return string.format("198.%d.%d.%d", math.random(18, 19), math.random(0, 255),
    math.random(1, 254))
end

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(tonumber(args[1]))
  key, address = args[2], args[3]
  keys = {}
  for name in string.gmatch(key, "[^,]+") do
    keys[#keys + 1] = name
  end
  statuses = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      io.write(string.format("status %d %d\\n", status, count))
    end
  end
end
"""


@dataclass(frozen=True)
class Scenario:
    """What the attackers send."""

    name: str
    #: The attackers' Lua ``request`` function; empty: wrk's fixed request.
    request: str = ""
    #: The attackers ask for the exempt route instead of the member route.
    exempt: bool = False
    #: The valid client's secret was chosen by a person (scrypt) and the
    #: decision cache lasts one second; first-time logins are sent too.
    person: bool = False


# Key and secret of the shape the gate generates (24 and 43 characters).
_UNKNOWN_KEYS = """
function request()
  return wrk.format(nil, nil, {
    ["Authorization"] = basic(random_text(24), random_text(43)),
    ["X-Forwarded-For"] = address,
  })
end
"""
#: The yardstick's attackers build the same random requests as the others
#: (Lua costs wrk CPU on this 2-core machine too), but to the exempt route,
#: so the ratios measure only what the gate spends on them.
YARDSTICK = Scenario("yardstick: exempt route", _UNKNOWN_KEYS, exempt=True)
SCENARIOS = (
    YARDSTICK,
    Scenario("unknown keys", _UNKNOWN_KEYS),
    Scenario(
        "scrypt key, wrong secrets, one address",
        """
function request()
  return wrk.format(nil, nil, {
    ["Authorization"] = basic(key, random_text(43)),
    ["X-Forwarded-For"] = address,
  })
end
""",
    ),
    Scenario(
        "scrypt key, wrong secrets, many addresses",
        """
function request()
  return wrk.format(nil, nil, {
    ["Authorization"] = basic(key, random_text(43)),
    ["X-Forwarded-For"] = random_address(),
  })
end
""",
    ),
)
_CYCLED = """
function request()
  return wrk.format(nil, nil, {
    ["Authorization"] = basic(keys[math.random(#keys)], random_text(43)),
    ["X-Forwarded-For"] = %s,
  })
end
"""
#: The second group: a person-chosen client secret and a one-second cache.
PERSON_YARDSTICK = Scenario(
    "scrypt client, 1 s cache; yardstick: exempt route", _UNKNOWN_KEYS, exempt=True, person=True
)
PERSON_SCENARIOS = (
    PERSON_YARDSTICK,
    Scenario(
        f"scrypt client, 1 s cache; {CYCLED_KEYS} scrypt keys, wrong secrets, one address",
        _CYCLED % "address",
        person=True,
    ),
    Scenario(
        f"scrypt client, 1 s cache; {CYCLED_KEYS} scrypt keys, wrong secrets, many addresses",
        _CYCLED % "random_address()",
        person=True,
    ),
)


@dataclass(frozen=True)
class Outcome:
    """One scenario's measurements."""

    scenario: Scenario
    client: httpmode.WrkResult
    attackers: httpmode.WrkResult
    #: The attackers' answers: how many of each status.
    statuses: dict[int, int]
    #: First-time logins sent during the attack, and how many were accepted.
    first_time: tuple[int, int] = (0, 0)


@contextmanager
def _started(command: Sequence[str]) -> Iterator[subprocess.Popen[str]]:
    """Start ``command``; on leaving, kill it by its PID if it still runs."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def _finish(process: subprocess.Popen[str], deadline: float) -> httpmode.WrkResult:
    """Wait for a wrk process until ``deadline`` (monotonic) and read what it measured."""
    try:
        output, errors = process.communicate(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"wrk (pid {process.pid}) ran past its deadline") from None
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with status {process.returncode}:\n{errors[-2000:]}")
    return httpmode.read_wrk(output)


def _statuses(output: str) -> dict[int, int]:
    """The ``status <code> <count>`` lines the Lua ``done`` function wrote."""
    counts: dict[int, int] = {}
    for line in output.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "status":
            counts[int(words[1])] = counts.get(int(words[1]), 0) + int(words[2])
    return counts


def _first_logins(
    member_url: str, logins: Sequence[tuple[str, str]], seconds: int, accepted: list[int]
) -> None:
    """Send each (key, secret) once, spread over ``seconds``, each from a new
    address; count the 200s in ``accepted``."""
    gap = seconds / max(1, len(logins))
    for n, (key, secret) in enumerate(logins):
        request = urllib.request.Request(
            member_url,
            headers={
                "Authorization": basic_auth_header(key, secret),
                "X-Forwarded-For": f"198.19.255.{n + 1}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=seconds + 10) as answer:
                accepted.append(answer.status)
        except urllib.error.HTTPError as error:
            accepted.append(error.code)
        except OSError:
            accepted.append(0)
        time.sleep(gap)


def _attack(
    scenario: Scenario,
    member_url: str,
    client_authorization: str,
    target_key: str,
    seconds: int,
    scripts: Path,
    logins: Sequence[tuple[str, str]] = (),
) -> Outcome:
    """Run the valid client and the attackers of ``scenario`` side by side
    (and the first-time ``logins``, when given)."""
    script = scripts / f"attack-{abs(hash(scenario.name))}.lua"
    script.write_text(_LUA_PRELUDE + scenario.request)
    url = urljoin(member_url, EXEMPT_PATH) if scenario.exempt else member_url
    seed = str(random.randrange(1, 2**31))
    attack = httpmode.wrk_command(
        url,
        seconds + ATTACK_LEAD,
        connections=ATTACKER_CONNECTIONS,
        script=script,
        script_args=(seed, target_key, ONE_ADDRESS),
    )
    client = httpmode.wrk_command(
        member_url, seconds, connections=CLIENT_CONNECTIONS, authorization=client_authorization
    )
    deadline = time.monotonic() + ATTACK_LEAD + seconds + _WRK_GRACE
    answers: list[int] = []
    firsts = threading.Thread(
        target=_first_logins, args=(member_url, logins, seconds, answers), daemon=True
    )
    with _started(attack) as attackers:
        time.sleep(ATTACK_LEAD)
        with _started(client) as valid:
            if logins:
                firsts.start()
            client_result = _finish(valid, deadline)
        attack_result = _finish(attackers, deadline)
    if logins:
        firsts.join(timeout=_WRK_GRACE)
    return Outcome(
        scenario,
        client_result,
        attack_result,
        _statuses(attack_result.output),
        (len(answers), answers.count(200)),
    )


def run(workdir: Path, seconds: int) -> list[Outcome]:
    """Provision a store, serve it with gunicorn and run every scenario for ``seconds``."""
    store = workdir / "flood.sqlite"
    app, _ = gate_app(store, "bench_flood_setup")
    generated = provision(app)
    # A person-chosen secret: stored with the configured KDF (scrypt by default).
    target = add_key(app, secret=PERSON_SECRET)
    authorization = basic_auth_header(generated.key, generated.secret)
    outcomes: list[Outcome] = []
    with httpmode.serving("flood", authorization, store=store, workers=WORKERS) as member_url:
        # Warm-up: workers import lazily and each fills its own cache.
        httpmode.wrk(member_url, authorization, 1)
        for scenario in _paired(SCENARIOS):
            if outcomes:
                time.sleep(_SETTLE_SECONDS)
            outcomes.append(
                _attack(scenario, member_url, authorization, target.key, seconds, workdir)
            )
    # The second group: scrypt everywhere, keys made before the server starts.
    client = add_key(app, secret=PERSON_SECRET)
    cycled = ",".join(add_key(app, secret=f"{PERSON_SECRET} {n}").key for n in range(CYCLED_KEYS))
    count = FIRST_TIMERS_PER_SECOND * seconds
    runs = _paired(PERSON_SCENARIOS)
    # The yardstick runs get first-time logins too: they are the valid
    # traffic of every run of the group, so a ratio measures the attackers
    # alone, not the logins' KDF work.
    firsts = [
        [(add_key(app, secret=f"first {r} {n}").key, f"first {r} {n}") for n in range(count)]
        for r in range(len(runs))
    ]
    authorization = basic_auth_header(client.key, PERSON_SECRET)
    with httpmode.serving(
        "flood_short_cache", authorization, store=store, workers=WORKERS
    ) as member_url:
        httpmode.wrk(member_url, authorization, 1)
        for scenario, logins in zip(runs, firsts):
            time.sleep(_SETTLE_SECONDS)
            outcomes.append(
                _attack(scenario, member_url, authorization, cycled, seconds, workdir, logins)
            )
    return outcomes


def _paired(scenarios: Sequence[Scenario]) -> list[Scenario]:
    """The group's yardstick (its first scenario) before each of the others:
    the machine's speed drifts within a minute, so each scenario is compared
    with the yardstick measured just before it."""
    yardstick, *measured = scenarios
    return [run for scenario in measured for run in (yardstick, scenario)]


def _answers(outcome: Outcome) -> str:
    """The attackers' answers as printed, e.g. ``401: 1234, 429: 5678``."""
    parts = [f"{status}: {count}" for status, count in sorted(outcome.statuses.items())]
    if outcome.attackers.socket_errors:
        parts.append(f"socket errors: {outcome.attackers.socket_errors}")
    return ", ".join(parts) or "none"


def flood_table(outcomes: Sequence[Outcome]) -> list[str]:
    """The client's rate and ratio to the yardstick, and the attackers' rate and answers."""
    body = []
    for outcome, ratio in zip(outcomes, ratios(outcomes)):
        rate = outcome.client.requests_per_second
        measured = outcome.scenario not in (YARDSTICK, PERSON_YARDSTICK)
        sent, accepted = outcome.first_time
        body.append(
            [
                outcome.scenario.name,
                f"{rate:,.0f}",
                f"{ratio:.2f}x",
                f">={TARGET:.2f}x" if measured else "",
                verdict(ratio >= TARGET) if measured else "",
                f"{outcome.client.errors + outcome.client.socket_errors:,}",
                f"{outcome.attackers.requests_per_second:,.0f}",
                _answers(outcome),
                f"{accepted}/{sent} ({accepted / sent:.0%})" if sent else "",
            ]
        )
    header = [
        "scenario",
        "client req/s",
        "x yardstick",
        "target",
        "result",
        "client errors",
        "attackers req/s",
        "attackers' answers",
        "first-time logins accepted",
    ]
    return table(header, body, [False, True, True, False, False, True, True, False, True])


def ratios(outcomes: Sequence[Outcome]) -> list[float]:
    """Each outcome's client rate over that of the yardstick run just before
    it (1.0 for a yardstick itself)."""
    found = []
    yardstick = 0.0
    for outcome in outcomes:
        rate = outcome.client.requests_per_second
        if outcome.scenario in (YARDSTICK, PERSON_YARDSTICK):
            yardstick = rate
        found.append(rate / yardstick if yardstick else 0.0)
    return found


def median_table(runs: Sequence[Sequence[Outcome]]) -> list[str]:
    """The median over ``runs`` of each scenario's ratio, with every run's ratio."""
    by_name: dict[str, list[float]] = {}
    for outcomes in runs:
        for outcome, ratio in zip(outcomes, ratios(outcomes)):
            if outcome.scenario not in (YARDSTICK, PERSON_YARDSTICK):
                by_name.setdefault(outcome.scenario.name, []).append(ratio)
    body = []
    for name, found in by_name.items():
        middle = statistics.median(found)
        body.append(
            [
                name,
                f"{middle:.2f}x",
                f">={TARGET:.2f}x",
                verdict(middle >= TARGET),
                " ".join(f"{ratio:.2f}" for ratio in found),
            ]
        )
    header = ["scenario", "median x yardstick", "target", "result", "each run"]
    return table(header, body, [False, True, False, False, False])


def title(seconds: int) -> str:
    """The table's title: what ran, and for how long."""
    return (
        f"flood (127.0.0.1, gunicorn {WORKERS} sync workers, default settings): valid client"
        f" wrk -c{CLIENT_CONNECTIONS} on a generated key (or, where named, a scrypt key with a"
        f" 1 s cache), attackers wrk -c{ATTACKER_CONNECTIONS} from {ATTACK_LEAD} s before,"
        f" {seconds} s per scenario"
    )


def main(argv: Optional[list[str]] = None) -> int:
    """Run the flood alone and print its table; returns 0 unless something crashed."""
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_SECONDS} s per scenario instead of {FULL_SECONDS}",
    )
    parser.add_argument(
        "--runs", type=int, default=1, help="run every scenario this many times; print medians"
    )
    args = parser.parse_args(argv)
    httpmode.exit_on_sigterm()
    missing = httpmode.missing_tools()
    if missing is not None:
        print(f"flood: skipped, {missing}")
        return 0
    seconds = QUICK_SECONDS if args.quick else FULL_SECONDS
    runs = []
    for _ in range(max(1, args.runs)):
        with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
            outcomes = run(Path(tmp), seconds)
        runs.append(outcomes)
        print(title(seconds))
        for line in flood_table(outcomes):
            print(f"  {line}")
    if len(runs) > 1:
        print(f"\nflood, median of {len(runs)} runs")
        for line in median_table(runs):
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

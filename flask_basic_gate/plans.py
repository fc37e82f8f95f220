"""Package plans: calls per second and quotas, counted per key.

:class:`PlanCounter` counts the calls of a key whose
:class:`~flask_basic_gate.records.Plan` limits it. The policy calls it last
(step 7), for cached successes too, so only requests that authenticated and
may use the route are counted. The counter only counts and remembers: it
returns what it counted (a :class:`Usage`), and the policy compares that
with the plan and decides.

Windows are fixed and calendar-aligned in UTC, as on the gateway: QPS counts
per second, a quota per minute, hour, day (ending at 00:00 UTC) or month
(ending on the first at 00:00 UTC).

Without Redis the counters are a :mod:`limits` storage in this process's
memory (each worker counts on its own): the counters a request needs are
counted in one call of :meth:`PlanCounter.incr_many`, a call the policy
refuses gives its quota count back (:meth:`PlanCounter.give_back`), and the
policy remembers the key as refused until the window ends
(:meth:`PlanCounter.remember_refusal`), so the refusals that follow cost
nothing.

With ``BASIC_GATE_REDIS_URL`` the calls are taken from Redis in batches
(:class:`PlanCounter` with a client): a process takes *n* calls of a key's
current windows (its second, its quota window) with one atomic script that
never hands out more than the limit leaves, serves them from memory until
the end of the second it took them in (:data:`LEASE_LIFE`), and gives back
what it did not use: with the key's next take when the key is busy, from a
reaper thread when it is idle, and when the process stops. *n* is the
number of calls the process expects in the rest of the second at the rate
it sees for the key, within what the limit leaves: all processes together
hold at most a tenth of a limit (:data:`HOLD_SHARE`) beyond the calls they
are serving, so a key near its limit is counted one call at a time, and in
a window where a call was refused for want of calls, at least
``limit - limit // 10`` were served. docs/plans.rst gives the bound and the
measurements.
"""

from __future__ import annotations

import atexit
import calendar
import datetime as dt
import hashlib
import heapq
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

from .backends import is_sentinel, make_storage, redis_client
from .bounded import BoundedMap
from .errors import StoreUnavailable
from .records import PERIODS, Plan

if TYPE_CHECKING:
    from limits.storage import Storage

__all__ = [
    "HOLD_SHARE",
    "LEASE_LIFE",
    "OVER_QPS",
    "OVER_QUOTA",
    "PlanCounter",
    "Usage",
    "parse_quota",
    "window",
]

logger = logging.getLogger("flask_basic_gate")

#: :attr:`Usage.over` of a call over its calls per second.
OVER_QPS = "qps"
#: :attr:`Usage.over` of a call over its quota.
OVER_QUOTA = "quota"

#: Namespace of the plan counters in the storage.
_NAMESPACE = "basic-gate-plan"
#: Seconds a counter outlives its window: workers' clocks differ a little,
#: and a counter read just after its window must not have vanished.
_SLACK = 60
#: Most keys remembered as refused; the expired go first, then the oldest.
MAX_REFUSED = 10_000
_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
#: The longest a process serves from a batch of calls it took from Redis,
#: in seconds: a batch serves the rest of the second it was taken in, then
#: what is left of it goes back (folded into the key's next take, or given
#: back by the reaper when the key is idle). A process refused while others
#: held calls asks again once they have lapsed.
LEASE_LIFE = 1.0
#: Seconds the reaper leaves a lapsed batch to a key still busy: its next
#: call gives the rest back with its next take, one round trip for both.
_BUSY = 0.1
#: The shortest time a key's rate is measured over when it has just become
#: busy (a few calls at once are not a rate).
_RAMP = 0.1
#: All processes together hold at most ``limit // HOLD_SHARE`` calls of a
#: window beyond the ones they are serving: what a window can lose when the
#: processes holding them get no more calls in it.
HOLD_SHARE = 10
#: The most calls one batch takes.
MAX_BATCH = 4096
#: Milliseconds a take on a Sentinel's master waits for a replica to have it
#: (``WAIT``): a grant a failover could lose is not served.
REPLICA_WAIT_MS = 100
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def parse_quota(text: str) -> tuple[int, str]:
    """Read a quota written ``N/PERIOD`` (``5000/day``).

    :raises ValueError: with a message that names the accepted forms.
    """
    count, _, period = text.strip().partition("/")
    period = period.strip().lower()
    if period not in PERIODS or not count.strip().isdigit():
        raise ValueError(
            f"the quota {text!r} is not N/PERIOD with PERIOD one of {', '.join(PERIODS)}"
            " (such as 5000/day)"
        )
    return check_limit(int(count), "the quota"), period


#: The largest limit the tables hold (a 32-bit signed integer column).
MAX_LIMIT = 2**31 - 1


def check_limit(value: object, what: str) -> int:
    """A limit as stored: an ``int`` from 0 to :data:`MAX_LIMIT`.

    :raises ValueError: naming ``what``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT:
        raise ValueError(f"{what} must be a whole number from 0 to {MAX_LIMIT}, not {value!r}")
    return value


def window(period: str, now: float) -> tuple[int, int]:
    """The calendar window of ``period`` (in UTC) holding ``now``.

    :return: its start and end, in POSIX seconds (the end excluded).
    """
    second = math.floor(now)
    length = _SECONDS.get(period)
    if length is not None:
        # POSIX time has no leap seconds: every day is 86400 of them and
        # starts at a multiple of 86400, at 00:00 UTC.
        start = second - second % length
        return start, start + length
    if period != "month":
        raise ValueError(f"unknown quota period {period!r}")
    when = dt.datetime.fromtimestamp(second, dt.timezone.utc)
    year, month = when.year, when.month
    start = calendar.timegm((year, month, 1, 0, 0, 0))
    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return start, calendar.timegm((year, month, 1, 0, 0, 0))


def gateway_date(when: float) -> str:
    """The gateway's ``X-Plan-Quota-Reset`` form (not an HTTP-date):
    ``Thursday, September 20, 2018 12:00:00 AM GMT``."""
    t = dt.datetime.fromtimestamp(math.floor(when), dt.timezone.utc)
    hour = t.hour % 12 or 12
    return (
        f"{_DAYS[t.weekday()]}, {_MONTHS[t.month - 1]} {t.day}, {t.year}"
        f" {hour}:{t.minute:02}:{t.second:02} {'AM' if t.hour < 12 else 'PM'} GMT"
    )


def _seconds(delay: float) -> int:
    return max(1, math.ceil(delay))


class Usage(NamedTuple):
    """What the plan step counted for one call.

    .. versionadded:: 0.1
    """

    plan: Plan
    #: Calls counted in this second, or ``None`` (QPS unlimited, or not counted).
    qps_count: Optional[int]
    #: Calls counted in the quota window, or ``None`` (unlimited, or not counted).
    quota_count: Optional[int]
    #: The quota window's start and end (POSIX seconds), when a quota applies.
    quota_window: Optional[tuple[int, int]]
    #: :data:`OVER_QPS`, :data:`OVER_QUOTA`, or ``None`` when the call may go on.
    over: Optional[str]

    def retry_after(self, now: float) -> int:
        """Whole seconds (at least 1) to wait after a refusal: 1 over QPS,
        until the window resets over the quota."""
        return _seconds(self.refused_until(now) - now)

    def refused_until(self, now: float) -> float:
        """When a refusal for :attr:`over` ends: the end of this second over
        QPS, the end of the quota window over the quota."""
        if self.over == OVER_QUOTA and self.quota_window is not None:
            return float(self.quota_window[1])
        return float(math.floor(now) + 1)

    def headers(self, now: float, *, mashery: bool) -> list[tuple[str, str]]:
        """The rate-limit header fields for this call.

        Always the IETF ``RateLimit-Policy`` and ``RateLimit`` fields
        (draft-ietf-httpapi-ratelimit-headers); in Mashery mode also the
        gateway's ``X-Plan-…`` fields (``X-PackageKey-…`` where the key's
        own ceiling applies).
        """
        plan = self.plan
        policies: list[str] = []
        limits: list[str] = []
        extra: list[tuple[str, str]] = []
        if plan.qps is not None:
            policies.append(f'"qps";q={plan.qps};w=1')
            prefix = "X-PackageKey" if plan.qps_override else "X-Plan"
            extra.append((f"{prefix}-QPS-Allotted", str(plan.qps)))
            if self.qps_count is not None:
                limits.append(f'"qps";r={max(0, plan.qps - self.qps_count)};t=1')
                extra.append((f"{prefix}-QPS-Current", str(self.qps_count)))
        if plan.quota is not None and self.quota_window is not None:
            start, end = self.quota_window
            policies.append(f'"quota";q={plan.quota};w={end - start}')
            prefix = "X-PackageKey" if plan.quota_override else "X-Plan"
            extra.append((f"{prefix}-Quota-Allotted", str(plan.quota)))
            if self.quota_count is not None:
                remaining = max(0, plan.quota - self.quota_count)
                limits.append(f'"quota";r={remaining};t={_seconds(end - now)}')
                extra.append((f"{prefix}-Quota-Current", str(self.quota_count)))
            extra.append(("X-Plan-Quota-Reset", gateway_date(end)))
        fields = [("RateLimit-Policy", ", ".join(policies))]
        if limits:
            fields.append(("RateLimit", ", ".join(limits)))
        return fields + extra if mashery else fields


def _refusal_ends(entry: tuple[Plan, float, Usage]) -> float:
    return entry[1]


def _held_ends(until: float) -> float:
    return until


# One take, atomic: give back what the caller returns, then either refuse
# (some limit has nothing left) or grant each limit's batch.
# KEYS: one hash per limit (the QPS second, the quota window), in one slot.
# ARGV: holder, now (ms), lapse (ms), share, then per key: limit, want,
# expire-at (s), returned.
# A hash holds "t", the calls handed out and not given back, and one field
# per process that took calls: "calls held beyond the one in use:lapse
# (ms)", overwritten by its next take, dropped 2 s after it lapsed.
# Reply: {1, grant, taken, ...} or {0, index refused, held elsewhere until
# (ms, 0 for none), taken, ...}.
_TAKE = """
local holder, now, share = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
local taken, held, latest, own, holders = {}, {}, {}, {}, {}
-- The calls handed out; what others hold and until when; how many others
-- took calls lately (held or not: each gets a fair share of what may be
-- held); whether the caller has a field. Fields older than that go.
local function scan(key)
  local count, sum, last, mine, others = 0, 0, 0, false, 0
  local fields = redis.call('HGETALL', key)
  for j = 1, #fields, 2 do
    local name = fields[j]
    if name == 't' then
      count = tonumber(fields[j + 1])
    elseif name == holder then
      mine = true
    else
      local calls, lapse = string.match(fields[j + 1], '^(%d+):(%d+)$')
      calls, lapse = tonumber(calls), tonumber(lapse)
      if lapse and lapse > now - 2000 then
        others = others + 1
        if lapse > now and calls > 0 then
          sum = sum + calls
          if lapse > last then last = lapse end
        end
      else
        redis.call('HDEL', key, name)
      end
    end
  end
  return count, sum, last, mine, others
end
local refused = 0
for i = 1, #KEYS do
  local base = 4 * i
  if tonumber(ARGV[base + 2]) > 1 then
    taken[i], held[i], latest[i], own[i], holders[i] = scan(KEYS[i])
  else
    taken[i], held[i], latest[i] = tonumber(redis.call('HGET', KEYS[i], 't') or '0'), 0, nil
    holders[i] = 0
  end
  -- A returned batch is of this window, whose hash exists.
  taken[i] = taken[i] - tonumber(ARGV[base + 4])
  if refused == 0 and taken[i] >= tonumber(ARGV[base + 1]) then
    refused = i
  end
end
if refused > 0 then
  if latest[refused] == nil then
    local _, _, last = scan(KEYS[refused])
    latest[refused] = last
  end
  local reply = {0, refused, latest[refused]}
  for i = 1, #KEYS do
    local returned = tonumber(ARGV[4 * i + 4])
    if returned > 0 then redis.call('HINCRBY', KEYS[i], 't', -returned) end
    reply[#reply + 1] = taken[i]
  end
  return reply
end
local reply = {1}
for i = 1, #KEYS do
  local base = 4 * i
  local limit, want = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  -- What may be held, less what others hold, and no more than a fair
  -- share of it: each holder and this one alike.
  local most = math.floor(limit / share)
  local room = math.min(most - held[i], math.floor(most / (holders[i] + 1)))
  local grant = math.max(1, math.min(want, limit - taken[i], room + 1))
  local count = redis.call('HINCRBY', KEYS[i], 't', grant - tonumber(ARGV[base + 4]))
  if grant > 1 or want == 1 or own[i] then
    -- What it holds now (its earlier batch is used up or given back).
    redis.call('HSET', KEYS[i], holder, (grant - 1) .. ':' .. ARGV[3])
  end
  if count == grant then
    redis.call('EXPIREAT', KEYS[i], ARGV[base + 3])
  end
  reply[#reply + 1] = grant
  reply[#reply + 1] = count
end
return reply
"""

# Give back calls a holder did not use: KEYS[1] the window's hash; ARGV:
# holder, calls. A window whose hash expired has nothing to give back to.
_GIVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return redis.call('HINCRBY', KEYS[1], 't', -tonumber(ARGV[2]))
"""


class _Script:
    """A Lua script run with ``EVALSHA``, and with ``EVAL`` (which also
    caches it) where the server does not have it yet (a restarted server, a
    promoted replica, a cluster node): redis-py's ``register_script`` would
    do the same, but not in a pipeline without a ``SCRIPT EXISTS`` trip."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode("utf-8")).hexdigest()

    def __call__(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        from redis.exceptions import NoScriptError

        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return client.eval(self.text, len(keys), *keys, *args)

    def replicated(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run it and wait (one round trip) until a replica has its writes.

        :raises ReplicaLag: no replica acknowledged them in time.
        """
        from redis.exceptions import NoScriptError

        for run in ("evalsha", "eval"):
            pipe = client.pipeline(transaction=False)
            getattr(pipe, run)(self.sha if run == "evalsha" else self.text, len(keys), *keys, *args)
            pipe.execute_command("WAIT", 1, REPLICA_WAIT_MS)
            reply, acked = pipe.execute(raise_on_error=False)
            if isinstance(reply, NoScriptError):
                continue
            if isinstance(reply, Exception):
                raise reply
            if isinstance(acked, Exception):
                raise acked
            if int(acked) < 1:
                raise ReplicaLag(reply)
            return reply
        raise AssertionError("unreachable: EVAL does not answer NOSCRIPT")


class ReplicaLag(Exception):
    """No replica acknowledged a take in time: a failover could lose it.

    .. versionadded:: 0.1
    """

    def __init__(self, reply: Any) -> None:
        super().__init__("no replica acknowledged the take")
        self.reply = reply


_take = _Script(_TAKE)
_give = _Script(_GIVE)


@dataclass(eq=False)
class _Lease:
    """Calls of one window taken from Redis and not served yet."""

    #: The window's hash in Redis.
    name: str
    #: The second (QPS), or the period and start (quota).
    window: tuple[Any, ...]
    limit: int
    remaining: int
    #: The window's count in Redis when this batch was taken (it included).
    taken: int
    #: Served from until then; past it only while Redis cannot be reached.
    deadline: float
    #: The window's end.
    end: float
    #: Quota calls go back to Redis when not used (a second's do not matter).
    returnable: bool
    #: The key's state (the reaper leaves a busy key's batch to its calls).
    state: Optional[_KeyState] = None
    #: Given back or folded into a later take: nothing more to serve or return.
    closed: bool = False
    #: When the reaper looks at it next.
    reap_at: float = 0.0
    #: Left once to the key's calls by the reaper.
    deferred: bool = False

    def usable(self, window: tuple[Any, ...], limit: int, now: float, *, lapsed: bool) -> bool:
        return (
            not self.closed
            and self.remaining > 0
            and self.window == window
            and self.limit == limit
            and now < self.end
            and (lapsed or now < self.deadline)
        )

    def count(self) -> int:
        """The best-known count of the window: every call handed out before
        and with this batch, less what is left of it."""
        return self.taken - self.remaining

    def span(self) -> tuple[int, int]:
        """A quota batch's window: its start and end."""
        return int(self.window[1]), int(self.end)


class _KeyState:
    """What a process knows of one key: its batches, and its rate."""

    __slots__ = ("before", "burst", "calls", "first", "last", "qps", "quota", "second", "tag")

    def __init__(self, key: str) -> None:
        # A fixed-size name in one cluster slot ("{tag}") for all of a
        # key's windows, whatever characters the key holds.
        self.tag = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        self.qps: Optional[_Lease] = None
        self.quota: Optional[_Lease] = None
        self.second = 0
        self.calls = 0
        self.before = 0
        self.last = 0.0
        self.first = 0.0
        self.burst = 0

    def seen(self, now: float, second: int) -> float:
        """Count a call; the rate of the key's calls, per second: those of
        the last second (this one included), or those since the key became
        busy, when that was less than a second ago."""
        if second != self.second:
            self.before = self.calls if second == self.second + 1 else 0
            self.calls = 0
            self.second = second
        if now - self.last > 1.0:
            self.first, self.burst = now, 0
        self.calls += 1
        self.burst += 1
        self.last = now
        last_second = self.before * (1.0 - (now - second)) + self.calls
        return max(last_second, self.burst / max(now - self.first, _RAMP))


class _Take(NamedTuple):
    """One limit's part of a take."""

    name: str
    limit: int
    want: int
    expire_at: int
    #: Calls of a lapsed batch of the same window given back with the take.
    returned: int
    #: The quota's window (else the QPS second).
    quota: bool


def _want(expected: float) -> int:
    # A little more than expected: what is left goes back with the next
    # take at no cost, a second take in the same second costs a round trip.
    return max(1, min(MAX_BATCH, math.ceil(expected * 1.5)))


class PlanCounter:
    """Counts calls per key against its plan, in calendar windows in UTC.

    :param storage: the :mod:`limits` storage of the counters when they are
        not on Redis; made from ``redis_url`` (see
        :func:`~flask_basic_gate.backends.make_storage`) at the first counted
        call when not given.
    :param redis_url: ``BASIC_GATE_REDIS_URL``: calls are then taken from
        Redis in batches (see the module's documentation), through a client
        made by :func:`~flask_basic_gate.backends.redis_client` at the first
        counted call.
    :param clock: current POSIX time, when :meth:`count` is not told it.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        storage: Optional[Storage] = None,
        *,
        redis_url: Optional[str] = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._storage = storage
        self._redis_url = redis_url
        self.clock = clock
        #: Keys known to be refused until a time, with the plan and usage
        #: that refused them. A key whose plan changed is counted again.
        self.refused: BoundedMap[str, tuple[Plan, float, Usage]] = BoundedMap(
            MAX_REFUSED, expires=_refusal_ends
        )
        #: When the calls other processes held, as a key's quota was
        #: refused, come back (POSIX time).
        self._held_elsewhere: BoundedMap[str, float] = BoundedMap(MAX_REFUSED, expires=_held_ends)
        self._client: Any = None
        #: A take on a Sentinel's master waits until a replica has it.
        self._replicated = is_sentinel(redis_url)
        self._fresh()
        if redis_url is not None:
            _watch(self)

    def _fresh(self) -> None:
        # A process's own batches, reaper and name: none is inherited.
        self._lock = threading.Lock()
        self._keys: dict[str, _KeyState] = {}
        self._due: list[tuple[float, int, _Lease]] = []
        self._sequence = 0
        self._wake = threading.Condition(self._lock)
        self._reaper: Optional[threading.Thread] = None
        self._stopping = False
        self._holder = f"{os.getpid()}-{os.urandom(6).hex()}"

    @property
    def batched(self) -> bool:
        """Whether calls are taken from Redis in batches."""
        return self._redis_url is not None

    @property
    def storage(self) -> Storage:
        """The counters' storage (made on first use: apps without plans
        never open it)."""
        storage = self._storage
        if storage is None:
            with self._lock:
                if self._storage is None:
                    self._storage = make_storage(self._redis_url)
                storage = self._storage
        return storage

    @property
    def client(self) -> Any:
        """The Redis client of the batches (made on first use)."""
        client = self._client
        if client is None:
            assert self._redis_url is not None
            with self._lock:
                if self._client is None:
                    self._client = redis_client(self._redis_url)
                client = self._client
        return client

    def known_refusal(self, key: str, plan: Plan, now: float) -> Optional[Usage]:
        """The usage that refused ``key`` under ``plan`` while that refusal
        lasts (see :meth:`remember_refusal`), or ``None``."""
        if not self.refused:
            return None
        known = self.refused.get(key)
        if known is None:
            return None
        if known[0] == plan and now < known[1]:
            return known[2]
        self.refused.discard_if(key, known)
        return None

    def remember_refusal(self, key: str, usage: Usage, now: float) -> None:
        """Keep ``usage`` (whose :attr:`Usage.over` is set) as the answer for
        ``key`` until its refusal ends: its counter only grows till then.

        On Redis, a quota refused while other processes held calls of it is
        remembered only until those calls come back (at most
        :data:`LEASE_LIFE`): then the key is counted again.
        """
        until = usage.refused_until(now)
        if usage.over == OVER_QUOTA and self._held_elsewhere:
            held = self._held_elsewhere.pop(key)
            if held is not None:
                # Once lapsed, a busy holder's calls come back with its next
                # take, an idle one's from its reaper.
                until = min(until, max(now, held) + 2 * _BUSY)
        self.refused.put(key, (usage.plan, until, usage))

    def count(self, key: str, plan: Plan, now: Optional[float] = None) -> Usage:
        """Count one call of ``key`` under ``plan`` (whose limits are not 0).

        :return: what was counted (:attr:`Usage.over` is ``None``: comparing
            the counts with the plan is the policy's job). On Redis, a call
            that got no call of a limit is reported one above that limit
            (and uses up nothing); a call that got them is reported with the
            best-known count of each window, this call included.
        :raises StoreUnavailable: the counters cannot be reached (on Redis:
            and this process holds no call of the window to serve it from).
        """
        now = self.clock() if now is None else now
        if self.batched:
            return self._count_batched(key, plan, now)
        span = window(plan.period, now) if plan.quota is not None else None
        second = math.floor(now)
        counters: list[tuple[str, int]] = []
        if plan.qps is not None:
            counters.append((f"{_NAMESPACE}/qps/{key}/{second}", 1 + _SLACK))
        if span is not None:
            counters.append(_quota_counter(key, plan, span, second))
        try:
            counts = self.incr_many(counters)
        except Exception as exc:  # whatever the storage's client raises
            raise StoreUnavailable(
                f"the plan counters could not be reached: {type(exc).__name__}"
            ) from exc
        qps_count = counts[0] if plan.qps is not None else None
        quota_count = counts[-1] if span is not None else None
        return Usage(plan, qps_count, quota_count, span, None)

    def give_back(self, key: str, usage: Usage, now: float) -> Usage:
        """Take back the call that ``usage`` counted (a refused call uses up
        no quota). Best effort: on failure the usage is returned as it was,
        and the failure logged.

        On Redis a call reported over a limit used up nothing; a call served
        from this process's batches that the policy refuses all the same
        goes back into them.
        """
        if self.batched:
            self._give_back_held(key, usage, now)
            return usage
        if usage.quota_count is None or usage.quota_window is None:
            return usage
        name, expiry = _quota_counter(key, usage.plan, usage.quota_window, math.floor(now))
        try:
            quota_count = self.storage.incr(name, expiry, amount=-1)
        except Exception:  # whatever the storage's client raises
            logger.warning("could not give back a refused call's quota", exc_info=True)
            return usage
        return usage._replace(quota_count=quota_count)

    def quota_used(self, key: str, plan: Plan, now: Optional[float] = None) -> Optional[int]:
        """Calls of ``key`` counted in its current quota window, without
        counting one (``None`` when the plan has no quota). For operators:
        the CLI shows it where it can read the counters (on Redis, where it
        counts the calls handed out to processes, which they serve or give
        back within :data:`LEASE_LIFE`).

        :raises StoreUnavailable: the storage cannot be reached.
        """
        if plan.quota is None:
            return None
        now = self.clock() if now is None else now
        span = window(plan.period, now)
        try:
            if self.batched:
                name = _quota_hash(_KeyState(key).tag, plan.period, span[0])
                return int(self.client.hget(name, "t") or 0)
            name, _ = _quota_counter(key, plan, span, math.floor(now))
            return int(self.storage.get(name))
        except Exception as exc:  # whatever the storage's client raises
            raise StoreUnavailable(
                f"the plan counters could not be reached: {type(exc).__name__}"
            ) from exc

    def incr_many(self, counters: Sequence[tuple[str, int]]) -> list[int]:
        """Add one to each counter (name, seconds to live) and return the new
        counts: the one round trip of a counted call without Redis batches.

        On limits' Redis storage several counters go in one pipeline: one
        round trip for QPS and quota together. Each counter is ``SET key 0
        EX expiry NX`` then ``INCR key`` on limits' own key name, which is
        what its increment-and-expire script does (a pipeline of the script
        would cost redis-py a ``SCRIPT EXISTS`` trip on every execute).
        Elsewhere ``storage.incr`` runs once per counter, which costs no
        network trip on the in-memory storage.
        """
        storage: Any = self.storage
        prefixed = getattr(storage, "prefixed_key", None)
        if len(counters) > 1 and prefixed is not None:
            pipe = storage.get_connection().pipeline(transaction=False)
            for name, expiry in counters:
                key = prefixed(name)
                pipe.set(key, 0, ex=expiry, nx=True)
                pipe.incr(key)
            return [int(count) for count in pipe.execute()[1::2]]
        return [storage.incr(name, expiry) for name, expiry in counters]

    # -- batches on Redis ----------------------------------------------------

    def _count_batched(self, key: str, plan: Plan, now: float) -> Usage:
        second = math.floor(now)
        qps_window = (second,)
        takes: list[_Take] = []
        folded: Optional[_Lease] = None
        returned = 0
        with self._lock:
            state = self._keys.get(key)
            if state is None:
                state = self._keys[key] = _KeyState(key)
            rate = state.seen(now, second)
            qps, quota = state.qps, state.quota
            # Every call comes here: plain tests, no calls.
            need_qps = plan.qps is not None and not (
                qps is not None
                and qps.remaining > 0
                and not qps.closed
                and now < qps.deadline
                and qps.window[0] == second
                and qps.limit == plan.qps
            )
            # A batch knows its window: the calendar is read only for a take.
            need_quota = plan.quota is not None and not (
                quota is not None
                and quota.remaining > 0
                and not quota.closed
                and now < quota.deadline
                and quota.window[1] <= now
                and quota.window[0] == plan.period
                and quota.limit == plan.quota
            )
            if not need_qps and not need_quota:
                held = None if quota is None or plan.quota is None else quota.span()
                return self._serve(state, plan, held)
            span = window(plan.period, now) if plan.quota is not None else None
            quota_window = (plan.period, span[0]) if span is not None else ()
            if need_qps:
                assert plan.qps is not None
                # The calls expected in the rest of this second.
                want = _want(rate * (1.0 - (now - second)))
                takes.append(
                    _Take(
                        _qps_hash(state.tag, second), plan.qps, want, second + 1 + _SLACK, 0, False
                    )
                )
            if need_quota:
                assert plan.quota is not None and span is not None
                if quota is not None and not quota.closed and quota.window == quota_window:
                    # A lapsed batch of this window goes back with the take.
                    folded, returned = quota, quota.remaining
                    quota.closed, quota.remaining = True, 0
                # The calls expected in the rest of this second, too.
                want = _want(rate * (1.0 - (now - second)))
                name = _quota_hash(state.tag, plan.period, span[0])
                takes.append(_Take(name, plan.quota, want, span[1] + _SLACK, returned, True))
        try:
            reply = self._take(takes, now)
        except Exception as exc:  # whatever the client raises
            with self._lock:
                if folded is not None:
                    # The take that was to give it back did not happen.
                    folded.closed, folded.remaining = False, returned
                    folded.deadline = min(now + LEASE_LIFE, folded.end)
                    self._due_at(folded)
                return self._serve_held(key, plan, span, now, exc)
        with self._lock:
            state = self._keys.get(key)
            if state is None:
                state = self._keys[key] = _KeyState(key)
            if not reply[0]:
                return self._refused(key, state, plan, span, takes, reply)
            for index, take in enumerate(takes):
                grant, taken = int(reply[1 + 2 * index]), int(reply[2 + 2 * index])
                end = float(span[1]) if take.quota and span is not None else float(second + 1)
                lease = _Lease(
                    take.name,
                    quota_window if take.quota else qps_window,
                    take.limit,
                    grant,
                    taken,
                    float(second + 1),
                    end,
                    take.quota,
                    state,
                )
                self._install(state, lease)
            return self._serve(state, plan, span)

    def _take(self, takes: Sequence[_Take], now: float) -> Any:
        keys = [take.name for take in takes]
        args: list[Any] = [
            self._holder,
            int(now * 1000),
            (math.floor(now) + 1) * 1000,  # when its batches lapse
            HOLD_SHARE,
        ]
        for take in takes:
            args += [take.limit, take.want, take.expire_at, take.returned]
        if not self._replicated:
            return _take(self.client, keys, args)
        try:
            return _take.replicated(self.client, keys, args)
        except ReplicaLag as lag:
            # Not served: a failover could lose the grant. What was granted
            # goes back (best effort: a lost give-back only serves fewer).
            reply = lag.reply
            if reply and reply[0]:
                for take, grant in zip(takes, reply[1::2]):
                    self._give(take.name, int(grant))
            raise

    def _install(self, state: _KeyState, lease: _Lease) -> None:
        held = state.quota if lease.returnable else state.qps
        if (
            held is not None
            and not held.closed
            and held.window == lease.window
            and held.limit == lease.limit
        ):
            # Another thread of this process took a batch meanwhile: one
            # batch, so neither is left unserved.
            held.remaining += lease.remaining
            held.taken = max(held.taken, lease.taken)
            held.deadline = min(held.deadline, lease.deadline)
            return
        if lease.returnable:
            state.quota = lease
        else:
            state.qps = lease
        self._due_at(lease)

    @staticmethod
    def _serve(state: _KeyState, plan: Plan, span: Optional[tuple[int, int]]) -> Usage:
        qps_count = quota_count = None
        if plan.qps is not None:
            assert state.qps is not None
            state.qps.remaining -= 1
            qps_count = state.qps.count()
        if plan.quota is not None:
            assert state.quota is not None
            state.quota.remaining -= 1
            quota_count = state.quota.count()
        return Usage(plan, qps_count, quota_count, span, None)

    def _refused(
        self,
        key: str,
        state: _KeyState,
        plan: Plan,
        span: Optional[tuple[int, int]],
        takes: Sequence[_Take],
        reply: Sequence[Any],
    ) -> Usage:
        refused = takes[int(reply[1]) - 1]
        until_ms = int(reply[2])
        counts = {take.quota: int(count) for take, count in zip(takes, reply[3:])}
        qps_count: Optional[int] = None
        quota_count: Optional[int] = None
        if plan.qps is not None:
            if not refused.quota:
                qps_count = plan.qps + 1
            elif False in counts:
                qps_count = counts[False]
            elif state.qps is not None:
                qps_count = state.qps.count()
        if plan.quota is not None:
            if refused.quota:
                quota_count = plan.quota + 1
                if until_ms:
                    self._held_elsewhere.put(key, until_ms / 1000)
            elif True in counts:
                quota_count = counts[True]
            elif state.quota is not None:
                quota_count = state.quota.count()
        return Usage(plan, qps_count, quota_count, span, None)

    def _serve_held(
        self,
        key: str,
        plan: Plan,
        span: Optional[tuple[int, int]],
        now: float,
        exc: Exception,
    ) -> Usage:
        """Redis failed: serve from the calls this process holds for the
        current windows, lapsed or not (they were counted when taken), or
        raise :exc:`StoreUnavailable`. Called with the lock held."""
        state = self._keys.get(key)
        if state is not None:
            qps, quota = state.qps, state.quota
            qps_ok = plan.qps is None or (
                qps is not None and qps.usable((math.floor(now),), plan.qps, now, lapsed=True)
            )
            quota_ok = plan.quota is None or (
                quota is not None
                and span is not None
                and quota.usable((plan.period, span[0]), plan.quota, now, lapsed=True)
            )
            if qps_ok and quota_ok:
                return self._serve(state, plan, span)
        raise StoreUnavailable(
            f"the plan counters could not be reached: {type(exc).__name__}"
        ) from exc

    def _give_back_held(self, key: str, usage: Usage, now: float) -> None:
        plan = usage.plan
        if (
            plan.qps is not None and usage.qps_count is not None and usage.qps_count > plan.qps
        ) or (
            plan.quota is not None
            and usage.quota_count is not None
            and usage.quota_count > plan.quota
        ):
            return  # reported over a limit: it used up nothing
        with self._lock:
            state = self._keys.get(key)
            if state is None:
                return
            second = math.floor(now)
            qps = state.qps
            if plan.qps is not None and qps is not None and qps.window == (second,):
                qps.remaining += 0 if qps.closed else 1
            span = usage.quota_window
            quota = state.quota
            if (
                plan.quota is not None
                and span is not None
                and quota is not None
                and quota.window == (plan.period, span[0])
                and not quota.closed
            ):
                quota.remaining += 1

    def _give(self, name: str, calls: int) -> bool:
        """Give ``calls`` back to a window's hash; whether Redis took them."""
        try:
            _give(self.client, [name], [self._holder, calls])
        except Exception as exc:  # whatever the client raises
            logger.warning(
                "could not give back %d unused plan calls to Redis (%s): they are served"
                " here, or given back within %g s",
                calls,
                type(exc).__name__,
                LEASE_LIFE,
            )
            return False
        return True

    # -- giving back: the reaper thread ---------------------------------------

    def _due_at(self, lease: _Lease) -> None:
        """Have the reaper look at ``lease`` at its deadline (lock held)."""
        self._sequence += 1
        lease.reap_at = max(lease.reap_at, lease.deadline)
        first = not self._due or lease.reap_at < self._due[0][0]
        heapq.heappush(self._due, (lease.reap_at, self._sequence, lease))
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="basic-gate-plans", daemon=True)
            self._reaper.start()
        elif first:
            self._wake.notify()

    def _reap(self) -> None:
        """Give back the quota calls of lapsed batches; forget idle keys."""
        next_sweep = 0.0
        while True:
            lapsed: list[tuple[_Lease, int]] = []
            with self._lock:
                if self._stopping:
                    return
                now = self.clock()
                due = self._due
                while due and due[0][0] <= now:
                    _, _, lease = heapq.heappop(due)
                    if lease.closed:
                        continue
                    if lease.deadline > now:  # its deadline moved
                        self._due_at(lease)
                        continue
                    state = lease.state
                    if (
                        lease.returnable
                        and lease.remaining > 0
                        and not lease.deferred
                        and state is not None
                        and state.last >= now - _BUSY
                    ):
                        lease.deferred = True
                        lease.reap_at = now + _BUSY
                        self._due_at(lease)
                        continue
                    lease.closed = True
                    if lease.returnable and lease.remaining > 0:
                        lapsed.append((lease, lease.remaining))
                    lease.remaining = 0
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + _SWEEP
                if not lapsed:
                    if due:
                        timeout: Optional[float] = min(due[0][0] - now, _SWEEP)
                    else:
                        timeout = _SWEEP if self._keys else None
                    self._wake.wait(None if timeout is None else max(timeout, 0.001))
                    continue
            for lease, calls in lapsed:
                if not self._give(lease.name, calls):
                    with self._lock:
                        # Still counted in Redis: served from here while it
                        # cannot be reached, given back once it can.
                        if self.clock() < lease.end:
                            lease.closed, lease.remaining = False, calls
                            lease.deadline = min(self.clock() + LEASE_LIFE, lease.end)
                            lease.deferred = False
                            self._due_at(lease)

    def _sweep(self, now: float) -> None:
        # Keys idle for a while, with nothing held, are forgotten.
        idle = now - _SWEEP
        for key, state in list(self._keys.items()):
            if state.last < idle and all(
                lease is None or lease.closed or lease.remaining <= 0 or now >= lease.end
                for lease in (state.qps, state.quota)
            ):
                del self._keys[key]

    def close(self) -> None:
        """Give back every call this process holds and stop its reaper (at
        exit, and in tests). The counter may be used again after."""
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
            held = [
                (lease, lease.remaining)
                for _, _, lease in self._due
                if not lease.closed and lease.returnable and lease.remaining > 0
            ]
            for lease, _ in held:
                lease.closed, lease.remaining = True, 0
            self._due.clear()
            self._keys.clear()
            reaper, self._reaper = self._reaper, None
        if reaper is not None and reaper is not threading.current_thread():
            reaper.join(timeout=5)
        with self._lock:
            self._stopping = False
        for lease, calls in held:
            if not self._give(lease.name, calls):
                break  # Redis is gone: the rest would wait as long each


#: Seconds between sweeps of idle keys, and how long a key stays idle first.
_SWEEP = 2.0

_counters: weakref.WeakSet[PlanCounter] = weakref.WeakSet()
_hooked = False


def _watch(counter: PlanCounter) -> None:
    # A forked child holds none of its parent's calls (they are the
    # parent's to serve), and a stopping process gives its own back.
    global _hooked
    _counters.add(counter)
    if not _hooked:
        _hooked = True
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
        atexit.register(_close_all)


def _after_fork_in_child() -> None:
    for counter in list(_counters):
        counter._fresh()


def _close_all() -> None:
    for counter in list(_counters):
        counter.close()


def _qps_hash(tag: str, second: int) -> str:
    return f"{_NAMESPACE}:{{{tag}}}:qps:{second}"


def _quota_hash(tag: str, period: str, start: int) -> str:
    return f"{_NAMESPACE}:{{{tag}}}:quota:{period}:{start}"


def _quota_counter(key: str, plan: Plan, span: tuple[int, int], second: int) -> tuple[str, int]:
    """The quota counter's name and seconds to live."""
    return f"{_NAMESPACE}/quota/{plan.period}/{key}/{span[0]}", span[1] - second + _SLACK

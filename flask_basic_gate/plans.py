"""Package plans: calls per second and quotas, counted per key.

:class:`PlanCounter` counts the calls of a key whose
:class:`~flask_basic_gate.records.Plan` limits it, on a :mod:`limits`
storage: in memory by default, on Redis when ``BASIC_GATE_REDIS_URL`` is
set, so every worker then shares one count with no change here. The policy
calls it last (step 6), for cached successes too, so only requests that
authenticated and may use the route are counted.

Windows are fixed and calendar-aligned in UTC, as on the gateway: QPS counts
per second, a quota per minute, hour, day (ending at 00:00 UTC) or month
(ending on the first at 00:00 UTC). :mod:`limits`' own fixed windows start
at a key's first hit, so the counters here are plain ``incr`` calls on keys
that carry the window's start.

The counter only counts and remembers: it returns what it counted (a
:class:`Usage`), and the policy compares that with the plan and decides.
Round trips: the counters a request needs (QPS, quota or both) are counted
in one call of :meth:`PlanCounter.incr_many`, which on Redis is one
pipeline. A call the policy refuses gives its quota count back
(:meth:`PlanCounter.give_back`, on refused requests only), and the policy
remembers the key as refused until the window ends
(:meth:`PlanCounter.remember_refusal`), so the refusals that follow cost no
round trip at all.
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

from .backends import make_storage
from .bounded import BoundedMap
from .errors import StoreUnavailable
from .records import PERIODS, Plan

if TYPE_CHECKING:
    from limits.storage import Storage

__all__ = ["OVER_QPS", "OVER_QUOTA", "PlanCounter", "Usage", "parse_quota", "window"]

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


class PlanCounter:
    """Counts calls per key against its plan, in calendar windows in UTC.

    :param storage: the :mod:`limits` storage of the counters; made from
        ``redis_url`` (see :func:`~flask_basic_gate.backends.make_storage`)
        at the first counted call when not given.
    :param redis_url: ``BASIC_GATE_REDIS_URL``, for that storage.
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
        self._lock = threading.Lock()

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
        ``key`` until its refusal ends: its counter only grows till then."""
        self.refused.put(key, (usage.plan, usage.refused_until(now), usage))

    def count(self, key: str, plan: Plan, now: Optional[float] = None) -> Usage:
        """Count one call of ``key`` under ``plan`` (whose limits are not 0).

        :return: what was counted (:attr:`Usage.over` is ``None``: comparing
            the counts with the plan is the policy's job).
        :raises StoreUnavailable: the storage cannot be reached.
        """
        now = self.clock() if now is None else now
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
        """Take back the quota call that ``usage`` counted (a refused call
        uses up no quota). Best effort: on failure the usage is returned as
        it was, and the failure logged."""
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
        the CLI shows it where it can read the counters (on Redis).

        :raises StoreUnavailable: the storage cannot be reached.
        """
        if plan.quota is None:
            return None
        now = self.clock() if now is None else now
        name, _ = _quota_counter(key, plan, window(plan.period, now), math.floor(now))
        try:
            return int(self.storage.get(name))
        except Exception as exc:  # whatever the storage's client raises
            raise StoreUnavailable(
                f"the plan counters could not be reached: {type(exc).__name__}"
            ) from exc

    def incr_many(self, counters: Sequence[tuple[str, int]]) -> list[int]:
        """Add one to each counter (name, seconds to live) and return the new
        counts: the one round trip of a counted call.

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


def _quota_counter(key: str, plan: Plan, span: tuple[int, int], second: int) -> tuple[str, int]:
    """The quota counter's name and seconds to live."""
    return f"{_NAMESPACE}/quota/{plan.period}/{key}/{span[0]}", span[1] - second + _SLACK

"""Failed-attempt throttling and the bound on key-derivation work.

:class:`FailureThrottle` counts failed verifications per (client address,
key) in fixed windows on a :mod:`limits` storage: in memory by default, on
Redis when ``BASIC_GATE_REDIS_URL`` is set, so every worker then shares one
count with no change here. A pair over its limit is refused before any
lookup or verification, and before the cache is consulted for it.

The warm path pays for this only with one truth test of a dict: the pairs
this process knows to be throttled are kept in :attr:`FailureThrottle.blocked`,
which is empty unless somebody is being refused.

When Redis cannot be reached the throttle counts in this process's memory
instead (and logs it once), trying Redis again every
:data:`SHARED_RETRY` seconds: a failed-attempt limit then holds per process
rather than across them, but a Redis outage neither opens the gate nor
refuses requests that would otherwise be served. Authentication itself
never depends on these counters.

:class:`KdfBudget` bounds how much CPU one process spends on scrypt or
PBKDF2 for person-chosen secrets: a token bucket of seconds of work. Past
it the gate answers at once and never queues.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from limits import RateLimitItem
    from limits.storage import Storage
    from limits.strategies import FixedWindowRateLimiter

__all__ = ["FailureThrottle", "KdfBudget", "make_storage"]

#: Most pairs remembered as throttled before expired ones are swept.
_MAX_BLOCKED = 10_000
#: Namespace of the throttle's counters in the storage.
_NAMESPACE = "basic-gate-failures"
#: Seconds between attempts to count on Redis again after it failed.
SHARED_RETRY = 1.0

logger = logging.getLogger("flask_basic_gate")


def make_storage(redis_url: Optional[str]) -> Storage:
    """The :mod:`limits` storage for the gate's counters.

    :param redis_url: ``BASIC_GATE_REDIS_URL``; ``None`` for in-memory
        counters of this process only. A Redis storage gets the gate's short
        timeouts, no retries, and raises :exc:`limits.errors.StorageError`
        when Redis fails (see :class:`FailureThrottle` for what happens then).
    """
    from limits.storage import MemoryStorage, RedisStorage

    if redis_url is None:
        return MemoryStorage()
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from .revocation import REDIS_TIMEOUT

    if redis_url.startswith("unix://"):
        redis_url = "redis+" + redis_url
    return RedisStorage(
        redis_url,
        wrap_exceptions=True,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        retry=Retry(NoBackoff(), 0),  # type: ignore[arg-type]
    )


class FailureThrottle:
    """Counts failed verifications per (client address, key).

    :param limit: the limit in :mod:`limits` notation (``"10/minute"``,
        ``"5/minute;50/hour"``).
    :param storage: where the counters live (see :func:`make_storage`).

    .. versionadded:: 0.1
    """

    def __init__(self, limit: str, storage: Storage) -> None:
        from limits import parse_many
        from limits.strategies import FixedWindowRateLimiter

        self.items = parse_many(limit)
        #: The limiter in use: on ``storage``, or on this process's memory
        #: while ``storage`` fails.
        self.limiter = FixedWindowRateLimiter(storage)
        self._shared = self.limiter
        self._local: Optional[FixedWindowRateLimiter] = None
        self._retry_shared_at = 0.0
        #: Pairs this process knows to be over the limit, with the POSIX time
        #: their window resets. Read without a lock on every request.
        self.blocked: dict[tuple[str, str], float] = {}
        #: Called with (client, key, until) when a pair goes over the limit
        #: here (the revocation channel tells other processes).
        self.on_blocked: list[Callable[[str, str, float], object]] = []
        self._lock = threading.Lock()

    def retry_after(self, client: str, key: str, now: float) -> Optional[int]:
        """Whole seconds (at least 1) until the pair may try again, or
        ``None`` when it may try now.

        Reads the shared counters; a pair found over the limit is remembered
        locally until its window resets.
        """
        until = self.blocked.get((client, key))
        if until is not None:
            if now < until:
                return _seconds(until - now)
            self.blocked.pop((client, key), None)
        for item in self.items:
            if not self._count("test", item, client, key):
                reset = self._count("get_window_stats", item, client, key).reset_time
                until = max(reset, now + 1)
                self.block(client, key, until)
                for listener in self.on_blocked:
                    listener(client, key, until)
                return _seconds(until - now)
        return None

    def is_blocked(self, client: str, key: str, now: float) -> bool:
        """Whether this process knows the pair to be throttled (no storage read)."""
        until = self.blocked.get((client, key))
        return until is not None and now < until

    def failed(self, client: str, key: str, now: float) -> None:
        """Count one failed verification of ``key`` from ``client``."""
        for item in self.items:
            self._count("hit", item, client, key)
        # A pair that has just used up its allowance is throttled from now
        # on, cached successes included: otherwise the cache would answer
        # the next guesses, right ones with a 200 and wrong ones with a 429.
        self.retry_after(client, key, now)

    def _count(self, method: str, item: RateLimitItem, client: str, key: str) -> Any:
        """Call the limiter's ``method`` for the pair: the shared limiter's,
        or the local one's while the shared storage fails."""
        from limits.errors import StorageError

        limiter = self.limiter
        shared = self._shared
        if limiter is not shared and time.monotonic() >= self._retry_shared_at:
            limiter = shared
        try:
            result = getattr(limiter, method)(item, _NAMESPACE, client, key)
        except StorageError as exc:
            if limiter is not shared:
                raise
            return getattr(self._fall_back(exc), method)(item, _NAMESPACE, client, key)
        if limiter is not self.limiter:
            self.limiter = limiter
            logger.warning("failed-attempt counters shared through Redis again")
        return result

    def _fall_back(self, exc: BaseException) -> FixedWindowRateLimiter:
        from limits.storage import MemoryStorage
        from limits.strategies import FixedWindowRateLimiter

        with self._lock:
            self._retry_shared_at = time.monotonic() + SHARED_RETRY
            if self._local is None:
                self._local = FixedWindowRateLimiter(MemoryStorage())
            if self.limiter is not self._local:
                self.limiter = self._local
                logger.warning(
                    "failed-attempt counters unreachable (%s): counting in this process"
                    " until they answer again",
                    type(getattr(exc, "storage_error", exc)).__name__,
                )
        return self._local

    def block(self, client: str, key: str, until: float) -> None:
        """Remember that the pair is throttled until ``until`` (POSIX time).

        The revocation listener calls this for pairs throttled elsewhere.
        """
        with self._lock:
            blocked = self.blocked
            if len(blocked) >= _MAX_BLOCKED:
                now = time.time()
                for pair in [p for p, end in blocked.items() if end <= now]:
                    del blocked[pair]
                if len(blocked) >= _MAX_BLOCKED:
                    del blocked[next(iter(blocked))]
            blocked[client, key] = until


class KdfBudget:
    """A token bucket of seconds of key-derivation work, for one process.

    :param rate: seconds of work allowed per second (``0.1``: a tenth of a core).
    :param burst: the most seconds of work that may be spent at once after
        a quiet time (default: one second's worth of a full core).
    :param clock: a monotonic clock, for tests.

    .. versionadded:: 0.1
    """

    def __init__(
        self, rate: float, burst: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(burst, rate)
        self.clock = clock
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = threading.Lock()

    def available(self) -> bool:
        """Whether one more verification may start now (never waits)."""
        with self._lock:
            self._refill()
            return self._tokens > 0

    def spend(self, seconds: float) -> None:
        """Charge ``seconds`` of work done (may go below zero: the debt is paid
        back before the next verification may start)."""
        with self._lock:
            self._refill()
            self._tokens -= seconds

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def seconds_until_available(self) -> int:
        """Whole seconds (at least 1) until :meth:`available` turns true."""
        with self._lock:
            self._refill()
            missing = -self._tokens
        return _seconds(missing / self.rate) if missing > 0 else 1


def _seconds(delay: float) -> int:
    return max(1, math.ceil(delay))

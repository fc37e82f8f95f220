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

__all__ = ["FailureThrottle", "KdfBudget", "local_counters", "make_storage"]

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
        counters of this process only (:func:`local_counters`). A Redis storage
        gets the gate's short timeouts, no retries, and raises
        :exc:`limits.errors.StorageError` when Redis fails (see
        :class:`FailureThrottle` for what happens then).
    """
    if redis_url is None:
        return local_counters()
    from limits.storage import RedisStorage
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
        retry=Retry(NoBackoff(), 0),  # type: ignore[arg-type,unused-ignore]
    )


def local_counters() -> Storage:
    """A :mod:`limits` storage of fixed-window counters in this process.

    limits' own ``memory://`` storage starts a timer thread every 10 ms
    while counters are pending expiry; under a flood of failures that thread
    start cost more than the rest of a refusal (bench/flood.py measured an
    unknown key's refusal at 260 µs in-process with it, 117 µs without).
    This one expires counters when they are read and sweeps the expired
    ones inline at most once a second.
    """
    return _local_counters_class()()


_LOCAL_COUNTERS: Optional[type[Storage]] = None


def _local_counters_class() -> type[Storage]:
    # Made on first use: nothing of limits is imported at import time.
    global _LOCAL_COUNTERS
    if _LOCAL_COUNTERS is not None:
        return _LOCAL_COUNTERS
    from limits.storage import Storage

    class LocalCounters(Storage):
        STORAGE_SCHEME = None

        def __init__(self, uri: Optional[str] = None, **options: object) -> None:
            super().__init__(uri, wrap_exceptions=False)
            # key -> [count, POSIX time the window ends]
            self._counters: dict[str, list[float]] = {}
            self._lock = threading.Lock()
            self._next_sweep = 0.0

        @property
        def base_exceptions(self) -> type[Exception]:
            return RuntimeError  # nothing here fails like a server

        def incr(  # type: ignore[override,unused-ignore]  # limits 4 has elastic_expiry
            self, key: str, expiry: int, amount: int = 1, **legacy: bool
        ) -> int:
            # limits 4 passes elastic_expiry too (a sliding expiry, unused here).
            elastic_expiry = legacy.get("elastic_expiry", False)
            now = time.time()
            with self._lock:
                if now >= self._next_sweep:
                    self._sweep(now)
                counter = self._counters.get(key)
                if counter is None or counter[1] <= now:
                    counter = self._counters[key] = [0, now + expiry]
                elif elastic_expiry:
                    counter[1] = now + expiry
                counter[0] += amount
                return int(counter[0])

        def get(self, key: str) -> int:
            counter = self._counters.get(key)
            if counter is None or counter[1] <= time.time():
                return 0
            return int(counter[0])

        def get_expiry(self, key: str) -> float:
            counter = self._counters.get(key)
            return counter[1] if counter is not None else time.time()

        def check(self) -> bool:
            return True

        def reset(self) -> int:
            with self._lock:
                count = len(self._counters)
                self._counters.clear()
            return count

        def clear(self, key: str) -> None:
            with self._lock:
                self._counters.pop(key, None)

        def _sweep(self, now: float) -> None:
            # Under the lock.
            for key in [k for k, (_, end) in self._counters.items() if end <= now]:
                del self._counters[key]
            self._next_sweep = now + 1.0

    _LOCAL_COUNTERS = LocalCounters
    return LocalCounters


class FailureThrottle:
    """Counts failed verifications per (client address, key).

    :param limit: the limit in :mod:`limits` notation (``"10/minute"``,
        ``"5/minute;50/hour"``).
    :param storage: where the counters live (see :func:`make_storage`).

    .. versionadded:: 0.1
    """

    def __init__(self, limit: str, storage: Storage) -> None:
        from limits import parse_many
        from limits.errors import StorageError
        from limits.strategies import FixedWindowRateLimiter

        self._storage_error = StorageError
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
        limiter = self.limiter
        shared = self._shared
        if limiter is not shared and time.monotonic() >= self._retry_shared_at:
            limiter = shared
        try:
            result = getattr(limiter, method)(item, _NAMESPACE, client, key)
        except self._storage_error as exc:
            if limiter is not shared:
                raise
            return getattr(self._fall_back(exc), method)(item, _NAMESPACE, client, key)
        if limiter is not self.limiter:
            self.limiter = limiter
            logger.warning("failed-attempt counters shared through Redis again")
        return result

    def _fall_back(self, exc: BaseException) -> FixedWindowRateLimiter:
        from limits.strategies import FixedWindowRateLimiter

        with self._lock:
            self._retry_shared_at = time.monotonic() + SHARED_RETRY
            if self._local is None:
                self._local = FixedWindowRateLimiter(local_counters())
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

    :param rate: seconds of work allowed per second (``0.02``: a fiftieth of a core).
    :param burst: the most seconds of work that may be spent at once after
        a quiet time (default: a tenth of a second, about one scrypt
        verification at werkzeug's default cost).
    :param clock: a monotonic clock, for tests.

    .. versionadded:: 0.1
    """

    def __init__(
        self, rate: float, burst: float = 0.1, clock: Callable[[], float] = time.monotonic
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

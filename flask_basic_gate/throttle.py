"""Failed-attempt throttling and the bound on key-derivation work.

:class:`FailureThrottle` counts failed verifications per (client address,
key) in fixed windows on a :mod:`limits` storage: in memory by default, on
Redis when ``BASIC_GATE_REDIS_URL`` is set, so every worker then shares one
count with no change here. A pair over its limit is refused before any
lookup or verification, and before the cache is consulted for it.

The warm path pays for this only with one truth test of a dict: the pairs
this process knows to be throttled are kept in :attr:`FailureThrottle.blocked`,
which is empty unless somebody is being refused.

:class:`KdfBudget` bounds how much CPU one process spends on scrypt or
PBKDF2 for person-chosen secrets: a token bucket of seconds of work. Past
it the gate answers at once and never queues.
"""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    from limits.storage import Storage

__all__ = ["FailureThrottle", "KdfBudget", "make_storage"]

#: Most pairs remembered as throttled before expired ones are swept.
_MAX_BLOCKED = 10_000
#: Namespace of the throttle's counters in the storage.
_NAMESPACE = "basic-gate-failures"


def make_storage(redis_url: Optional[str]) -> Storage:
    """The :mod:`limits` storage for the gate's counters.

    :param redis_url: ``BASIC_GATE_REDIS_URL``; ``None`` for in-memory
        counters of this process only.
    """
    from limits.storage import Storage, storage_from_string

    storage = storage_from_string(redis_url or "memory://")
    assert isinstance(storage, Storage)  # never the asyncio kind for these URLs
    return storage


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
        self.limiter = FixedWindowRateLimiter(storage)
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
            if not self.limiter.test(item, _NAMESPACE, client, key):
                reset = self.limiter.get_window_stats(item, _NAMESPACE, client, key).reset_time
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
            self.limiter.hit(item, _NAMESPACE, client, key)
        # A pair that has just used up its allowance is throttled from now
        # on, cached successes included: otherwise the cache would answer
        # the next guesses, right ones with a 200 and wrong ones with a 429.
        self.retry_after(client, key, now)

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
        a quiet time (default: a quarter of a second, about three scrypt
        verifications at werkzeug's default cost).
    :param clock: a monotonic clock, for tests.

    .. versionadded:: 0.1
    """

    def __init__(
        self, rate: float, burst: float = 0.25, clock: Callable[[], float] = time.monotonic
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

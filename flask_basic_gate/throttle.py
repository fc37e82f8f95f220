"""Failed-attempt counters per (client address, key).

:class:`FailureThrottle` counts failed verifications per pair in fixed
windows on a :mod:`limits` storage (see :mod:`~flask_basic_gate.backends`):
in memory by default, on Redis when ``BASIC_GATE_REDIS_URL`` is set, so every
worker then shares one count with no change here. It answers with data (how
long a pair must wait); the policy decides what the request gets.

The warm path pays for this with one truth test: the pairs this process
knows to be throttled are kept in :attr:`FailureThrottle.blocked`, which is
empty unless somebody is being refused.

When Redis cannot be reached the throttle counts in this process's memory
instead (and logs it once), trying Redis again every :data:`SHARED_RETRY`
seconds: a failed-attempt limit then holds per process rather than across
them, but a Redis outage neither opens the gate nor refuses requests that
would otherwise be served.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from .backends import local_counters
from .bounded import BoundedMap
from .telemetry import Telemetry

if TYPE_CHECKING:
    from limits import RateLimitItem
    from limits.storage import Storage
    from limits.strategies import FixedWindowRateLimiter

__all__ = ["SHARED_RETRY", "FailureThrottle", "pair_id"]

#: Most pairs remembered as throttled; the expired go first, then the oldest.
MAX_BLOCKED = 10_000
#: Namespace of the throttle's counters in the storage.
_NAMESPACE = "basic-gate-failures"
#: Seconds between attempts to count on Redis again after it failed.
SHARED_RETRY = 1.0

logger = logging.getLogger("flask_basic_gate")


def pair_id(client: str, key: str) -> str:
    """The fixed-size name of a (client address, key) pair in the counters
    and the memo: whatever a client sends, a pair costs the same memory
    (and on Redis, the same key length). The same in every process.
    """
    text = f"{client}\x00{key}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(text, digest_size=16).hexdigest()


class FailureThrottle:
    """Counts failed verifications per (client address, key).

    :param limit: the limit in :mod:`limits` notation (``"10/minute"``,
        ``"5/minute;50/hour"``).
    :param storage: where the counters live (see
        :func:`~flask_basic_gate.backends.make_storage`).

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
        self._lock = threading.Lock()
        #: Pairs (by :func:`pair_id`) this process knows to be over the
        #: limit, with the POSIX time their window resets.
        self.blocked: BoundedMap[str, float] = BoundedMap(MAX_BLOCKED, expires=float)
        #: Called with (client, key, until) when a pair goes over the limit
        #: here (the revocation channel tells other processes).
        self.on_blocked: list[Callable[[str, str, float], object]] = []
        #: Hears each failure of the shared counters (set by ``init_app``).
        self.telemetry: Telemetry = Telemetry()

    def retry_after(self, client: str, key: str, now: float) -> Optional[int]:
        """Whole seconds (at least 1) until the pair may try again, or
        ``None`` when it may try now.

        Reads the shared counters; a pair found over the limit is remembered
        locally until its window resets.
        """
        pair = pair_id(client, key)
        wait = self._known_wait(pair, now)
        if wait is not None:
            return wait
        for item in self.items:
            if not self._count(_test, item, pair):
                return self._over(item, pair, client, key, now)
        return None

    def known_wait(self, client: str, key: str, now: float) -> Optional[int]:
        """:meth:`retry_after` from what this process already knows, without
        reading the counters: ``None`` unless the pair is known throttled."""
        if not self.blocked:
            return None
        return self._known_wait(pair_id(client, key), now)

    def failed(self, client: str, key: str, now: float) -> None:
        """Count one failed verification of ``key`` from ``client``.

        Each limit's counter is incremented once; the count it returns tells
        whether the pair has just used up its allowance. Such a pair is
        throttled from now on, cached successes included: otherwise the
        cache would answer the next guesses, right ones with a 200 and wrong
        ones with a 429.
        """
        pair = pair_id(client, key)
        over = None
        for item in self.items:
            if self._count(_incr, item, pair) >= item.amount and over is None:
                over = item
        if over is not None:
            self._over(over, pair, client, key, now)

    def block(self, client: str, key: str, until: float) -> None:
        """Remember that the pair is throttled until ``until`` (POSIX time).

        The revocation listener calls this for pairs throttled elsewhere.
        """
        self.blocked.put(pair_id(client, key), until)

    def _known_wait(self, pair: str, now: float) -> Optional[int]:
        if not self.blocked:
            return None
        until = self.blocked.get(pair)
        if until is None:
            return None
        if now < until:
            return _seconds(until - now)
        self.blocked.discard_if(pair, until)
        return None

    def _over(self, item: RateLimitItem, pair: str, client: str, key: str, now: float) -> int:
        """Remember the pair as over ``item`` until its window resets, tell
        the listeners, and return the wait."""
        until = max(self._count(_reset, item, pair), now + 1)
        self.blocked.put(pair, until)
        for listener in self.on_blocked:
            listener(client, key, until)
        return _seconds(until - now)

    def _count(self, operation: _Operation, item: RateLimitItem, pair: str) -> Any:
        """Run ``operation`` on the pair's counter for ``item``: on the
        shared limiter, or on the local one while the shared storage fails."""
        limiter = self.limiter
        shared = self._shared
        if limiter is not shared and time.monotonic() >= self._retry_shared_at:
            limiter = shared
        try:
            result = operation(limiter, item, pair)
        except self._storage_error as exc:
            if limiter is not shared:
                raise
            self.telemetry.redis_error("counters")
            return operation(self._fall_back(exc), item, pair)
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


#: One operation on a pair's counter, given the limiter, the item and the pair.
_Operation = Callable[["FixedWindowRateLimiter", "RateLimitItem", str], Any]


def _test(limiter: FixedWindowRateLimiter, item: RateLimitItem, pair: str) -> bool:
    """Whether the pair may fail once more within ``item``."""
    return limiter.test(item, _NAMESPACE, pair)


def _incr(limiter: FixedWindowRateLimiter, item: RateLimitItem, pair: str) -> int:
    """Count one failure; the count of the window, this one included.

    The storage's own ``incr`` (which the limiter's ``hit`` calls and
    reduces to a bool): the count tells at once whether this failure used
    up the allowance, without reading the counter again.
    """
    return int(limiter.storage.incr(item.key_for(_NAMESPACE, pair), item.get_expiry(), amount=1))


def _reset(limiter: FixedWindowRateLimiter, item: RateLimitItem, pair: str) -> float:
    """The POSIX time the pair's window for ``item`` resets."""
    return float(limiter.get_window_stats(item, _NAMESPACE, pair).reset_time)


def _seconds(delay: float) -> int:
    return max(1, math.ceil(delay))

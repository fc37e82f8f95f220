"""The bound on key-derivation work: how much CPU one process may spend on
scrypt or PBKDF2 for secrets that did not match.

:class:`KdfBudget` is a token bucket of seconds of work. It only says
whether work may start and records work done; the policy decides what a
request gets when it may not.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable

__all__ = ["KdfBudget"]


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
        return max(1, math.ceil(missing / self.rate)) if missing > 0 else 1

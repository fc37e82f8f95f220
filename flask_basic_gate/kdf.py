"""The bound on key-derivation work: how much CPU one process may spend on
scrypt or PBKDF2 for secrets it does not already know to be good.

:class:`KdfBudget` holds seconds of CPU time in two token buckets, and
admits a verification or says how long to wait; the policy decides what a
request gets when it must wait. Only work on secrets that did not match is
charged, in CPU time of the thread that ran it (load on the machine does not
make a verification cost more), and a credential the gate has verified
before never needs a KDF again (:class:`~flask_basic_gate.hashing.KnownGood`),
so valid clients never wait on this bound.

Admission (after the OWASP "device cookie" idea: lock out untrusted clients
together, trusted ones one by one): an attempt whose client address, or
whose key, has failed in the last :data:`FAILURE_MEMORY` seconds, or whose
key had an attempt refused for the budget then, may only use the *shared*
bucket; any other attempt may also use the *reserve*, a further
:data:`RESERVE` of the budget that failing attempts can never spend.
So one stale client, one address cycling through keys, or many addresses
guessing at a set of keys, cannot keep the first attempts of other clients
on other keys from being verified. A newcomer on a key under attack, or an
attacker's first guess at a fresh key from a fresh address, is a stranger
like any other.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable, Optional

from .bounded import BoundedMap

__all__ = ["BURST_SECONDS", "FAILURE_MEMORY", "RESERVE", "KdfBudget"]

#: The burst, in seconds of the rate: after a quiet time a process may
#: spend this many seconds' worth of budget at once (a little over ten
#: scrypt verifications at the default rate, so ten hold on a busy machine).
BURST_SECONDS = 12.5
#: The reserve for attempts whose address and key have not failed lately,
#: as a share of the budget, on top of it.
RESERVE = 0.25
#: Seconds an address or a key counts as failing after its last failed attempt.
FAILURE_MEMORY = 60.0
#: Most addresses and keys remembered as failing; the expired go first, then
#: the oldest.
MAX_FAILING = 25_000


class _Bucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait(self) -> float:
        return -self.tokens / self.rate if self.tokens <= 0 else 0.0


class KdfBudget:
    """Seconds of key-derivation CPU time one process may spend, per second.

    :param rate: seconds of work allowed per second (``0.08``: about one
        scrypt verification a second at werkzeug's default cost).
    :param burst: the most seconds of work that may be spent at once after
        a quiet time (default: :data:`BURST_SECONDS` times ``rate``, about
        ten scrypt verifications).
    :param reserve: a further share of ``rate`` and ``burst`` that only
        attempts whose address and key have not failed lately may use.
    :param clock: a monotonic clock, for tests.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        rate: float,
        burst: Optional[float] = None,
        *,
        reserve: float = RESERVE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = max(rate * BURST_SECONDS if burst is None else burst, rate)
        self.clock = clock
        now = clock()
        self._shared = _Bucket(rate, self.burst, now)
        self._reserve = _Bucket(rate * reserve, self.burst * reserve, now)
        self._lock = threading.Lock()
        # Client addresses and keys with a recent failed attempt, with when
        # that ends.
        self.failing: BoundedMap[tuple[str, str], float] = BoundedMap(
            MAX_FAILING, expires=float, clock=clock
        )

    def trusted(self, client: str, key: str = "") -> bool:
        """Whether neither ``client`` nor ``key`` failed in the last
        :data:`FAILURE_MEMORY` seconds."""
        if not self.failing:
            return True
        now = self.clock()
        for name in (("a", client), ("k", key)):
            until = self.failing.get(name)
            if until is not None and until > now:
                return False
        return True

    def failed(self, client: str, key: str = "") -> None:
        """Remember that ``client`` just failed an attempt at ``key``."""
        until = self.clock() + FAILURE_MEMORY
        self.failing.put(("a", client), until)
        if key:
            self.failing.put(("k", key), until)

    def refused(self, key: str) -> None:
        """Remember that an attempt at ``key`` was just refused for the
        budget: a key that draws more attempts than the budget verifies is
        under attack, and its attempts stay out of the reserve for a while."""
        self.failing.put(("k", key), self.clock() + FAILURE_MEMORY)

    def wait(self, client: str, key: str = "") -> Optional[int]:
        """``None`` when a verification for ``client`` at ``key`` may start
        now; else the whole seconds (at least 1) until one may. Never waits
        itself."""
        trusted = self.trusted(client, key)
        with self._lock:
            now = self.clock()
            self._shared.refill(now)
            if self._shared.tokens > 0:
                return None
            delay = self._shared.wait()
            if trusted and self._reserve.rate > 0:
                self._reserve.refill(now)
                if self._reserve.tokens > 0:
                    return None
                delay = min(delay, self._reserve.wait())
        return max(1, math.ceil(delay))

    def available(self, client: str = "", key: str = "") -> bool:
        """Whether a verification for ``client`` at ``key`` may start now."""
        return self.wait(client, key) is None

    def spend(self, seconds: float) -> None:
        """Charge ``seconds`` of CPU time spent on a secret that did not match:
        to the shared bucket while it has any, else to the reserve. Either
        may go below zero: the debt is paid back before it admits again."""
        with self._lock:
            now = self.clock()
            self._shared.refill(now)
            bucket = self._shared if self._shared.tokens > 0 else self._reserve
            bucket.refill(now)
            bucket.tokens -= seconds

    @property
    def tokens(self) -> float:
        """Seconds of work that may be spent now, both buckets together (up
        to ``burst`` and the reserve's share of it)."""
        with self._lock:
            now = self.clock()
            self._shared.refill(now)
            self._reserve.refill(now)
            return self._shared.tokens + self._reserve.tokens

    def seconds_until_available(self, client: str = "", key: str = "") -> int:
        """Whole seconds (at least 1) until a verification for ``client`` at
        ``key`` may start."""
        return self.wait(client, key) or 1

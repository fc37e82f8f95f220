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
together, trusted ones one by one), in three standings, each with buckets of
its own:

- *fresh*: neither the client address nor the key failed in the last
  :data:`FAILURE_MEMORY` seconds. It may use the *shared* bucket and the
  *reserve*, a further :data:`RESERVE` of the budget that failing attempts
  can never spend.
- *failing*: the address or the key failed lately, but with at most one
  other partner each (a key from two addresses, an address on two keys):
  one person retrying a typo, from a phone and a laptop; one stale client. It may use the
  shared bucket (the whole budget: about one scrypt verification a second
  after a burst of ten, at the default).
- *crowded*: the address failed lately on a third key, or the key from a
  third address (or drew refusals for the budget from a third address): an
  address cycling through keys, or many addresses guessing at a key.
  It may only use the *crowded* bucket, :data:`CROWDED` of the budget's
  rate with a burst of :data:`CROWDED_BURST_SECONDS` of that rate, and
  never the other two.

So a flood spends at most the crowded share of the budget, however many
keys and addresses it uses; one stale client cannot keep the first
attempts of other clients on other keys from being verified; and a person
retrying a typo is not refused for a flood elsewhere. A newcomer on a key
under attack, or an attacker's first guess at a fresh key from a fresh
address, is a stranger like any other.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable, Optional

from .bounded import BoundedMap

__all__ = [
    "BURST_SECONDS",
    "CROWDED",
    "CROWDED_BURST_SECONDS",
    "FAILURE_MEMORY",
    "RESERVE",
    "KdfBudget",
]

#: The burst, in seconds of the rate: after a quiet time a process may
#: spend this many seconds' worth of budget at once, enough for a person's
#: run of ten typos even where a scrypt verification costs half again its
#: usual CPU time (bench/README.md has the figures).
BURST_SECONDS = 16.0
#: The reserve for attempts whose address and key have not failed lately,
#: as a share of the budget, on top of it.
RESERVE = 0.25
#: The bucket of crowded attempts (an address failing on several keys, a key
#: failing from several addresses), as a share of the budget, apart from it.
CROWDED = 0.35
#: The crowded bucket's burst, in seconds of its rate (under one scrypt
#: verification at the default: a bucket with anything in it admits one).
CROWDED_BURST_SECONDS = 2.0
#: Seconds an address or a key counts as failing after its last failed attempt.
FAILURE_MEMORY = 60.0
#: Most addresses and keys remembered as failing; the expired go first, then
#: the oldest.
MAX_FAILING = 25_000


#: The standings of :meth:`KdfBudget.standing`.
FRESH = "fresh"
FAILING = "failing"
CROWDED_STANDING = "crowded"


def _first(value: tuple[float, int, int]) -> float:
    return value[0]


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
    :param crowded: the share of ``rate`` and ``burst`` that crowded
        attempts (see the module) may use, and the only one.
    :param clock: a monotonic clock, for tests.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        rate: float,
        burst: Optional[float] = None,
        *,
        reserve: float = RESERVE,
        crowded: float = CROWDED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = max(rate * BURST_SECONDS if burst is None else burst, rate)
        self.clock = clock
        now = clock()
        self._shared = _Bucket(rate, self.burst, now)
        self._reserve = _Bucket(rate * reserve, self.burst * reserve, now)
        # No burst to speak of: crowded attempts come from a flood, and a
        # burst would only let each new flood spend it at once.
        self._crowded = _Bucket(rate * crowded, rate * crowded * CROWDED_BURST_SECONDS, now)
        self._lock = threading.Lock()
        # Client addresses and keys with a recent failed attempt: when that
        # ends, and the hashes of the other side of the last two (keys for an
        # address, addresses for a key).
        self.failing: BoundedMap[tuple[str, str], tuple[float, int, int]] = BoundedMap(
            MAX_FAILING, expires=_first, clock=clock
        )
        # Addresses and keys whose failures crowd (see the module), until when.
        self.crowded: BoundedMap[tuple[str, str], float] = BoundedMap(
            MAX_FAILING, expires=float, clock=clock
        )

    def trusted(self, client: str, key: str = "") -> bool:
        """Whether neither ``client`` nor ``key`` failed in the last
        :data:`FAILURE_MEMORY` seconds (the *fresh* standing)."""
        return self.standing(client, key) == FRESH

    def standing(self, client: str, key: str = "") -> str:
        """The attempt's standing: ``"fresh"``, ``"failing"`` or
        ``"crowded"`` (see the module)."""
        if not self.failing:
            return FRESH
        now = self.clock()
        names = (("a", client), ("k", key))
        if self.crowded:
            for name in names:
                until = self.crowded.get(name)
                if until is not None and until > now:
                    return CROWDED_STANDING
        for name in names:
            last = self.failing.get(name)
            if last is not None and last[0] > now:
                return FAILING
        return FRESH

    def failed(self, client: str, key: str = "") -> None:
        """Remember that ``client`` just failed an attempt at ``key``."""
        now = self.clock()
        until = now + FAILURE_MEMORY
        self._failed(("a", client), hash(key), now, until)
        if key:
            self._failed(("k", key), hash(client), now, until)

    def _failed(self, name: tuple[str, str], other: int, now: float, until: float) -> None:
        last = self.failing.get(name)
        if last is None or last[0] <= now:
            self.failing.put(name, (until, other, other))
            return
        _, newest, older = last
        if other not in (newest, older) and newest != older:
            self.crowded.put(name, until)  # a third partner
        self.failing.put(name, (until, other, newest if other != newest else older))

    def refused(self, key: str, client: str = "") -> None:
        """Remember that an attempt at ``key`` from ``client`` was just
        refused for the budget: a key that draws more attempts than the
        budget verifies is under attack, so its attempts stay out of the
        reserve for a while, and once refused from a third address it is
        crowded. The address is not held against: it failed nothing."""
        now = self.clock()
        self._failed(("k", key), hash(client), now, now + FAILURE_MEMORY)

    def wait(self, client: str, key: str = "") -> Optional[int]:
        """``None`` when a verification for ``client`` at ``key`` may start
        now; else the whole seconds (at least 1) until one may. Never waits
        itself."""
        standing = self.standing(client, key)
        with self._lock:
            now = self.clock()
            if standing == CROWDED_STANDING:
                crowded = self._crowded
                if crowded.rate <= 0:  # no share for crowded attempts at all
                    return math.ceil(FAILURE_MEMORY)
                crowded.refill(now)
                if crowded.tokens > 0:
                    return None
                return max(1, math.ceil(crowded.wait()))
            trusted = standing == FRESH
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

    def spend(self, seconds: float, client: str = "", key: str = "") -> None:
        """Charge ``seconds`` of CPU time spent on a secret that did not match
        (call it before :meth:`failed`): a crowded attempt to the crowded
        bucket, any other to the shared bucket while it has any, else to the
        reserve. Each may go below zero: the debt is paid back before it
        admits again."""
        crowded = self.standing(client, key) == CROWDED_STANDING
        with self._lock:
            now = self.clock()
            self._shared.refill(now)
            if crowded:
                bucket = self._crowded
            else:
                bucket = self._shared if self._shared.tokens > 0 else self._reserve
            bucket.refill(now)
            bucket.tokens -= seconds

    @property
    def tokens(self) -> float:
        """Seconds of work that may be spent now, the three buckets together."""
        with self._lock:
            now = self.clock()
            buckets = (self._shared, self._reserve, self._crowded)
            for bucket in buckets:
                bucket.refill(now)
            return sum(bucket.tokens for bucket in buckets)

    def seconds_until_available(self, client: str = "", key: str = "") -> int:
        """Whole seconds (at least 1) until a verification for ``client`` at
        ``key`` may start."""
        return self.wait(client, key) or 1

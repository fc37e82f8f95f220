"""The policy: the one place where the gate decides a request's outcome.

The guard and the decorator only say *what a route requires* (a
:class:`~flask_basic_gate.routing.Requirement`); they hand it, the
``Authorization`` value and the client's address to :meth:`GatePolicy.decide`,
which returns the caller's :class:`~flask_basic_gate.identity.KeyIdentity`
or raises the :class:`~flask_basic_gate.errors.GateError` the gateway would
answer. The steps run in one fixed order:

1. **throttle**: a (client address, key) pair over its failure limit is
   refused before anything else, cached successes included;
2. **cache**: a fresh success for exactly these credentials skips step 3
   (never steps 5 and 6);
3. **lookup and verify**: one indexed read bounded by the store timeout;
   a KDF only for person-chosen secrets, within the process's KDF budget;
4. **active**: status, not-before, expiry;
5. **package**: may the key's package use this route?
6. **plan**: calls per second and quota, counted only for requests that got
   this far.

The decision table (RFC mode)::

    no Authorization header           401 authorization-required
    scheme other than Basic           401 basic-authorization-required
    Basic without a valid token       401 invalid-authorization
    no colon, unknown key, wrong,
    empty or expired secret, or a
    control character in either       403 invalid-credentials
    secret matches, key inactive      403 key-inactive
    key's package not on the route    403 package-not-authorized
    too many failures, KDF budget     429 too-many-failures
    over the plan's QPS / quota       429 rate-limit-exceeded / quota-exceeded
    the store cannot be read          503 gate-unavailable

In Mashery mode every 401 and 429 becomes a 403 without a challenge, and
every 403 carries the platform's ``X-Mashery-Error-Code`` and
``X-Error-Detail-Header``.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from .cache import VerificationCache
from .config import Settings
from .errors import (
    AUTHORIZATION_REQUIRED,
    BASIC_REQUIRED,
    GATE_UNAVAILABLE,
    INVALID_AUTHORIZATION,
    INVALID_CREDENTIALS,
    KEY_INACTIVE,
    PACKAGE_NOT_AUTHORIZED,
    QUOTA_EXCEEDED,
    RATE_LIMIT_EXCEEDED,
    TOO_MANY_FAILURES,
    GateError,
    StoreUnavailable,
    failure,
)
from .hashing import KDF, verify_secret
from .header import (
    BasicCredentials,
    HeaderProblem,
    has_control_character,
    is_canonical,
    parse_basic,
)
from .identity import KeyIdentity
from .models import ACTIVE
from .plans import OVER_QPS, PlanCounter, current_usage
from .records import KeyRecord
from .revocation import TRUST_WINDOW, Revocation
from .routing import REQUIRED, Requirement
from .store import KeyLookup, KeyStore
from .throttle import FailureThrottle, KdfBudget, make_storage

__all__ = ["GatePolicy"]

#: Most keys remembered as needing a KDF for every secret.
_MAX_KDF_KEYS = 10_000

_PROBLEMS = {
    HeaderProblem.MISSING: AUTHORIZATION_REQUIRED,
    HeaderProblem.NOT_BASIC: BASIC_REQUIRED,
    HeaderProblem.MALFORMED: INVALID_AUTHORIZATION,
    HeaderProblem.NO_SECRET: INVALID_CREDENTIALS,
}


class GatePolicy:
    """Decides whether a request's credentials let it through.

    One instance per app, made by :meth:`BasicGate.init_app
    <flask_basic_gate.BasicGate.init_app>`. Subclass it and pass the class as
    ``BasicGate(policy_class=...)`` to change a decision without forking.

    :param store: the app's key store; the policy reads through its
        :attr:`~flask_basic_gate.KeyStore.reader`.
    :param settings: the gate's frozen settings.
    :param cache: remembers successful verifications.
    :param counters: the :mod:`limits` storage for the throttle (and plans);
        made from ``BASIC_GATE_REDIS_URL`` when not given.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        store: KeyStore,
        settings: Settings,
        cache: VerificationCache,
        counters: Any = None,
    ) -> None:
        self.store = store
        self.reader: KeyLookup = store.reader
        self.settings = settings
        self.cache = cache
        #: Current POSIX time; tests replace it to move through expiries.
        self.clock: Callable[[], float] = time.time
        if counters is None and settings.failure_limit is not None:
            counters = make_storage(settings.redis_url)
        #: Failed-attempt counters, or ``None`` when ``BASIC_GATE_FAILURE_LIMIT`` is off.
        self.throttle: Optional[FailureThrottle] = (
            FailureThrottle(settings.failure_limit, counters)
            if settings.failure_limit is not None
            else None
        )
        #: The bound on KDF work, or ``None`` when ``BASIC_GATE_KDF_BUDGET`` is off.
        self.kdf_budget: Optional[KdfBudget] = (
            KdfBudget(settings.kdf_budget) if settings.kdf_budget is not None else None
        )
        #: Calls per second and quotas of the keys' plans, counted on the
        #: same storage as the throttle (made at the first counted call when
        #: neither is given). Its ``clock`` is used only when it is not told
        #: the time; the policy always tells it.
        self.plans = PlanCounter(counters, redis_url=settings.redis_url)
        self._headers = settings.rate_limit_headers
        self._ttl = settings.cache_ttl
        #: Tells other processes about changes and hears theirs; set by
        #: ``init_app`` (this process only, by default).
        self.revocation: Revocation = Revocation()
        # Keys whose live secrets all need a KDF, as last read (an ordered set).
        self._kdf_keys: dict[str, None] = {}
        store.on_change.append(cache.evict_key)
        store.on_change.append(self._forget_kdf_key)

    def authenticate(
        self, header: Optional[str], *, optional: bool = False, client: Optional[str] = None
    ) -> Optional[KeyIdentity]:
        """Check an ``Authorization`` header value for a route any key may use.

        :param header: the raw value, or ``None`` when the request has none.
        :param optional: let a request without the header through (returning
            ``None``); a header that is present must still be valid.
        :param client: the client's address, for the failure throttle.
        :return: the caller's identity (``None`` only when ``optional``).
        :raises GateError: the answer the request gets instead.
        """
        requirement = Requirement(optional=True) if optional else REQUIRED
        return self.decide(requirement, header, client)

    def decide(
        self, requirement: Requirement, header: Optional[str], client: Optional[str]
    ) -> Optional[KeyIdentity]:
        """Decide a request to a route with ``requirement``.

        :param requirement: what the route asks for.
        :param header: the raw ``Authorization`` value, or ``None``.
        :param client: the client's address (``request.remote_addr``).
        :return: the caller's identity (``None`` only when the requirement is
            optional and no header was sent).
        :raises GateError: the answer the request gets instead.

        .. versionadded:: 0.1
        """
        now = self.clock()
        client = client or ""
        throttle = self.throttle
        digest = None
        if self._ttl and header is not None:
            if now >= self.revocation.trusted_until:
                # Changes made elsewhere may not have reached this process.
                self.revocation.untrusted(now)
            digest, identity = self.cache.lookup(header, now)
            if identity is not None:
                # 1. A throttled pair is not served from the cache either: it
                # would answer right guesses at once and wrong ones with 429.
                if (
                    throttle is not None
                    and throttle.blocked
                    and throttle.is_blocked(client, identity.key, now)
                ):
                    raise self._throttled(client, identity.key, now)
                return self.admit(requirement, identity, now)
        parsed = parse_basic(header)
        if not isinstance(parsed, BasicCredentials):
            if requirement.optional and parsed is HeaderProblem.MISSING:
                return None
            raise self.failure(_PROBLEMS[parsed])
        key, secret = parsed
        if throttle is not None:
            wait = throttle.retry_after(client, key, now)
            if wait is not None:
                raise self.failure(TOO_MANY_FAILURES, key, retry_after=wait)
        generation = self.cache.generation(key)
        record = None
        if secret and not has_control_character(key) and not has_control_character(secret):
            budget = self.kdf_budget
            if budget is not None and key in self._kdf_keys and not budget.available():
                # Every secret of this key needs a KDF and there is no budget
                # for one: the answer is known without reading the store.
                if throttle is not None:
                    throttle.failed(client, key, now)
                raise self.failure(
                    TOO_MANY_FAILURES, key, retry_after=budget.seconds_until_available()
                )
            try:
                record = self.reader.lookup(key)
            except StoreUnavailable as exc:
                raise self.failure(GATE_UNAVAILABLE, key, retry_after=exc.retry_after) from None
            if budget is not None:
                self._remember_kdf_key(key, record, now)
        try:
            expires = self.verify(record, secret, now) if record is not None else None
        except GateError:
            # The KDF budget is spent. The attempt counts against the pair,
            # so one address cannot keep the store busy with refused guesses.
            if throttle is not None:
                throttle.failed(client, key, now)
            raise
        if record is None or expires is None:
            if throttle is not None:
                throttle.failed(client, key, now)
            raise self.failure(INVALID_CREDENTIALS, key)
        if not self.is_active(record, now):
            raise self.failure(KEY_INACTIVE, key, record.package)
        identity = KeyIdentity(
            record.key,
            record.package,
            record.owner_name,
            record.owner_email,
            record.id,
            record.plan,
        )
        if digest is not None and is_canonical(header or ""):
            # Never past the secret's or the key's own expiry.
            until = min(now + self._ttl, expires, record.expires or expires)
            if self.clock() >= self.revocation.trusted_until:
                until = min(until, now + TRUST_WINDOW)
            self.cache.put(digest, identity, until, generation)
        return self.admit(requirement, identity, now)

    def admit(self, requirement: Requirement, identity: KeyIdentity, now: float) -> KeyIdentity:
        """Steps 5 and 6 for a verified, active key: the route's packages and
        the plan. Runs for cached successes too.

        :raises GateError: ``package-not-authorized``, ``rate-limit-exceeded``
            or ``quota-exceeded``.
        """
        packages = requirement.packages
        if packages is not None and identity.package not in packages:
            raise self.failure(PACKAGE_NOT_AUTHORIZED, identity.key, identity.package)
        plan = identity.plan
        if plan is None:
            if self._headers:
                current_usage.set(None)
            return identity
        headers = self._headers
        # 6. Counted last, so a refused login or route never uses up quota.
        try:
            usage = self.plans.count(identity.key, plan, now)
        except StoreUnavailable as exc:
            raise self.failure(
                GATE_UNAVAILABLE, identity.key, identity.package, retry_after=exc.retry_after
            ) from None
        if usage.over is not None:
            error = self.failure(
                RATE_LIMIT_EXCEEDED if usage.over == OVER_QPS else QUOTA_EXCEEDED,
                identity.key,
                identity.package,
                retry_after=usage.retry_after(now),
            )
            if headers:
                # The gateway sends its rate-limit fields on throttled 403s too.
                error.extra_headers += usage.headers(now, mashery=self.settings.mashery_mode)
            raise error
        if headers:
            current_usage.set((usage, now))
        return identity

    def verify(self, record: KeyRecord, secret: str, now: float) -> Optional[float]:
        """Match ``secret`` against the key's unexpired secrets.

        A KDF runs only while the process's KDF budget allows it.

        :return: when the matching secret expires (``inf`` for never), or
            ``None`` when none matches.
        :raises GateError: ``too-many-failures`` when the KDF budget is spent.
        """
        if not secret:
            return None
        budget = self.kdf_budget
        live = [s for s in record.secrets if s.expires is None or s.expires > now]
        # The cheap secrets first: a generated secret never waits on the budget.
        live.sort(key=lambda stored: stored.method == KDF)
        for stored in live:
            if budget is not None and stored.method == KDF:
                if not budget.available():
                    raise self.failure(
                        TOO_MANY_FAILURES, record.key, retry_after=budget.seconds_until_available()
                    )
                started = time.perf_counter()
                matched = verify_secret(stored.method, stored.value, secret)
                if not matched:
                    # Only wasted work is charged: a match is what the KDF is
                    # for, and its success is cached.
                    budget.spend(time.perf_counter() - started)
            else:
                matched = verify_secret(stored.method, stored.value, secret)
            if matched:
                return float("inf") if stored.expires is None else stored.expires
        return None

    def is_active(self, record: KeyRecord, now: float) -> bool:
        """Whether a key whose secret matched may be used now."""
        if record.status != ACTIVE:
            return False
        if record.not_before is not None and now < record.not_before:
            return False
        return record.expires is None or now < record.expires

    def failure(
        self,
        error_code: str,
        key: Optional[str] = None,
        package: Optional[str] = None,
        *,
        retry_after: Optional[int] = None,
    ) -> GateError:
        """The error for ``error_code`` in the configured response mode.

        :param key: the key the request named, kept on the error for logs.
        :param package: the key's package, when known, for logs.
        :param retry_after: seconds for the ``Retry-After`` header.
        """
        settings = self.settings
        return failure(
            error_code,
            mashery=settings.mashery_mode,
            challenge=settings.challenge,
            retry_after=retry_after,
            key=key,
            package=package,
        )

    def _remember_kdf_key(self, key: str, record: Optional[KeyRecord], now: float) -> None:
        live = (
            []
            if record is None
            else [
                stored
                for stored in record.secrets
                if stored.expires is None or stored.expires > now
            ]
        )
        kdf_only = bool(live) and all(stored.method == KDF for stored in live)
        known = self._kdf_keys
        if not kdf_only:
            known.pop(key, None)
        elif key not in known:
            if len(known) >= _MAX_KDF_KEYS:
                try:
                    known.pop(next(iter(known)), None)
                except (StopIteration, RuntimeError):  # another thread changed it
                    known.clear()
            known[key] = None

    def _forget_kdf_key(self, key: str) -> None:
        self._kdf_keys.pop(key, None)

    def _throttled(self, client: str, key: str, now: float) -> GateError:
        assert self.throttle is not None
        wait = self.throttle.retry_after(client, key, now) or 1
        return self.failure(TOO_MANY_FAILURES, key, retry_after=wait)

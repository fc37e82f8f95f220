"""The policy: the one place where the gate decides a request's outcome.

The guard and the decorator only say *what a route requires* (a
:class:`~flask_basic_gate.routing.Requirement`); they hand it, the
``Authorization`` value and the client's address to :meth:`GatePolicy.decide`,
which returns a :class:`Decision` or raises the
:class:`~flask_basic_gate.errors.GateError` the gateway would answer. Every
component below the policy (store, cache, throttle, KDF budget, plan counter)
returns data; only this module turns data into an outcome. The steps run in
one fixed order, one method each:

1. **parse** (:meth:`GatePolicy.parse`): RFC 7617 into key and secret, the
   same whatever the spelling; a key that cannot exist is refused here;
2. **throttle** (:meth:`GatePolicy.throttled`): a (client address, key)
   pair over its failure limit is refused. *Shortcut:* a request whose
   credentials are in the cache checks only this process's memo of
   throttled pairs, not the shared counters; the memo holds every pair that
   went over here, and on Redis every pair that went over anywhere;
3. **cache**: a fresh success for these credentials skips steps 4 and 5
   (never 6 and 7). *Shortcut:* a header in the canonical spelling
   (``Basic``, one space, the base64 of the credentials' UTF-8 bytes, as
   clients write it) is looked up by its token before step 1, without
   decoding it; a hit names credentials that passed steps 1, 4 and 5
   before, and the throttle memo of step 2 is read for its key. Any other
   spelling, or a miss, goes through the steps in order;
4. **lookup and verify** (:meth:`GatePolicy.verify`): one indexed read
   bounded by the store timeout; a KDF only for person-chosen secrets,
   within the process's KDF budget;
5. **active** (:meth:`GatePolicy.is_active`): status, not-before, expiry;
6. **package** (:meth:`GatePolicy.admit`): may the key's package use this route?
7. **plan** (:meth:`GatePolicy.count`): calls per second and quota, counted
   only for requests that got this far.

The statuses and headers of each errorCode are in one table,
:mod:`flask_basic_gate.errors`; docs/decisions.rst is tested against it.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple, Optional

from .bounded import BoundedMap
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
from .hashing import KDF, KnownGood, verify_secret
from .header import BasicCredentials, HeaderProblem, has_control_character, parse_basic
from .identity import KeyIdentity
from .kdf import KdfBudget
from .plans import OVER_QPS, OVER_QUOTA, PlanCounter, Usage, window
from .records import ACTIVE, KeyRecord, is_live, key_state
from .revocation import TRUST_WINDOW, Revocation
from .routing import Requirement
from .store import MAX_KEY_LENGTH, KeyLookup, KeyStore
from .telemetry import Telemetry
from .throttle import FailureThrottle

__all__ = ["Decision", "GatePolicy", "Verification"]

#: Most keys remembered as needing a KDF for every secret.
MAX_KDF_KEYS = 10_000

_PROBLEMS = {
    HeaderProblem.MISSING: AUTHORIZATION_REQUIRED,
    HeaderProblem.NOT_BASIC: BASIC_REQUIRED,
    HeaderProblem.MALFORMED: INVALID_AUTHORIZATION,
    HeaderProblem.NO_SECRET: INVALID_CREDENTIALS,
}


class Decision(NamedTuple):
    """What the policy let through: the one per-request record behind
    :data:`~flask_basic_gate.current_key`.

    .. versionadded:: 0.1
    """

    #: The key that authenticated, or ``None`` (optional route, no header).
    identity: Optional[KeyIdentity]
    #: What the plan step counted, or ``None`` (no plan, or not counted).
    usage: Optional[Usage]
    #: The POSIX time the request was decided at.
    now: float


class Verification(NamedTuple):
    """What :meth:`GatePolicy.verify` found.

    .. versionadded:: 0.1
    """

    #: When the matching secret expires (``inf`` for never), or ``None``
    #: when no secret matched.
    expires: Optional[float]
    #: Whole seconds until the KDF budget allows a verification that was
    #: needed and not run, or ``None``.
    budget_wait: Optional[int] = None


_NO_MATCH = Verification(None)


class GatePolicy:
    """Decides whether a request's credentials let it through.

    One instance per app, made by :meth:`BasicGate.init_app
    <flask_basic_gate.BasicGate.init_app>` from the components it built;
    the policy builds nothing. Subclass it and pass the class as
    ``BasicGate(policy_class=...)`` to change a decision without forking.

    :param store: the app's key store; the policy reads through its
        :attr:`~flask_basic_gate.KeyStore.reader`.
    :param settings: the gate's frozen settings.
    :param cache: remembers successful verifications.
    :param throttle: the failed-attempt counters, or ``None`` when
        ``BASIC_GATE_FAILURE_LIMIT`` is off.
    :param kdf_budget: the bound on KDF work, or ``None`` when
        ``BASIC_GATE_KDF_BUDGET`` is off.
    :param plans: counts the calls of keys with a plan.
    :param revocation: tells whether cached successes may be trusted.
    :param known_good: credentials verified before, so a KDF runs once per
        credential and stored secret, not once per cache lifetime.
    :param telemetry: hears what the policy does (metrics, usage).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        store: KeyStore,
        settings: Settings,
        cache: VerificationCache,
        *,
        throttle: Optional[FailureThrottle],
        kdf_budget: Optional[KdfBudget],
        plans: PlanCounter,
        revocation: Revocation,
        known_good: KnownGood,
        telemetry: Telemetry,
    ) -> None:
        self.store = store
        self.reader: KeyLookup = store.reader
        self.settings = settings
        self.cache = cache
        #: Current POSIX time; tests replace it to move through expiries.
        self.clock: Callable[[], float] = time.time
        #: Failed-attempt counters, or ``None`` when ``BASIC_GATE_FAILURE_LIMIT`` is off.
        self.throttle = throttle
        #: The bound on KDF work, or ``None`` when ``BASIC_GATE_KDF_BUDGET`` is off.
        self.kdf_budget = kdf_budget
        #: Calls per second and quotas of the keys' plans.
        self.plans = plans
        #: Tells other processes about changes and hears theirs.
        self.revocation = revocation
        #: Credentials that matched a stored KDF hash before.
        self.known_good = known_good
        #: Hears what the policy does.
        self.telemetry = telemetry
        self._ttl = settings.cache_ttl
        # Keys whose live secrets all need a KDF, as last read.
        self._kdf_keys: BoundedMap[str, bool] = BoundedMap(MAX_KDF_KEYS)

    # -- the steps, in order ---------------------------------------------------

    def decide(
        self, requirement: Requirement, header: Optional[str], client: Optional[str]
    ) -> Optional[Decision]:
        """Decide a request to a route with ``requirement``.

        :param requirement: what the route asks for.
        :param header: the raw ``Authorization`` value, or ``None``.
        :param client: the client's address (``request.remote_addr``).
        :return: the decision, or ``None`` when the requirement is optional
            and no header was sent.
        :raises GateError: the answer the request gets instead.

        .. versionadded:: 0.1
        """
        now = self.clock()
        client = client or ""
        ttl = self._ttl
        tried = None
        if ttl:
            if now >= self.revocation.trusted_until:
                # Changes made elsewhere may not have reached this process.
                self.revocation.untrusted(now)
            if header is not None and header.startswith("Basic "):
                # 3 before 1, for the canonical spelling (see the module).
                tried = header[6:]
                hit = self.cache.lookup_token(tried, now)
                if hit is not None:
                    return self.cached(requirement, hit, client, now)
        credentials = self.parse(header, requirement)  # 1
        if credentials is None:
            return None
        key, secret = credentials
        wait = self.throttled(client, key, now, shared=False)  # 2, this process's memo
        if wait is not None:
            raise self.failure(TOO_MANY_FAILURES, key, retry_after=wait)
        if ttl:  # 3
            hit = self.cache.lookup(key, secret, now, tried)
            self.telemetry.cache(hit is not None)
            if hit is not None:
                return self.admit(requirement, hit, now)
        wait = self.throttled(client, key, now, shared=True)  # 2, the shared counters
        if wait is not None:
            raise self.failure(TOO_MANY_FAILURES, key, retry_after=wait)
        generation = self.cache.generation(key)
        record, found = self.lookup(client, key, secret, now)  # 4
        if found.budget_wait is not None:
            # Nothing was verified, so nothing counts against the pair.
            self.telemetry.kdf_refused()
            if self.kdf_budget is not None:
                self.kdf_budget.refused(key, client)
            raise self._known(
                self.failure(TOO_MANY_FAILURES, key, retry_after=found.budget_wait), record
            )
        if record is None or found.expires is None:
            self._failed(client, key, now, known=record is not None)
            raise self._known(self.failure(INVALID_CREDENTIALS, key), record)
        if not self.is_active(record, now):  # 5
            raise self.failure(KEY_INACTIVE, key, record.package)
        identity = KeyIdentity(
            record.key,
            record.package,
            record.owner_name,
            record.owner_email,
            record.id,
            record.plan,
        )
        if self._ttl:
            # Never past the secret's or the key's own expiry.
            until = min(now + self._ttl, found.expires, record.expires or found.expires)
            if self.clock() >= self.revocation.trusted_until:
                until = min(until, now + TRUST_WINDOW)
            self.cache.put(key, secret, identity, until, generation)
        return self.admit(requirement, identity, now)  # 6, 7

    def parse(self, header: Optional[str], requirement: Requirement) -> Optional[BasicCredentials]:
        """Step 1: the credentials, or ``None`` for an optional route without
        a header.

        A key no store can hold (longer than the tables take, or with a NUL)
        is refused here, before the throttle: it can never match, and must
        not make a counter of its own.

        :raises GateError: the header's problem, or ``invalid-credentials``.
        """
        parsed = parse_basic(header)
        if not isinstance(parsed, BasicCredentials):
            if requirement.optional and parsed is HeaderProblem.MISSING:
                return None
            raise self.failure(_PROBLEMS[parsed])
        key = parsed.key
        if len(key) > MAX_KEY_LENGTH or "\x00" in key:
            raise self.failure(INVALID_CREDENTIALS)
        return parsed

    def cached(
        self, requirement: Requirement, identity: KeyIdentity, client: str, now: float
    ) -> Decision:
        """Steps 2, 6 and 7 for credentials found in the cache by their
        token as sent: the throttle memo of this process for the pair, then
        :meth:`admit`.

        :raises GateError: ``too-many-failures``, or what :meth:`admit` raises.
        """
        throttle = self.throttle
        if throttle is not None and throttle.blocked:
            wait = throttle.known_wait(client, identity.key, now)
            if wait is not None:
                raise self.failure(TOO_MANY_FAILURES, identity.key, retry_after=wait)
        self.telemetry.cache(True)
        return self.admit(requirement, identity, now)

    def throttled(self, client: str, key: str, now: float, *, shared: bool) -> Optional[int]:
        """Step 2: whole seconds the pair must wait, or ``None``.

        :param shared: read the shared counters too (``False``: only this
            process's memo of throttled pairs, the cache hit's shortcut).
        """
        throttle = self.throttle
        if throttle is None:
            return None
        if shared:
            return throttle.retry_after(client, key, now)
        if not throttle.blocked:
            return None
        return throttle.known_wait(client, key, now)

    def lookup(
        self, client: str, key: str, secret: str, now: float
    ) -> tuple[Optional[KeyRecord], Verification]:
        """Step 4: read the key and verify ``secret`` against it.

        Credentials that cannot match (an empty key or secret, a control
        character) are not looked up. A key whose secrets all need a KDF is
        not read while the KDF budget has nothing for this client, unless
        these credentials were good before: the verification could not run
        anyway.

        :raises GateError: ``gate-unavailable`` when the store cannot be read.
        """
        if not key or not secret or has_control_character(key) or has_control_character(secret):
            return None, _NO_MATCH
        budget = self.kdf_budget
        if budget is not None and key in self._kdf_keys:
            wait = budget.wait(client, key)
            if wait is not None and not self.known_good.was_good(key, secret):
                return None, Verification(None, wait)
        started = time.perf_counter()
        try:
            record = self.reader.lookup(key)
        except StoreUnavailable as exc:
            self.telemetry.lookup(time.perf_counter() - started, True)
            raise self.failure(GATE_UNAVAILABLE, key, retry_after=exc.retry_after) from None
        self.telemetry.lookup(time.perf_counter() - started, False)
        if budget is not None:
            self._remember_kdf_key(key, record, now)
        if record is None:
            return None, _NO_MATCH
        return record, self.verify(record, secret, now, client)

    def verify(self, record: KeyRecord, secret: str, now: float, client: str = "") -> Verification:
        """Match ``secret`` against the key's live secrets, the cheap ones
        first. A person-chosen secret that matched its stored hash before
        is verified by one digest (:class:`~flask_basic_gate.hashing.KnownGood`);
        otherwise a KDF runs only while the KDF budget admits ``client``, and
        only its CPU time on secrets that did not match is charged (a match
        is what the KDF is for, and it is remembered).
        """
        budget = self.kdf_budget
        known = self.known_good
        live = [stored for stored in record.secrets if is_live(stored.expires, now)]
        live.sort(key=lambda stored: stored.method == KDF)
        for stored in live:
            if stored.method != KDF:
                matched = verify_secret(stored.method, stored.value, secret)
            elif known.matches(stored.value, secret):
                matched = True
            else:
                if budget is not None:
                    wait = budget.wait(client, record.key)
                    if wait is not None:
                        return Verification(None, wait)
                started = time.thread_time()
                matched = verify_secret(stored.method, stored.value, secret)
                spent = time.thread_time() - started
                self.telemetry.kdf(spent, matched)
                if matched:
                    known.remember(record.key, stored.value, secret)
                elif budget is not None:
                    budget.spend(spent, client, record.key)
            if matched:
                return Verification(float("inf") if stored.expires is None else stored.expires)
        return _NO_MATCH

    def is_active(self, record: KeyRecord, now: float) -> bool:
        """Step 5: whether a key whose secret matched may be used now."""
        return key_state(record.status, record.not_before, record.expires, now) == ACTIVE

    def admit(self, requirement: Requirement, identity: KeyIdentity, now: float) -> Decision:
        """Steps 6 and 7 for a verified, active key (cached successes too):
        the route's packages, then the plan.

        :raises GateError: ``package-not-authorized``, ``rate-limit-exceeded``,
            ``quota-exceeded`` or ``gate-unavailable``.
        """
        packages = requirement.packages
        if packages is not None and identity.package not in packages:
            error = self.failure(PACKAGE_NOT_AUTHORIZED, identity.key, identity.package)
            error.identity = identity
            raise error
        if identity.plan is None:
            return Decision(identity, None, now)
        return Decision(identity, self.count(identity, now), now)

    def count(self, identity: KeyIdentity, now: float) -> Usage:
        """Step 7: count the call against the key's plan, last, so a refused
        login or route never uses up quota.

        A limit of 0 refuses every call without counting. A key refused
        over a limit stays refused, without counting, until that limit's
        window ends.

        :raises GateError: ``rate-limit-exceeded``, ``quota-exceeded`` or
            ``gate-unavailable``.
        """
        plan = identity.plan
        assert plan is not None
        plans = self.plans
        key = identity.key
        known = plans.known_refusal(key, plan, now)
        if known is not None:
            raise self._over(identity, known, now)
        if plan.qps == 0 or plan.quota == 0:
            span = window(plan.period, now) if plan.quota is not None else None
            over = OVER_QPS if plan.qps == 0 else OVER_QUOTA
            raise self._over(identity, Usage(plan, None, None, span, over), now)
        try:
            usage = plans.count(key, plan, now)
        except StoreUnavailable as exc:
            # Fail closed, like the key store: an uncounted call could pass
            # any limit.
            self.telemetry.redis_error("counters")
            raise self.failure(
                GATE_UNAVAILABLE, key, identity.package, retry_after=exc.retry_after
            ) from None
        if plan.qps is not None and usage.qps_count is not None and usage.qps_count > plan.qps:
            over = OVER_QPS
        elif (
            plan.quota is not None
            and usage.quota_count is not None
            and usage.quota_count > plan.quota
        ):
            over = OVER_QUOTA
        else:
            return usage
        usage = plans.give_back(key, usage, now)._replace(over=over)
        plans.remember_refusal(key, usage, now)
        raise self._over(identity, usage, now)

    # -- outcomes ----------------------------------------------------------------

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

    def key_changed(self, key: str) -> None:
        """Forget what this policy remembers of ``key`` (a
        :attr:`KeyStore.on_change` listener)."""
        self._kdf_keys.pop(key)

    def _over(self, identity: KeyIdentity, usage: Usage, now: float) -> GateError:
        self.telemetry.plan_refused(usage.over or OVER_QPS)
        error = self.failure(
            RATE_LIMIT_EXCEEDED if usage.over == OVER_QPS else QUOTA_EXCEEDED,
            identity.key,
            identity.package,
            retry_after=usage.retry_after(now),
        )
        error.identity = identity
        if self.settings.rate_limit_headers:
            # The gateway sends its rate-limit fields on throttled 403s too.
            error.extra_headers += usage.headers(now, mashery=self.settings.mashery_mode)
        return error

    @staticmethod
    def _known(error: GateError, record: Optional[KeyRecord]) -> GateError:
        error.key_known = record is not None
        return error

    def _failed(self, client: str, key: str, now: float, *, known: bool = True) -> None:
        # A failed attempt counts against its pair, so one address cannot
        # keep the store busy with refused guesses, and makes the address
        # (and a key that exists) a failing one for the KDF budget's
        # admission; an unknown key never needs a KDF, so it is not kept.
        if self.throttle is not None:
            self.throttle.failed(client, key, now)
        if self.kdf_budget is not None:
            self.kdf_budget.failed(client, key if known else "")

    def _remember_kdf_key(self, key: str, record: Optional[KeyRecord], now: float) -> None:
        live = [] if record is None else [s for s in record.secrets if is_live(s.expires, now)]
        if live and all(stored.method == KDF for stored in live):
            self._kdf_keys.put(key, True)
        elif key in self._kdf_keys:
            self._kdf_keys.pop(key)

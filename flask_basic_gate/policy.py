"""The policy: the one place where the gate decides a request's outcome.

The guard and the decorator only decide *whether* a route is protected; they
hand the ``Authorization`` value to :meth:`GatePolicy.authenticate`, which
returns the caller's :class:`~flask_basic_gate.identity.KeyIdentity` or
raises the :class:`~flask_basic_gate.errors.GateError` the gateway would
answer. Settings are read from the app's config on each call.

The decision table (RFC mode)::

    no Authorization header           401 authorization-required
    scheme other than Basic           401 basic-authorization-required
    Basic without a valid token       401 invalid-authorization
    no colon, unknown key, wrong,
    empty or expired secret           403 invalid-credentials
    secret matches, key inactive      403 key-inactive
    the store cannot be read          503 gate-unavailable

In Mashery mode every 401 becomes a 403 without a challenge, and every 403
carries the platform's ``X-Mashery-Error-Code`` and ``X-Error-Detail-Header``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Callable, Optional

from werkzeug.security import generate_password_hash

from . import config as cfg
from .cache import VerificationCache
from .errors import (
    AUTHORIZATION_REQUIRED,
    BASIC_REQUIRED,
    GATE_UNAVAILABLE,
    INVALID_AUTHORIZATION,
    INVALID_CREDENTIALS,
    KEY_INACTIVE,
    GateError,
    StoreUnavailable,
)
from .hashing import KDF, verify_secret
from .header import BasicCredentials, HeaderProblem, parse_basic
from .identity import KeyIdentity
from .models import ACTIVE
from .store import KeyRecord, KeyStore

__all__ = ["GatePolicy"]

logger = logging.getLogger("flask_basic_gate")

_CACHE_TTL = cfg.CACHE_TTL

_PROBLEMS = {
    HeaderProblem.MISSING: AUTHORIZATION_REQUIRED,
    HeaderProblem.NOT_BASIC: BASIC_REQUIRED,
    HeaderProblem.MALFORMED: INVALID_AUTHORIZATION,
    HeaderProblem.NO_SECRET: INVALID_CREDENTIALS,
}

# The gateway's own error headers in its legacy mode.
_NOT_AUTHORIZED = (
    ("X-Mashery-Error-Code", "ERR_403_NOT_AUTHORIZED"),
    ("X-Error-Detail-Header", "Not Authorized"),
)
_INACTIVE = (
    ("X-Mashery-Error-Code", "ERR_403_DEVELOPER_INACTIVE"),
    ("X-Error-Detail-Header", "Account Inactive"),
)


class GatePolicy:
    """Decides whether a request's credentials let it through.

    One instance per app, made by :meth:`BasicGate.init_app
    <flask_basic_gate.BasicGate.init_app>`. Subclass it and pass the class as
    ``BasicGate(policy_class=...)`` to change a decision without forking.

    :param store: where keys are looked up.
    :param config: the app's config, read on every call.
    :param cache: remembers successful verifications.

    .. versionadded:: 0.1
    """

    def __init__(
        self, store: KeyStore, config: Mapping[str, Any], cache: VerificationCache
    ) -> None:
        self.store = store
        self.config = config
        self.cache = cache
        #: Current POSIX time; tests replace it to move through expiries.
        self.clock: Callable[[], float] = time.time
        self._dummy: Optional[tuple[str, str]] = None
        store.on_change.append(cache.evict_key)

    def authenticate(
        self, header: Optional[str], *, optional: bool = False
    ) -> Optional[KeyIdentity]:
        """Check an ``Authorization`` header value.

        :param header: the raw value, or ``None`` when the request has none.
        :param optional: let a request without the header through (returning
            ``None``); a header that is present must still be valid.
        :return: the caller's identity (``None`` only when ``optional``).
        :raises GateError: the answer the request gets instead.
        """
        now = self.clock()
        ttl = self.config.get(_CACHE_TTL, 0)
        digest = None
        if ttl and header is not None:
            digest, identity = self.cache.lookup(header, now)
            if identity is not None:
                return identity
        parsed = parse_basic(header)
        if not isinstance(parsed, BasicCredentials):
            if optional and parsed is HeaderProblem.MISSING:
                return None
            raise self.failure(_PROBLEMS[parsed])
        try:
            record = self.store.lookup(parsed.key)
        except StoreUnavailable:
            logger.exception("Key store unavailable; refusing the request (fail closed).")
            raise self.failure(GATE_UNAVAILABLE, parsed.key) from None
        expires = self.verify(record, parsed.secret, now)
        if record is None or expires is None:
            raise self.failure(INVALID_CREDENTIALS, parsed.key)
        if not self.is_active(record, now):
            raise self.failure(KEY_INACTIVE, parsed.key, record.package)
        identity = KeyIdentity(
            record.key, record.package, record.owner_name, record.owner_email, record.id
        )
        if digest is not None:
            # Never past the secret's or the key's own expiry.
            until = min(now + ttl, expires, record.expires or expires)
            self.cache.put(digest, identity, until)
        return identity

    def verify(self, record: Optional[KeyRecord], secret: str, now: float) -> Optional[float]:
        """Match ``secret`` against the key's unexpired secrets.

        :return: when the matching secret expires (``inf`` for never), or
            ``None`` when none matches. An unknown key is checked against a
            dummy hash, so it costs about what a wrong secret does.
        """
        if record is None:
            verify_secret(*self._dummy_hash(), secret)
            return None
        if not secret:
            return None
        for stored in record.secrets:
            if stored.expires is not None and stored.expires <= now:
                continue
            if verify_secret(stored.method, stored.value, secret):
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
        self, error_code: str, key: Optional[str] = None, package: Optional[str] = None
    ) -> GateError:
        """The error for ``error_code`` in the configured response mode.

        :param key: the key the request named, kept on the error for logs.
        :param package: the key's package, when known, for logs.
        """
        if error_code == GATE_UNAVAILABLE:
            return GateError(503, error_code, key=key, package=package)
        mashery = cfg.parse_bool(cfg.MASHERY_MODE, self.config.get(cfg.MASHERY_MODE, False))
        if mashery:
            # The platform's legacy mode: never a 401, never a challenge.
            headers = _INACTIVE if error_code == KEY_INACTIVE else _NOT_AUTHORIZED
            return GateError(403, error_code, headers, key=key, package=package)
        if error_code in (INVALID_CREDENTIALS, KEY_INACTIVE):
            return GateError(403, error_code, key=key, package=package)
        realm = self.config.get(cfg.REALM, "api")
        challenge = f'Basic realm="{realm}", charset="UTF-8"'
        return GateError(401, error_code, [("WWW-Authenticate", challenge)], key=key)

    def _dummy_hash(self) -> tuple[str, str]:
        # Made with the method used for person-chosen secrets, the costliest
        # a wrong secret can take, so an unknown key is not told apart by
        # time from a known key with a wrong secret.
        method = self.config.get(cfg.HASH_METHOD, "scrypt")
        if self._dummy is None or self._dummy[0] != method:
            self._dummy = (method, generate_password_hash("flask-basic-gate dummy", method))
        return KDF, self._dummy[1]

"""How secrets are generated, stored and checked.

Three methods, recorded per secret so they coexist in one table:

``sha256``
    For secrets the gate generates (``secrets.token_urlsafe(32)``: 256 bits).
    Their entropy makes a slow hash pointless, so a SHA-256 digest is enough
    and verifies in about a microsecond.
``werkzeug``
    For secrets a person chose: :func:`werkzeug.security.generate_password_hash`
    with the configured method (scrypt by default).
``plaintext``
    Only with ``BASIC_GATE_STORE_PLAINTEXT_SECRETS``, to migrate from a
    platform that keeps secrets readable.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from typing import NamedTuple

from werkzeug.security import check_password_hash, generate_password_hash

from .bounded import BoundedMap

__all__ = [
    "GENERATED",
    "KDF",
    "KnownGood",
    "PLAINTEXT",
    "StoredSecret",
    "generate_secret",
    "hash_secret",
    "verify_secret",
]

#: Method name of a SHA-256 digest of a generated secret.
GENERATED = "sha256"
#: Method name of a werkzeug.security hash of a person-chosen secret.
KDF = "werkzeug"
#: Method name of a secret kept readable.
PLAINTEXT = "plaintext"


class StoredSecret(NamedTuple):
    """What goes in the database for one secret."""

    method: str
    value: str


def generate_secret() -> str:
    """A new random secret: 32 bytes from :mod:`secrets`, URL-safe base64."""
    return secrets.token_urlsafe(32)


def sha256_hex(secret: str) -> str:
    """The hex SHA-256 digest of a secret's UTF-8 bytes."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def hash_secret(
    secret: str, *, generated: bool, kdf_method: str = "scrypt", plaintext: bool = False
) -> StoredSecret:
    """Turn a secret into what is stored.

    :param generated: the gate generated the secret (SHA-256 is enough).
    :param kdf_method: the werkzeug.security method for a person's secret.
    :param plaintext: keep the secret readable (migration only).
    """
    if plaintext:
        return StoredSecret(PLAINTEXT, secret)
    if generated:
        return StoredSecret(GENERATED, sha256_hex(secret))
    return StoredSecret(KDF, generate_password_hash(secret, kdf_method))


def verify_secret(method: str, stored: str, secret: str) -> bool:
    """Whether ``secret`` matches a stored secret, in constant time.

    An unknown method or a damaged hash never matches.
    """
    if method == GENERATED:
        return hmac.compare_digest(sha256_hex(secret), stored)
    if method == KDF:
        try:
            return check_password_hash(stored, secret)
        except (ValueError, TypeError):
            return False
    if method == PLAINTEXT:
        return hmac.compare_digest(secret.encode("utf-8"), stored.encode("utf-8"))
    return False


#: Most credentials remembered as known good.
MAX_KNOWN_GOOD = 50_000


class KnownGood:
    """Secrets that matched a stored KDF hash, so they never need the KDF again.

    A success is remembered as a fact about the stored secret and the
    presented one: a keyed BLAKE2b digest of both, under a key that lives only
    in this process's memory. It holds for as long as that stored secret is
    unchanged: a rotation, deletion or expiry changes or removes the stored
    value, and no digest of the old one can match the new one, so the memo
    can never accept a secret the store no longer holds. Failures are never
    remembered here.

    A second digest, of the key and the presented secret, says only that
    these credentials were good once: the policy reads the store for them
    even while the KDF bound is spent (and then verifies by the first
    digest).

    :param size: the most credentials kept; the oldest go first.

    .. versionadded:: 0.1
    """

    __slots__ = ("_key", "_proofs")

    def __init__(self, size: int = MAX_KNOWN_GOOD) -> None:
        self._key = os.urandom(32)
        self._proofs: BoundedMap[bytes, bool] = BoundedMap(size)

    def _digest(self, *parts: str) -> bytes:
        text = "\x00".join(parts).encode("utf-8", "surrogatepass")
        return hashlib.blake2b(text, key=self._key, digest_size=16).digest()

    def matches(self, stored: str, secret: str) -> bool:
        """Whether ``secret`` matched the stored hash ``stored`` before."""
        return self._digest("s", stored, secret) in self._proofs

    def was_good(self, key: str, secret: str) -> bool:
        """Whether ``key`` and ``secret`` authenticated before (against
        whatever the key then held)."""
        return self._digest("k", key, secret) in self._proofs

    def remember(self, key: str, stored: str, secret: str) -> None:
        """Record that ``secret`` matched ``key``'s stored hash ``stored``."""
        self._proofs.put(self._digest("s", stored, secret), True)
        self._proofs.put(self._digest("k", key, secret), True)

    def __len__(self) -> int:
        return len(self._proofs)

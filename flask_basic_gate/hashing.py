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
import secrets
from typing import NamedTuple

from werkzeug.security import check_password_hash, generate_password_hash

__all__ = [
    "GENERATED",
    "KDF",
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

"""Plain data the policy reads: a key as looked up, with its secrets.

No ORM objects and no Flask: a record is what one indexed read of the
gate's tables returns, made once per lookup and safe to keep in a cache.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

__all__ = ["KeyRecord", "SecretRecord"]


class SecretRecord(NamedTuple):
    """One stored secret of a key, as the policy verifies it."""

    id: int
    method: str
    value: str
    #: POSIX time after which the secret no longer works, or ``None``.
    expires: Optional[float]


class KeyRecord(NamedTuple):
    """A key as read for one verification: plain data, no ORM object."""

    id: int
    key: str
    package: str
    status: str
    #: POSIX times of the key's validity window, or ``None``.
    not_before: Optional[float]
    expires: Optional[float]
    owner_name: Optional[str]
    owner_email: Optional[str]
    secrets: tuple[SecretRecord, ...]

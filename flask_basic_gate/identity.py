"""What the gate knows about the caller of an authenticated request."""

from __future__ import annotations

from typing import NamedTuple, Optional

__all__ = ["KeyIdentity"]


class KeyIdentity(NamedTuple):
    """The package key that authenticated a request.

    Plain, immutable data (no ORM object, no secret), so it can be cached and
    handed to views through :data:`flask_basic_gate.current_key`.

    .. versionadded:: 0.1
    """

    #: The package key (the Basic-auth user name).
    key: str
    #: The name of the package the key belongs to.
    package: str
    #: The developer or application owning the key.
    owner_name: Optional[str]
    #: Contact email of the owner.
    owner_email: Optional[str]
    #: Database id of the key row.
    key_id: int

    def __str__(self) -> str:
        return self.key

"""What the gate knows about the caller of an authenticated request."""

from __future__ import annotations

from typing import NamedTuple, Optional

from .records import Plan

__all__ = ["ANONYMOUS", "AnonymousKey", "KeyIdentity"]


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
    #: The key's effective limits (package plan and key overrides), or
    #: ``None`` when unlimited; kept here so a cached success is limited
    #: without a lookup.
    plan: Optional[Plan] = None

    def __str__(self) -> str:
        return self.key


class AnonymousKey:
    """What :data:`~flask_basic_gate.current_key` is when no key authenticated
    the request: falsy, with every field ``None`` (as Flask-Login's
    ``AnonymousUserMixin``), so ``current_key.key`` is ``None`` and
    ``if current_key:`` still works.

    .. versionadded:: 0.1
    """

    __slots__ = ()

    key: None = None
    package: None = None
    owner_name: None = None
    owner_email: None = None
    key_id: None = None
    plan: None = None

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "<AnonymousKey>"


#: The one anonymous identity.
ANONYMOUS = AnonymousKey()

"""Plain data the policy reads: a key as looked up, with its secrets.

No ORM objects and no Flask: a record is what one indexed read of the
gate's tables returns, made once per lookup and safe to keep in a cache.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple, Optional, TypeVar

__all__ = [
    "ACTIVE",
    "DISABLED",
    "EXPIRED",
    "NOT_YET_VALID",
    "WAITING",
    "KeyRecord",
    "Plan",
    "SecretRecord",
    "effective_plan",
    "is_live",
    "key_state",
]

#: A key's stored status that lets it authenticate.
ACTIVE = "active"
#: A key's stored status that refuses it (``disable-key``).
DISABLED = "disabled"
#: A key's stored status that refuses it until it is approved
#: (``enable-key``): the gateway's moderation state, which only an import
#: brings. A key that left it never goes back to it, as on the gateway.
WAITING = "waiting"
#: Effective states of an active key outside its validity window.
EXPIRED = "expired"
NOT_YET_VALID = "not-yet-valid"


#: A point in time: POSIX seconds on the request path, naive UTC datetimes
#: in the administration API. The rules below hold for either.
When = TypeVar("When", float, dt.datetime)


def key_state(status: str, not_before: Optional[When], expires: Optional[When], now: When) -> str:
    """A key's effective state: its status unless that is :data:`ACTIVE`
    (so :data:`DISABLED` or :data:`WAITING`); then :data:`EXPIRED` from
    ``expires`` on, :data:`NOT_YET_VALID` before ``not_before``, else
    :data:`ACTIVE`. The one definition of "may this key be used now", for
    the policy and for operators alike.
    """
    if status != ACTIVE:
        return status
    if expires is not None and expires <= now:
        return EXPIRED
    if not_before is not None and now < not_before:
        return NOT_YET_VALID
    return ACTIVE


def is_live(expires: Optional[When], now: When) -> bool:
    """Whether a secret that ``expires`` (``None``: never) still works at ``now``."""
    return expires is None or now < expires


#: Quota periods, calendar windows in UTC.
PERIODS = ("minute", "hour", "day", "month")
#: The period of a key's own quota when its package has none (the gateway
#: gives a key's quota its plan's period; a day is its usual one).
DEFAULT_PERIOD = "day"


class SecretRecord(NamedTuple):
    """One stored secret of a key, as the policy verifies it."""

    id: int
    method: str
    value: str
    #: POSIX time after which the secret no longer works, or ``None``.
    expires: Optional[float]


class Plan(NamedTuple):
    """The limits that apply to one key: its package's, with the key's own
    overrides and exemptions applied. ``None`` means unlimited, ``0`` blocks
    every call.

    .. versionadded:: 0.1
    """

    #: Calls per second, or ``None``.
    qps: Optional[int]
    #: Calls per :attr:`period`, or ``None``.
    quota: Optional[int]
    #: ``minute``, ``hour``, ``day`` or ``month`` (calendar windows in UTC).
    period: str = DEFAULT_PERIOD
    #: The key's own QPS ceiling applies (not its package's).
    qps_override: bool = False
    #: The key's own quota applies (not its package's).
    quota_override: bool = False


def effective_plan(
    package_qps: Optional[int],
    package_quota: Optional[int],
    period: Optional[str],
    key_qps: Optional[int],
    key_quota: Optional[int],
    qps_exempt: Optional[bool],
    quota_exempt: Optional[bool],
) -> Optional[Plan]:
    """The plan of a key from its package's columns and its own, or ``None``
    when nothing limits it (so the request path tests one ``None``).

    A key's override always applies (the gateway's per-plan
    ``...KeyOverrideAllowed`` switch is not modelled); an exemption wins
    over both.
    """
    qps = None if qps_exempt else key_qps if key_qps is not None else package_qps
    quota = None if quota_exempt else key_quota if key_quota is not None else package_quota
    if qps is None and quota is None:
        return None
    return Plan(
        qps,
        quota,
        period or DEFAULT_PERIOD,
        qps is not None and key_qps is not None,
        quota is not None and key_quota is not None,
    )


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
    #: The key's effective limits, or ``None`` when unlimited.
    plan: Optional[Plan] = None

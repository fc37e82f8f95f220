"""Reading the admin pages' form fields into the store's arguments.

Every reader raises :class:`~flask_basic_gate.store.AdminError` with a
message that names the field, before anything is written. Pure: no Flask.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Optional

from ..records import PERIODS
from ..store import AdminError, parse_limit

__all__ = ["MAX_GRACE", "iso", "read_grace", "read_limit", "read_quota", "read_text", "read_when"]

#: The longest grace period a rotation accepts: ten years, in seconds (as the CLI).
MAX_GRACE = 10 * 365 * 24 * 3600


def read_text(form: Mapping[str, str], name: str) -> Optional[str]:
    """A text field, stripped; ``None`` when empty."""
    value = form.get(name, "").strip()
    return value or None


def read_when(form: Mapping[str, str], name: str, label: str) -> Optional[dt.datetime]:
    """An ISO 8601 date or date and time as naive UTC (``None`` when empty).

    A trailing ``Z``, or no offset at all, means UTC.

    :raises AdminError: naming ``label`` when it is not ISO 8601.
    """
    text = read_text(form, name)
    if text is None:
        return None
    if text[-1:] in ("Z", "z"):
        # datetime.fromisoformat reads "Z" only from Python 3.11 on.
        text = text[:-1] + "+00:00"
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise AdminError(
            f"{label}: {form.get(name, '')!r} is not an ISO 8601 date or time,"
            " such as 2027-01-31 or 2027-01-31T12:00:00Z"
        ) from None
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return when


def read_limit(form: Mapping[str, str], name: str, label: str) -> Optional[int]:
    """A whole number from 0 up, or ``None`` when empty.

    :raises AdminError: naming ``label``.
    """
    text = read_text(form, name)
    return None if text is None else parse_limit(text, label)


def read_quota(
    form: Mapping[str, str], count: str, period: str, label: str
) -> Optional[tuple[int, str]]:
    """A quota from a count field and a period field; ``None`` when the
    count is empty (unlimited).

    :raises AdminError: a bad count or period.
    """
    calls = read_limit(form, count, label)
    if calls is None:
        return None
    per = form.get(period, "")
    if per not in PERIODS:
        raise AdminError(f"{label}: the period must be one of {', '.join(PERIODS)}")
    return calls, per


def read_grace(form: Mapping[str, str], name: str) -> float:
    """A grace period in seconds (0 when empty).

    :raises AdminError: not a number from 0 to :data:`MAX_GRACE`.
    """
    text = read_text(form, name)
    if text is None:
        return 0.0
    try:
        grace = float(text)
    except ValueError:
        grace = math.nan
    if not math.isfinite(grace) or not 0 <= grace <= MAX_GRACE:
        raise AdminError(f"Grace period: give 0 to {MAX_GRACE} seconds, not {text!r}")
    return grace


def iso(when: Optional[dt.datetime]) -> str:
    """A naive UTC datetime as ``2027-01-31T12:00:00Z`` (``""`` for ``None``)."""
    return "" if when is None else when.strftime("%Y-%m-%dT%H:%M:%SZ")

"""The usage chart of a key's page: one stacked bar a day, drawn as SVG by
the template from the numbers computed here (pure; no Flask)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import NamedTuple, Optional

__all__ = ["Bar", "Chart", "DayUsage", "usage_chart"]

#: The drawing's size in SVG units; the stylesheet scales it to the page.
WIDTH = 600
HEIGHT = 160
#: Room under the bars for the first and last day's labels.
LABELS = 20
#: Room over the bars for the label of the top.
HEADROOM = 18


class DayUsage(NamedTuple):
    """One day's counts of a key.

    .. versionadded:: 0.1
    """

    day: dt.date
    allowed: int = 0
    blocked: int = 0
    other: int = 0

    @property
    def calls(self) -> int:
        """Every counted call."""
        return self.allowed + self.blocked + self.other


class Bar(NamedTuple):
    """One day's bar: three stacked rectangles, in SVG units, allowed at the bottom.

    .. versionadded:: 0.1
    """

    usage: DayUsage
    x: float
    width: float
    #: ``(y, height)`` of the allowed, blocked and other parts.
    allowed: tuple[float, float]
    blocked: tuple[float, float]
    other: tuple[float, float]


class Chart(NamedTuple):
    """The chart of :func:`usage_chart`.

    .. versionadded:: 0.1
    """

    days: list[DayUsage]
    bars: list[Bar]
    #: The count the top of the drawing stands for.
    top: int
    width: int = WIDTH
    height: int = HEIGHT
    #: Where the bars stand.
    base: int = HEIGHT - LABELS
    #: Where the tallest bar ends.
    ceiling: int = HEADROOM

    @property
    def total(self) -> DayUsage:
        """The sums over every day (dated the last day)."""
        return DayUsage(
            self.days[-1].day,
            sum(d.allowed for d in self.days),
            sum(d.blocked for d in self.days),
            sum(d.other for d in self.days),
        )


def usage_chart(
    counts: Iterable[tuple[dt.date, int, int, int]], last: dt.date, days: int = 30
) -> Chart:
    """The chart of the ``days`` days that end with ``last``.

    :param counts: ``(day, allowed, blocked, other)``; days outside the
        range are left out, days missing count zero.

    .. versionadded:: 0.1
    """
    first = last - dt.timedelta(days=days - 1)
    found: dict[dt.date, DayUsage] = {}
    for day, allowed, blocked, other in counts:
        if first <= day <= last:
            seen: Optional[DayUsage] = found.get(day)
            if seen is not None:
                allowed, blocked, other = (
                    allowed + seen.allowed,
                    blocked + seen.blocked,
                    other + seen.other,
                )
            found[day] = DayUsage(day, allowed, blocked, other)
    series = [found.get(day, DayUsage(day)) for day in _days(first, days)]
    top = max([one.calls for one in series] + [1])
    base = HEIGHT - LABELS
    scale = (base - HEADROOM) / top
    slot = WIDTH / days
    width = round(max(slot - 2, 1), 2)
    bars = []
    for index, one in enumerate(series):
        y = float(base)
        parts = []
        for count in (one.allowed, one.blocked, one.other):
            height = count * scale
            y -= height
            parts.append((round(y, 2), round(height, 2)))
        bottom, middle, top_part = parts
        bars.append(Bar(one, round(index * slot + 1, 2), width, bottom, middle, top_part))
    return Chart(series, bars, top)


def _days(first: dt.date, days: int) -> list[dt.date]:
    return [first + dt.timedelta(days=offset) for offset in range(days)]

"""The issue's targets and the printed tables.

A target is a set of bounds on a case's ratio to other cases measured in the
same run. A miss is printed as ``MISS``; nothing here ever fails the run.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Bound:
    """The case's median divided by ``reference``'s must lie in ``[low, high]``."""

    reference: str
    high: float
    low: float = 0.0

    def describe(self) -> str:
        """The bound as printed, e.g. ``<=1.12x bare``."""
        if self.low > 0:
            return f"{self.low:.2f}-{self.high:.2f}x {self.reference}"
        return f"<={self.high:.2f}x {self.reference}"


@dataclass(frozen=True)
class Target:
    """All bounds one case must meet."""

    bounds: tuple[Bound, ...]

    def describe(self) -> str:
        """The bounds as printed, joined by commas."""
        return ", ".join(bound.describe() for bound in self.bounds)

    def met(self, case: str, medians: Mapping[str, float]) -> Optional[bool]:
        """Whether ``case`` meets every bound; ``None`` when a needed case did not run."""
        names = [case, *(bound.reference for bound in self.bounds)]
        if any(name not in medians for name in names):
            return None
        value = medians[case]
        return all(
            bound.low <= value / medians[bound.reference] <= bound.high for bound in self.bounds
        )


@dataclass(frozen=True)
class Row:
    """One timed case: its samples (µs per request, one per round) and its target."""

    name: str
    samples: Sequence[float]
    target: Optional[Target] = None
    note: str = ""

    @property
    def median(self) -> float:
        """Median of the samples."""
        return statistics.median(self.samples)

    @property
    def spread(self) -> Optional[float]:
        """Interquartile range as a percentage of the median (``None`` under 4 samples)."""
        if len(self.samples) < 4:
            return None
        low, _, high = statistics.quantiles(self.samples, n=4)
        return 100 * (high - low) / self.median


def verdict(met: Optional[bool]) -> str:
    """``PASS``, ``MISS`` or ``-`` (no target, or its reference did not run)."""
    if met is None:
        return "-"
    return "PASS" if met else "MISS"


def _ratio(value: float, reference: Optional[float]) -> str:
    return f"{value / reference:.2f}x" if reference else "-"


def table(header: Sequence[str], body: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    """Lines of a plain-text table: columns as wide as their widest cell.

    :param right: per column, whether it is right-aligned (numbers).
    """
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = (c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right))
        return "  ".join(padded).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(row) for row in body)]


def timing_table(rows: Sequence[Row], bare: str, peer: str) -> list[str]:
    """The main table: median µs, spread, ratios to ``bare`` and ``peer``, target and verdict."""
    medians = {row.name: row.median for row in rows}
    body = []
    for row in rows:
        spread = row.spread
        target = row.target
        body.append(
            [
                row.name,
                f"{row.median:,.1f}",
                f"{spread:.1f}%" if spread is not None else "-",
                _ratio(row.median, medians.get(bare)),
                _ratio(row.median, medians.get(peer)),
                target.describe() if target else "",
                verdict(target.met(row.name, medians)) if target else "",
                row.note,
            ]
        )
    header = ["case", "µs/req", "iqr", f"x {bare}", f"x {peer}", "target", "result", "note"]
    return table(header, body, [False, True, True, True, True, False, False, False])


@dataclass(frozen=True)
class Figure:
    """A measured quantity with an optional upper limit (memory, requests per second)."""

    name: str
    value: float
    unit: str
    limit: Optional[float] = None
    note: str = ""
    #: Digits after the decimal point.
    precision: int = 1


def figure_table(figures: Sequence[Figure]) -> list[str]:
    """A table of figures with their limits and verdicts."""
    body = []
    for figure in figures:
        limit = f"<{figure.limit:g} {figure.unit}" if figure.limit is not None else ""
        met = None if figure.limit is None else figure.value < figure.limit
        body.append(
            [
                figure.name,
                f"{figure.value:,.{figure.precision}f} {figure.unit}".rstrip(),
                limit,
                verdict(met) if figure.limit is not None else "",
                figure.note,
            ]
        )
    return table(
        ["measure", "value", "target", "result", "note"], body, [False, True, False, False, False]
    )

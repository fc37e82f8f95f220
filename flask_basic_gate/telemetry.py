"""What the gate tells about its work, for metrics and usage reports.

The policy, the guard and the components call a :class:`Telemetry` at the
few points an operator wants counted: each decision, each KDF run, each
cache look, each lookup, each Redis failure, each plan refusal. The base
class hears nothing (its methods do nothing), so the warm path pays one
method call per point when nobody listens. :class:`Fanout` passes every
call on to several listeners. Listeners never change an outcome and never
raise into a request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from .errors import GateError
    from .policy import Decision

__all__ = ["Fanout", "Telemetry"]


class Telemetry:
    """A listener to the gate's work; every method does nothing here.

    Subclass it and override what you need; ``init_app`` builds the
    listeners that the settings turn on.

    .. versionadded:: 0.1
    """

    def decided(
        self,
        decision: Optional[Decision],
        error: Optional[GateError],
        *,
        enforced: bool = True,
    ) -> None:
        """A request the gate checked: let through (``decision``, whose
        ``identity`` is ``None`` for an optional route without a header) or
        refused (``error``). ``enforced`` is false when the refusal was only
        reported (``BASIC_GATE_REPORT_ONLY``) and the request went on."""

    def cache(self, hit: bool) -> None:
        """The decision cache was read for a request's credentials."""

    def lookup(self, seconds: float, failed: bool) -> None:
        """The key store was read (``failed``: it could not answer)."""

    def kdf(self, seconds: float, matched: bool) -> None:
        """A KDF ran for ``seconds`` of CPU time."""

    def kdf_refused(self) -> None:
        """The KDF budget refused a verification."""

    def plan_refused(self, limit: str) -> None:
        """A call was refused over its plan: ``"qps"`` or ``"quota"``."""

    def redis_error(self, use: str) -> None:
        """Redis failed for ``use``: ``"revocation"`` or ``"counters"``."""

    def close(self) -> None:
        """The app is going away: write out what is held (at process exit)."""


class Fanout(Telemetry):
    """Passes every call on to each of ``listeners``, in order.

    .. versionadded:: 0.1
    """

    def __init__(self, listeners: Sequence[Telemetry]) -> None:
        self.listeners = tuple(listeners)

    def decided(
        self,
        decision: Optional[Decision],
        error: Optional[GateError],
        *,
        enforced: bool = True,
    ) -> None:
        for listener in self.listeners:
            listener.decided(decision, error, enforced=enforced)

    def cache(self, hit: bool) -> None:
        for listener in self.listeners:
            listener.cache(hit)

    def lookup(self, seconds: float, failed: bool) -> None:
        for listener in self.listeners:
            listener.lookup(seconds, failed)

    def kdf(self, seconds: float, matched: bool) -> None:
        for listener in self.listeners:
            listener.kdf(seconds, matched)

    def kdf_refused(self) -> None:
        for listener in self.listeners:
            listener.kdf_refused()

    def plan_refused(self, limit: str) -> None:
        for listener in self.listeners:
            listener.plan_refused(limit)

    def redis_error(self, use: str) -> None:
        for listener in self.listeners:
            listener.redis_error(use)

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()

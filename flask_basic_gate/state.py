"""The per-app state the gate builds at ``init_app``, and how to reach it.

Everything the gate keeps for one app lives in one frozen
:class:`GateState` under ``app.extensions["basic_gate"]``. The guard, the
CLI, the OpenAPI helpers and the admin tools reach it with
:func:`get_state`; none of them imports the extension.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Optional

from flask import Flask, current_app

if TYPE_CHECKING:
    from .cache import VerificationCache
    from .config import Settings
    from .extension import BasicGate
    from .guard import Guard
    from .policy import GatePolicy
    from .revocation import Revocation
    from .store import KeyStore
    from .telemetry import Telemetry

__all__ = ["EXTENSION_NAME", "GateState", "get_state"]

#: Name of the gate's entry in ``app.extensions``.
EXTENSION_NAME = "basic_gate"


@dataclasses.dataclass(frozen=True)
class GateState:
    """What the gate keeps for one app, in ``app.extensions["basic_gate"]``.

    Built once by :meth:`BasicGate.init_app
    <flask_basic_gate.BasicGate.init_app>`, the one place that makes the
    gate's components and wires them together.

    .. versionadded:: 0.1
    """

    #: The extension object that was initialised on the app.
    gate: BasicGate
    #: The one object that decides requests.
    policy: GatePolicy
    #: The key store (its administration API; :attr:`KeyStore.reader` reads).
    store: KeyStore
    #: Successful verifications, remembered for ``BASIC_GATE_CACHE_TTL``.
    cache: VerificationCache
    #: The settings checked and frozen at ``init_app``.
    settings: Settings
    #: Changes across processes (a no-op without ``BASIC_GATE_REDIS_URL``).
    revocation: Revocation
    #: Asks the policy about the app's requests.
    guard: Guard
    #: Hears what the gate does (metrics, usage); a no-op by default.
    telemetry: Telemetry
    #: More components, by name, for extensions of the gate.
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def get_state(app: Optional[Flask] = None) -> GateState:
    """The gate's state for ``app`` (default: the current app).

    :raises RuntimeError: the gate was never initialised on the app.

    .. versionadded:: 0.1
    """
    app = app if app is not None else current_app
    try:
        return app.extensions[EXTENSION_NAME]  # type: ignore[no-any-return]
    except KeyError:
        raise RuntimeError(
            "BasicGate is not initialised on this app: call gate.init_app(app) first."
        ) from None

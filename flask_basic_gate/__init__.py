"""flask-basic-gate: gateway-grade HTTP Basic authentication for Flask APIs.

API keys, the packages they belong to and their secrets live in the app's
own database through Flask-SQLAlchemy; failures answer like the Basic-auth
connector of an API-management gateway.
"""

from __future__ import annotations

from .config import ConfigurationError, Settings
from .errors import GateError, StoreUnavailable
from .extension import BasicGate
from .guard import current_key, get_current_key
from .identity import AnonymousKey, KeyIdentity
from .policy import Decision, GatePolicy
from .routing import Requirement
from .signals import admin_changed, request_authenticated, request_rejected
from .state import GateState, get_state
from .store import AdminError, KeyLookup, KeyStore, NewSecret

__version__ = "0.1.0"

__all__ = [
    "AdminError",
    "AnonymousKey",
    "BasicGate",
    "ConfigurationError",
    "Decision",
    "GateError",
    "GatePolicy",
    "GateState",
    "KeyIdentity",
    "KeyLookup",
    "KeyStore",
    "NewSecret",
    "Requirement",
    "Settings",
    "StoreUnavailable",
    "__version__",
    "admin_changed",
    "current_key",
    "get_current_key",
    "get_state",
    "request_authenticated",
    "request_rejected",
]

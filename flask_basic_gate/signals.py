"""Signals the gate sends, in their own blinker namespace (as Flask does).

Connect with ``request_authenticated.connect(receiver, app)``; receivers get
the app as sender. Neither signal carries a secret or the raw header.
"""

from __future__ import annotations

from blinker import Namespace

__all__ = ["request_authenticated", "request_rejected"]

_signals = Namespace()

#: Sent when a request is authenticated, with ``key`` (a
#: :class:`~flask_basic_gate.identity.KeyIdentity`).
#:
#: .. versionadded:: 0.1
request_authenticated = _signals.signal("basic-gate-request-authenticated")

#: Sent when a request is rejected, with ``error_code`` (the gateway's
#: errorCode) and ``status`` (the HTTP status sent). Under
#: ``BASIC_GATE_REPORT_ONLY`` it is sent for each request that would have
#: been refused, with ``enforced=False`` too (receivers take ``**extra``).
#:
#: .. versionadded:: 0.1
request_rejected = _signals.signal("basic-gate-request-rejected")

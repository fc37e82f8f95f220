"""Signals the gate sends, in their own blinker namespace (as Flask does).

Connect with ``request_authenticated.connect(receiver, app)``; receivers get
the app as sender. No signal carries a secret or the raw header.
"""

from __future__ import annotations

from blinker import Namespace

__all__ = ["admin_changed", "request_authenticated", "request_rejected"]

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

#: Sent after a change made on the admin pages (``BASIC_GATE_ADMIN``) was
#: committed, with ``admin`` (the
#: :class:`~flask_basic_gate.identity.KeyIdentity` of the admin key that
#: made it), ``action`` (the ``flask basic-gate`` command that does the
#: same, such as ``disable-key``, ``rotate-secret`` or ``update-package``),
#: ``target`` (the key or package changed) and ``changes`` (a dict of the
#: fields set, never a secret). Receivers take ``**extra``.
#:
#: .. versionadded:: 0.1
admin_changed = _signals.signal("basic-gate-admin-changed")

"""The gate's failures, as werkzeug HTTP exceptions.

Each failure carries the gateway's ``errorCode`` and ``errorMessage``; the
JSON body and the headers are rendered here and nowhere else. Because
:class:`GateError` is a :class:`~werkzeug.exceptions.HTTPException`, an app
can restyle it with ``@app.errorhandler(GateError)`` (or by status code).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional

from werkzeug.exceptions import HTTPException

if TYPE_CHECKING:
    from .identity import KeyIdentity

__all__ = [
    "AUTHORIZATION_REQUIRED",
    "BASIC_REQUIRED",
    "GATE_UNAVAILABLE",
    "GateError",
    "INVALID_AUTHORIZATION",
    "INVALID_CREDENTIALS",
    "KEY_INACTIVE",
    "PACKAGE_NOT_AUTHORIZED",
    "QUOTA_EXCEEDED",
    "RATE_LIMIT_EXCEEDED",
    "TOO_MANY_FAILURES",
    "StoreUnavailable",
    "error_body",
    "failure",
]

#: errorCode: the request has no ``Authorization`` header.
AUTHORIZATION_REQUIRED = "authorization-required"
#: errorCode: the ``Authorization`` header uses a scheme other than Basic.
BASIC_REQUIRED = "basic-authorization-required"
#: errorCode: ``Basic`` with no token, or a token that is not strict base64.
INVALID_AUTHORIZATION = "invalid-authorization"
#: errorCode: no secret, unknown key or wrong secret (never told apart).
INVALID_CREDENTIALS = "invalid-credentials"
#: errorCode: the secret matched but the key is disabled, not yet valid or expired.
KEY_INACTIVE = "key-inactive"
#: errorCode: the key store could not be read; the gate fails closed.
GATE_UNAVAILABLE = "gate-unavailable"
#: errorCode: too many failed verifications from this client for this key,
#: or the process's budget of key-derivation work is spent.
TOO_MANY_FAILURES = "too-many-failures"
#: errorCode: the key is valid but its package may not use this route.
PACKAGE_NOT_AUTHORIZED = "package-not-authorized"
#: errorCode: the key is over its plan's calls per second.
RATE_LIMIT_EXCEEDED = "rate-limit-exceeded"
#: errorCode: the key is over its plan's quota for the current window.
QUOTA_EXCEEDED = "quota-exceeded"

#: errorMessage for each errorCode.
MESSAGES = {
    AUTHORIZATION_REQUIRED: "Authorization is Required",
    BASIC_REQUIRED: "Authorization must be HTTP Basic Authorization",
    INVALID_AUTHORIZATION: "Authorization header is not valid HTTP Basic credentials",
    INVALID_CREDENTIALS: "Invalid Authentication Credentials",
    KEY_INACTIVE: "Account Inactive",
    GATE_UNAVAILABLE: "Authentication is temporarily unavailable",
    TOO_MANY_FAILURES: "Too Many Failed Attempts",
    PACKAGE_NOT_AUTHORIZED: "Not Authorized",
    RATE_LIMIT_EXCEEDED: "Account Over Queries Per Second Limit",
    QUOTA_EXCEEDED: "Account Over Rate Limit",
}

#: The HTTP status of each errorCode in the default (RFC) mode.
RFC_STATUS = {
    AUTHORIZATION_REQUIRED: 401,
    BASIC_REQUIRED: 401,
    INVALID_AUTHORIZATION: 401,
    INVALID_CREDENTIALS: 403,
    KEY_INACTIVE: 403,
    GATE_UNAVAILABLE: 503,
    TOO_MANY_FAILURES: 429,
    PACKAGE_NOT_AUTHORIZED: 403,
    RATE_LIMIT_EXCEEDED: 429,
    QUOTA_EXCEEDED: 429,
}

# The gateway's own error headers in its legacy mode (its status is always
# 403 there, except 503); the codes not named here answer Not Authorized.
_NOT_AUTHORIZED = ("ERR_403_NOT_AUTHORIZED", "Not Authorized")
MASHERY_CODES = {
    KEY_INACTIVE: ("ERR_403_DEVELOPER_INACTIVE", "Account Inactive"),
    RATE_LIMIT_EXCEEDED: (
        "ERR_403_DEVELOPER_OVER_QPS",
        "Account Over Queries Per Second Limit",
    ),
    QUOTA_EXCEEDED: ("ERR_403_DEVELOPER_OVER_RATE", "Account Over Rate Limit"),
}

#: Seconds a client is told to wait after a 503 when the store gives no
#: better figure.
UNAVAILABLE_RETRY_AFTER = 1


@functools.lru_cache(maxsize=64)
def error_body(error_code: str, message: str) -> str:
    """The gateway's JSON error body, for the app's own errors to match.

    .. versionadded:: 0.1
    """
    return (
        json.dumps(
            {"errorCode": error_code, "errorMessage": message, "errors": []},
            separators=(", ", ": "),
        )
        + "\n"
    )


class StoreUnavailable(Exception):
    """The key store could not answer (database down, tables missing).

    Raised by the store, turned into a 503 ``gate-unavailable`` by the policy.

    :param retry_after: whole seconds the client is told to wait.

    .. versionadded:: 0.1
    """

    def __init__(self, message: str = "", *, retry_after: int = UNAVAILABLE_RETRY_AFTER) -> None:
        super().__init__(message)
        #: Whole seconds for the 503's ``Retry-After`` header.
        self.retry_after = retry_after


class GateError(HTTPException):
    """A request the gate refused.

    :param status: the HTTP status (401, 403, 429 or 503).
    :param error_code: the gateway's ``errorCode``, one of the constants in
        this module.
    :param headers: extra response headers, such as ``WWW-Authenticate`` or
        the gateway's ``X-Mashery-Error-Code``.
    :param key: the key the request named, for logs (never the secret).
    :param package: the key's package, when known, for logs.

    The body is ``{"errorCode": ..., "errorMessage": ..., "errors": []}``
    with ``Content-Type: application/json``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        status: int,
        error_code: str,
        headers: Optional[Iterable[tuple[str, str]]] = None,
        *,
        key: Optional[str] = None,
        package: Optional[str] = None,
    ) -> None:
        super().__init__(MESSAGES[error_code])
        self.code = status
        self.error_code = error_code
        self.error_message = MESSAGES[error_code]
        self.extra_headers: list[tuple[str, str]] = list(headers or ())
        #: The key the request named, when it got that far (never the secret).
        self.key = key
        #: The key's package, when the key was found and its secret matched.
        self.package = package
        #: Whether the key the request named exists in the store (set by the
        #: policy; ``False`` when unknown or not looked up).
        self.key_known = package is not None
        #: The identity that authenticated, when the refusal came after it
        #: (package or plan); set by the policy.
        self.identity: Optional[KeyIdentity] = None

    def body(self) -> str:
        """The JSON body, byte for byte the same for the same errorCode."""
        return error_body(self.error_code, self.error_message)

    def get_body(self, environ: Any = None, scope: Any = None) -> str:
        """The JSON body (werkzeug calls this to render the exception)."""
        return self.body()

    def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
        """``Content-Type`` and the extra headers."""
        return [("Content-Type", "application/json"), *self.extra_headers]

    def __repr__(self) -> str:
        return f"<GateError {self.code} {self.error_code}>"


def failure(
    error_code: str,
    *,
    mashery: bool,
    challenge: str,
    retry_after: Optional[int] = None,
    key: Optional[str] = None,
    package: Optional[str] = None,
) -> GateError:
    """The :class:`GateError` for ``error_code`` in the configured mode.

    The one place that knows the decision table's statuses and headers.

    :param mashery: the gateway's legacy mode: every 401 and 429 becomes a
        403 without a challenge, with ``X-Mashery-Error-Code`` and
        ``X-Error-Detail-Header``.
    :param challenge: the ``WWW-Authenticate`` value of a 401.
    :param retry_after: seconds for ``Retry-After`` (a 503 always has one).
    :param key: the key the request named, kept on the error for logs.
    :param package: the key's package, when known, for logs.

    .. versionadded:: 0.1
    """
    status = RFC_STATUS[error_code]
    headers: list[tuple[str, str]] = []
    if status == 503:
        retry_after = retry_after or UNAVAILABLE_RETRY_AFTER
    elif mashery:
        status = 403
        code, detail = MASHERY_CODES.get(error_code, _NOT_AUTHORIZED)
        headers += [("X-Mashery-Error-Code", code), ("X-Error-Detail-Header", detail)]
    elif status == 401:
        headers.append(("WWW-Authenticate", challenge))
    if retry_after is not None:
        headers.append(("Retry-After", str(max(1, int(retry_after)))))
    return GateError(status, error_code, headers, key=key, package=package)

"""The gate's failures, as werkzeug HTTP exceptions.

Each failure carries the gateway's ``errorCode`` and ``errorMessage``; the
JSON body and the headers are rendered here and nowhere else. Because
:class:`GateError` is a :class:`~werkzeug.exceptions.HTTPException`, an app
can restyle it with ``@app.errorhandler(GateError)`` (or by status code).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Optional

from werkzeug.exceptions import HTTPException

__all__ = [
    "AUTHORIZATION_REQUIRED",
    "BASIC_REQUIRED",
    "GATE_UNAVAILABLE",
    "GateError",
    "INVALID_AUTHORIZATION",
    "INVALID_CREDENTIALS",
    "KEY_INACTIVE",
    "StoreUnavailable",
    "error_body",
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

#: errorMessage for each errorCode.
MESSAGES = {
    AUTHORIZATION_REQUIRED: "Authorization is Required",
    BASIC_REQUIRED: "Authorization must be HTTP Basic Authorization",
    INVALID_AUTHORIZATION: "Authorization header is not valid HTTP Basic credentials",
    INVALID_CREDENTIALS: "Invalid Authentication Credentials",
    KEY_INACTIVE: "Account Inactive",
    GATE_UNAVAILABLE: "Authentication is temporarily unavailable",
}


def error_body(error_code: str, message: str) -> str:
    """The gateway's JSON error body, for the app's own errors to match.

    .. versionadded:: 0.1
    """
    return json.dumps(
        {"errorCode": error_code, "errorMessage": message, "errors": []},
        separators=(", ", ": "),
    )


class StoreUnavailable(Exception):
    """The key store could not answer (database down, tables missing).

    Raised by the store, turned into a 503 ``gate-unavailable`` by the policy.

    .. versionadded:: 0.1
    """


class GateError(HTTPException):
    """A request the gate refused.

    :param status: the HTTP status (401, 403 or 503).
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

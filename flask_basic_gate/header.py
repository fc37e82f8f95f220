"""Parsing of the ``Authorization`` header for the Basic scheme (RFC 7617).

Pure functions, no Flask: the policy hands the raw header value in and gets
either credentials or the reason they could not be read.

Werkzeug's ``request.authorization`` is not used for the decision because it
folds distinct failures together (``Basic ###`` gives empty credentials, a
token whose bytes are not UTF-8 gives ``None``), and the gateway answers those
cases differently.
"""

from __future__ import annotations

import binascii
import enum
import re
import sys
from base64 import b64decode, b64encode
from typing import NamedTuple, Optional, Union

__all__ = [
    "BasicCredentials",
    "HeaderProblem",
    "has_control_character",
    "is_canonical",
    "parse_basic",
]


class HeaderProblem(enum.Enum):
    """Why an ``Authorization`` header gave no credentials."""

    #: No header, or a header with nothing in it.
    MISSING = "missing"
    #: A scheme other than ``Basic``.
    NOT_BASIC = "not-basic"
    #: ``Basic`` with no token, or a token that is not strict base64.
    MALFORMED = "malformed"
    #: The decoded token has no colon, so no secret was sent.
    NO_SECRET = "no-secret"


class BasicCredentials(NamedTuple):
    """A key and secret read from a Basic ``Authorization`` header."""

    key: str
    secret: str


# Strict base64 (RFC 4648 section 4): the standard alphabet, whole quanta,
# padding only at the end. ``b64decode(validate=True)`` alone still accepts
# data after the padding on Python < 3.13.
_TOKEN = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")

if sys.version_info >= (3, 11):

    def _strict_b64decode(token: str) -> Optional[bytes]:
        # binascii's strict mode and whole quanta are the pattern above, in
        # C: the alphabet, padding only at the end and nothing after it.
        if len(token) % 4 or not token.isascii():
            return None
        try:
            return binascii.a2b_base64(token, strict_mode=True)
        except binascii.Error:
            return None

else:

    def _strict_b64decode(token: str) -> Optional[bytes]:
        if _TOKEN.fullmatch(token) is None:
            return None
        try:
            return b64decode(token)
        except (binascii.Error, ValueError):  # pragma: no cover - the pattern excludes these
            return None


# Optional white space around a field value (RFC 9110 section 5.6.3). WSGI
# servers usually strip it already.
_OWS = " \t"


def parse_basic(value: Optional[str]) -> Union[BasicCredentials, HeaderProblem]:
    """Read key and secret from the value of an ``Authorization`` header.

    :param value: the header value as the WSGI server hands it over (a
        ``str`` holding ISO-8859-1 characters), or ``None`` when the request
        has no such header.
    :return: the credentials, or the :class:`HeaderProblem` that stopped them.

    The scheme is compared case-insensitively and may be followed by one or
    more spaces. The token must be strict base64. Its bytes are read as
    UTF-8 and, when they are not valid UTF-8, as ISO-8859-1 (what ``requests``
    and older browsers send for non-ASCII credentials). The value is split at
    the first colon, so ``a:b:c`` is key ``a`` with secret ``b:c``. (ISO-8859-1
    text whose bytes also happen to be valid UTF-8, such as ``"Ã©"``, is read
    as UTF-8: the two cannot be told apart.)

    .. versionadded:: 0.1
    """
    if value is None:
        return HeaderProblem.MISSING
    value = value.strip(_OWS)
    if not value:
        return HeaderProblem.MISSING
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic":
        return HeaderProblem.NOT_BASIC
    token = token.lstrip(" ")
    if not token:
        return HeaderProblem.MALFORMED
    raw = _strict_b64decode(token)
    if raw is None:
        return HeaderProblem.MALFORMED
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("iso-8859-1")
    key, colon, secret = text.partition(":")
    if not colon:
        return HeaderProblem.NO_SECRET
    return BasicCredentials(key, secret)


# C0 controls and DEL: no credential holds one, and NUL in particular would
# match a shorter secret inside HMAC (it pads short keys with zero bytes).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control_character(text: str) -> bool:
    """Whether ``text`` holds a C0 control character or DEL."""
    return _CONTROL.search(text) is not None


def is_canonical(value: str) -> bool:
    """Whether ``value`` is the one spelling of its credentials the
    verification cache keeps: ``Basic``, one space, and the token exactly
    as base64 encodes its bytes (no other case, spacing or stray bits).

    .. versionadded:: 0.1
    """
    if not value.startswith("Basic "):
        return False
    token = value[6:]
    try:
        return b64encode(b64decode(token, validate=True)).decode("ascii") == token
    except (binascii.Error, ValueError):
        return False

"""Cross-site request forgery: the admin pages' form token and origin check.

A browser attaches the Basic credentials it remembers to every request to
the site, also to a form another site makes it post. So every POST of the
admin pages must pass two checks:

- **origin**: the request came from a page of this site (``Origin``, else
  ``Referer``, else ``Sec-Fetch-Site``; see :func:`origin_problem`);
- **token**: it carries the form token of the admin credential that sent it
  (:func:`form_token`), which a page of another site cannot read.

Pure functions of their arguments: no Flask, no database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from typing import Optional, Protocol
from urllib.parse import urlsplit

from ..records import SecretRecord

__all__ = ["TOKEN_FIELD", "form_token", "origin_problem", "secrets_fingerprint", "token_problem"]

#: The name of the form field that carries the token.
TOKEN_FIELD = "csrf_token"
_DOMAIN = b"flask-basic-gate admin form token v1"


class Headers(Protocol):
    """What :func:`origin_problem` reads headers from (a dict, werkzeug's ``Headers``)."""

    def get(self, name: str) -> Optional[str]: ...


def _framed(*parts: bytes) -> bytes:
    # Each part with its length in front: no two lists of parts give the
    # same bytes.
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def form_token(
    app_secret: Optional[bytes], key_id: int, key: str, secrets: Iterable[SecretRecord]
) -> str:
    """The form token of an admin credential: an HMAC-SHA256 of the key's
    id and name, keyed with the app's ``SECRET_KEY`` (when it has one) and
    the key's stored secrets (their hashes, which only the server reads).

    The same in every process of the app, and for every secret of the key;
    it changes when the key's secrets change (a rotation), when the key is
    made again under the same name, and when ``SECRET_KEY`` changes.

    :param app_secret: the app's ``SECRET_KEY`` as bytes, or ``None``.
    :param secrets: the key's stored secrets, as its lookup returns them.

    .. versionadded:: 0.1
    """
    stored = [
        _framed(str(one.id).encode(), one.method.encode(), one.value.encode())
        for one in sorted(secrets, key=lambda one: one.id)
    ]
    material = hashlib.sha256(_framed(_DOMAIN, app_secret or b"", *stored)).digest()
    mac = hmac.new(material, _framed(str(key_id).encode(), key.encode()), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def token_problem(expected: str, given: Optional[str]) -> Optional[str]:
    """Why the form's token is refused, or ``None`` when it is the expected one.

    .. versionadded:: 0.1
    """
    if not given:
        return "the form carries no token"
    if not hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "replace")):
        return "the form's token is not the one of the key that sent it"
    return None


def origin_problem(scheme: str, host: str, headers: Headers) -> Optional[str]:
    """Why a POST is refused as coming from another site, or ``None``.

    :param scheme: the request's scheme (``http`` or ``https``).
    :param host: the request's ``Host`` (with its port when not the default).
    :param headers: the request's headers.

    ``Sec-Fetch-Site``, when sent, must be ``same-origin``. ``Origin``,
    when sent and not ``null``, must be this site; without it, so must
    ``Referer``. The admin pages send ``Referrer-Policy: no-referrer``, under
    which browsers post forms with ``Origin: null`` and no ``Referer``
    (Fetch standard, "append a request Origin header"): then the browser's
    ``Sec-Fetch-Site: same-origin``, which no page can set, is the proof. A
    request with none of the three is refused.

    .. versionadded:: 0.1
    """
    here = f"{scheme}://{host}".lower()
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site != "same-origin":
        return f"the form was sent by a page of another site (Sec-Fetch-Site: {site})"
    origin = headers.get("Origin")
    if origin is not None and origin != "null":
        if origin.lower() != here:
            return f"the form was sent from {origin}, not from {here}"
        return None
    referer = headers.get("Referer")
    if referer:
        parts = urlsplit(referer)
        sent_from = f"{parts.scheme}://{parts.netloc}".lower()
        if sent_from != here:
            return f"the form was sent from {sent_from}, not from {here}"
        return None
    if site == "same-origin":
        return None
    return "the request says neither where it comes from (Origin, Referer) nor Sec-Fetch-Site"


def secrets_fingerprint(secrets: Iterable[SecretRecord]) -> str:
    """A short digest of which secrets a key holds: a rotation form carries
    it, so that posting the same form twice (a reload) rotates once.

    .. versionadded:: 0.1
    """
    ids = ",".join(str(one.id) for one in sorted(secrets, key=lambda one: one.id))
    return hashlib.sha256(ids.encode()).hexdigest()[:16]

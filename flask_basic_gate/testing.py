"""Helpers for testing apps that use the gate."""

from __future__ import annotations

from base64 import b64encode

__all__ = ["basic_auth_header", "basic_auth_headers"]


def basic_auth_header(key: str, secret: str, *, encoding: str = "utf-8") -> str:
    """The value of an ``Authorization`` header for ``key`` and ``secret``.

    :param encoding: how the credentials are encoded before base64:
        ``"utf-8"`` (RFC 7617) or ``"iso-8859-1"`` (what ``requests`` sends).

    .. versionadded:: 0.1
    """
    token = b64encode(f"{key}:{secret}".encode(encoding)).decode("ascii")
    return f"Basic {token}"


def basic_auth_headers(key: str, secret: str, *, encoding: str = "utf-8") -> dict[str, str]:
    """``{"Authorization": ...}``, ready for ``client.get(url, headers=...)``.

    .. versionadded:: 0.1
    """
    return {"Authorization": basic_auth_header(key, secret, encoding=encoding)}

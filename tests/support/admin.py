"""The admin pages as the tests use them: an app with an admin key, a
client that signs in and posts forms with their token, and a reader of the
pages' markup."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any, Optional

from flask import Flask
from werkzeug.test import TestResponse

from flask_basic_gate.testing import basic_auth_headers

from .apps import AppFactory, provision

#: Where the admin pages are by default.
PREFIX = "/basic-gate/admin"
#: The admin key of :func:`admin_app` and its secret.
ADMIN_KEY, ADMIN_SECRET = "boss", "boss-secret"
#: What the page answers carry, exactly.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none';"
        " form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def admin_app(factory: AppFactory, config: Optional[dict[str, Any]] = None, **kw: Any) -> Flask:
    """An app with the admin pages on, the admin key :data:`ADMIN_KEY` in
    package ``admin``, and key ``criticalmix`` (secret ``topsecret``) in
    ``members``."""
    app = factory({"BASIC_GATE_ADMIN": True, **(config or {})}, **kw)
    provision(app, ADMIN_KEY, ADMIN_SECRET, package="admin")
    provision(app)
    return app


class AdminClient:
    """The test client of an admin app, signed in with a key.

    :meth:`post` sends a form from the page it was last shown: with the
    page's form token and this site's ``Origin``, unless told otherwise.
    """

    origin = "http://localhost"

    def __init__(self, app: Flask, key: str = ADMIN_KEY, secret: str = ADMIN_SECRET) -> None:
        self.app = app
        self.client = app.test_client()
        self.headers = basic_auth_headers(key, secret)
        self.page = ""

    def get(self, path: str, **kw: Any) -> TestResponse:
        response = self.client.get(PREFIX + path, headers=self.headers, **kw)
        self.page = response.get_data(as_text=True)
        response.close()  # a static file's answer holds the file open
        return response

    @property
    def token(self) -> str:
        """The form token of the page last shown."""
        found = re.search(r'name="csrf_token" value="([^"]*)"', self.page)
        assert found is not None, "the page has no form token"
        return found[1]

    def post(
        self,
        path: str,
        data: dict[str, str],
        *,
        token: Optional[str] = "page",
        headers: Optional[dict[str, str]] = None,
    ) -> TestResponse:
        form = dict(data)
        if token == "page":
            form["csrf_token"] = self.token
        elif token is not None:
            form["csrf_token"] = token
        sent = (
            {**self.headers, "Origin": self.origin}
            if headers is None
            else {
                **self.headers,
                **headers,
            }
        )
        response = self.client.post(PREFIX + path, headers=sent, data=form)
        self.page = response.get_data(as_text=True)
        return response


def new_secret(page: str) -> Optional[str]:
    """The secret shown in the element ``new-secret``, or ``None``."""
    found = re.search(r'id="new-secret">([^<]*)<', page)
    return found[1] if found else None


class Markup(HTMLParser):
    """The parts of a page the accessibility checks read."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self._in: list[str] = []
        self.headings: list[tuple[str, str]] = []
        self._heading: Optional[list[str]] = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))
        if tag in ("h1", "h2", "h3"):
            self._heading = [tag]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append((tag, " ".join("".join(self._heading[1:]).split())))
            self._heading = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._heading is not None:
            self._heading.append(data)

    def all(self, tag: str) -> list[dict[str, str]]:
        return [attrs for name, attrs in self.tags if name == tag]

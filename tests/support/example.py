"""The example app (``example_app/``) as the tests build it, and what it serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from flask import Flask

from example_app import create_app

from .apps import FAST_KDF

#: What the ``make_example_app`` fixture gives: ``make(**kw)`` calls :func:`example_app_at`.
MakeApp = Callable[..., Flask]
#: The member the published example shows.
MEMBER_PATH = "/api/v2/members/M0001"
#: The member of the published example, byte for byte in this order.
M0001 = {
    "memberId": "M0001",
    "language": "EN",
    "email": "m0001@example.com",
    "firstName": "John",
    "lastName": "Snow",
    "birthDate": "1984/01/20",
    "address": {"country": "US", "streetAddress": None, "postalcode": "10101"},
}


def example_app_at(
    folder: Path, *, database: bool = True, testing: bool = True, **config: Any
) -> Flask:
    """``example_app.create_app()`` with the cheap KDF, on ``example.sqlite`` in ``folder``.

    :param database: ``False`` leaves the database setting to the example's default.
    :param testing: set ``TESTING``.
    :param config: more settings, applied last.
    """
    settings: dict[str, Any] = {"BASIC_GATE_HASH_METHOD": FAST_KDF}
    if testing:
        settings["TESTING"] = True
    if database:
        settings["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{folder / 'example.sqlite'}"
    settings.update(config)
    return create_app(settings)

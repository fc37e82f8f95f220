"""First start: create the gate's tables and the demo key.

The demo key is made only when the gate's tables did not exist, so a key
disabled or deleted later never comes back, and a database prepared by
other means (``flask basic-gate init-db``, Flask-Migrate) gets no demo key.
Several workers starting at once on a new database are safe: a worker that
loses the race to create the tables or the package leaves it to the winner.

The app starts whatever the state of its database (:func:`start`): when it
cannot be reached, the start logs one line, protected routes answer 503
(the gate fails closed) and a later request provisions it once it answers.
"""

from __future__ import annotations

import sys
import threading
import time

import click
from flask import Flask
from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError

from flask_basic_gate import AdminError, BasicGate, KeyStore
from flask_basic_gate.config import parse_bool
from flask_basic_gate.models import KEY_TABLE

__all__ = [
    "DEMO_KEY",
    "DEMO_PACKAGE",
    "DEMO_SECRET",
    "RETRY_INTERVAL",
    "install_demo_key",
    "provision",
    "start",
]

#: The demo package, key and secret (public: they are in the README).
DEMO_PACKAGE = "members"
DEMO_KEY = "criticalmix"
DEMO_SECRET = "topsecret"
#: Seconds between tries to provision a database that could not be reached.
RETRY_INTERVAL = 1.0


def start(app: Flask) -> bool:
    """Provision the database now if it answers, else on a later request.

    Never raises for an unreachable database: the start logs one line and
    the app serves (its protected routes answer 503 ``gate-unavailable``);
    the first request after the database answers provisions it, at most one
    try per :data:`RETRY_INTERVAL` seconds. ``flask ... --help`` does not
    touch the database at all.

    :return: whether the database was reached now.
    """
    if _help_only():
        _provision_later(app)
        return False
    try:
        provision(app)
    except SQLAlchemyError as exc:
        app.logger.warning(
            "Database not reachable at start (%s); protected routes answer 503 until it"
            " is, and it is provisioned then.",
            _reason(exc),
        )
        _provision_later(app)
        return False
    return True


def provision(app: Flask) -> bool:
    """Create the gate's tables if needed; on a new database, the demo key.

    Turn the demo key off with ``EXAMPLE_DEMO_KEY = False``
    (``FLASK_EXAMPLE_DEMO_KEY=false`` in the environment).

    :return: whether the database was new.
    """
    store = BasicGate.state(app).store
    with app.app_context():
        new = not inspect(store.engine).has_table(KEY_TABLE)
        if not new:
            return False
        try:
            store.create_tables()
        except SQLAlchemyError:
            # Another worker created them between the check and here.
            if not inspect(store.engine).has_table(KEY_TABLE):
                raise
            return False
        if parse_bool("EXAMPLE_DEMO_KEY", app.config.get("EXAMPLE_DEMO_KEY", True)):
            install_demo_key(app, store)
    return True


def install_demo_key(app: Flask, store: KeyStore) -> bool:
    """Provision the demo package and key; ``False`` when they exist already.

    Never logs the secret: it is the public one in the README.
    """
    try:
        store.create_package(DEMO_PACKAGE)
        store.create_key(
            DEMO_PACKAGE,
            key=DEMO_KEY,
            secret=DEMO_SECRET,
            owner_name="Demo developer",
            owner_email="demo@example.com",
        )
    except AdminError:
        return False  # another worker provisioned it first
    app.logger.warning(
        "New database: provisioned the DEMO credential, key %r in package %r (its secret"
        " is the public one in README.md). Anyone who read the README can use it: disable"
        " it with 'flask --app example_app basic-gate disable-key %s' outside a demo.",
        DEMO_KEY,
        DEMO_PACKAGE,
        DEMO_KEY,
    )
    return True


def _help_only() -> bool:
    # The flask command makes the app to list its commands; showing help
    # needs no database.
    return click.get_current_context(silent=True) is not None and "--help" in sys.argv[1:]


def _reason(exc: SQLAlchemyError) -> str:
    # The driver's first line (it names the host, never the password).
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines()
    return f"{type(original).__name__}: {lines[0] if lines else ''}".strip()


def _provision_later(app: Flask) -> None:
    # Runs before the gate's guard, so the request that finds the database
    # back also finds the tables made; the others go on to the gate, which
    # answers 503 while the database is away.
    lock = threading.Lock()
    pending = {"done": False, "next": 0.0}

    def provision_pending() -> None:
        if pending["done"]:
            return
        now = time.monotonic()
        if now < pending["next"] or not lock.acquire(blocking=False):
            return
        try:
            pending["next"] = now + RETRY_INTERVAL
            try:
                provision(app)
            except SQLAlchemyError as exc:
                app.logger.debug("Database still not reachable: %s", _reason(exc))
                return
            pending["done"] = True
            app.logger.warning("Database reachable: the example app is ready.")
        finally:
            lock.release()

    app.before_request_funcs.setdefault(None, []).insert(0, provision_pending)

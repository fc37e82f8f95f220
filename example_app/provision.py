"""First start: create the gate's tables and the demo key.

The demo key is made only when the gate's tables did not exist, so a key
disabled or deleted later never comes back, and a database prepared by
other means (``flask basic-gate init-db``, Flask-Migrate) gets no demo key.
Several workers starting at once on a new database are safe: a worker that
loses the race to create the tables or the package leaves it to the winner.
"""

from __future__ import annotations

from flask import Flask
from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError

from flask_basic_gate import AdminError, BasicGate, KeyStore
from flask_basic_gate.config import parse_bool
from flask_basic_gate.models import KEY_TABLE

__all__ = ["DEMO_KEY", "DEMO_PACKAGE", "DEMO_SECRET", "install_demo_key", "provision"]

#: The demo package, key and secret (public: they are in the README).
DEMO_PACKAGE = "members"
DEMO_KEY = "criticalmix"
DEMO_SECRET = "topsecret"


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

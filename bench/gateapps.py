"""Apps guarded by flask-basic-gate over a key store (SQLite or a server), built by its API."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from bench.keydb import PACKAGE
from bench.peers import add_member_route
from flask_basic_gate import BasicGate
from flask_basic_gate.store import NewSecret


def gate_app(where: Union[Path, str], name: str, **config: Any) -> tuple[Flask, BasicGate]:
    """A Flask app with the member route, guarded by a gate over the SQLite file or URL ``where``.

    :param where: a SQLite file, or the database URL of a server.
    :param config: extra settings, e.g. ``BASIC_GATE_CACHE_TTL=0``.
    """
    url = where if isinstance(where, str) else f"sqlite:///{where.resolve()}"
    app = Flask(name)
    app.config.update(SQLALCHEMY_DATABASE_URI=url, **config)
    db = SQLAlchemy()
    db.init_app(app)
    gate = BasicGate(app, db)
    add_member_route(app)
    return app, gate


def provision(app: Flask, gate: BasicGate, *, secret: Optional[str] = None) -> NewSecret:
    """Create the gate's tables, the :data:`~bench.keydb.PACKAGE` package and one key.

    :param secret: a person-chosen secret (hashed with the KDF); ``None``
        generates one (stored as SHA-256).
    """
    with app.app_context():
        store = gate.store
        store.create_tables()
        store.create_package(PACKAGE)
        return store.create_key(PACKAGE, secret=secret)


def add_key(app: Flask, gate: BasicGate, *, secret: Optional[str] = None) -> NewSecret:
    """Add one more key to :data:`~bench.keydb.PACKAGE`."""
    with app.app_context():
        return gate.store.create_key(PACKAGE, secret=secret)

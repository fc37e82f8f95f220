"""Apps guarded by flask-basic-gate over a key store (SQLite or a server), built by its API.

The app and its gate are the tests' (:func:`tests.support.apps.gate_app`,
without the tests' cheap KDF or ``TESTING``), serving the member route;
keys go in with the tests' :func:`~tests.support.apps.provision`, in
:data:`~bench.keydb.PACKAGE`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from flask import Flask

from bench.keydb import PACKAGE
from bench.peers import add_member_route
from flask_basic_gate import BasicGate
from flask_basic_gate.store import NewSecret
from tests.support import apps


def gate_app(where: Union[Path, str], name: str, **config: Any) -> tuple[Flask, BasicGate]:
    """A Flask app with the member route, guarded by a gate over the SQLite file or URL ``where``.

    :param where: a SQLite file, or the database URL of a server.
    :param config: extra settings, e.g. ``BASIC_GATE_CACHE_TTL=0``.
    """
    url = where if isinstance(where, str) else f"sqlite:///{where.resolve()}"
    app, gate = apps.gate_app(url, config, name=name)
    add_member_route(app)
    return app, gate


def provision(app: Flask, *, secret: Optional[str] = None) -> NewSecret:
    """Create the gate's tables, the :data:`~bench.keydb.PACKAGE` package and one key.

    :param secret: a person-chosen secret (hashed with the KDF); ``None``
        generates one (stored as SHA-256).
    """
    with app.app_context():
        BasicGate.state().store.create_tables()
    return add_key(app, secret=secret)


def add_key(app: Flask, *, secret: Optional[str] = None) -> NewSecret:
    """Add a key with a generated name to :data:`~bench.keydb.PACKAGE` (made if missing)."""
    return apps.provision(app, None, secret, package=PACKAGE)

"""The members API of the gateway's published example, behind flask-basic-gate.

Run it with ``flask --app example_app run``: with no setting at all it keeps
its keys in a SQLite file in Flask's instance folder and, on the first start,
provisions the demo key ``criticalmix`` of package ``members`` (its secret is
in the README). It starts whatever the state of its database: one that
cannot be reached is provisioned by the first request after it answers,
and until then protected routes answer 503. Settings come from the environment through
:meth:`flask.Config.from_prefixed_env`, for example
``FLASK_SQLALCHEMY_DATABASE_URI=postgresql+psycopg://...`` or
``FLASK_BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE=true``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Optional

import click
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_basic_gate import BasicGate, ConfigurationError

__all__ = ["create_app", "db", "gate"]

#: The app's Flask-SQLAlchemy object; the gate's tables live in its metadata.
db = SQLAlchemy()
#: The gate: every route is protected unless marked ``@gate.exempt``.
gate = BasicGate(db=db)


def create_app(config: Optional[Mapping[str, Any]] = None) -> Flask:
    """Make the example app.

    Settings are read in this order, later ones winning: the defaults below,
    ``FLASK_*`` environment variables, then ``config``.

    :param config: settings that override everything else (tests use it).

    Settings of the example itself:

    ``EXAMPLE_DEMO_KEY`` (default true)
        Provision the demo key when the gate's tables are first created.
    ``SQLALCHEMY_DATABASE_URI`` (default ``sqlite:///<instance>/example.sqlite``)
        Where the keys are kept.
    """
    app = Flask(__name__)
    app.config.from_mapping(EXAMPLE_DEMO_KEY=True)
    app.config.from_prefixed_env()
    if config is not None:
        # update, not from_mapping: the latter drops names that are not upper
        # case, such as the connector's Keep_Mashery_Default_Response_Code.
        app.config.update(config)
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        os.makedirs(app.instance_path, exist_ok=True)
        path = os.path.join(app.instance_path, "example.sqlite")
        app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{path}"
    # Keep the members' fields in the order of the published example.
    app.json.sort_keys = False  # type: ignore[attr-defined]

    db.init_app(app)
    try:
        gate.init_app(app)
    except ConfigurationError as exc:
        if click.get_current_context(silent=True) is None:
            raise
        # Made by the flask command (run, basic-gate ...): a bad setting is
        # one line, "Error: BASIC_GATE_... is not valid: ...", not a
        # traceback whose last line says it.
        raise click.ClickException(str(exc)) from None

    from . import views
    from .provision import start

    app.register_blueprint(views.bp)
    views.register_error_handlers(app)
    start(app)
    return app

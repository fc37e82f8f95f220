"""The ``flask basic-gate`` commands: key administration from the shell."""

from __future__ import annotations

import click
from flask.cli import AppGroup

__all__ = ["basic_gate_cli"]

basic_gate_cli = AppGroup("basic-gate", help="Manage the gate's packages, keys and secrets.")


@basic_gate_cli.command("init-db")
def init_db() -> None:
    """Create the gate's tables (only those)."""
    from .extension import BasicGate

    BasicGate.state().store.create_tables()
    click.echo("basic-gate tables created")

"""``flask basic-gate`` through Flask's CLI runner, and what a command must print.

Every command prints ``database: <URL>`` on stderr first, and a command that
wrote says on stderr last where its change went (:data:`ANNOUNCEMENT`);
:func:`ok` and :func:`refused` allow those lines.
"""

from __future__ import annotations

import re
from typing import Optional

from click.testing import Result
from flask import Flask
from flask.testing import FlaskCliRunner

DATABASE_LINE = re.compile(r"database: \S+")
#: The last line on stderr of a command that wrote: where the change went.
ANNOUNCEMENT = re.compile(
    r"announced on Redis \S+|no BASIC_GATE_REDIS_URL: .*|nothing to announce: .*"
    r"|could not announce this change on Redis .*"
)


def cli_runner(app: Flask) -> FlaskCliRunner:
    """A runner that keeps stderr apart from stdout on every Click version."""
    try:
        return app.test_cli_runner(mix_stderr=False)  # Click < 8.2
    except TypeError:  # Click >= 8.2 always keeps them apart
        return app.test_cli_runner()


def gate(app: Flask, *args: str, input: Optional[str] = None) -> Result:
    """Run ``flask basic-gate ARGS`` on ``app``."""
    return cli_runner(app).invoke(args=["basic-gate", *args], input=input)


def without_database_line(stderr: str) -> list[str]:
    """stderr's lines after the ``database:`` line a command starts with,
    and before the announcement a command that wrote ends with."""
    lines = stderr.splitlines()
    if lines and DATABASE_LINE.fullmatch(lines[0]):
        lines = lines[1:]
    if lines and ANNOUNCEMENT.fullmatch(lines[-1]):
        lines = lines[:-1]
    return lines


def ok(result: Result) -> list[str]:
    """The stdout lines of a command that must have succeeded."""
    assert result.exit_code == 0, (result.exit_code, result.output)
    assert without_database_line(result.stderr) == []
    return result.stdout.splitlines()


def refused(result: Result, message: str) -> None:
    """A one-line error on stderr, nothing on stdout, exit status 1."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert result.stdout == ""
    lines = without_database_line(result.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: ")
    assert message in lines[0], lines[0]

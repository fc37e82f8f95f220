"""What ships besides the code: one version, docs that match the code, a
quick start that works word for word, and a migration that matches the models.
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import inspect

import flask_basic_gate
from flask_basic_gate import config
from flask_basic_gate.cli import basic_gate_cli
from flask_basic_gate.testing import basic_auth_headers

from .support import ROOT
from .support.apps import GATE_TABLES, dispose, gate_app
from .support.docs import DOCS, example_migrations, needs_docs, page_session
from .support.servers import child_env


def test_one_version() -> None:
    assert flask_basic_gate.__version__ == importlib.metadata.version("flask-basic-gate")


def test_changelog_names_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.rst").read_text(encoding="utf-8")
    assert f"Version {flask_basic_gate.__version__}\n" in changelog


# -- the docs follow the code ---------------------------------------------------


@needs_docs
def test_every_setting_is_documented() -> None:
    text = (DOCS / "configuration.rst").read_text(encoding="utf-8")
    entries = dict(
        re.findall(r"\.\. py:data:: (\S+)\n(.*?)(?=\n\.\. py:data::|\nSummary)", text, re.S)
    )
    for name, default in config.DEFAULTS.items():
        assert name in entries, f"{name} is missing from docs/configuration.rst"
        body = entries[name]
        assert "versionadded::" in body, name
        shown = "None" if default is None else repr(default).replace("'", '"')
        if isinstance(default, int) and not isinstance(default, bool):
            shown = str(default)
        assert f"Default: ``{shown}``" in body, f"{name}: the default shown is not {shown}"
    assert config.MASHERY_ALIAS in text


@needs_docs
def test_every_command_is_documented() -> None:
    text = (DOCS / "cli.rst").read_text(encoding="utf-8")
    for name in basic_gate_cli.commands:
        heading = rf"^.*``{re.escape(name)}(?: [^`]*)?``.*\n---"
        assert re.search(heading, text, re.M), f"{name} has no section in docs/cli.rst"


@needs_docs
def test_every_public_name_is_in_the_reference() -> None:
    text = (DOCS / "api.rst").read_text(encoding="utf-8")
    for name in flask_basic_gate.__all__:
        if name != "__version__":
            assert re.search(rf"::\s+{name}\b", text), f"{name} is not in docs/api.rst"


# -- the quick start, word for word -------------------------------------------


@pytest.fixture
def quickstart(tmp_path: Path) -> Iterator[Path]:
    shutil.copy(DOCS / "quickstart" / "hello.py", tmp_path / "hello.py")
    yield tmp_path
    sys.modules.pop("hello", None)


@needs_docs
def test_quickstart_word_for_word(quickstart: Path) -> None:
    page = (DOCS / "quickstart.rst").read_text(encoding="utf-8")
    steps = page_session(page, "flask --app hello basic-gate ")
    assert [cmd.split()[4] for cmd, _ in steps] == [
        "init-db",
        "create-package",
        "create-key",
        "disable-key",
    ]
    env = child_env()
    run = {}
    for command, shown in steps:
        args = [sys.executable, "-m", *shlex.split(command)]
        result = subprocess.run(
            args, cwd=quickstart, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, (command, result.stderr)
        assert result.stdout.splitlines() == shown, command
        run[command.split()[4]] = command
        if command.split()[4] == "create-key":
            _check_calls(quickstart)
    assert (quickstart / "instance" / "hello.sqlite").is_file()


def _check_calls(folder: Path) -> None:
    """What the page's curl lines show, through the test client."""
    sys.path.insert(0, str(folder))
    try:
        import hello
    finally:
        sys.path.remove(str(folder))
    app: Flask = hello.create_app()
    client = app.test_client()
    try:
        ok = client.get("/hello", headers=basic_auth_headers("criticalmix", "topsecret"))
        assert ok.status_code == 200
        assert ok.get_data(as_text=True).strip() == '{"key":"criticalmix","package":"members"}'

        missing = client.get("/hello")
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"] == 'Basic realm="api", charset="UTF-8"'
        assert missing.get_data(as_text=True) == (
            '{"errorCode": "authorization-required", "errorMessage":'
            ' "Authorization is Required", "errors": []}\n'
        )

        wrong = client.get("/hello", headers=basic_auth_headers("criticalmix", "wrong"))
        assert wrong.status_code == 403
        assert wrong.get_data(as_text=True) == (
            '{"errorCode": "invalid-credentials", "errorMessage":'
            ' "Invalid Authentication Credentials", "errors": []}\n'
        )

        health = client.get("/health")
        assert health.get_data(as_text=True).strip() == '{"status":"ok"}'
    finally:
        dispose(app)


# -- the example migration matches the models ---------------------------------


@needs_docs
def test_example_migration_matches_the_models(database_url: str) -> None:
    pytest.importorskip("alembic")
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    app, _ = gate_app(database_url, {"BASIC_GATE_HASH_METHOD": "pbkdf2"})
    db = app.extensions["sqlalchemy"]
    migrations = example_migrations()
    tables = set(GATE_TABLES)
    with app.app_context():
        db.drop_all()
        engine = db.engine
        try:
            with engine.begin() as conn:
                context = MigrationContext.configure(conn, opts={"compare_type": True})
                with Operations.context(context):
                    for migration in migrations:
                        migration["upgrade"]()
            with engine.connect() as conn:
                context = MigrationContext.configure(conn, opts={"compare_type": True})
                assert compare_metadata(context, db.metadata) == []
                if engine.dialect.name in ("mysql", "mariadb"):
                    columns = {c["name"]: c for c in inspect(conn).get_columns("basic_gate_key")}
                    assert columns["key"]["type"].collation == "utf8mb4_bin"
            with engine.begin() as conn:
                context = MigrationContext.configure(conn)
                with Operations.context(context):
                    for migration in reversed(migrations):
                        migration["downgrade"]()
            assert tables.isdisjoint(inspect(engine).get_table_names())
        finally:
            db.drop_all()
            engine.dispose()

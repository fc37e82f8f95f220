"""The ``flask basic-gate`` commands, through Flask's CLI runner.

Every command on success, every error path (one line on stderr, exit status
1, nothing written), and that no command but create-key and rotate-secret
ever prints a secret. A command that writes prints ``database: <URL>`` on
stderr first; :func:`ok` and :func:`refused` allow that one line.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, inspect, make_url, select, update

from flask_basic_gate import AdminError, BasicGate
from flask_basic_gate.backends import redis_client
from flask_basic_gate.revocation import RedisRevocation
from flask_basic_gate.store.admin import generate_key
from flask_basic_gate.testing import basic_auth_headers

from .support import ROOT
from .support.apps import FAST_KDF, GATE_TABLES, AppFactory, dispose, gate_app, provision
from .support.backends import backend_url
from .support.cli import gate, ok, refused, without_database_line
from .support.servers import child_env, free_port


def status(app: Flask, key: str, secret: str) -> tuple[int, Any]:
    """Status and JSON of ``GET /thing`` with these credentials."""
    response = app.test_client().get("/thing", headers=basic_auth_headers(key, secret))
    return response.status_code, response.get_json()


def keys_listed(app: Flask) -> list[str]:
    """The keys ``list-keys`` shows."""
    lines = ok(gate(app, "list-keys"))
    if lines == ["no keys"]:
        return []
    return [line.split()[0] for line in lines[1:]]


def listing(app: Flask, *args: str) -> list[dict[str, str]]:
    """The rows ``list-keys ARGS`` prints, each by column name (the cells
    start where the header's names start)."""
    header, *lines = ok(gate(app, "list-keys", *args))
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    return [
        {
            name: line[start:end].strip()
            for name, start, end in zip(names, starts, [*starts[1:], None])
        }
        for line in lines
    ]


def stored_secrets(app: Flask) -> list[tuple[str, str]]:
    """Every stored secret as (method, value)."""
    with app.app_context():
        store = BasicGate.state().store
        m = store.models
        with store.engine.connect() as conn:
            rows = conn.execute(select(m.KeySecret.method, m.KeySecret.value)).all()
    return [(method, value) for method, value in rows]


def db_bytes(tmp_path: Path) -> bytes:
    """The SQLite file the app factory uses, as bytes."""
    return (tmp_path / "gate.sqlite").read_bytes()


@pytest.fixture
def app(app_factory: AppFactory) -> Flask:
    """An app with the gate's tables and package ``members``, no key."""
    app = app_factory()
    ok(gate(app, "create-package", "members"))
    return app


# -- init-db ---------------------------------------------------------------


def test_init_db_creates_only_the_gate_tables(app_factory: AppFactory) -> None:
    app = app_factory(create=False)
    db: Any = app.extensions["sqlalchemy"]

    class Other(db.Model):  # type: ignore[misc]
        __tablename__ = "not_the_gates"
        id = db.Column(db.Integer, primary_key=True)

    assert ok(gate(app, "init-db")) == ["basic-gate tables created"]
    with app.app_context():
        assert set(inspect(db.engine).get_table_names()) == set(GATE_TABLES)
    # Idempotent, and says it found them.
    assert ok(gate(app, "init-db")) == ["basic-gate tables found: nothing to create"]
    with app.app_context():
        BasicGate.state().store.models.KeySecret.__table__.drop(db.engine)
    assert ok(gate(app, "init-db")) == [
        "basic-gate tables created: basic_gate_secret (the others existed)"
    ]


def test_command_before_init_db_tells_what_to_run(app_factory: AppFactory) -> None:
    app = app_factory(create=False)
    refused(gate(app, "list-keys"), "run 'flask basic-gate init-db'")
    refused(gate(app, "create-package", "members"), "flask basic-gate init-db")


# -- create-package ----------------------------------------------------------


def test_create_package(app: Flask) -> None:
    assert ok(gate(app, "create-package", "partners")) == ["package 'partners' created"]
    ok(gate(app, "create-key", "--package", "partners", "--key", "p1"))
    [row] = listing(app, "--package", "partners")
    assert (row["KEY"], row["PACKAGE"]) == ("p1", "partners")


def test_create_package_twice_refused(app: Flask) -> None:
    refused(gate(app, "create-package", "members"), "package 'members' exists already")


# -- create-key --------------------------------------------------------------


def test_create_key_given_prints_two_lines_and_works(app: Flask) -> None:
    lines = ok(
        gate(
            app,
            "create-key",
            "--package",
            "members",
            "--key",
            "criticalmix",
            "--secret",
            "topsecret",
            "--developer",
            "dev@example.com",
            "--owner",
            "Dev Shop",
        )
    )
    assert lines == ["key: criticalmix", "secret: topsecret"]
    assert status(app, "criticalmix", "topsecret") == (
        200,
        {
            "key": "criticalmix",
            "package": "members",
            "owner": "dev@example.com",
            "authorization": basic_auth_headers("criticalmix", "topsecret")["Authorization"],
        },
    )
    assert status(app, "criticalmix", "wrong")[0] == 403
    # A person's secret goes through the configured KDF.
    [(method, value)] = stored_secrets(app)
    assert method == "werkzeug"
    assert value.startswith(FAST_KDF + "$")


def test_create_key_generated_secret_shown_once(app: Flask, tmp_path: Path) -> None:
    lines = ok(gate(app, "create-key", "--package", "members"))
    assert len(lines) == 2
    key_line = re.fullmatch(r"key: (\S+)", lines[0])
    secret_line = re.fullmatch(r"secret: (\S+)", lines[1])
    assert key_line and secret_line
    key, secret = key_line[1], secret_line[1]
    assert len(secret) >= 43  # 32 random bytes, URL-safe base64
    assert status(app, key, secret)[0] == 200
    # Not kept anywhere readable, and never shown again.
    [(method, value)] = stored_secrets(app)
    assert method == "sha256"
    assert secret not in value
    assert secret.encode() not in db_bytes(tmp_path)
    listing = gate(app, "list-keys")
    assert key in listing.output
    assert secret not in listing.output
    assert value not in listing.output


def test_create_key_generated_secrets_differ(app: Flask) -> None:
    first = ok(gate(app, "create-key", "--package", "members"))
    second = ok(gate(app, "create-key", "--package", "members"))
    assert first[0] != second[0]
    assert first[1] != second[1]


def test_create_key_secret_from_stdin(app: Flask, tmp_path: Path) -> None:
    result = gate(
        app, "create-key", "--package", "members", "--key", "k", "--secret", "-", input="päss\n"
    )
    assert ok(result) == ["key: k", "secret: päss"]
    assert status(app, "k", "päss")[0] == 200
    assert "päss".encode() not in db_bytes(tmp_path)


def test_create_key_default_kdf_is_scrypt(app_factory: AppFactory) -> None:
    # The one CLI test on the default KDF; the others use a cheap one.
    app = app_factory({"BASIC_GATE_HASH_METHOD": "scrypt"})
    ok(gate(app, "create-package", "members"))
    ok(gate(app, "create-key", "--package", "members", "--key", "k", "--secret", "s3cret"))
    [(method, value)] = stored_secrets(app)
    assert (method, value.split("$")[0]) == ("werkzeug", "scrypt:32768:8:1")
    assert status(app, "k", "s3cret")[0] == 200


@pytest.mark.parametrize(
    ("expires", "shown"),
    [
        ("2031-06-01", "2031-06-01T00:00:00Z"),
        ("2031-06-01T12:30:00", "2031-06-01T12:30:00Z"),
        ("2031-06-01T12:30:00Z", "2031-06-01T12:30:00Z"),
        ("2031-06-01T12:30:00+02:00", "2031-06-01T10:30:00Z"),
    ],
)
def test_create_key_expires_iso8601_naive_is_utc(app: Flask, expires: str, shown: str) -> None:
    ok(gate(app, "create-key", "--package", "members", "--key", "k", "--expires", expires))
    assert listing(app)[0]["EXPIRES"] == shown


def test_create_key_not_yet_valid(app: Flask) -> None:
    ok(
        gate(
            app,
            *("create-key", "--package", "members", "--key", "k", "--secret", "s"),
            *("--not-before", "2999-01-01T00:00:00Z"),
        )
    )
    code, body = status(app, "k", "s")
    assert (code, body["errorCode"]) == (403, "key-inactive")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--package", "nope"], "no package named 'nope'"),
        (["--package", "member"], "no package named 'member' (did you mean 'members'?)"),
        (["--package", "MEMBERS"], "no package named 'MEMBERS' (did you mean 'members'?)"),
        (["--package", "members", "--expires", "tomorrow"], "--expires 'tomorrow' is not an ISO"),
        (["--package", "members", "--expires", "2031-13-01"], "'2031-13-01': month must be in"),
        (
            ["--package", "members", "--expires", "2027-02-30"],
            "--expires '2027-02-30': day is out of range for month",
        ),
        (
            ["--package", "members", "--expires", "2031-01-31T25:00:00Z"],
            "--expires '2031-01-31T25:00:00Z': hour must be in 0..23",
        ),
        (["--package", "members", "--not-before", "soon"], "--not-before 'soon' is not an ISO"),
        (["--package", "members", "--expires", "2001-01-01"], "is in the past"),
        (
            ["--package", "members", "--not-before", "2032-01-01", "--expires", "2031-01-01"],
            "expire before it becomes valid",
        ),
        (["--package", "members", "--key", "a:b"], "no colon"),
        (["--package", "members", "--secret", ""], "a secret cannot be empty"),
    ],
)
def test_create_key_bad_input_writes_nothing(app: Flask, args: list[str], message: str) -> None:
    refused(gate(app, "create-key", "--key", "k", *args), message)
    assert keys_listed(app) == []
    assert stored_secrets(app) == []


def test_create_key_duplicate_refused_and_original_kept(
    app_factory: AppFactory, database_url: str
) -> None:
    app = app_factory(url=database_url)
    ok(gate(app, "create-package", "members"))
    ok(gate(app, "create-key", "--package", "members", "--key", "k", "--secret", "first"))
    refused(
        gate(app, "create-key", "--package", "members", "--key", "k", "--secret", "second"),
        "key 'k' exists already",
    )
    assert keys_listed(app) == ["k"]
    assert status(app, "k", "first")[0] == 200
    assert status(app, "k", "second")[0] == 403


def test_keys_are_case_sensitive(app: Flask) -> None:
    ok(gate(app, "create-key", "--package", "members", "--key", "Key", "--secret", "a"))
    ok(gate(app, "create-key", "--package", "members", "--key", "key", "--secret", "b"))
    assert keys_listed(app) == ["Key", "key"]


def test_missing_package_option_is_a_usage_error(app: Flask) -> None:
    result = gate(app, "create-key")
    assert result.exit_code == 2
    assert "--package" in result.stderr


# -- disable-key / enable-key --------------------------------------------------


def test_disable_and_enable_take_effect_at_once_here(app: Flask) -> None:
    provision(app, key="k", secret="s")
    assert status(app, "k", "s")[0] == 200  # now cached in this process
    assert ok(gate(app, "disable-key", "k")) == ["key 'k' disabled"]
    code, body = status(app, "k", "s")
    assert (code, body["errorCode"]) == (403, "key-inactive")
    assert listing(app)[0]["STATE"] == "disabled"
    assert ok(gate(app, "enable-key", "k")) == ["key 'k' enabled"]
    assert status(app, "k", "s")[0] == 200


@pytest.mark.parametrize("command", ["disable-key", "enable-key", "rotate-secret"])
def test_unknown_key_refused(app: Flask, command: str) -> None:
    refused(gate(app, command, "nope"), "no key 'nope'")


# -- rotate-secret ---------------------------------------------------------------


def test_rotate_generated_old_stops_at_once(app: Flask, tmp_path: Path) -> None:
    provision(app, key="k", secret="old")
    assert status(app, "k", "old")[0] == 200
    lines = ok(gate(app, "rotate-secret", "k"))
    assert lines[0] == "key: k"
    secret = re.fullmatch(r"secret: (\S+)", lines[1])
    assert secret
    assert status(app, "k", secret[1])[0] == 200
    assert status(app, "k", "old")[0] == 403
    assert secret[1].encode() not in db_bytes(tmp_path)


def test_rotate_given_secret_with_grace(app: Flask) -> None:
    provision(app, key="k", secret="old")
    lines = ok(gate(app, "rotate-secret", "k", "--secret", "new", "--grace", "3600"))
    assert lines == ["key: k", "secret: new"]
    assert status(app, "k", "new")[0] == 200
    assert status(app, "k", "old")[0] == 200
    assert listing(app)[0]["SECRETS"] == "2"
    # A rotation without grace removes every older secret.
    ok(gate(app, "rotate-secret", "k", "--secret", "newest"))
    assert status(app, "k", "old")[0] == 403
    assert status(app, "k", "new")[0] == 403
    assert status(app, "k", "newest")[0] == 200


def test_rotate_secret_from_stdin(app: Flask) -> None:
    provision(app, key="k", secret="old")
    result = gate(app, "rotate-secret", "k", "--secret", "-", input="from-stdin\n")
    assert ok(result) == ["key: k", "secret: from-stdin"]
    assert status(app, "k", "from-stdin")[0] == 200


@pytest.mark.parametrize(
    ("grace", "message"),
    [
        ("-1", "the grace period cannot be negative"),
        ("inf", "--grace inf is out of range"),
        ("nan", "--grace nan is out of range"),
        ("1e20", "--grace 1e+20 is out of range"),
    ],
)
def test_rotate_bad_grace_refused(app: Flask, grace: str, message: str) -> None:
    provision(app, key="k", secret="old")
    refused(gate(app, "rotate-secret", "k", "--grace", grace), message)
    assert status(app, "k", "old")[0] == 200
    assert listing(app)[0]["SECRETS"] == "1"


# -- list-keys -------------------------------------------------------------------


def test_list_keys_columns_and_never_a_secret(app: Flask) -> None:
    ok(gate(app, "create-package", "partners"))
    provision(app, key="criticalmix", secret="topsecret-1", owner_email="dev@example.com")
    ok(
        gate(
            app,
            *("create-key", "--package", "partners", "--key", "p1", "--secret", "topsecret-2"),
            *("--owner", "Dev Shop", "--developer", "shop@example.com"),
            *("--not-before", "2030-01-01", "--expires", "2031-01-01"),
        )
    )
    ok(gate(app, "create-key", "--package", "partners", "--key", "p2", "--secret", "topsecret-3"))
    ok(gate(app, "disable-key", "p2"))
    lines = ok(gate(app, "list-keys"))
    assert lines[0].split() == [
        *("KEY", "PACKAGE", "STATE", "NOT-BEFORE", "EXPIRES", "SECRETS", "SECRETS-EXPIRE"),
        *("QPS", "QUOTA", "DEVELOPER", "OWNER"),
    ]
    unlimited = ("unlimited", "unlimited")
    assert [list(row.values()) for row in listing(app)] == [
        [
            *("criticalmix", "members", "active", "none", "never", "1", "never"),
            *unlimited,
            *("dev@example.com", "-"),
        ],
        [
            *("p1", "partners", "not-yet-valid", "2030-01-01T00:00:00Z", "2031-01-01T00:00:00Z"),
            *("1", "never", *unlimited, "shop@example.com", "Dev Shop"),
        ],
        ["p2", "partners", "disabled", "none", "never", "1", "never", *unlimited, "-", "-"],
    ]
    output = "\n".join(lines)
    assert "topsecret" not in output
    for _, value in stored_secrets(app):
        assert value not in output
    assert [row["KEY"] for row in listing(app, "--package", "partners")] == ["p1", "p2"]


def set_secret_expiry(app: Flask, key: str, when: dt.datetime) -> None:
    """Give every secret of ``key`` this expiry, behind the store's back."""
    with app.app_context():
        store = BasicGate.state().store
        m = store.models
        with store.engine.begin() as conn:
            key_id = conn.execute(select(m.PackageKey.id).where(m.PackageKey.key == key)).scalar()
            conn.execute(
                update(m.KeySecret).where(m.KeySecret.key_id == key_id).values(expires_at=when)
            )


def test_list_keys_state_is_what_the_gate_does(app: Flask) -> None:
    """Each state list-keys shows matches the gate's answer to that key's
    right secret: 200 for active, 403 key-inactive for the three others."""
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    with app.app_context():
        store = BasicGate.state().store
        for key in ("on", "off", "old", "later"):
            store.create_key("members", key=key, secret="s")
        store.disable_key("off")
        store.update_key("old", expires_at=now - dt.timedelta(seconds=1))
        store.update_key("later", not_before=now + dt.timedelta(days=1))
    states = {row["KEY"]: row["STATE"] for row in listing(app)}
    assert states == {
        "on": "active",
        "off": "disabled",
        "old": "expired",
        "later": "not-yet-valid",
    }
    for key, state in states.items():
        code, body = status(app, key, "s")
        if state == "active":
            assert code == 200
        else:
            assert (code, body["errorCode"]) == (403, "key-inactive"), key
    for state in ("active", "disabled", "expired", "not-yet-valid"):
        shown = [row["KEY"] for row in listing(app, "--state", state)]
        assert shown == [key for key, s in states.items() if s == state]
    assert ok(gate(app, "list-keys", "--package", "members", "--state", "expired"))[1:] != []


def test_list_keys_state_filter_empty_and_bad(app: Flask) -> None:
    provision(app, key="k", secret="s")
    assert ok(gate(app, "list-keys", "--state", "expired")) == ["no keys in state 'expired'"]
    assert ok(gate(app, "list-keys", "--package", "members", "--state", "disabled")) == [
        "no keys in package 'members' in state 'disabled'"
    ]
    result = gate(app, "list-keys", "--state", "paused")
    assert result.exit_code == 2
    assert "'paused' is not one of" in result.stderr


def test_list_keys_counts_only_live_secrets(app: Flask) -> None:
    provision(app, key="k", secret="old")
    ok(gate(app, "rotate-secret", "k", "--secret", "new", "--grace", "3600"))
    [row] = listing(app)
    assert row["SECRETS"] == "2"
    until, never = row["SECRETS-EXPIRE"].split(",")
    assert never == "never"
    soon = dt.datetime.strptime(until, "%Y-%m-%dT%H:%M:%SZ")
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    assert now < soon <= now + dt.timedelta(seconds=3601)
    # Once the grace period is over the old secret is not counted (nor does it work).
    with app.app_context():
        store = BasicGate.state().store
        m = store.models
        with store.engine.begin() as conn:
            conn.execute(
                update(m.KeySecret)
                .where(m.KeySecret.expires_at.is_not(None))
                .values(expires_at=now - dt.timedelta(seconds=1))
            )
    [row] = listing(app)
    assert (row["SECRETS"], row["SECRETS-EXPIRE"]) == ("1", "never")
    assert status(app, "k", "old")[0] == 403
    assert status(app, "k", "new")[0] == 200


# -- show-key --------------------------------------------------------------------


def test_show_key(app: Flask) -> None:
    ok(
        gate(
            app,
            *("create-key", "--package", "members", "--key", "k", "--secret", "topsecret"),
            *("--owner", "Dev Shop", "--developer", "dev@example.com"),
            *("--not-before", "2030-01-01T08:00:00Z", "--expires", "2031-01-01"),
        )
    )
    ok(gate(app, "rotate-secret", "k", "--secret", "topsecret-2", "--grace", "60"))
    lines = ok(gate(app, "show-key", "k"))
    fields = dict(line.split(":", 1) for line in lines if not line.startswith("  "))
    fields = {name: value.strip() for name, value in fields.items()}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", fields.pop("created"))
    assert fields == {
        "key": "k",
        "package": "members",
        "state": "not-yet-valid",
        "status": "active",
        "not-before": "2030-01-01T08:00:00Z",
        "expires": "2031-01-01T00:00:00Z",
        "qps": "unlimited",
        "quota": "unlimited",
        "owner": "Dev Shop",
        "developer": "dev@example.com",
        "live secrets": "2",
        "usage": "none in the last 7 days",
    }
    secrets = [line.strip() for line in lines if line.startswith("  ")]
    assert len(secrets) == 2
    assert re.fullmatch(r"1\. expires \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", secrets[0])
    assert secrets[1] == "2. expires never"
    output = "\n".join(lines)
    assert "topsecret" not in output
    for _, value in stored_secrets(app):
        assert value not in output


def show_key_fields(app: Flask, key: str) -> dict[str, str]:
    """The ``name: value`` lines ``show-key KEY`` prints (not the secrets')."""
    lines = ok(gate(app, "show-key", key))
    pairs = [line.split(":", 1) for line in lines if not line.startswith("  ")]
    return {name: value.strip() for name, value in pairs}


def test_list_keys_and_show_key_show_each_key_s_limits(app: Flask) -> None:
    """A key's own QPS and quota, its package's, an exemption, or none."""
    ok(gate(app, "create-package", "partners", "--qps", "2", "--quota", "5000/day"))
    for key in ("own", "exempt", "plain"):
        ok(gate(app, "create-key", "--package", "partners", "--key", key, "--secret", "s"))
    ok(gate(app, "create-key", "--package", "members", "--key", "free", "--secret", "s"))
    ok(gate(app, "update-key", "own", "--qps", "5", "--quota", "100"))
    ok(gate(app, "update-key", "exempt", "--qps-exempt", "--quota-exempt"))
    ok(gate(app, "update-key", "free", "--quota", "10"))
    expected = {
        "free": ("unlimited", "10/day (key)"),
        "exempt": ("exempt", "exempt"),
        "own": ("5 (key)", "100/day (key)"),
        "plain": ("2 (package)", "5000/day (package)"),
    }
    assert {row["KEY"]: (row["QPS"], row["QUOTA"]) for row in listing(app)} == expected
    for key, (qps, quota) in expected.items():
        fields = show_key_fields(app, key)
        assert (fields["qps"], fields["quota"]) == (qps, quota), key


def test_show_key_unknown_refused(app: Flask) -> None:
    refused(gate(app, "show-key", "nope"), "no key 'nope'")


# -- update-key ------------------------------------------------------------------


def test_update_key_fixes_a_mistyped_not_before(app: Flask) -> None:
    ok(
        gate(
            app,
            *("create-key", "--package", "members", "--key", "k", "--secret", "s"),
            *("--not-before", "2999-01-01"),
        )
    )
    code, body = status(app, "k", "s")
    assert (code, body["errorCode"]) == (403, "key-inactive")
    assert ok(gate(app, "update-key", "k", "--not-before", "none")) == [
        "key 'k' updated: not-before none; state active"
    ]
    assert status(app, "k", "s")[0] == 200


def test_update_key_takes_effect_at_once_here(app: Flask) -> None:
    provision(app, key="k", secret="s")
    assert status(app, "k", "s")[0] == 200  # now cached in this process
    ok(gate(app, "update-key", "k", "--not-before", "2999-01-01T00:00:00Z"))
    code, body = status(app, "k", "s")
    assert (code, body["errorCode"]) == (403, "key-inactive")
    assert listing(app)[0]["STATE"] == "not-yet-valid"


def test_update_key_fields_and_clearing(app: Flask) -> None:
    provision(app, key="k", secret="s", owner_name="Old", owner_email="old@example.com")
    assert ok(
        gate(
            app,
            *("update-key", "k", "--expires", "2031-06-01T12:00:00+02:00"),
            *("--owner", "New Shop", "--developer", "new@example.com"),
        )
    ) == [
        "key 'k' updated: expires 2031-06-01T10:00:00Z, owner 'New Shop',"
        " developer 'new@example.com'; state active"
    ]
    [row] = listing(app)
    assert (row["EXPIRES"], row["OWNER"], row["DEVELOPER"]) == (
        "2031-06-01T10:00:00Z",
        "New Shop",
        "new@example.com",
    )
    code, body = status(app, "k", "s")
    assert (code, body["owner"]) == (200, "new@example.com")
    # Only what is given changes; '' clears the owner, 'none' the expiry.
    assert ok(gate(app, "update-key", "k", "--owner", "", "--expires", "none")) == [
        "key 'k' updated: expires never, owner cleared; state active"
    ]
    [row] = listing(app)
    assert (row["EXPIRES"], row["OWNER"], row["DEVELOPER"]) == ("never", "-", "new@example.com")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--expires", "soon"], "--expires 'soon' is not an ISO 8601"),
        (["--not-before", "2031-02-30"], "--not-before '2031-02-30': day is out of range"),
        (["--not-before", "31/01/2031"], "--not-before '31/01/2031' is not an ISO 8601"),
        (["--expires", "2001-01-01"], "--expires '2001-01-01' is in the past"),
        (["--not-before", "2032-01-01", "--expires", "2031-01-01"], "expire before it becomes"),
        # Against the stored expiry too.
        (["--not-before", "2041-01-01"], "expire before it becomes valid"),
        (["--developer", "x" * 256], "at most 255 characters"),
    ],
)
def test_update_key_bad_input_writes_nothing(app: Flask, args: list[str], message: str) -> None:
    provision(app, key="k", secret="s", expires_at=dt.datetime(2040, 1, 1))
    before = listing(app)
    refused(gate(app, "update-key", "k", *args), message)
    assert listing(app) == before


def test_update_key_unknown_key_refused(app: Flask) -> None:
    refused(gate(app, "update-key", "nope", "--expires", "none"), "no key 'nope'")


def test_update_key_without_options_is_a_usage_error(app: Flask) -> None:
    provision(app, key="k", secret="s")
    result = gate(app, "update-key", "k")
    assert result.exit_code == 2
    assert "nothing to change: give at least one of --not-before, --expires" in result.stderr


# -- delete-key ------------------------------------------------------------------


def count_rows(app: Flask) -> tuple[int, int]:
    """How many keys and secrets the gate's tables hold."""
    with app.app_context():
        store = BasicGate.state().store
        m = store.models
        with store.engine.connect() as conn:
            keys = conn.execute(select(func.count()).select_from(m.PackageKey)).scalar()
            secrets = conn.execute(select(func.count()).select_from(m.KeySecret)).scalar()
    return keys, secrets


def test_delete_key_leaves_no_orphan_secret(app_factory: AppFactory, database_url: str) -> None:
    app = app_factory(url=database_url)
    ok(gate(app, "create-package", "members"))
    ok(gate(app, "create-key", "--package", "members", "--key", "gone", "--secret", "s1"))
    ok(gate(app, "rotate-secret", "gone", "--secret", "s2", "--grace", "600"))
    ok(gate(app, "create-key", "--package", "members", "--key", "kept", "--secret", "s3"))
    assert count_rows(app) == (2, 3)
    assert status(app, "gone", "s2")[0] == 200  # now cached in this process
    assert ok(gate(app, "delete-key", "gone", "--yes")) == ["key 'gone' deleted"]
    assert count_rows(app) == (1, 1)
    assert keys_listed(app) == ["kept"]
    # The eviction reached the cache: the deleted key's secrets work no more.
    assert status(app, "gone", "s2")[0] == 403
    assert status(app, "gone", "s1")[0] == 403
    assert status(app, "kept", "s3")[0] == 200
    refused(gate(app, "delete-key", "gone", "--yes"), "no key 'gone'")


def typed_removed(stdout: str, *answers: str) -> list[str]:
    """The lines of ``stdout`` without the test runner's echo of what the
    test typed: click before 8.2 echoes it to stdout, even for prompts on
    stderr (a hidden answer as an empty line)."""
    return [line for line in stdout.splitlines() if line.strip() not in ("", *answers)]


def test_delete_key_asks_at_a_terminal(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    provision(app, key="k", secret="s")
    monkeypatch.setattr("flask_basic_gate.cli._stdin_is_terminal", lambda: True)
    no = gate(app, "delete-key", "k", input="n\n")
    assert no.exit_code == 1
    assert "Delete key 'k' of package 'members' and its 1 live secret? [y/N]" in no.stderr
    assert keys_listed(app) == ["k"]
    yes = gate(app, "delete-key", "k", input="y\n")
    assert yes.exit_code == 0, yes.output
    assert typed_removed(yes.stdout, "y") == ["key 'k' deleted"]
    assert keys_listed(app) == []


def test_delete_key_without_terminal_needs_yes(app: Flask) -> None:
    provision(app, key="k", secret="s")
    result = gate(app, "delete-key", "k", input="y\n")
    assert result.exit_code == 2
    assert "give --yes" in result.stderr
    assert keys_listed(app) == ["k"]


# -- keys that look like options -----------------------------------------------------


def test_generated_keys_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # token_urlsafe draws one key in 64 with a leading "-": make it the first draw.
    draws = iter(["-" + "a" * 42, "b" * 43])
    monkeypatch.setattr("flask_basic_gate.store.admin.generate_secret", lambda: next(draws))
    assert generate_key() == "b" * 24
    monkeypatch.undo()
    assert not any(generate_key().startswith("-") for _ in range(2000))


def test_a_key_starting_with_a_dash_after_double_dash(app: Flask, tmp_path: Path) -> None:
    # Such keys arrive by import-keys; "--" ends the options.
    file = write_csv(tmp_path, "key,secret,package\n-dash,s,members\n")
    ok(gate(app, "import-keys", file))
    assert "No such option" in gate(app, "disable-key", "-dash").stderr
    assert ok(gate(app, "disable-key", "--", "-dash")) == ["key '-dash' disabled"]
    assert ok(gate(app, "enable-key", "--", "-dash")) == ["key '-dash' enabled"]
    assert ok(gate(app, "rotate-secret", "--secret", "t", "--", "-dash")) == [
        "key: -dash",
        "secret: t",
    ]
    assert ok(gate(app, "update-key", "--owner", "O", "--", "-dash"))[0].startswith("key '-dash'")
    assert ok(gate(app, "show-key", "--", "-dash"))[0].split() == ["key:", "-dash"]
    assert status(app, "-dash", "t")[0] == 200
    assert ok(gate(app, "delete-key", "--yes", "--", "-dash")) == ["key '-dash' deleted"]


# -- --secret - at a terminal ----------------------------------------------------


def test_secret_dash_at_a_terminal_asks_twice_hidden(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flask_basic_gate.cli._stdin_is_terminal", lambda: True)
    result = gate(
        app,
        *("create-key", "--package", "members", "--key", "k", "--secret", "-"),
        input="typo\nhidden-1\nhidden-1\nhidden-1\n",
    )
    # The first pair differs: asked again. Nothing typed is echoed.
    assert result.exit_code == 0, result.output
    assert typed_removed(result.stdout) == ["key: k", "secret: hidden-1"]
    assert result.stderr.count("Secret:") == 2
    assert result.stderr.count("Repeat for confirmation:") == 2
    assert "typo" not in result.stderr
    assert "hidden-1" not in result.stderr
    assert status(app, "k", "hidden-1")[0] == 200
    provision(app, key="r", secret="old")
    rotated = gate(app, "rotate-secret", "r", "--secret", "-", input="new-1\nnew-1\n")
    assert typed_removed(rotated.stdout) == ["key: r", "secret: new-1"]
    assert status(app, "r", "new-1")[0] == 200


def test_secret_dash_from_a_pipe_does_not_prompt(app: Flask) -> None:
    result = gate(
        app, "create-key", "--package", "members", "--key", "k", "--secret", "-", input="piped\n"
    )
    assert ok(result) == ["key: k", "secret: piped"]
    assert "Secret" not in result.stderr


# -- the database a command writes to ------------------------------------------------


KEY_CHANGES = [
    ["disable-key", "k"],
    ["enable-key", "k"],
    ["rotate-secret", "k", "--secret", "t"],
    ["update-key", "k", "--owner", "O"],
    ["update-package", "members", "--qps", "5"],
    ["delete-key", "k", "--yes"],
]
CREATIONS = [
    ["init-db"],
    ["create-package", "partners"],
    ["create-key", "--package", "members", "--key", "k2", "--secret", "s"],
    ["update-package", "partners", "--qps", "5"],  # a package without keys
]
NO_REDIS = (
    "no BASIC_GATE_REDIS_URL: other processes see this change within 30 s (BASIC_GATE_CACHE_TTL)"
)


def test_every_command_names_the_database_without_password(app: Flask, tmp_path: Path) -> None:
    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"]).render_as_string(hide_password=True)
    provision(app, key="k", secret="s")
    file = write_csv(tmp_path, HEADER + "k9,s,members,,\n")
    for args in (
        ["list-keys"],
        ["show-key", "k"],
        ["list-packages"],
        ["import-keys", "--dry-run", file],
    ):
        result = gate(app, *args)
        assert result.exit_code == 0, (args, result.output)
        assert result.stderr.splitlines() == [f"database: {url}"], args
    for args in [*CREATIONS, *KEY_CHANGES]:
        result = gate(app, *args)
        assert result.exit_code == 0, (args, result.output)
        assert result.stderr.splitlines()[0] == f"database: {url}", args


def test_writing_commands_say_where_the_change_went_without_redis(
    app: Flask, tmp_path: Path
) -> None:
    provision(app, key="k", secret="s")
    for args in CREATIONS:
        result = gate(app, *args)
        assert result.stderr.splitlines()[1:] == ["nothing to announce: no existing key changed"], (
            args
        )
    file = write_csv(tmp_path, HEADER + "k9,s,members,,\n")
    assert gate(app, "import-keys", file).stderr.splitlines()[1:] == [
        "nothing to announce: no existing key changed"
    ]
    for args in KEY_CHANGES:
        result = gate(app, *args)
        assert result.exit_code == 0, (args, result.output)
        assert result.stderr.splitlines()[1:] == [NO_REDIS], args
    # A refused change says nothing of the kind.
    result = gate(app, "disable-key", "nope")
    assert result.stderr.splitlines()[1:] == ["Error: no key 'nope'"]


def test_without_a_cache_other_processes_see_a_change_at_once(app_factory: AppFactory) -> None:
    app = app_factory({"BASIC_GATE_CACHE_TTL": 0})
    provision(app, key="k", secret="s")
    assert gate(app, "disable-key", "k").stderr.splitlines()[1:] == [
        "no BASIC_GATE_REDIS_URL: other processes see this change at once"
        " (BASIC_GATE_CACHE_TTL = 0: nothing is cached)"
    ]


def test_a_change_announced_on_redis_says_so_and_is_published(
    app_factory: AppFactory, redis_url: str
) -> None:
    app = app_factory({"BASIC_GATE_REDIS_URL": redis_url})
    provision(app, key="k", secret="s")
    revocation = BasicGate.state(app).revocation
    assert isinstance(revocation, RedisRevocation)
    listener = redis_client(redis_url).pubsub()
    try:
        listener.subscribe(revocation.channel)
        assert listener.get_message(timeout=5)["type"] == "subscribe"
        result = gate(app, "disable-key", "k")
        shown = make_url(redis_url).render_as_string(hide_password=True)
        assert result.stderr.splitlines()[1:] == [f"announced on Redis {shown}"]
        message = listener.get_message(timeout=5)
        assert message is not None and json.loads(message["data"]) == {"key": "k"}
        # A creation has nothing to announce, Redis or not.
        result = gate(app, "create-key", "--package", "members", "--key", "k2", "--secret", "s")
        assert result.stderr.splitlines()[1:] == ["nothing to announce: no existing key changed"]
    finally:
        listener.close()
        revocation.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@127.0.0.1:{port}/0", "redis://:***@127.0.0.1:{port}/0"),
        ("redis://127.0.0.1:{port}/0?password=hunter2", "redis://127.0.0.1:{port}/0?password=***"),
    ],
)
def test_a_change_redis_did_not_take_says_so_without_the_password(
    app_factory: AppFactory, url: str, shown: str
) -> None:
    # Nothing listens on the port: publishing fails, the change stays made.
    port = free_port()
    app = app_factory({"BASIC_GATE_REDIS_URL": url.format(port=port)})
    provision(app, key="k", secret="s")
    try:
        result = gate(app, "disable-key", "k")
        assert result.exit_code == 0, result.output
        assert result.stderr.splitlines()[-1] == (
            f"could not announce this change on Redis {shown.format(port=port)}: other"
            " processes see it within 30 s (BASIC_GATE_CACHE_TTL); repeat the command once"
            " Redis answers"
        )
        assert "hunter2" not in result.output
        assert status(app, "k", "s")[1]["errorCode"] == "key-inactive"
    finally:
        BasicGate.state(app).revocation.close()


def test_database_line_hides_the_password(app_factory: AppFactory) -> None:
    url = os.environ.get("BASIC_GATE_TEST_POSTGRESQL_URL")
    if not url:
        pytest.skip("BASIC_GATE_TEST_POSTGRESQL_URL is not set")
    # The test server trusts local connections, so any password gets in.
    with_password = make_url(url).set(password="hunter2")
    app = app_factory(url=with_password.render_as_string(hide_password=False))
    result = gate(app, "create-package", "members")
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    assert result.stderr.splitlines()[0] == (
        f"database: {with_password.render_as_string(hide_password=True)}"
    )
    assert ":***@" in result.stderr


def test_list_keys_empty(app: Flask) -> None:
    assert ok(gate(app, "list-keys")) == ["no keys"]
    assert ok(gate(app, "list-keys", "--package", "members")) == ["no keys in package 'members'"]


def test_list_keys_unknown_package_refused(app: Flask) -> None:
    refused(gate(app, "list-keys", "--package", "nope"), "no package named 'nope'")


# -- import-keys -----------------------------------------------------------------

HEADER = "key,secret,package,status,developer email\n"
#: The fields of the gateway's package keys, in the order its API lists them.
GATEWAY_HEADER = (
    "id,apikey,secret,created,updated,rateLimitCeiling,rateLimitExempt,qpsLimitCeiling,"
    "qpsLimitExempt,status,limits,package,plan,expires\n"
)
CREATED = "2017-09-04T11:54:56.000+0000"


def write_csv(tmp_path: Path, text: str, name: str = "keys.csv") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def import_lines(result: Any) -> list[str]:
    """stderr of import-keys between the database line and the announcement."""
    return without_database_line(result.stderr)


def succeeded(result: Any) -> list[str]:
    """stdout of a command that succeeded, whatever it said on stderr."""
    assert result.exit_code == 0, (result.exit_code, result.output)
    return list(result.stdout.splitlines())


def test_import_keys(app: Flask, tmp_path: Path) -> None:
    file = write_csv(
        tmp_path,
        HEADER
        + "k1,plain-1,members,active,one@example.com\n"
        + "k2,plain-2,members,disabled,\n"
        + "\n"
        + 'k3," spaced, and ""quoted"" ",members,,three@example.com\n',
    )
    assert ok(gate(app, "import-keys", file)) == ["imported 3 keys"]
    assert status(app, "k1", "plain-1")[0] == 200
    code, body = status(app, "k2", "plain-2")
    assert (code, body["errorCode"]) == (403, "key-inactive")
    assert status(app, "k3", ' spaced, and "quoted" ')[0] == 200
    assert [(r["KEY"], r["STATE"], r["DEVELOPER"]) for r in listing(app)] == [
        ("k1", "active", "one@example.com"),
        ("k2", "disabled", "-"),
        ("k3", "active", "three@example.com"),
    ]
    # Hashed with the configured KDF on the way in; the plaintext is nowhere.
    stored = stored_secrets(app)
    assert {method for method, _ in stored} == {"werkzeug"}
    assert all(value.startswith(FAST_KDF + "$") for _, value in stored)
    data = db_bytes(tmp_path)
    for secret in (b"plain-1", b"plain-2", b"quoted"):
        assert secret not in data


def test_import_keys_header_variants_and_optional_columns(app: Flask, tmp_path: Path) -> None:
    file = write_csv(tmp_path, "\ufeffPackage,Key,Secret,Developer_Email\nmembers,k,s,d@x.io\n")
    assert ok(gate(app, "import-keys", file)) == ["imported 1 key"]
    assert status(app, "k", "s")[0] == 200


def test_import_keys_from_stdin(app: Flask) -> None:
    result = gate(app, "import-keys", "-", input="key,secret,package\nk,s,members\n")
    assert ok(result) == ["imported 1 key"]
    assert status(app, "k", "s")[0] == 200


def test_import_keys_reads_the_gateway_export_as_it_is(app: Flask, tmp_path: Path) -> None:
    """Every field the gateway writes: apikey is the key, created and expires
    are kept, waiting is a state of its own, the rest is named once."""
    file = write_csv(
        tmp_path,
        GATEWAY_HEADER
        + f"101,gw-active,s1,{CREATED},{CREATED},5000,false,2,false,active,"
        + '"[{""period"":""day""}]",members,Basic,2031-06-01T00:00:00.000+0000\n'
        + f"102,gw-waiting,s2,{CREATED},,,,,true,waiting,,members,Basic,\n"
        + f"103,gw-off,s3,{CREATED},,,true,,,disabled,,members,Basic,\n",
    )
    result = gate(app, "import-keys", file)
    assert succeeded(result) == ["imported 3 keys"]
    assert import_lines(result) == [
        "ignored columns: id, updated, limits",
        "package 'members' plan 'Basic' -> 'members' (3 keys)",
    ]
    rows = {row["KEY"]: row for row in listing(app)}
    assert {key: row["STATE"] for key, row in rows.items()} == {
        "gw-active": "active",
        "gw-off": "disabled",
        "gw-waiting": "waiting",
    }
    assert (rows["gw-active"]["QPS"], rows["gw-active"]["QUOTA"]) == ("2 (key)", "5000/day (key)")
    assert rows["gw-active"]["EXPIRES"] == "2031-06-01T00:00:00Z"
    assert rows["gw-waiting"]["QPS"] == "exempt"
    assert rows["gw-off"]["QUOTA"] == "exempt"
    fields = show_key_fields(app, "gw-waiting")
    assert (fields["state"], fields["status"]) == ("waiting", "waiting")
    assert fields["created"] == "2017-09-04T11:54:56Z"
    assert status(app, "gw-active", "s1")[0] == 200
    assert [row["KEY"] for row in listing(app, "--state", "waiting")] == ["gw-waiting"]


def test_a_waiting_key_is_inactive_until_enabled_and_never_waits_again(
    app_factory: AppFactory, tmp_path: Path
) -> None:
    app = app_factory({"BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE": True})
    ok(gate(app, "create-package", "members"))
    ok(gate(app, "import-keys", write_csv(tmp_path, HEADER + "k,s,members,waiting,\n")))
    response = app.test_client().get("/thing", headers=basic_auth_headers("k", "s"))
    assert response.status_code == 403
    assert response.json is not None and response.json["errorCode"] == "key-inactive"
    assert response.headers["X-Mashery-Error-Code"] == "ERR_403_DEVELOPER_INACTIVE"
    assert ok(gate(app, "enable-key", "k")) == ["key 'k' enabled"]
    assert status(app, "k", "s")[0] == 200
    ok(gate(app, "disable-key", "k"))
    with app.app_context(), pytest.raises(AdminError, match="cannot be put back in 'waiting'"):
        BasicGate.state().store.set_status("k", "waiting")
    assert show_key_fields(app, "k")["status"] == "disabled"


def gateway_json(*keys: dict[str, Any]) -> str:
    """A list of package keys as the gateway's API returns them."""
    made = []
    for number, fields in enumerate(keys, 1):
        made.append(
            {
                "id": number,
                "apikey": f"j{number}",
                "secret": f"secret-{number}",
                "created": CREATED,
                "updated": CREATED,
                "rateLimitCeiling": None,
                "rateLimitExempt": False,
                "qpsLimitCeiling": None,
                "qpsLimitExempt": False,
                "status": "active",
                "limits": [{"period": "day", "source": "plan", "ceiling": 5000}],
                "package": {"id": 7, "name": "members"},
                "plan": {"id": 9, "name": "Basic"},
                "expires": None,
                **fields,
            }
        )
    return json.dumps(made)


def test_import_keys_reads_the_gateway_api_json(app: Flask, tmp_path: Path) -> None:
    text = gateway_json(
        {},
        {"status": "waiting", "qpsLimitCeiling": 3, "rateLimitExempt": True},
        {"expires": "2031-01-01T00:00:00.000+0000", "plan": "Basic"},
    )
    result = gate(app, "import-keys", write_csv(tmp_path, text, "keys.json"))
    assert succeeded(result) == ["imported 3 keys"]
    assert import_lines(result) == [
        "ignored fields: id, updated, limits",
        "package 'members' plan 'Basic' -> 'members' (3 keys)",
    ]
    assert [
        (row["KEY"], row["STATE"], row["EXPIRES"], row["QPS"], row["QUOTA"]) for row in listing(app)
    ] == [
        ("j1", "active", "never", "unlimited", "unlimited"),
        ("j2", "waiting", "never", "3 (key)", "exempt"),
        ("j3", "active", "2031-01-01T00:00:00Z", "unlimited", "unlimited"),
    ]
    assert show_key_fields(app, "j1")["created"] == "2017-09-04T11:54:56Z"
    assert status(app, "j1", "secret-1")[0] == 200


@pytest.mark.parametrize("name", ["-", "export.txt", "export"])
def test_import_keys_knows_json_by_its_content(app: Flask, tmp_path: Path, name: str) -> None:
    text = gateway_json({})
    if name == "-":
        result = gate(app, "import-keys", "-", input=text)
    else:
        result = gate(app, "import-keys", write_csv(tmp_path, "\n  " + text, name))
    assert succeeded(result) == ["imported 1 key"]


def test_import_keys_json_bad_items_each_reported(app: Flask, tmp_path: Path) -> None:
    items = json.loads(
        gateway_json(
            {},
            {"secret": None},
            {"status": "paused"},
            {"qpsLimitCeiling": "many"},
            {"rateLimitExempt": "perhaps"},
            {"package": {"id": 1}},
            {"apikey": "j1"},
            {"expires": "2031-02-30T00:00:00.000+0000"},
        )
    )
    items.append("not an object")
    result = gate(app, "import-keys", write_csv(tmp_path, json.dumps(items), "keys.json"))
    assert result.exit_code == 1
    assert import_lines(result) == [
        "ignored fields: id, updated, limits",
        "package 'members' plan 'Basic' -> 'members' (1 key)",
        "index 1: key 'j2' has no secret",
        "index 2: the status must be 'waiting', 'active' or 'disabled' (or empty)",
        "index 3: qpsLimitCeiling must be a whole number from 0 to 2147483647",
        "index 4: rateLimitExempt must be true or false (or empty)",
        "index 5: package has no name",
        "index 6: key 'j1' is also at index 0",
        "index 7: expires: day is out of range for month",
        "index 8: not an object: each item is a package key, {...}",
        "Error: 8 bad rows; nothing was imported",
    ]
    assert keys_listed(app) == []
    assert "secret-" not in result.output


def test_import_keys_maps_package_and_plan_by_default(app: Flask, tmp_path: Path) -> None:
    """PACKAGE when all its keys in the file are on one plan, PACKAGE/PLAN otherwise."""
    file = write_csv(
        tmp_path,
        "apikey,secret,package,plan\n"
        "a1,s,Members API,Gold\n"
        "a2,s,Members API,Basic\n"
        "a3,s,Members API,Gold\n"
        "a4,s,Members API,\n"
        "b1,s,Partners,Gold\n"
        "b2,s,Partners,Gold\n",
    )
    result = gate(app, "import-keys", "--create-packages", file)
    assert succeeded(result) == [
        "imported 6 keys (packages created: Members API/Gold, Members API/Basic,"
        " Members API, Partners)"
    ]
    assert import_lines(result) == [
        "package 'Members API' plan 'Gold' -> 'Members API/Gold' (2 keys)",
        "package 'Members API' plan 'Basic' -> 'Members API/Basic' (1 key)",
        "package 'Members API' no plan -> 'Members API' (1 key)",
        "package 'Partners' plan 'Gold' -> 'Partners' (2 keys)",
    ]
    assert {row["KEY"]: row["PACKAGE"] for row in listing(app)} == {
        "a1": "Members API/Gold",
        "a2": "Members API/Basic",
        "a3": "Members API/Gold",
        "a4": "Members API",
        "b1": "Partners",
        "b2": "Partners",
    }


def test_import_keys_package_map_overrides_the_default(app: Flask, tmp_path: Path) -> None:
    ok(gate(app, "create-package", "gold"))
    package_map = write_csv(
        tmp_path,
        "package,plan,gate package\nMembers API,Gold,gold\nMembers API,,members\n",
        "map.csv",
    )
    file = write_csv(
        tmp_path,
        "apikey,secret,package,plan\n"
        "a1,s,Members API,Gold\n"
        "a2,s,Members API,Basic\n"
        "a3,s,Members API,Trial\n"
        "b1,s,Partners,Gold\n"
        "b2,s,Partners,Silver\n",
    )
    result = gate(app, "import-keys", "--package-map", package_map, "--create-packages", file)
    assert succeeded(result) == [
        "imported 5 keys (packages created: Partners/Gold, Partners/Silver)"
    ]
    assert import_lines(result) == [
        "package 'Members API' plan 'Gold' -> 'gold' (1 key, package map)",
        "package 'Members API' plan 'Basic' -> 'members' (1 key, package map)",
        "package 'Members API' plan 'Trial' -> 'members' (1 key, package map)",
        "package 'Partners' plan 'Gold' -> 'Partners/Gold' (1 key)",
        "package 'Partners' plan 'Silver' -> 'Partners/Silver' (1 key)",
    ]
    assert {row["KEY"]: row["PACKAGE"] for row in listing(app)} == {
        "a1": "gold",
        "a2": "members",
        "a3": "members",
        "b1": "Partners/Gold",
        "b2": "Partners/Silver",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("package,gate package\n", "names the columns package,plan,gate package"),
        ("package,plan,gate package\nA,B\n", "map.csv line 2: 2 values for 3 columns"),
        ("package,plan,gate package\nA,B,x\nA,B,y\n", "line 3: package 'A' plan 'B' is mapped"),
        ("package,plan,gate package\nA,,\n", "line 2: a package name must have 1 to 255"),
    ],
)
def test_import_keys_bad_package_map(app: Flask, tmp_path: Path, text: str, message: str) -> None:
    package_map = write_csv(tmp_path, text, "map.csv")
    file = write_csv(tmp_path, "apikey,secret,package\nk,s,members\n")
    refused(gate(app, "import-keys", "--package-map", package_map, file), message)
    assert keys_listed(app) == []


def test_import_keys_create_packages(app: Flask, tmp_path: Path) -> None:
    file = write_csv(
        tmp_path, HEADER + "k1,s1,members,,\nk2,s2,partners,,\nk3,s3,partners,,\nk4,s4,gold,,\n"
    )
    result = gate(app, "import-keys", file)
    assert result.exit_code == 1
    assert import_lines(result) == [
        "line 3: no package named 'partners'; create it first, or pass --create-packages",
        "line 4: no package named 'partners'; create it first, or pass --create-packages",
        "line 5: no package named 'gold'; create it first, or pass --create-packages",
        "Error: 3 bad rows; nothing was imported",
    ]
    assert keys_listed(app) == []
    assert ok(gate(app, "import-keys", "--create-packages", file)) == [
        "imported 4 keys (packages created: partners, gold)"
    ]
    assert keys_listed(app) == ["k4", "k1", "k2", "k3"]  # by package, then key
    assert status(app, "k3", "s3") == (
        200,
        {
            "key": "k3",
            "package": "partners",
            "owner": None,
            "authorization": basic_auth_headers("k3", "s3")["Authorization"],
        },
    )


def test_import_keys_hint_only_for_an_unknown_package(app: Flask, tmp_path: Path) -> None:
    # The hint follows the store's unknown_package flag, not the message's
    # words: a taken key whose name says "no package" gets none.
    provision(app, key="no package here", secret="s")
    result = gate(app, "import-keys", write_csv(tmp_path, HEADER + "no package here,s,members,,\n"))
    refused(result, "line 2: key 'no package here' exists already; nothing was imported")
    assert "--create-packages" not in result.stderr


def test_import_keys_unknown_package_did_you_mean(app: Flask, tmp_path: Path) -> None:
    result = gate(app, "import-keys", write_csv(tmp_path, HEADER + "k,s,membres,,\n"))
    refused(
        result,
        "line 2: no package named 'membres' (did you mean 'members'?); create it first,"
        " or pass --create-packages; nothing was imported",
    )


BAD_ROWS = [
    pytest.param(
        "k1,s,members,,\nk2,s,members,paused,\n",
        "line 3: the status must be 'waiting', 'active' or 'disabled' (or empty)",
        id="status",
    ),
    pytest.param("k1,s,members,,\nk2,s,members\n", "line 3: 3 values for 5 columns", id="fields"),
    pytest.param("k1,s,members,,\nk2,,members,,\n", "line 3: key 'k2' has no secret", id="secret"),
    pytest.param("k1,s,members,,\nk:2,s,members,,\n", "line 3: a key must have", id="key"),
    pytest.param("k1,s,members,,\n,s,members,,\n", "line 3: a key must have", id="empty-key"),
    pytest.param("k1,s,members,,\nk2,s,,,\n", "line 3: a package name must", id="package"),
    pytest.param(
        "k1,s,members,,\nk1,t,members,,\n", "line 3: key 'k1' is also on line 2", id="dup"
    ),
    pytest.param("k1,s,members,,\nk2,s,nope,,\n", "line 3: no package named 'nope'", id="unknown"),
    pytest.param("k1,s,members,,\nold,s,members,,\n", "line 3: key 'old' exists", id="exists"),
    pytest.param('k1,s,members,,\nk2,"s,members,,\n', "line 3: unexpected end of data", id="quote"),
]


@pytest.mark.parametrize(("rows", "message"), BAD_ROWS)
def test_import_keys_bad_row_imports_nothing(
    app: Flask, tmp_path: Path, rows: str, message: str
) -> None:
    provision(app, key="old", secret="old-secret")
    file = write_csv(tmp_path, HEADER + rows)
    result = gate(app, "import-keys", file)
    refused(result, message)
    assert result.stderr.rstrip().endswith("; nothing was imported")
    assert keys_listed(app) == ["old"]
    assert len(stored_secrets(app)) == 1
    assert status(app, "old", "old-secret")[0] == 200


def test_import_keys_reports_every_bad_row_in_one_run(app: Flask, tmp_path: Path) -> None:
    """The file's problems and the database's, in the file's order, each
    with its line; nothing is written."""
    provision(app, key="old", secret="old-secret")
    file = write_csv(
        tmp_path,
        HEADER
        + "k1,s,nope,,\n"
        + "k2,s,members,bad,\n"
        + "ok,s,members,,\n"
        + 'k3,"x"y,members,,\n'
        + "old,s,members,,\n"
        + "k4,s,members,,\n"
        + "k4,s,members,,\n"
        + "k5,s,members,waiting,\n",
    )
    result = gate(app, "import-keys", file)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert import_lines(result) == [
        "line 2: no package named 'nope'; create it first, or pass --create-packages",
        "line 3: the status must be 'waiting', 'active' or 'disabled' (or empty)",
        "line 5: ',' expected after '\"'",
        "line 6: key 'old' exists already",
        "line 8: key 'k4' is also on line 7",
        "Error: 5 bad rows; nothing was imported",
    ]
    assert keys_listed(app) == ["old"]


def test_import_keys_a_key_made_since_the_check_is_named_with_its_line(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_basic_gate.store import KeyStore

    real = KeyStore.import_problems
    calls: list[int] = []

    def first_finds_nothing(self: KeyStore, *args: Any, **kw: Any) -> Any:
        # The CLI's own check runs before another admin makes the key.
        calls.append(1)
        if len(calls) == 1:
            provision(app, key="k2", secret="theirs")
            return []
        return real(self, *args, **kw)

    monkeypatch.setattr(KeyStore, "import_problems", first_finds_nothing)
    result = gate(
        app, "import-keys", write_csv(tmp_path, HEADER + "k1,s,members,,\nk2,s,members,,\n")
    )
    refused(result, "line 3: key 'k2' exists already; nothing was imported")
    assert keys_listed(app) == ["k2"]


def test_import_keys_lists_50_bad_rows_and_counts_the_rest(app: Flask, tmp_path: Path) -> None:
    rows = "".join(f"k{n},s,members,bad,\n" for n in range(120))
    result = gate(app, "import-keys", write_csv(tmp_path, HEADER + rows))
    lines = import_lines(result)
    assert len(lines) == 52
    assert lines[0].startswith("line 2: the status must be")
    assert lines[49].startswith("line 51: the status must be")
    assert lines[50:] == ["and 70 more bad rows", "Error: 120 bad rows; nothing was imported"]


def test_import_keys_all_or_nothing_on_every_backend(
    app_factory: AppFactory, database_url: str, tmp_path: Path
) -> None:
    app = app_factory(url=database_url)
    ok(gate(app, "create-package", "members"))
    ok(gate(app, "create-key", "--package", "members", "--key", "Taken", "--secret", "x"))
    file = write_csv(
        tmp_path, HEADER + "taken,s1,members,,\nnew,s2,members,,\nTaken,s3,members,,\n"
    )
    refused(gate(app, "import-keys", file), "line 4: key 'Taken' exists already")
    assert keys_listed(app) == ["Taken"]
    file = write_csv(tmp_path, HEADER + "taken,s1,members,,\nnew,s2,members,,\n")
    assert ok(gate(app, "import-keys", file)) == ["imported 2 keys"]
    assert keys_listed(app) == ["Taken", "new", "taken"]
    assert status(app, "taken", "s1")[0] == 200


def test_import_keys_dry_run_checks_against_the_database_and_writes_nothing(
    app: Flask, tmp_path: Path
) -> None:
    provision(app, key="old", secret="old-secret")
    bad = write_csv(tmp_path, HEADER + "old,s,members,,\nk1,s,membres,,\nk2,s,members,,\n")
    result = gate(app, "import-keys", "--dry-run", bad)
    assert result.exit_code == 1
    assert import_lines(result) == [
        "line 2: key 'old' exists already",
        "line 3: no package named 'membres' (did you mean 'members'?); create it first,"
        " or pass --create-packages",
        "Error: 2 bad rows; nothing would be imported",
    ]
    good = write_csv(tmp_path, HEADER + "k1,s,gold,,\nk2,s,members,,\n", "good.csv")
    before = db_bytes(tmp_path)
    result = gate(app, "import-keys", "--dry-run", "--create-packages", good)
    # Nothing written, nothing to announce.
    assert result.stderr.splitlines()[1:] == []
    assert result.stdout.splitlines() == ["would import 2 keys (packages to create: gold)"]
    assert db_bytes(tmp_path) == before
    assert keys_listed(app) == ["old"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("key,secret\nk,s\n", "line 1: the column package is missing"),
        ("secret,package\nk,s\n", "line 1: the column apikey (or key) is missing"),
        ("key,secret,package,key\n", "line 1: the column 'key' appears twice"),
        ("key,secret,package,apikey\n", "line 1: the columns 'key' and 'apikey' are one field"),
    ],
)
def test_import_keys_bad_header(app: Flask, tmp_path: Path, text: str, message: str) -> None:
    refused(gate(app, "import-keys", write_csv(tmp_path, text)), message)
    assert keys_listed(app) == []


def test_import_keys_names_unused_columns_once(app: Flask, tmp_path: Path) -> None:
    file = write_csv(
        tmp_path, "colour,key,secret,package,size\nred,k1,s,members,1\nblue,k2,s,members,2\n"
    )
    result = gate(app, "import-keys", file)
    assert succeeded(result) == ["imported 2 keys"]
    assert import_lines(result) == ["ignored columns: colour, size"]


def test_import_keys_header_only(app: Flask, tmp_path: Path) -> None:
    assert ok(gate(app, "import-keys", write_csv(tmp_path, HEADER))) == ["imported 0 keys"]


def test_import_keys_unreadable_file(app: Flask, tmp_path: Path) -> None:
    refused(gate(app, "import-keys", str(tmp_path / "missing.csv")), "No such file")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"key,secret,package\nk,p\xe4ss,members\n")
    refused(gate(app, "import-keys", str(latin)), "is not UTF-8 text")
    refused(gate(app, "import-keys", write_csv(tmp_path, "[{", "k.json")), "not JSON")
    refused(gate(app, "import-keys", write_csv(tmp_path, "{}", "k.json")), "must hold a list")
    assert keys_listed(app) == []


@pytest.mark.parametrize(
    "rows",
    [
        "k1,hunter2,members,,\nk2,,members,,\n",
        "k1,members,active,hunter2,\n",  # columns shifted
        "k1,hunter2,members,,\nk2,hunter2,members,bad,\n",
    ],
)
def test_import_keys_never_prints_a_secret(app: Flask, tmp_path: Path, rows: str) -> None:
    result = gate(app, "import-keys", write_csv(tmp_path, HEADER + rows))
    assert result.exit_code == 1
    assert "hunter2" not in result.output


def test_import_keys_never_quotes_a_cell_a_secret_may_have_shifted_into(
    app: Flask, tmp_path: Path
) -> None:
    header = "key,secret,package,created,expires,qpsLimitCeiling,rateLimitExempt\n"
    rows = "".join(
        f"k{n},s,members,{row}\n"
        for n, row in enumerate(
            ["hunter2,,,", ",hunter2,,", ",,hunter2,", ",,,hunter2", "hunter2-02-30,,,"]
        )
    )
    result = gate(app, "import-keys", write_csv(tmp_path, header + rows))
    assert len(import_lines(result)) == 6
    assert "hunter2" not in result.output


# -- hashing an import: progress, every core -----------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_hashing_progress_lines_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    """A line with the count, the total and the time left at least every 2 s."""
    from flask_basic_gate.cli import PROGRESS_INTERVAL, _ProgressLines
    from flask_basic_gate.hashpool import TICK

    # The store calls back at least every TICK seconds.
    assert PROGRESS_INTERVAL + TICK <= 2.0
    clock = FakeClock()
    progress = _ProgressLines(2000, clock)
    for done in range(1, 2001):
        clock.now += 0.125  # one secret every 125 ms: 2000 take 250 s
        progress(done, 2000)
    progress.finish()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "hashing 2000 secrets (BASIC_GATE_HASH_METHOD)"
    assert lines[1] == "hashed 12/2000 secrets, 4 min 08 s left"
    assert lines[-2] == "hashed 1992/2000 secrets, 1 s left"
    assert lines[-1] == "hashed 2000 secrets in 4 min 10 s"
    # One every 12 secrets, 1.5 s.
    assert len(lines[1:-1]) == 1992 // 12
    assert all(re.fullmatch(r"hashed \d+/2000 secrets, .* left", line) for line in lines[1:-1])


def test_hashing_progress_small_and_quick_says_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    from flask_basic_gate.cli import _ProgressLines

    clock = FakeClock()
    progress = _ProgressLines(19, clock)
    for done in range(1, 20):
        clock.now += 0.001
        progress(done, 19)
    progress.finish()
    assert capsys.readouterr().err == ""


def test_import_keys_progress_bar_at_a_terminal(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flask_basic_gate.cli as cli

    monkeypatch.setattr(cli, "_stderr_is_terminal", lambda: True)
    rows = "".join(f"k{n},s{n},members,,\n" for n in range(25))
    result = gate(app, "import-keys", write_csv(tmp_path, HEADER + rows))
    assert result.exit_code == 0, result.output
    # Click draws the bar on a terminal; on the runner's pipe it writes its label.
    assert import_lines(result) == ["hashing secrets"]


def test_import_keys_without_a_terminal_says_start_and_end(app: Flask, tmp_path: Path) -> None:
    rows = "".join(f"k{n},s{n},members,,\n" for n in range(25))
    result = gate(app, "import-keys", write_csv(tmp_path, HEADER + rows))
    lines = import_lines(result)
    assert lines[0] == "hashing 25 secrets (BASIC_GATE_HASH_METHOD)"
    assert re.fullmatch(r"hashed 25 secrets in \d+ s", lines[-1])


@pytest.mark.parametrize("workers", ["2", "1"])
def test_import_keys_hashes_on_worker_processes(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    """The pool (spawned workers, the method string and the secrets only)
    gives hashes the gate verifies; --workers 1 keeps it in this process."""
    from flask_basic_gate import hashpool

    monkeypatch.setattr(hashpool, "POOL_MIN_SECONDS", 0.0)
    pools: list[int] = []
    real = hashpool._in_pool

    def counted(*args: Any) -> list[str]:
        pools.append(args[2])
        return real(*args)

    monkeypatch.setattr(hashpool, "_in_pool", counted)
    rows = "".join(f"k{n},secret-{n},members,,\n" for n in range(12))
    file = write_csv(tmp_path, HEADER + rows)
    result = gate(app, "import-keys", "--workers", workers, file)
    # A loaded machine may take long enough for progress lines: only those.
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["imported 12 keys"]
    assert all(
        line.startswith(("hashing ", "hashed ")) for line in without_database_line(result.stderr)
    )
    assert pools == ([2] if workers == "2" else [])
    for n in (0, 5, 11):
        assert status(app, f"k{n}", f"secret-{n}")[0] == 200
    assert status(app, "k1", "secret-2")[0] == 403
    assert all(value.startswith(FAST_KDF + "$") for _, value in stored_secrets(app))


def test_import_keys_workers_must_be_positive(app: Flask, tmp_path: Path) -> None:
    result = gate(app, "import-keys", "--workers", "0", write_csv(tmp_path, HEADER))
    assert result.exit_code == 2
    assert "Invalid value for '--workers': 0 is not in the range x>=1" in result.stderr


# -- what a database that cannot be used says ----------------------------------------


def app_without_database(url: str) -> Flask:
    """An app on a database that cannot be reached (no tables made, none dropped)."""
    app, _ = gate_app(url, {"BASIC_GATE_HASH_METHOD": FAST_KDF})
    return app


def test_a_missing_database_gives_the_driver_s_reason(tmp_path: Path) -> None:
    app = app_without_database(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.sqlite'}")
    try:
        for args in (["list-keys"], ["create-package", "members"]):
            refused(
                gate(app, *args),
                "cannot connect to the database: OperationalError: unable to open database file",
            )
    finally:
        dispose(app)


@pytest.mark.parametrize(
    ("backend", "reason"),
    [
        ("postgresql", 'database "basic_gate_no_such_database" does not exist'),
        ("mariadb", "Unknown database 'basic_gate_no_such_database'"),
    ],
)
def test_a_missing_server_database_gives_the_driver_s_reason(
    backend: str, reason: str, tmp_path: Path
) -> None:
    url = make_url(backend_url(backend, tmp_path)).set(database="basic_gate_no_such_database")
    app = app_without_database(url.render_as_string(hide_password=False))
    try:
        result = gate(app, "list-keys")
        refused(result, "cannot connect to the database: OperationalError: ")
        assert reason in result.stderr
    finally:
        dispose(app)


def test_missing_tables_and_columns_are_named(app_factory: AppFactory) -> None:
    app = app_factory(create=False)
    refused(
        gate(app, "show-key", "k"),
        "the gate's tables are missing (basic_gate_package, basic_gate_key,"
        " basic_gate_secret, basic_gate_usage): run 'flask basic-gate init-db'",
    )
    ok(gate(app, "init-db"))
    with app.app_context():
        engine = BasicGate.state().store.engine
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE basic_gate_key DROP COLUMN qps_exempt")
    refused(
        gate(app, "list-keys"),
        "the gate's tables lack the columns basic_gate_key.qps_exempt: apply the gate's migrations",
    )


COMMAND = ("disable-key", "criticalmix")


def test_example_cli_names_its_fallback_database(tmp_path: Path) -> None:
    """The example without FLASK_SQLALCHEMY_DATABASE_URI in the shell falls back to
    instance/example.sqlite: the command says so before it writes."""
    shutil.copytree(
        ROOT / "example_app", tmp_path / "example_app", ignore=shutil.ignore_patterns("__pycache__")
    )
    done = subprocess.run(
        [sys.executable, "-m", "flask", *("--app", "example_app", "basic-gate"), *COMMAND],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "key 'criticalmix' disabled\n"
    database = f"database: sqlite:///{tmp_path / 'instance' / 'example.sqlite'}"
    assert database in done.stderr.splitlines()

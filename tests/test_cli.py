"""The ``flask basic-gate`` commands, through Flask's CLI runner.

Every command on success, every error path (one line on stderr, exit status
1, nothing written), and that no command but create-key and rotate-secret
ever prints a secret.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import inspect, select

from flask_basic_gate import BasicGate
from flask_basic_gate.testing import basic_auth_headers

from .conftest import FAST_KDF, AppFactory, provision

GATE_TABLES = {"basic_gate_package", "basic_gate_key", "basic_gate_secret"}


def cli_runner(app: Flask) -> FlaskCliRunner:
    """A runner that keeps stderr apart from stdout on every Click version."""
    try:
        return app.test_cli_runner(mix_stderr=False)  # Click < 8.2
    except TypeError:  # Click >= 8.2 always keeps them apart
        return app.test_cli_runner()


def gate(app: Flask, *args: str, input: Optional[str] = None) -> Result:
    """Run ``flask basic-gate ARGS`` on ``app``."""
    return cli_runner(app).invoke(args=["basic-gate", *args], input=input)


def ok(result: Result) -> list[str]:
    """The stdout lines of a command that must have succeeded."""
    assert result.exit_code == 0, (result.exit_code, result.output)
    assert not result.stderr
    return result.stdout.splitlines()


def refused(result: Result, message: str) -> None:
    """A one-line error on stderr, nothing on stdout, exit status 1."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: ")
    assert message in lines[0], lines[0]


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
        assert set(inspect(db.engine).get_table_names()) == GATE_TABLES
    # Idempotent.
    assert ok(gate(app, "init-db")) == ["basic-gate tables created"]


def test_command_before_init_db_tells_what_to_run(app_factory: AppFactory) -> None:
    app = app_factory(create=False)
    refused(gate(app, "list-keys"), "run 'flask basic-gate init-db'")
    refused(gate(app, "create-package", "members"), "flask basic-gate init-db")


# -- create-package ----------------------------------------------------------


def test_create_package(app: Flask) -> None:
    assert ok(gate(app, "create-package", "partners")) == ["package 'partners' created"]
    ok(gate(app, "create-key", "--package", "partners", "--key", "p1"))
    assert ok(gate(app, "list-keys", "--package", "partners"))[1].split()[:2] == [
        "p1",
        "partners",
    ]


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
    assert ok(gate(app, "list-keys"))[1].split()[-1] == shown


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
        (["--package", "members", "--expires", "tomorrow"], "--expires 'tomorrow' is not an ISO"),
        (["--package", "members", "--expires", "2031-13-01"], "is not an ISO 8601"),
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
    assert ok(gate(app, "list-keys"))[1].split()[2] == "disabled"
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
    assert ok(gate(app, "list-keys"))[1].split()[-2] == "2"
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
    assert ok(gate(app, "list-keys"))[1].split()[-2] == "1"


# -- list-keys -------------------------------------------------------------------


def test_list_keys_columns_and_never_a_secret(app: Flask) -> None:
    ok(gate(app, "create-package", "partners"))
    provision(app, key="criticalmix", secret="topsecret-1", owner_email="dev@example.com")
    ok(
        gate(
            app,
            *("create-key", "--package", "partners", "--key", "p1", "--secret", "topsecret-2"),
            *("--owner", "Shop", "--developer", "shop@example.com", "--expires", "2031-01-01"),
        )
    )
    ok(gate(app, "create-key", "--package", "partners", "--key", "p2", "--secret", "topsecret-3"))
    ok(gate(app, "disable-key", "p2"))
    lines = ok(gate(app, "list-keys"))
    assert [line.split() for line in lines] == [
        ["KEY", "PACKAGE", "STATUS", "OWNER", "SECRETS", "EXPIRES"],
        ["criticalmix", "members", "active", "dev@example.com", "1", "never"],
        ["p1", "partners", "active", "Shop", "<shop@example.com>", "1", "2031-01-01T00:00:00Z"],
        ["p2", "partners", "disabled", "-", "1", "never"],
    ]
    output = "\n".join(lines)
    assert "topsecret" not in output
    for _, value in stored_secrets(app):
        assert value not in output
    partners = ok(gate(app, "list-keys", "--package", "partners"))
    assert [line.split()[0] for line in partners[1:]] == ["p1", "p2"]


def test_list_keys_empty(app: Flask) -> None:
    assert ok(gate(app, "list-keys")) == ["no keys"]
    assert ok(gate(app, "list-keys", "--package", "members")) == ["no keys in package 'members'"]


def test_list_keys_unknown_package_refused(app: Flask) -> None:
    refused(gate(app, "list-keys", "--package", "nope"), "no package named 'nope'")


# -- import-keys -----------------------------------------------------------------

HEADER = "key,secret,package,status,developer email\n"


def write_csv(tmp_path: Path, text: str) -> str:
    path = tmp_path / "keys.csv"
    path.write_text(text, encoding="utf-8")
    return str(path)


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
    lines = ok(gate(app, "list-keys"))
    assert [line.split()[:4] for line in lines[1:]] == [
        ["k1", "members", "active", "one@example.com"],
        ["k2", "members", "disabled", "-"],
        ["k3", "members", "active", "three@example.com"],
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


def test_import_keys_create_packages(app: Flask, tmp_path: Path) -> None:
    file = write_csv(
        tmp_path, HEADER + "k1,s1,members,,\nk2,s2,partners,,\nk3,s3,partners,,\nk4,s4,gold,,\n"
    )
    refused(gate(app, "import-keys", file), "line 3: no package named 'partners'")
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


BAD_ROWS = [
    pytest.param(
        "k1,s,members,,\nk2,s,members,waiting,\n",
        "line 3: the status must be 'active' or 'disabled'",
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
    # The first bad row is reported, whatever the kind of its problem.
    pytest.param("k1,s,nope,,\nk2,s,members,bad,\n", "line 2: no package named", id="first"),
    pytest.param(
        "k1,s,members,bad,\nold,s,members,,\n", "line 2: the status must be", id="first-2"
    ),
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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("key,secret\nk,s\n", "line 1: the column 'package' is missing"),
        ("key,secret,package,colour\n", "line 1: unknown column 'colour'"),
        ("key,secret,package,key\n", "line 1: the column 'key' appears twice"),
    ],
)
def test_import_keys_bad_header(app: Flask, tmp_path: Path, text: str, message: str) -> None:
    refused(gate(app, "import-keys", write_csv(tmp_path, text)), message)
    assert keys_listed(app) == []


def test_import_keys_header_only(app: Flask, tmp_path: Path) -> None:
    assert ok(gate(app, "import-keys", write_csv(tmp_path, HEADER))) == ["imported 0 keys"]


def test_import_keys_unreadable_file(app: Flask, tmp_path: Path) -> None:
    refused(gate(app, "import-keys", str(tmp_path / "missing.csv")), "No such file")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"key,secret,package\nk,p\xe4ss,members\n")
    refused(gate(app, "import-keys", str(latin)), "is not UTF-8 text")
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

"""The docs' examples, run: what a page shows is what the code prints.

- docs/cli.rst is one session on a new database: every ``$ flask basic-gate``
  line is run in order and its output compared with the lines shown.
- The quick start's "In tests" example is run with pytest.
- The README's ``curl -i`` blocks (and index.rst's) are sent with real curl
  to the example app served as a real process, and the status line, the
  headers shown (in the order the server sends them) and the body compared.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import make_url

import flask_basic_gate
from flask_basic_gate import BasicGate

from .support import ROOT
from .support.apps import FAST_KDF, AppFactory, dispose
from .support.backends import BACKEND_ENV
from .support.cli import ANNOUNCEMENT, gate
from .support.docs import DOCS, code_blocks, needs_docs, page_session
from .support.servers import child_env, flask_run, gunicorn_run, http_session

CURL = shutil.which("curl")

pytestmark = needs_docs


# -- docs/cli.rst, run in order ---------------------------------------------------

#: A time the session itself makes (a creation time, a grace period's end).
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
#: The page shows such times in the years 2025 to 2029; dates it gives are from
#: 2030 on, and those of imported keys before 2025.
PAGE_RUN_TIME = re.compile(r"202[5-9]-\d\d-\d\dT\d\d:\d\d:\d\dZ")
RUN_TIME = "<time of the run>".ljust(20)
GENERATED = re.compile(r"(?:key|secret): ([A-Za-z0-9_-]{24,})")


def _printed_times(line: str) -> str:
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)

    def replace(found: re.Match[str]) -> str:
        when = dt.datetime.strptime(found[0], "%Y-%m-%dT%H:%M:%SZ")
        return RUN_TIME if abs(when - now) < dt.timedelta(days=3) else found[0]

    return TIME.sub(replace, line)


def run_page(page: str, app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Run every ``$ flask basic-gate`` line of ``page`` in order, with the
    files its captioned blocks show, and compare what each prints with the
    lines under it.

    :return: the commands run.
    """
    text = (DOCS / page).read_text(encoding="utf-8")
    for caption, lines in code_blocks(text):
        if caption:
            (tmp_path / caption).write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    # Generated keys and secrets differ from run to run: each one printed is
    # replaced by the one the page shows at that place, here and after.
    generated: dict[str, str] = {}
    run = set()
    for command, shown in page_session(text, "flask "):
        args = shlex.split(command)
        assert args[:2] == ["flask", "basic-gate"], command
        result = gate(app, *args[2:])
        errors = result.stderr.splitlines()
        if errors and errors[0].startswith("database: "):
            # Every command prints it; the pages show it where they explain it.
            assert errors[0] == f"database: {url}", command
            errors = errors[1:]
            if shown and shown[0].startswith("database: "):
                shown = shown[1:]
        # Every command that wrote says where the change went; the page
        # shows it where it explains it.
        if (
            errors
            and ANNOUNCEMENT.fullmatch(errors[-1])
            and not any(ANNOUNCEMENT.fullmatch(line) for line in shown)
        ):
            errors = errors[:-1]
        printed = errors + result.stdout.splitlines()
        new = [GENERATED.fullmatch(line) for line in printed]
        page_lines = [GENERATED.fullmatch(line) for line in shown]
        for mine, theirs in zip(new, page_lines):
            if mine and theirs and "--key" not in args and "--secret" not in args:
                generated[mine[1]] = theirs[1]
        for value, documented in generated.items():
            printed = [line.replace(value, documented) for line in printed]
        printed = [_printed_times(line) for line in printed]
        shown = [PAGE_RUN_TIME.sub(RUN_TIME, line) for line in shown]
        assert printed == shown, command
        assert result.exit_code == (1 if shown[-1:] and shown[-1].startswith("Error: ") else 0)
        run.add(args[2])
    return run


def test_cli_page_runs_as_shown(
    app_factory: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_basic_gate.cli import basic_gate_cli

    captions = {caption for caption, _ in code_blocks((DOCS / "cli.rst").read_text("utf-8"))}
    assert captions == {"", "keys.csv", "broken.csv", "map.csv", "keys.json"}
    run = run_page("cli.rst", app_factory(create=False), tmp_path, monkeypatch)
    assert run == set(basic_gate_cli.commands)


def test_migration_page_runs_as_shown(
    app_factory: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = run_page("migration.rst", app_factory(), tmp_path, monkeypatch)
    assert run == {"create-package", "import-keys", "list-keys"}


def test_cli_page_error_without_double_dash(app: Flask) -> None:
    """What the page says of a key starting with '-' given without '--'."""
    text = (DOCS / "cli.rst").read_text(encoding="utf-8")
    assert "stops with a ``No such option`` error and exit\nstatus 2" in text
    result = gate(app, "enable-key", "-x7Qp2")
    assert result.exit_code == 2
    assert "No such option" in result.stderr


# -- the quick start's "In tests" example -------------------------------------------


def test_quickstart_in_tests_example_passes(tmp_path: Path) -> None:
    page = (DOCS / "quickstart.rst").read_text(encoding="utf-8")
    section = page.split("\nIn tests\n--------\n", 1)[1].split("\nNext steps\n", 1)[0]
    blocks = dict(
        re.findall(r"\.\. code-block:: python\n    :caption: (\S+)\n\n((?:    .*\n|\n)+)", section)
    )
    assert set(blocks) == {"conftest.py", "test_hello.py"}
    shutil.copy(DOCS / "quickstart" / "hello.py", tmp_path / "hello.py")
    for name, body in blocks.items():
        code = "\n".join(line[4:] for line in body.splitlines())
        (tmp_path / name).write_text(code, encoding="utf-8")
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b1 passed\b", result.stdout), result.stdout


# -- the README's curl outputs, from a real server ------------------------------------

#: Headers the README (and index.rst) leave out: they change from run to run
#: or from server to server.
LEFT_OUT = {"server", "date", "content-length", "connection"}
MASHERY_ENV = "FLASK_BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE=true"


class CurlExample:
    def __init__(self, command: str, shown: list[str], mashery: bool) -> None:
        self.command = command
        self.shown = shown
        self.mashery = mashery


def readme_curl_examples() -> list[CurlExample]:
    """Each ``$ curl -i`` of the README's console blocks, with what it shows and
    whether the text before the block starts the example in Mashery mode."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    examples = []
    before = ""
    for prose, block in re.findall(r"(.*?)```console\n(.*?)```", text, re.S):
        before = prose
        mashery = MASHERY_ENV in before
        lines = block.splitlines()
        for command, shown in _curl_session(lines):
            examples.append(CurlExample(command, shown, mashery))
    return examples


def index_curl_examples() -> list[CurlExample]:
    text = (DOCS / "index.rst").read_text(encoding="utf-8")
    examples = []
    for _, lines in code_blocks(text):
        for command, shown in _curl_session(lines):
            examples.append(CurlExample(command, shown, False))
    return examples


def _curl_session(lines: list[str]) -> list[tuple[str, list[str]]]:
    """Commands with their output, keeping the blank line between head and body."""
    steps: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
    return [(c, _trim(out)) for c, out in steps if c.startswith("curl -i")]


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def run_curl(command: str, base: str) -> list[str]:
    """The command run with real curl against ``base``, printed as the README
    shows it: status line, headers less LEFT_OUT, a blank line, the body."""
    assert CURL is not None
    args = shlex.split(command.replace("http://127.0.0.1:5000", base))
    assert args[0] == "curl"
    done = subprocess.run(
        [CURL, "--silent", "--show-error", "--noproxy", "*", *args[1:]],
        capture_output=True,
        check=True,
        timeout=60,
    )
    head, _, body = done.stdout.decode("utf-8").partition("\r\n\r\n")
    status, *headers = head.split("\r\n")
    kept = [h for h in headers if h.split(":", 1)[0].strip().lower() not in LEFT_OUT]
    # Every body ends with a newline (the JSON errors too); the README shows
    # the body as its one line.
    assert body.endswith("\n"), body
    return [status, *kept, "", *body[:-1].split("\n")]


@pytest.fixture
def example_servers(tmp_path: Path) -> Iterator[dict[bool, str]]:
    """The example app run with no settings, as the README runs it, in both modes."""
    if CURL is None:
        pytest.skip("curl is not installed")
    shutil.copytree(
        ROOT / "example_app", tmp_path / "example_app", ignore=shutil.ignore_patterns("__pycache__")
    )
    with flask_run(tmp_path, env=child_env()) as rfc:
        mashery_env = child_env(FLASK_BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE="true")
        with flask_run(tmp_path, env=mashery_env) as mashery:
            yield {False: rfc.url, True: mashery.url}


def test_readme_and_index_curl_outputs(example_servers: dict[bool, str]) -> None:
    readme = readme_curl_examples()
    assert len(readme) == 4
    assert [example.mashery for example in readme] == [False, False, False, True]
    index = index_curl_examples()
    assert len(index) == 1
    for example in [*readme, *index]:
        printed = run_curl(example.command, example_servers[example.mashery])
        assert printed == example.shown, example.command


# -- one hello.py, read by README and docs, configured from the environment ---------

HELLO = DOCS / "quickstart" / "hello.py"


def test_readme_shows_the_quickstart_hello_py() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"## Use it in your app\n\n```python\n(.*?)```\n", readme, re.S)
    assert found is not None
    assert found[1] == HELLO.read_text(encoding="utf-8")
    quickstart = (DOCS / "quickstart.rst").read_text(encoding="utf-8")
    assert ".. literalinclude:: quickstart/hello.py" in quickstart


def test_hello_reads_the_flask_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    shutil.copy(HELLO, tmp_path / "hello.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "hello", raising=False)
    database = f"sqlite:///{tmp_path / 'hello.sqlite'}"
    monkeypatch.setenv("FLASK_SQLALCHEMY_DATABASE_URI", database)
    monkeypatch.setenv("FLASK_BASIC_GATE_REDIS_URL", redis_url)
    monkeypatch.setenv("FLASK_BASIC_GATE_REALM", "partners")
    import hello

    try:
        app = hello.create_app()
        overridden = hello.create_app({"BASIC_GATE_REALM": "tests"})
        for made in (app, overridden):
            state = BasicGate.state(made)
            assert state.settings.redis_url == redis_url
            assert str(state.store.engine.url) == database
        assert BasicGate.state(app).settings.realm == "partners"
        assert BasicGate.state(overridden).settings.realm == "tests"
    finally:
        for made in (app, overridden):
            BasicGate.state(made).revocation.close()
            dispose(made)
        sys.modules.pop("hello", None)


@pytest.mark.server
def test_deployment_with_redis_runs_as_written(tmp_path: Path, redis_url: str) -> None:
    """deployment.rst: the environment sets the database and Redis, gunicorn
    serves ``hello:create_app()``, and ``flask --app hello basic-gate``
    changes a key that the server then refuses."""
    page = (DOCS / "deployment.rst").read_text(encoding="utf-8")
    assert '$ gunicorn --workers 8 "hello:create_app()"' in page
    assert "$ export FLASK_BASIC_GATE_REDIS_URL=redis://" in page
    shutil.copy(HELLO, tmp_path / "hello.py")
    env = child_env(
        FLASK_SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'api.sqlite'}",
        FLASK_BASIC_GATE_REDIS_URL=redis_url,
        FLASK_BASIC_GATE_HASH_METHOD=FAST_KDF,
    )
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "hello", "basic-gate", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done

    cli("init-db")
    cli("create-package", "members")
    cli("create-key", "--package", "members", "--key", "criticalmix", "--secret", "topsecret")
    serving = gunicorn_run("hello:create_app()", env=env, workers=1)
    with serving as server, http_session() as client:
        url = server.url + "/hello"
        response = client.get(url, auth=("criticalmix", "topsecret"), timeout=10)
        assert response.json() == {"key": "criticalmix", "package": "members"}
        done = cli("disable-key", "criticalmix")
        shown = make_url(redis_url).render_as_string(hide_password=True)
        assert done.stderr.splitlines()[-1] == f"announced on Redis {shown}"
        response = client.get(url, auth=("criticalmix", "topsecret"), timeout=10)
        assert (response.status_code, response.json()["errorCode"]) == (403, "key-inactive")


# -- install commands that work on a fresh machine -----------------------------------

#: pip install commands as the README and docs write them, up to the end of
#: the inline literal, the line or the shell's next command.
PIP_INSTALL = re.compile(r"pip install ([^`\n&]+)")


def install_commands() -> list[tuple[str, str]]:
    found = []
    for path in [ROOT / "README.md", *sorted(DOCS.glob("*.rst"))]:
        # An inline literal may run over two lines: join them.
        mark = "``" if path.suffix == ".rst" else "`"
        lines: list[str] = []
        open_literal = ""
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.lstrip().startswith("```"):
                lines.append(line)
                continue
            line = f"{open_literal} {line.strip()}" if open_literal else line
            open_literal = line if line.count(mark) % 2 else ""
            if not open_literal:
                lines.append(line)
        for match in PIP_INSTALL.finditer("\n".join(lines)):
            found.append((path.name, match[1].split("#")[0].strip()))
    return found


def extras_of_setup_cfg() -> set[str]:
    text = (ROOT / "setup.cfg").read_text(encoding="utf-8")
    section = text.split("[options.extras_require]\n", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^(\w+) =", section, re.M))


def test_install_commands_work_from_a_checkout() -> None:
    """flask-basic-gate is on no index: every command that installs it names
    a checkout, a wheel or a git URL, with extras that exist."""
    commands = install_commands()
    extras = extras_of_setup_cfg()
    ours = []
    for where, command in commands:
        words = shlex.split(command)
        for word in words:
            name = word.split("[")[0].rstrip("/")
            if name != "." and "flask_basic_gate" not in name and "flask-basic-gate" not in name:
                continue
            ours.append((where, word))
            if name.lower() in ("flask-basic-gate", "flask_basic_gate"):
                # A requirement by name needs a direct reference (quoted, one word).
                assert re.fullmatch(r"\S+ @ git\+https://\S+", word), (where, command)
            for extra in re.findall(r"\[([\w,]+)\]", word):
                assert set(extra.split(",")) <= extras, (where, command)
    # The three ways are each shown, in README.md and deployment.rst.
    for page in ("README.md", "deployment.rst"):
        shown = [word for where, word in ours if where == page]
        assert any(word.startswith(".") for word in shown), page
        assert any(".whl" in word for word in shown), page
        assert any(word.startswith("flask-basic-gate[") for word in shown), page
    wheel = f"flask_basic_gate-{flask_basic_gate.__version__}-py3-none-any.whl"
    assert all(wheel in word for _, word in ours if ".whl" in word)


# -- the test suite's own instructions ---------------------------------------------


def test_readme_names_every_test_backend_variable() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for variable in BACKEND_ENV.values():
        assert f"`{variable}`" in readme, variable


def test_ci_gives_the_tests_a_redis_database_of_their_own() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    [url] = re.findall(r"^export BASIC_GATE_TEST_REDIS_URL=(\S+)$", script, re.M)
    assert make_url(url).database not in (None, "", "0"), url


def test_skips_are_explained_in_the_default_output(tmp_path: Path) -> None:
    """The project's pytest settings print each skip's reason (``-ra``)."""
    (tmp_path / "test_skipping.py").write_text(
        "import pytest\n\n\ndef test_skipped():\n    pytest.skip('no server named')\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-c", str(ROOT / "setup.cfg")),
            *("-p", "no:cacheprovider", "--rootdir", str(tmp_path)),
            str(tmp_path / "test_skipping.py"),
        ],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"SKIPPED \[1\] test_skipping\.py:\d+: no server named", done.stdout), (
        done.stdout
    )

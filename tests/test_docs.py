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

from .support import ROOT
from .support.apps import AppFactory
from .support.cli import gate
from .support.docs import DOCS, code_blocks, needs_docs, page_session
from .support.servers import child_env, flask_run

CURL = shutil.which("curl")

pytestmark = needs_docs


# -- docs/cli.rst, run in order ---------------------------------------------------

#: A time the session itself makes (a creation time, a grace period's end).
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
#: The page shows such times in years before 2030, and dates it gives from 2030 on.
PAGE_RUN_TIME = re.compile(r"20[0-2]\d-\d\d-\d\dT\d\d:\d\d:\d\dZ")
RUN_TIME = "<time of the run>".ljust(20)
GENERATED = re.compile(r"(?:key|secret): ([A-Za-z0-9_-]{24,})")


def _printed_times(line: str) -> str:
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)

    def replace(found: re.Match[str]) -> str:
        when = dt.datetime.strptime(found[0], "%Y-%m-%dT%H:%M:%SZ")
        return RUN_TIME if abs(when - now) < dt.timedelta(days=3) else found[0]

    return TIME.sub(replace, line)


def test_cli_page_runs_as_shown(
    app_factory: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_basic_gate.cli import basic_gate_cli

    text = (DOCS / "cli.rst").read_text(encoding="utf-8")
    files = {caption: lines for caption, lines in code_blocks(text) if caption}
    assert set(files) == {"keys.csv", "broken.csv"}
    for name, lines in files.items():
        (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    steps = page_session(text, "flask ")
    app: Flask = app_factory(create=False)
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    # Generated keys and secrets differ from run to run: each one printed is
    # replaced by the one the page shows at that place, here and after.
    generated: dict[str, str] = {}
    run = set()
    for command, shown in steps:
        args = shlex.split(command)
        assert args[:2] == ["flask", "basic-gate"], command
        result = gate(app, *args[2:])
        printed = result.stderr.splitlines() + result.stdout.splitlines()
        if printed and printed[0].startswith("database: "):
            # Every writing command prints it; the page shows it for init-db.
            assert printed[0] == f"database: {url}", command
            printed = printed[1:]
            if shown and shown[0].startswith("database: "):
                shown = shown[1:]
        new = [GENERATED.fullmatch(line) for line in printed]
        page = [GENERATED.fullmatch(line) for line in shown]
        for mine, theirs in zip(new, page):
            if mine and theirs and "--key" not in args and "--secret" not in args:
                generated[mine[1]] = theirs[1]
        for value, documented in generated.items():
            printed = [line.replace(value, documented) for line in printed]
        printed = [_printed_times(line) for line in printed]
        shown = [PAGE_RUN_TIME.sub(RUN_TIME, line) for line in shown]
        assert printed == shown, command
        assert result.exit_code == (1 if shown[:1] and shown[0].startswith("Error: ") else 0)
        run.add(args[2])
    assert run == set(basic_gate_cli.commands)


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

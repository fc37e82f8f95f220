"""The docs as the tests read them: code blocks, console sessions, example migrations."""

from __future__ import annotations

import re
from typing import Any

import pytest

from . import ROOT

DOCS = ROOT / "docs"

#: For tests that read docs/ (an installed package has tests but no docs).
needs_docs = pytest.mark.skipif(
    not DOCS.is_dir(), reason="the docs are not next to the tests (installed package?)"
)


def code_blocks(text: str) -> list[tuple[str, list[str]]]:
    """Every ``.. code-block::`` of a reST page: its caption ('' if none) and lines."""
    blocks = []
    pattern = r"\.\. code-block:: \w+\n((?:    :\w+:.*\n)*)\n((?:    .*\n|\n)+)"
    for options, body in re.findall(pattern, text):
        caption = re.search(r":caption: (.*)", options)
        lines = [line[4:] for line in body.rstrip("\n").splitlines()]
        blocks.append((caption[1] if caption else "", lines))
    return blocks


def session(lines: list[str], prefix: str) -> list[tuple[str, list[str]]]:
    """The commands starting with ``$ PREFIX``, each with the lines under it."""
    steps: list[tuple[str, list[str]]] = []
    current: list[str] = []
    for line in lines:
        if line.startswith("$ "):
            current = []
            steps.append((line[2:], current))
        elif line.strip():
            current.append(line)
    return [(command, shown) for command, shown in steps if command.startswith(prefix)]


def page_session(text: str, prefix: str) -> list[tuple[str, list[str]]]:
    """:func:`session` over every code block of a page without a caption, in order."""
    return [
        step
        for caption, lines in code_blocks(text)
        if not caption
        for step in session(lines, prefix)
    ]


def example_migrations() -> list[Any]:
    """The example migrations (``docs/migrations``), oldest first (each revises the one before)."""
    found = []
    for path in sorted((DOCS / "migrations").glob("[0-9]*.py")):
        source = path.read_text(encoding="utf-8")
        namespace: dict[str, Any] = {"__name__": f"migration_{path.stem}"}
        exec(compile(source, str(path), "exec"), namespace)
        found.append(namespace)
    for older, newer in zip(found, found[1:]):
        assert newer["down_revision"] == older["revision"]
    return found

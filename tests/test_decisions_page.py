"""docs/decisions.rst against the one table in flask_basic_gate.errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flask_basic_gate.errors import MESSAGES, failure

PAGE = Path(__file__).resolve().parent.parent / "docs" / "decisions.rst"

needs_docs = pytest.mark.skipif(not PAGE.is_file(), reason="docs/ is not in this checkout")


def _tables() -> list[list[list[str]]]:
    """Every list-table of the page: rows of cells, continuation lines joined."""
    tables: list[list[list[str]]] = []
    rows: list[list[str]] = []
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        if line.startswith(".. list-table::"):
            rows = []
            tables.append(rows)
        elif line.startswith("    *   - "):
            rows.append([line[10:].strip()])
        elif line.startswith("        - ") and rows:
            rows[-1].append(line[10:].strip())
        elif line.startswith("          ") and rows and line.strip():
            rows[-1][-1] += " " + line.strip()
    return tables


def _code(cell: str) -> str:
    return cell.strip("`")


@needs_docs
def test_rfc_table_is_the_errors_table() -> None:
    rfc = _tables()[0]
    assert rfc[0] == ["request", "status", "errorCode", "errorMessage"]
    seen = set()
    for _, status, code, message in (row for row in rfc[1:] if len(row) == 4):
        error = failure(_code(code), mashery=False, challenge="Basic")
        assert (int(status), message) == (error.code, MESSAGES[error.error_code]), code
        seen.add(error.error_code)
    assert seen == set(MESSAGES)


@needs_docs
def test_mashery_table_is_the_errors_table() -> None:
    mashery = _tables()[1]
    assert mashery[0][:3] == ["request", "status", "errorCode"]
    seen = set()
    for _, status, code, extra in (row for row in mashery[1:] if len(row) == 4):
        error = failure(_code(code), mashery=True, challenge="Basic", retry_after=1)
        assert int(status) == error.code, code
        documented = dict(re.findall(r"``([\w-]+): ([^`]+)``", extra))
        sent = dict(error.get_headers())
        for name in ("X-Mashery-Error-Code", "X-Error-Detail-Header"):
            assert documented.get(name) == sent.get(name), (code, name)
        seen.add(error.error_code)
    assert seen == set(MESSAGES)

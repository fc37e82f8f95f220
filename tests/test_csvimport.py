"""Reading import files without the CLI: rows with their lines, the first
bad row, and the store's own rules applied to each row."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from flask_basic_gate.csvimport import BadRow, ImportFileError, read_file, read_import_file
from flask_basic_gate.store import AdminError, KeyImport, check_import_row, check_status


def read(text: str) -> tuple[list[tuple[int, KeyImport]], BadRow | None]:
    rows, bad = read_import_file(io.StringIO(text))
    return [(row.line, row.key) for row in rows], bad


def test_rows_keep_their_lines_and_limits() -> None:
    rows, bad = read(
        "Key,Secret,Package,Status,qps_limit_ceiling,rateLimitExempt\n"
        "k1, s1 ,members,,5,\n"
        "\n"
        'k2,"two\nlines",gold,DISABLED,,yes\n'
        "k3,s3,members,active,,\n"
    )
    assert bad is None
    assert rows == [
        (2, KeyImport("k1", " s1 ", "members", qps=5)),
        (4, KeyImport("k2", "two\nlines", "gold", "disabled", quota_exempt=True)),
        (6, KeyImport("k3", "s3", "members")),
    ]
    assert "s1" not in repr(rows[0][1])


def test_reading_stops_at_the_first_bad_row() -> None:
    rows, bad = read("key,secret,package\nk1,s1,members\nk2,,members\nk:3,s3,members\n")
    assert [key.key for _, key in rows] == ["k1"]
    assert isinstance(bad, BadRow)
    assert (bad.line, bad.problem) == (3, "key 'k2' has no secret")
    assert str(bad) == "line 3: key 'k2' has no secret"


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("k:1,s,members,,,", "a key must have 1 to 255 characters and no colon or NUL"),
        (f"{'k' * 256},s,members,,,", "a key must have 1 to 255 characters and no colon or NUL"),
        ("k1,s,,,,", "a package name must have 1 to 255 characters"),
        ("k1,s,members,paused,,", "the status must be 'active' or 'disabled' (or empty)"),
        (f"k1,s,members,,{'d' * 256},", "a developer email must have at most 255 characters"),
        ("k1,s,members,,,-1", "qpsLimitCeiling must be a whole number from 0 to 2147483647"),
        ("k1,s,members,,,99999999999", "qpsLimitCeiling must be a whole number"),
    ],
)
def test_the_store_rules_apply_to_each_row(row: str, problem: str) -> None:
    _, bad = read(f"key,secret,package,status,developer email,qpsLimitCeiling\n{row}\n")
    assert bad is not None
    assert bad.line == 2
    assert bad.problem.startswith(problem)


def test_the_status_message_is_the_store_s() -> None:
    with pytest.raises(AdminError) as raised:
        check_status("paused")
    _, bad = read("key,secret,package,status\nk1,s,members,paused\n")
    assert bad is not None
    assert bad.problem == f"{raised.value} (or empty)"
    with pytest.raises(AdminError, match="no colon"):
        check_import_row(KeyImport("k:1", "s", "members"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("key,secret\n", "line 1: the column 'package' is missing"),
        ("key,secret,package,colour\n", "line 1: unknown column 'colour'"),
        ("key,secret,package,qps_limit_ceiling,qpsLimitCeiling\n", "appears twice"),
    ],
)
def test_an_unusable_header_is_a_file_error(text: str, message: str) -> None:
    with pytest.raises(ImportFileError, match=message):
        read(text)


def test_read_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="No such file"):
        read_file(str(tmp_path / "missing.csv"))
    latin = tmp_path / "latin.csv"
    latin.write_bytes("key,secret,package\nk\xe9,s,members\n".encode("latin-1"))
    with pytest.raises(ImportFileError, match="is not UTF-8 text"):
        read_file(str(latin))
    bom = tmp_path / "bom.csv"
    bom.write_text("\ufeffkey,secret,package\nk,s,members\n", encoding="utf-8")
    rows, bad = read_file(str(bom))
    assert bad is None
    assert [row.key.key for row in rows] == ["k"]

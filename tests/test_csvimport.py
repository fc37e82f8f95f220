"""Reading import files without the CLI: rows with where they are, every
bad row, the store's own rules applied to each row, the gateway's JSON, and
the gateway's package and plan mapped onto the gate's packages."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Optional

import pytest

from flask_basic_gate.csvimport import (
    ImportFileError,
    ImportRow,
    PackageMapping,
    map_packages,
    read_csv,
    read_file,
    read_json,
    read_package_map,
)
from flask_basic_gate.store import (
    AdminError,
    KeyImport,
    check_import_row,
    check_status,
    parse_time,
)


def read(text: str) -> tuple[list[tuple[str, KeyImport]], list[str]]:
    found = read_csv(io.StringIO(text, newline=""))
    return [(row.where, row.key) for row in found.rows], [str(bad) for bad in found.problems]


def test_rows_keep_their_lines_and_limits() -> None:
    rows, problems = read(
        "Key,Secret,Package,Status,qps_limit_ceiling,rateLimitExempt\n"
        "k1, s1 ,members,,5,\n"
        "\n"
        'k2,"two\nlines",gold,DISABLED,,yes\n'
        "k3,s3,members,Waiting,,\n"
    )
    assert problems == []
    assert rows == [
        ("line 2", KeyImport("k1", " s1 ", "members", qps=5)),
        ("line 4", KeyImport("k2", "two\nlines", "gold", "disabled", quota_exempt=True)),
        ("line 6", KeyImport("k3", "s3", "members", "waiting")),
    ]
    assert "s1" not in repr(rows[0][1])


def test_every_bad_row_is_reported_and_the_good_ones_kept() -> None:
    rows, problems = read(
        "key,secret,package\nk1,s1,members\nk2,,members\nk:3,s3,members\nk4,s4,members\n"
    )
    assert [key.key for _, key in rows] == ["k1", "k4"]
    assert problems == [
        "line 3: key 'k2' has no secret",
        "line 4: a key must have 1 to 255 characters and no colon or NUL",
    ]


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("k:1,s,members,,,", "a key must have 1 to 255 characters and no colon or NUL"),
        (f"{'k' * 256},s,members,,,", "a key must have 1 to 255 characters and no colon or NUL"),
        ("k1,s,,,,", "a package name must have 1 to 255 characters"),
        (
            "k1,s,members,paused,,",
            "the status must be 'waiting', 'active' or 'disabled' (or empty)",
        ),
        (f"k1,s,members,,{'d' * 256},", "a developer email must have at most 255 characters"),
        ("k1,s,members,,,-1", "qpsLimitCeiling must be a whole number from 0 to 2147483647"),
        ("k1,s,members,,,99999999999", "qpsLimitCeiling must be a whole number"),
    ],
)
def test_the_store_rules_apply_to_each_row(row: str, problem: str) -> None:
    _, problems = read(f"key,secret,package,status,developer email,qpsLimitCeiling\n{row}\n")
    assert len(problems) == 1
    assert problems[0].startswith(f"line 2: {problem}")


def test_the_status_message_is_the_store_s() -> None:
    with pytest.raises(AdminError) as raised:
        check_status("paused", waiting=True)
    _, problems = read("key,secret,package,status\nk1,s,members,paused\n")
    assert problems == [f"line 2: {raised.value} (or empty)"]
    with pytest.raises(AdminError, match="no colon"):
        check_import_row(KeyImport("k:1", "s", "members"))
    # The store takes waiting from an import only.
    check_import_row(KeyImport("k1", "s", "members", "waiting"))
    with pytest.raises(AdminError, match="'active' or 'disabled'"):
        check_status("waiting")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("key,secret\n", "line 1: the column package is missing"),
        ("key,secret,package,qps_limit_ceiling,qpsLimitCeiling\n", "are one field"),
    ],
)
def test_an_unusable_header_is_a_file_error(text: str, message: str) -> None:
    with pytest.raises(ImportFileError, match=message):
        read(text)


def test_unused_columns_are_named_once() -> None:
    found = read_csv(
        io.StringIO("id,apikey,secret,package,updated,limits\n1,k,s,p,x,y\n2,l,s,p,,\n")
    )
    assert found.ignored == ["id", "updated", "limits"]
    assert [row.key.key for row in found.rows] == ["k", "l"]


def test_created_and_expires_in_the_gateway_s_format() -> None:
    found = read_csv(
        io.StringIO(
            "apikey,secret,package,created,expires\n"
            "k,s,p,2017-09-04T11:54:56.000+0000,2031-01-01T02:00:00.000+0200\n"
            "l,s,p,2017-09-04,\n"
            "m,s,p,2017-02-30T00:00:00.000+0000,\n"
            "n,s,p,,last week\n"
        )
    )
    assert [(row.key.created_at, row.key.expires_at) for row in found.rows] == [
        (dt.datetime(2017, 9, 4, 11, 54, 56), dt.datetime(2031, 1, 1)),
        (dt.datetime(2017, 9, 4), None),
    ]
    assert [str(bad) for bad in found.problems] == [
        "line 4: created: day is out of range for month",
        "line 5: expires is not an ISO 8601 date or time, such as 2027-01-31 or"
        " 2027-01-31T12:00:00Z",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2027-01-31", "2027-01-31 00:00:00"),
        ("2027-01-31T12:00:00Z", "2027-01-31 12:00:00"),
        ("2027-01-31T14:00:00+02:00", "2027-01-31 12:00:00"),
        ("2017-09-04T11:54:56.000+0000", "2017-09-04 11:54:56"),
        ("2027-02-30", "--expires '2027-02-30': day is out of range for month"),
        ("2027-13-01", "--expires '2027-13-01': month must be in 1..12"),
        ("tomorrow", "--expires 'tomorrow' is not an ISO 8601 date or time"),
    ],
)
def test_parse_time(text: str, expected: str) -> None:
    try:
        assert str(parse_time(text, "--expires")) == expected
    except AdminError as exc:
        assert str(exc).startswith(expected)


def test_gateway_json() -> None:
    found = read_json(
        json.dumps(
            [
                {
                    "id": 1,
                    "apikey": "k",
                    "secret": "s",
                    "created": "2017-09-04T11:54:56.000+0000",
                    "updated": "2017-09-04T11:54:56.000+0000",
                    "rateLimitCeiling": 5000,
                    "rateLimitExempt": False,
                    "qpsLimitCeiling": None,
                    "qpsLimitExempt": True,
                    "status": "waiting",
                    "limits": [{"period": "day", "source": "plan", "ceiling": 5000}],
                    "package": {"id": 7, "name": "Members API"},
                    "plan": {"id": 9, "name": "Gold"},
                    "expires": None,
                },
                {"apikey": "l", "secret": "t", "package": "Members API", "qpsLimitCeiling": 2.5},
            ]
        )
    )
    assert found.format == "json"
    assert found.ignored == ["id", "updated", "limits"]
    [row] = found.rows
    assert row == ImportRow(
        "index 0",
        0,
        KeyImport(
            "k",
            "s",
            "Members API",
            "waiting",
            quota=5000,
            qps_exempt=True,
            created_at=dt.datetime(2017, 9, 4, 11, 54, 56),
        ),
        "Members API",
        "Gold",
    )
    assert [str(bad) for bad in found.problems] == [
        "index 1: qpsLimitCeiling must be a whole number from 0 to 2147483647"
    ]


def rows(*pairs: tuple[str, Optional[str]]) -> list[ImportRow]:
    return [
        ImportRow(f"line {n}", n, KeyImport(f"k{n}", "s", package), package, plan)
        for n, (package, plan) in enumerate(pairs, 2)
    ]


def test_map_packages_default_rule() -> None:
    mapped, problems, mappings = map_packages(
        rows(("A", "Gold"), ("A", "Gold"), ("B", "Gold"), ("B", "Basic"), ("B", None), ("C", None))
    )
    assert problems == []
    assert [row.key.package for row in mapped] == ["A", "A", "B/Gold", "B/Basic", "B", "C"]
    assert [row.package for row in mapped] == ["A", "A", "B", "B", "B", "C"]
    assert mappings == [
        PackageMapping("A", "Gold", "A", 2, False),
        PackageMapping("B", "Gold", "B/Gold", 1, False),
        PackageMapping("B", "Basic", "B/Basic", 1, False),
        PackageMapping("B", "", "B", 1, False),
        PackageMapping("C", "", "C", 1, False),
    ]


def test_map_packages_with_a_map_and_a_name_too_long() -> None:
    long_plan = "p" * 255
    mapped, problems, mappings = map_packages(
        rows(("A", "Gold"), ("A", "Basic"), ("B", "x"), ("B", long_plan)),
        {("A", "Gold"): "gold", ("A", ""): "a"},
    )
    assert [row.key.package for row in mapped] == ["gold", "a", "B/x"]
    assert [str(bad) for bad in problems] == [
        f"line 5: package 'B' with plan {long_plan!r} makes a package name longer than 255"
        " characters: give it one in a --package-map file"
    ]
    assert [mapping.mapped for mapping in mappings] == [True, True, False, False]


def test_read_package_map(tmp_path: Path) -> None:
    path = tmp_path / "map.csv"
    path.write_text("Gate Package,Package,Plan\ngold,A,Gold\na,A,\n\n", encoding="utf-8")
    assert read_package_map(str(path)) == {("A", "Gold"): "gold", ("A", ""): "a"}
    with pytest.raises(ImportFileError, match="No such file"):
        read_package_map(str(tmp_path / "missing.csv"))


def test_read_file_errors_and_formats(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="No such file"):
        read_file(str(tmp_path / "missing.csv"))
    latin = tmp_path / "latin.csv"
    latin.write_bytes("key,secret,package\nk\xe9,s,members\n".encode("latin-1"))
    with pytest.raises(ImportFileError, match="is not UTF-8 text"):
        read_file(str(latin))
    bom = tmp_path / "bom.csv"
    bom.write_text("\ufeffkey,secret,package\nk,s,members\n", encoding="utf-8")
    found = read_file(str(bom))
    assert (found.format, [row.key.key for row in found.rows]) == ("csv", ["k"])
    # A .csv file is CSV whatever it holds; an unknown extension goes by content.
    odd = tmp_path / "keys.csv"
    odd.write_text('[{"apikey": "k"}]\n', encoding="utf-8")
    with pytest.raises(ImportFileError, match=r"the column apikey \(or key\) is missing"):
        read_file(str(odd))
    export = tmp_path / "export.dat"
    export.write_text('\ufeff [{"apikey": "k", "secret": "s", "package": "p"}]', encoding="utf-8")
    assert read_file(str(export)).format == "json"

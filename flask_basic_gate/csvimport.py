"""Reading the CSV files of ``flask basic-gate import-keys``.

A file becomes :class:`~flask_basic_gate.store.KeyImport` rows, each with the
line it starts on, up to its first malformed row. Each row is checked with
the store's own rules (:func:`~flask_basic_gate.store.admin.check_import_row`
and the checks it is made of) as it is read, so the first bad row of the
file is the one reported. Checking rows against the database and writing
them stay with :meth:`KeyStore.import_keys
<flask_basic_gate.store.KeyStore.import_keys>`; what to print is the CLI's.
Nothing here knows Click: problems are exceptions with a message.

The first line names the columns, by these names (case, ``_`` and ``-``
do not matter): ``key``, ``secret`` and ``package`` (required), ``status``
and ``developer email``, and the gateway's limit columns
``qpsLimitCeiling``, ``rateLimitCeiling``, ``qpsLimitExempt`` and
``rateLimitExempt``.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from typing import NamedTuple, Optional, TextIO

from .records import ACTIVE
from .store.admin import (
    AdminError,
    KeyImport,
    check_key,
    check_owner,
    check_package_name,
    check_secret,
    check_status,
    parse_limit,
)

__all__ = ["BadRow", "ImportFileError", "ImportRow", "read_file", "read_import_file"]

# Columns of an import-keys file, by their normalised header name (lower
# case, "_" and "-" read as spaces), and the field of KeyImport each fills.
_COLUMNS = {
    "key": "key",
    "secret": "secret",
    "package": "package",
    "status": "status",
    "developer email": "owner_email",
    # The gateway's own names for a key's limits, as it writes them
    # (qpsLimitCeiling) or in snake case.
    "qpslimitceiling": "qps",
    "ratelimitceiling": "quota",
    "qpslimitexempt": "qps_exempt",
    "ratelimitexempt": "quota_exempt",
    "qps limit ceiling": "qps",
    "rate limit ceiling": "quota",
    "qps limit exempt": "qps_exempt",
    "rate limit exempt": "quota_exempt",
}
_REQUIRED = ("key", "secret", "package")
# The limit columns by field, with the name the gateway gives each.
_LIMITS = (("qps", "qpsLimitCeiling"), ("quota", "rateLimitCeiling"))
_EXEMPTIONS = (("qps_exempt", "qpsLimitExempt"), ("quota_exempt", "rateLimitExempt"))
_YES = frozenset({"true", "yes", "1", "y"})
_NO = frozenset({"false", "no", "0", "n", ""})


class ImportRow(NamedTuple):
    """One key read from an import file.

    .. versionadded:: 0.1
    """

    #: The line of the file the row starts on (the header is line 1).
    line: int
    #: The key, its plaintext secret (left out of the repr) and its limits.
    key: KeyImport


class ImportFileError(Exception):
    """The file cannot be read at all: missing, not UTF-8, or its first line
    does not name the columns as it must. The message says why.

    .. versionadded:: 0.1
    """


class BadRow(Exception):
    """A row that cannot be imported; its message is ``line N: problem``.

    .. versionadded:: 0.1
    """

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        #: The line the row starts on.
        self.line = line
        #: What is wrong with it.
        self.problem = problem


def read_file(file: str) -> tuple[list[ImportRow], Optional[BadRow]]:
    """Read the import file at the path ``file`` (``-``: standard input), as
    :func:`read_import_file` does. A byte order mark is skipped.

    :raises ImportFileError: the file cannot be opened, is not UTF-8, or its
        header is unusable.

    .. versionadded:: 0.1
    """
    try:
        if file == "-":
            return read_import_file(sys.stdin)
        with open(file, encoding="utf-8-sig", newline="") as stream:
            return read_import_file(stream)
    except OSError as exc:
        raise ImportFileError(f"{file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ImportFileError(f"{file} is not UTF-8 text") from None


def read_import_file(stream: TextIO) -> tuple[list[ImportRow], Optional[BadRow]]:
    """Read an import file up to its first malformed row.

    Surrounding spaces are stripped from every value except the secret,
    which is taken exactly. Blank lines are skipped.

    :return: the rows before the first malformed one, and that row's error
        (``None`` when the whole file is well formed). The rows before it
        are returned so that a problem only the database shows (an existing
        key) on an earlier line can be reported first.
    :raises ImportFileError: the header is unusable.

    .. versionadded:: 0.1
    """
    reader = csv.reader(stream, strict=True)
    fields = _read_header(reader)
    rows: list[ImportRow] = []
    seen: dict[str, int] = {}
    end = reader.line_num
    while True:
        line = end + 1
        try:
            values = next(reader)
        except StopIteration:
            return rows, None
        except csv.Error as exc:
            return rows, BadRow(line, str(exc))
        end = reader.line_num
        if not any(value.strip() for value in values):
            continue
        try:
            key = _import_row(line, fields, values)
        except BadRow as bad:
            return rows, bad
        if key.key in seen:
            return rows, BadRow(line, f"key {key.key!r} is also on line {seen[key.key]}")
        seen[key.key] = line
        rows.append(ImportRow(line, key))


def _column(name: str) -> str:
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


def _read_header(reader: Iterator[list[str]]) -> list[str]:
    """The field of :class:`KeyImport` each column fills, from the first line."""
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError(
            "the file is empty: its first line must name the columns"
            " key,secret,package,status,developer email"
        ) from None
    except csv.Error as exc:
        raise ImportFileError(f"line 1: {exc}") from None
    names = [_column(name) for name in header]
    unknown = [raw for raw, name in zip(header, names) if name not in _COLUMNS]
    if unknown:
        raise ImportFileError(
            f"line 1: unknown column {unknown[0]!r}; the columns are"
            " key, secret, package, status, developer email, qpsLimitCeiling,"
            " rateLimitCeiling, qpsLimitExempt, rateLimitExempt"
        )
    missing = [name for name in _REQUIRED if name not in names]
    if missing:
        raise ImportFileError(f"line 1: the column {missing[0]!r} is missing")
    twice = [name for name in _COLUMNS if names.count(name) > 1]
    if twice:
        raise ImportFileError(f"line 1: the column {twice[0]!r} appears twice")
    fields = [_COLUMNS[name] for name in names]
    if len(set(fields)) != len(fields):  # two spellings of one limit column
        raise ImportFileError("line 1: a key limit column appears twice")
    return fields


def _import_row(line: int, fields: list[str], values: list[str]) -> KeyImport:
    if len(values) != len(fields):
        raise BadRow(line, f"{len(values)} values for {len(fields)} columns")
    data = {
        field: value if field == "secret" else value.strip() for field, value in zip(fields, values)
    }
    key, secret, package = data["key"], data["secret"], data["package"]
    # An empty status is an active key, in the file only.
    status = data.get("status", "").lower() or ACTIVE
    email = data.get("owner_email") or None
    # The store's row checks, one by one in check_import_row's order, so that
    # the status message can say that the column may be left empty.
    try:
        check_key(key)
        check_secret(secret, key)
        check_package_name(package)
        try:
            check_status(status)
        except AdminError as exc:
            raise AdminError(f"{exc} (or empty)") from None
        check_owner(None, email)
    except AdminError as exc:
        raise BadRow(line, str(exc)) from None
    qps, quota = _import_limits(line, data)
    qps_exempt, quota_exempt = _import_exemptions(line, data)
    return KeyImport(
        key,
        secret,
        package,
        status,
        email,
        qps=qps,
        quota=quota,
        qps_exempt=qps_exempt,
        quota_exempt=quota_exempt,
    )


def _import_limits(line: int, data: dict[str, str]) -> list[Optional[int]]:
    # An empty cell: the package's limit.
    try:
        return [
            parse_limit(data[field], column) if data.get(field) else None
            for field, column in _LIMITS
        ]
    except AdminError as exc:
        raise BadRow(line, str(exc)) from None


def _import_exemptions(line: int, data: dict[str, str]) -> list[bool]:
    flags = []
    for field, column in _EXEMPTIONS:
        value = data.get(field, "").lower()
        if value not in _YES and value not in _NO:
            raise BadRow(line, f"{column} must be true or false (or empty)")
        flags.append(value in _YES)
    return flags

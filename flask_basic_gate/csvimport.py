"""Reading the files of ``flask basic-gate import-keys``: the gateway's
export of package keys, as CSV or as the JSON list its API returns.

A file becomes :class:`ImportRow` rows, each with where it is in the file
(``line 3`` of a CSV file, ``index 3`` of a JSON list), and a
:class:`BadRow` for every row that cannot be imported, all of them, each
with its reason. Each row is checked with the store's own rules
(:func:`~flask_basic_gate.store.check_key` and friends) as it is read.
:func:`map_packages` then turns the gateway's package and plan into a
package of the gate. Checking rows against the database and writing them
stay with :meth:`KeyStore.import_problems
<flask_basic_gate.store.KeyStore.import_problems>` and :meth:`KeyStore.import_keys
<flask_basic_gate.store.KeyStore.import_keys>`; what to print is the CLI's.
Nothing here knows Click: problems are values and exceptions with a message.

The fields are the gateway's (case, spaces, ``_``, ``-`` and ``.`` in their
names do not matter): ``apikey`` (or ``key``), ``secret`` and ``package``
(required), ``plan``, ``status`` (``waiting``, ``active`` or ``disabled``),
``created``, ``expires``, ``qpsLimitCeiling``, ``rateLimitCeiling``,
``qpsLimitExempt`` and ``rateLimitExempt``, and the gate's own
``developer email``. Any other field (``id``, ``updated``, ``limits`` ...)
is ignored, and named in :attr:`ImportFile.ignored`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Optional, TextIO

from .plans import MAX_LIMIT
from .records import ACTIVE
from .store.admin import (
    AdminError,
    KeyImport,
    check_key,
    check_owner,
    check_package_name,
    check_secret,
    check_status,
    parse_time,
)

__all__ = [
    "BadRow",
    "ImportFile",
    "ImportFileError",
    "ImportRow",
    "PackageMapping",
    "map_packages",
    "read_csv",
    "read_file",
    "read_json",
    "read_package_map",
]

# The field each name fills, by its normalised spelling (see _normal): the
# gateway's own names (qpsLimitCeiling, apikey) and the gate's.
_FIELDS = {
    "apikey": "key",
    "key": "key",
    "secret": "secret",
    "package": "package",
    "packagename": "package",
    "plan": "plan",
    "planname": "plan",
    "status": "status",
    "developeremail": "owner_email",
    "created": "created",
    "expires": "expires",
    "qpslimitceiling": "qps",
    "ratelimitceiling": "quota",
    "qpslimitexempt": "qps_exempt",
    "ratelimitexempt": "quota_exempt",
}
#: The required fields, with the names a message gives them.
_REQUIRED = {"key": "apikey (or key)", "secret": "secret", "package": "package"}
# The limit fields by field, with the gateway's name for each.
_LIMITS = (("qps", "qpsLimitCeiling"), ("quota", "rateLimitCeiling"))
_EXEMPTIONS = (("qps_exempt", "qpsLimitExempt"), ("quota_exempt", "rateLimitExempt"))
_YES = frozenset({"true", "yes", "1", "y"})
_NO = frozenset({"false", "no", "0", "n", ""})
# The field a message names, when it is not the field's own name.
_NAMES = {"key": "apikey", "owner_email": "developer email"}


class ImportRow(NamedTuple):
    """One key read from an import file.

    .. versionadded:: 0.1
    """

    #: Where the row is: ``line 3`` of a CSV file (the line it starts on;
    #: the header is line 1), or ``index 3`` of a JSON list (from 0).
    where: str
    #: The line or the index, to sort problems by.
    position: int
    #: The key, its plaintext secret (left out of the repr) and its fields;
    #: its ``package`` is the gate's once :func:`map_packages` has run.
    key: KeyImport
    #: The gateway's package.
    package: str
    #: The gateway's plan (``None``: not given).
    plan: Optional[str] = None


class ImportFileError(Exception):
    """The file cannot be read at all: missing, not UTF-8, not JSON, or its
    first line does not name the columns as it must. The message says why.

    .. versionadded:: 0.1
    """


class BadRow(Exception):
    """A row that cannot be imported; its message is ``line N: problem``
    (``index N: problem`` in a JSON list).

    .. versionadded:: 0.1
    """

    def __init__(self, where: str, problem: str, position: int = 0) -> None:
        super().__init__(f"{where}: {problem}")
        #: Where the row is (see :attr:`ImportRow.where`).
        self.where = where
        #: What is wrong with it.
        self.problem = problem
        #: The line or the index, to sort problems by.
        self.position = position


class ImportFile(NamedTuple):
    """What :func:`read_file` read.

    .. versionadded:: 0.1
    """

    #: The rows that can be imported as far as the file tells.
    rows: list[ImportRow]
    #: One for every bad row, in the file's order.
    problems: list[BadRow]
    #: The names of the columns (or JSON members) not used, in the file's order.
    ignored: list[str]
    #: ``csv`` or ``json``.
    format: str


class PackageMapping(NamedTuple):
    """Which package of the gate the keys of a gateway package and plan go to.

    .. versionadded:: 0.1
    """

    package: str
    #: The gateway's plan (``""``: none given).
    plan: str
    #: The gate's package.
    gate_package: str
    #: The keys of the file it applies to.
    keys: int
    #: Whether the package map said so (else the default rule did).
    mapped: bool


def read_file(file: str, kind: Optional[str] = None) -> ImportFile:
    """Read the import file at the path ``file`` (``-``: standard input).

    :param kind: ``csv`` or ``json``; by default, from the name's
        extension (``.json``, ``.csv``), else from the content (a JSON file
        starts with ``[``). A byte order mark is skipped.
    :raises ImportFileError: the file cannot be opened, is not UTF-8, or is
        unusable as a whole (no header, not a JSON list).

    .. versionadded:: 0.1
    """
    try:
        if file == "-":
            text = sys.stdin.read()
        else:
            with open(file, encoding="utf-8-sig", newline="") as stream:
                text = stream.read()
    except OSError as exc:
        raise ImportFileError(f"{file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ImportFileError(f"{file} is not UTF-8 text") from None
    text = text.removeprefix("\ufeff")
    if kind is None:
        extension = file.rpartition(".")[2].lower() if "." in file else ""
        if extension in ("csv", "json"):
            kind = extension
        else:
            kind = "json" if text.lstrip()[:1] in ("[", "{") else "csv"
    if kind == "json":
        return read_json(text)
    return read_csv(io.StringIO(text, newline=""))


# -- CSV -------------------------------------------------------------------------


def read_csv(stream: TextIO) -> ImportFile:
    """Read a CSV import file: its first line names the columns.

    Surrounding spaces are stripped from every value except the secret,
    which is taken exactly. Blank lines are skipped. A line the CSV reader
    cannot parse is a bad row, and reading goes on with the next one.

    :raises ImportFileError: the header is unusable.

    .. versionadded:: 0.1
    """
    reader = csv.reader(stream, strict=True)
    fields, ignored = _read_header(reader)
    rows: list[ImportRow] = []
    problems: list[BadRow] = []
    seen: dict[str, str] = {}
    end = reader.line_num
    while True:
        line = end + 1
        where = f"line {line}"
        try:
            values = next(reader)
        except StopIteration:
            return ImportFile(rows, problems, ignored, "csv")
        except csv.Error as exc:
            problems.append(BadRow(where, str(exc), line))
            end = reader.line_num
            continue
        end = reader.line_num
        if not any(value.strip() for value in values):
            continue
        try:
            if len(values) != len(fields):
                raise BadRow(where, f"{len(values)} values for {len(fields)} columns", line)
            data = {field: value for field, value in zip(fields, values) if field is not None}
            rows.append(_row(where, line, data, seen))
        except BadRow as bad:
            problems.append(bad)


def _normal(name: str) -> str:
    return re.sub(r"[\s_.-]", "", name.lower())


def _read_header(reader: Iterator[list[str]]) -> tuple[list[Optional[str]], list[str]]:
    """The field each column fills (``None``: ignored) and the ignored
    columns' names, from the first line."""
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError(
            "the file is empty: its first line must name the columns, such as"
            " apikey,secret,package,plan,status"
        ) from None
    except csv.Error as exc:
        raise ImportFileError(f"line 1: {exc}") from None
    fields = [_FIELDS.get(_normal(name)) for name in header]
    ignored = [name for name, field in zip(header, fields) if field is None]
    for field, description in _REQUIRED.items():
        if field not in fields:
            raise ImportFileError(f"line 1: the column {description} is missing")
    for field in _FIELDS.values():
        named = [name for name, other in zip(header, fields) if other == field]
        if len(named) > 1:
            raise ImportFileError(
                f"line 1: the column {named[0]!r} appears twice"
                if len(set(named)) == 1
                else f"line 1: the columns {' and '.join(map(repr, named))} are one field"
            )
    return fields, ignored


# -- JSON ------------------------------------------------------------------------


def read_json(text: str) -> ImportFile:
    """Read a JSON import file: a list of package-key objects, as the
    gateway's API returns them.

    ``package`` and ``plan`` may be objects with a ``name`` (as the API
    gives them) or names; limits are numbers or ``null``, exemptions
    booleans or ``null``, ``created`` and ``expires`` strings such as
    ``2017-09-04T11:54:56.000+0000`` or ``null``.

    :raises ImportFileError: not JSON, or not a list.

    .. versionadded:: 0.1
    """
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFileError(f"not JSON: {exc}") from None
    if not isinstance(items, list):
        raise ImportFileError("the JSON file must hold a list of package keys, [{...}, ...]")
    rows: list[ImportRow] = []
    problems: list[BadRow] = []
    ignored: dict[str, None] = {}
    seen: dict[str, str] = {}
    for index, item in enumerate(items):
        where = f"index {index}"
        try:
            rows.append(_row(where, index, _json_values(where, index, item, ignored), seen))
        except BadRow as bad:
            problems.append(bad)
    return ImportFile(rows, problems, list(ignored), "json")


def _json_values(where: str, index: int, item: object, ignored: dict[str, None]) -> dict[str, str]:
    """An object's fields as the text a CSV cell would hold."""
    if not isinstance(item, dict):
        raise BadRow(where, "not an object: each item is a package key, {...}", index)
    values: dict[str, str] = {}
    named: dict[str, str] = {}
    for name, value in item.items():
        field = _FIELDS.get(_normal(name))
        if field is None:
            ignored.setdefault(name, None)
            continue
        if field in named:
            raise BadRow(where, f"{named[field]!r} and {name!r} are one field", index)
        named[field] = name
        values[field] = _json_text(where, index, field, name, value)
    for field, description in _REQUIRED.items():
        if field not in values:
            raise BadRow(where, f"no {description}", index)
    return values


def _json_text(where: str, index: int, field: str, name: str, value: Any) -> str:
    if value is None:
        return ""
    if field in ("package", "plan") and isinstance(value, dict):
        # The API's {"id": 123, "name": "..."}.
        value = value.get("name")
        if not isinstance(value, str):
            raise BadRow(where, f"{name} has no name", index)
        return value
    if isinstance(value, str):
        return value
    if field in ("qps_exempt", "quota_exempt"):
        if isinstance(value, bool):
            return "true" if value else "false"
        raise BadRow(where, f"{name} must be true, false or null", index)
    if field in ("qps", "quota"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise BadRow(where, f"{name} must be a number or null", index)
    raise BadRow(where, f"{name} must be a string", index)


# -- one row ---------------------------------------------------------------------


def _row(where: str, position: int, data: Mapping[str, str], seen: dict[str, str]) -> ImportRow:
    """The row from its fields' text, checked by the store's rules.

    :raises BadRow: for its first problem.
    """
    values = {field: value if field == "secret" else value.strip() for field, value in data.items()}
    key, secret, package = values["key"], values["secret"], values["package"]
    # An empty status is an active key, in the file only.
    status = values.get("status", "").lower() or ACTIVE
    email = values.get("owner_email") or None
    try:
        check_key(key)
        check_secret(secret, key)
        check_package_name(package)
        try:
            check_status(status, waiting=True)
        except AdminError as exc:
            raise AdminError(f"{exc} (or empty)") from None
        check_owner(None, email)
        # The values are not quoted: in a file whose columns are mixed up,
        # one could be a secret.
        created, expires = (
            parse_time(values[field], field, quote=False) if values.get(field) else None
            for field in ("created", "expires")
        )
    except AdminError as exc:
        raise BadRow(where, str(exc), position) from None
    qps, quota = (_limit(where, position, values.get(field, ""), name) for field, name in _LIMITS)
    qps_exempt, quota_exempt = (
        _flag(where, position, values.get(field, ""), name) for field, name in _EXEMPTIONS
    )
    if key in seen:
        before = seen[key]
        raise BadRow(
            where, f"key {key!r} is also {'on' if before[0] == 'l' else 'at'} {before}", position
        )
    seen[key] = where
    row = KeyImport(
        key,
        secret,
        package,
        status,
        email,
        qps=qps,
        quota=quota,
        qps_exempt=qps_exempt,
        quota_exempt=quota_exempt,
        created_at=created,
        expires_at=expires,
    )
    return ImportRow(where, position, row, package, values.get("plan") or None)


def _limit(where: str, position: int, text: str, name: str) -> Optional[int]:
    # An empty cell: the package's limit.
    if not text:
        return None
    if not text.isdigit() or int(text) > MAX_LIMIT:
        raise BadRow(where, f"{name} must be a whole number from 0 to {MAX_LIMIT}", position)
    return int(text)


def _flag(where: str, position: int, text: str, name: str) -> bool:
    value = text.lower()
    if value not in _YES and value not in _NO:
        raise BadRow(where, f"{name} must be true or false (or empty)", position)
    return value in _YES


# -- packages and plans ----------------------------------------------------------


def read_package_map(file: str) -> dict[tuple[str, str], str]:
    """Read a package map: a CSV file whose first line names the columns
    ``package``, ``plan`` and ``gate package``, then one line for each
    gateway package and plan whose keys go to a package of the gate of
    another name. An empty ``plan`` stands for every plan of the package
    that no other line names.

    :return: the gate's package by (package, plan), ``""`` for any plan.
    :raises ImportFileError: the file cannot be read, or a line is bad.

    .. versionadded:: 0.1
    """
    try:
        with open(file, encoding="utf-8-sig", newline="") as stream:
            lines = list(csv.reader(stream, strict=True))
    except OSError as exc:
        raise ImportFileError(f"{file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ImportFileError(f"{file} is not UTF-8 text") from None
    except csv.Error as exc:
        raise ImportFileError(f"{file}: {exc}") from None
    wanted = ["package", "plan", "gatepackage"]
    if not lines or sorted(_normal(name) for name in lines[0]) != sorted(wanted):
        raise ImportFileError(
            f"{file}: the first line of a package map names the columns package,plan,gate package"
        )
    columns = [wanted.index(_normal(name)) for name in lines[0]]
    found: dict[tuple[str, str], str] = {}
    for number, values in enumerate(lines[1:], 2):
        if not any(value.strip() for value in values):
            continue
        if len(values) != 3:
            raise ImportFileError(f"{file} line {number}: {len(values)} values for 3 columns")
        package, plan, gate = (values[columns.index(i)].strip() for i in range(3))
        try:
            check_package_name(package)
            check_package_name(gate)
        except AdminError as exc:
            raise ImportFileError(f"{file} line {number}: {exc}") from None
        if (package, plan) in found:
            raise ImportFileError(
                f"{file} line {number}: package {package!r}"
                f" {'plan ' + repr(plan) if plan else 'with any plan'} is mapped twice"
            )
        found[package, plan] = gate
    return found


def map_packages(
    rows: Sequence[ImportRow], package_map: Optional[Mapping[tuple[str, str], str]] = None
) -> tuple[list[ImportRow], list[BadRow], list[PackageMapping]]:
    """Give each row the gate's package for its gateway package and plan.

    The gate has one package level where the gateway has a package and a
    plan. The package map (see :func:`read_package_map`) decides first:
    (package, plan), then (package, any plan). Otherwise the default rule
    applies: the keys of a package go to the gate's package of the same
    name when every key of that package in the file is on one plan (or
    names none); when they are on several, each goes to ``PACKAGE/PLAN``
    (``PACKAGE`` for a key without a plan).

    :return: the rows with their gate package, those whose gate package
        is not a valid name as bad rows, and the mappings used (in the
        order of the file).

    .. versionadded:: 0.1
    """
    overrides = package_map or {}
    plans: dict[str, set[str]] = {}
    for row in rows:
        plans.setdefault(row.package, set()).add(row.plan or "")
    chosen: dict[tuple[str, str], PackageMapping] = {}
    mapped: list[ImportRow] = []
    problems: list[BadRow] = []
    for row in rows:
        pair = (row.package, row.plan or "")
        if pair not in chosen:
            gate = overrides.get(pair, overrides.get((row.package, "")))
            if gate is not None:
                chosen[pair] = PackageMapping(*pair, gate, 0, True)
            elif len(plans[row.package]) == 1 or not pair[1]:
                chosen[pair] = PackageMapping(*pair, row.package, 0, False)
            else:
                chosen[pair] = PackageMapping(*pair, f"{row.package}/{pair[1]}", 0, False)
        mapping = chosen[pair]
        chosen[pair] = mapping._replace(keys=mapping.keys + 1)
        try:
            check_package_name(mapping.gate_package)
        except AdminError:
            # Only PACKAGE/PLAN can be too long: the map's names are checked.
            problems.append(
                BadRow(
                    row.where,
                    f"package {row.package!r} with plan {pair[1]!r} makes a package name"
                    " longer than 255 characters: give it one in a --package-map file",
                    row.position,
                )
            )
            continue
        mapped.append(row._replace(key=dataclasses.replace(row.key, package=mapping.gate_package)))
    return mapped, problems, list(chosen.values())

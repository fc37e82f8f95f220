"""Key stores with many keys, built once with bulk inserts and kept under ``bench/.cache/``.

Keys are ``bench-0000000``, ``bench-0000001``, ... and each has one generated
secret derived from its number, stored the way the gate stores a generated
secret (:func:`flask_basic_gate.hashing.hash_secret`). Rows go in with
``executemany`` through SQLAlchemy Core on the gate's own tables, not one ORM
call per key, so a million keys take seconds.

The file name carries a fingerprint of the tables' DDL and of the hashing, so
a change to either builds a new store instead of reusing a stale one.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Connection, Engine, create_engine, insert, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.schema import CreateTable

from flask_basic_gate.hashing import GENERATED, hash_secret
from flask_basic_gate.models import ACTIVE, Models, get_models

#: Where built stores are kept (git-ignored).
CACHE_DIR = Path(__file__).resolve().parent / ".cache"
#: The package every bulk key belongs to.
PACKAGE = "bench"
#: Rows per ``executemany``.
CHUNK = 50_000
#: Bump to rebuild every cached store after a change to how they are filled.
LAYOUT = 1


def key_name(index: int) -> str:
    """The key numbered ``index``."""
    return f"bench-{index:07d}"


def secret_for(index: int) -> str:
    """The secret of key ``index``: 43 URL-safe characters, the shape of a generated one.

    Derived, not random, so a cached store needs no side file of secrets.
    """
    digest = hashlib.sha256(f"flask-basic-gate bench secret {index}".encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@functools.cache
def fingerprint() -> str:
    """A short digest of the gate's table DDL and secret hashing, for the cache file name."""
    models = get_models(SQLAlchemy())
    ddl = "\n".join(str(CreateTable(m.__table__).compile(dialect=sqlite.dialect())) for m in models)
    sample = hash_secret(secret_for(0), generated=True)
    material = f"{LAYOUT}\n{ddl}\n{GENERATED}\n{sample}"
    return hashlib.sha256(material.encode()).hexdigest()[:12]


def store_path(count: int) -> Path:
    """Where the store with ``count`` keys is cached."""
    return CACHE_DIR / f"keys-{count}-{fingerprint()}.sqlite"


def _rows(
    count: int, package_id: int, created: dt.datetime
) -> Iterator[tuple[dict[str, object], dict[str, object]]]:
    for index in range(count):
        stored = hash_secret(secret_for(index), generated=True)
        row_id = index + 1
        yield (
            {
                "id": row_id,
                "key": key_name(index),
                "package_id": package_id,
                "status": ACTIVE,
                "owner_name": f"developer {index}",
                "owner_email": f"dev{index}@example.com",
                "created_at": created,
            },
            {
                "id": row_id,
                "key_id": row_id,
                "method": stored.method,
                "value": stored.value,
                "created_at": created,
            },
        )


def fill(engine: Engine, models: Models, count: int) -> None:
    """Create the gate's tables on a SQLite ``engine``, then :data:`PACKAGE` and ``count`` keys."""
    tables = [m.__table__ for m in models]
    tables[0].metadata.create_all(engine, tables=tables)
    with engine.begin() as conn:
        # The file is thrown away if the build fails, so durability buys nothing.
        conn.execute(text("PRAGMA synchronous = OFF"))
        add_keys(conn, models, count)


def add_keys(conn: Connection, models: Models, count: int) -> None:
    """Insert :data:`PACKAGE` and keys ``0`` to ``count - 1`` into the empty tables of ``models``.

    Any backend: the rows carry their ids, so the tables must be empty.
    """
    created = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    key_table = models.PackageKey.__table__
    secret_table = models.KeySecret.__table__
    conn.execute(
        insert(models.Package.__table__), [{"id": 1, "name": PACKAGE, "created_at": created}]
    )
    keys: list[dict[str, object]] = []
    secrets: list[dict[str, object]] = []
    for key_row, secret_row in _rows(count, 1, created):
        keys.append(key_row)
        secrets.append(secret_row)
        if len(keys) == CHUNK:
            conn.execute(insert(key_table), keys)
            conn.execute(insert(secret_table), secrets)
            keys, secrets = [], []
    if keys:
        conn.execute(insert(key_table), keys)
        conn.execute(insert(secret_table), secrets)


def ensure_store(count: int) -> tuple[Path, bool]:
    """Return the cached store with ``count`` keys, building it first if needed.

    :return: the SQLite file and whether it was built by this call.
    """
    path = store_path(count)
    if path.exists():
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    engine = create_engine(f"sqlite:///{partial}")
    try:
        fill(engine, get_models(SQLAlchemy()), count)
        engine.dispose()
        partial.replace(path)
    finally:
        engine.dispose()
        partial.unlink(missing_ok=True)
    return path, True

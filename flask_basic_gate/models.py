"""The gate's tables: packages, their keys, and the keys' secrets.

The columns live on typed SQLAlchemy 2.x mixins that import nothing from
Flask. :func:`get_models` turns them into concrete classes on the user's
``db.Model`` (once per ``db`` and bind), so the tables sit in the user's
metadata where ``db.create_all()``, Flask-Migrate and Alembic see them.

Tables (all prefixed ``basic_gate_``):

``basic_gate_package``
    A package of the API (``members``, ``partners``, ...), with its plan:
    calls per second and a quota per minute, hour, day or month (empty
    means unlimited).
``basic_gate_key``
    A package key (the client id of Basic auth), unique and compared
    case-sensitively on every backend, with its status, validity window and
    the developer or application it belongs to.
``basic_gate_secret``
    The key's secrets. A key may hold several, each with an optional expiry,
    so a secret can be rotated while the old one works for a grace period.
"""

from __future__ import annotations

import datetime as dt
import threading
import weakref
from typing import Any, NamedTuple, Optional

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, declared_attr, mapped_column, relationship

from .records import ACTIVE, DISABLED

__all__ = [
    "ACTIVE",
    "DISABLED",
    "KeySecretMixin",
    "Models",
    "PackageKeyMixin",
    "PackageMixin",
    "get_models",
]

PACKAGE_TABLE = "basic_gate_package"
KEY_TABLE = "basic_gate_key"
SECRET_TABLE = "basic_gate_secret"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


# MySQL and MariaDB compare strings case-insensitively under their default
# collations; the binary collation makes ``Key`` and ``key`` two keys there
# too. (It still ignores trailing spaces, so the store compares again.)
_KEY_STRING = String(255).with_variant(
    mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
)


class PackageMixin:
    """Columns of ``basic_gate_package``.

    .. versionadded:: 0.1
    """

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(_KEY_STRING, unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_utcnow)
    #: Calls per second; ``NULL`` is unlimited, 0 blocks every call.
    qps: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    #: Calls per ``quota_period``; ``NULL`` is unlimited, 0 blocks every call.
    quota: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    #: ``minute``, ``hour``, ``day`` or ``month``: calendar windows in UTC.
    quota_period: Mapped[Optional[str]] = mapped_column(String(8), nullable=True)

    def __repr__(self) -> str:
        return f"<Package {self.name!r}>"


class PackageKeyMixin:
    """Columns of ``basic_gate_key``. Datetimes are naive UTC.

    .. versionadded:: 0.1
    """

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(_KEY_STRING, unique=True)
    status: Mapped[str] = mapped_column(String(16), default=ACTIVE)
    not_before: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    expires_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    owner_name: Mapped[Optional[str]] = mapped_column(String(255), nullable=True)
    owner_email: Mapped[Optional[str]] = mapped_column(String(255), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_utcnow)
    #: The key's own calls per second, instead of its package's (``NULL``: the package's).
    qps: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    #: The key's own quota, in its package's period (``NULL``: the package's).
    quota: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    #: No calls-per-second limit for this key (``NULL`` means false).
    qps_exempt: Mapped[Optional[bool]] = mapped_column(Boolean, nullable=True)
    #: No quota for this key (``NULL`` means false).
    quota_exempt: Mapped[Optional[bool]] = mapped_column(Boolean, nullable=True)

    @declared_attr
    def package_id(cls) -> Mapped[int]:
        return mapped_column(ForeignKey(f"{PACKAGE_TABLE}.id", ondelete="CASCADE"), index=True)

    def __repr__(self) -> str:
        return f"<PackageKey {self.key!r} {self.status}>"


class KeySecretMixin:
    """Columns of ``basic_gate_secret``. The value is a hash unless its method
    is ``plaintext``; it never appears in a repr.

    .. versionadded:: 0.1
    """

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    method: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_utcnow)
    expires_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)

    @declared_attr
    def key_id(cls) -> Mapped[int]:
        return mapped_column(ForeignKey(f"{KEY_TABLE}.id", ondelete="CASCADE"), index=True)

    def __repr__(self) -> str:
        return f"<KeySecret {self.id} {self.method}>"


class Models(NamedTuple):
    """The concrete model classes made for one ``db`` and bind."""

    Package: Any
    PackageKey: Any
    KeySecret: Any


_cache: weakref.WeakKeyDictionary[Any, dict[Optional[str], Models]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def get_models(db: Any, bind_key: Optional[str] = None) -> Models:
    """The gate's model classes on ``db.Model``, made once per ``db`` and bind.

    :param db: the app's :class:`flask_sqlalchemy.SQLAlchemy` instance.
    :param bind_key: the Flask-SQLAlchemy bind that holds the tables.

    .. versionadded:: 0.1
    """
    with _lock:
        per_db = _cache.setdefault(db, {})
        if bind_key not in per_db:
            per_db[bind_key] = _build(db, bind_key)
        return per_db[bind_key]


def _build(db: Any, bind_key: Optional[str]) -> Models:
    suffix = "" if bind_key is None else f"_{bind_key}"
    attrs: dict[str, Any] = {} if bind_key is None else {"__bind_key__": bind_key}

    package = type(
        f"BasicGatePackage{suffix}",
        (PackageMixin, db.Model),
        {"__tablename__": PACKAGE_TABLE, **attrs},
    )
    secret: Any = type(
        f"BasicGateKeySecret{suffix}",
        (KeySecretMixin, db.Model),
        {"__tablename__": SECRET_TABLE, **attrs},
    )
    key = type(
        f"BasicGatePackageKey{suffix}",
        (PackageKeyMixin, db.Model),
        {
            "__tablename__": KEY_TABLE,
            **attrs,
            "package": relationship(package, lazy="joined"),
            "secrets": relationship(
                secret, cascade="all, delete-orphan", order_by=secret.id, lazy="selectin"
            ),
        },
    )
    return Models(package, key, secret)

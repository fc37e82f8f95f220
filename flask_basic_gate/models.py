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
``basic_gate_usage``
    The gate's decisions per key and UTC day: allowed, blocked and other
    calls, and the count of each errorCode (see :mod:`flask_basic_gate.usage`).
    Rows are only ever added to, by every process at once.
"""

from __future__ import annotations

import datetime as dt
import threading
import weakref
from typing import Any, NamedTuple, Optional

from sqlalchemy import BigInteger, Boolean, Date, DateTime, ForeignKey, Integer, String
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
    "USAGE_CODES",
    "UsageMixin",
    "get_models",
]

PACKAGE_TABLE = "basic_gate_package"
KEY_TABLE = "basic_gate_key"
SECRET_TABLE = "basic_gate_secret"
USAGE_TABLE = "basic_gate_usage"


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


def _count() -> Mapped[int]:
    return mapped_column(BigInteger, default=0, server_default="0")


#: The errorCodes counted per key and day, each in the ``basic_gate_usage``
#: column of the same name with ``_`` for ``-``. A new errorCode gets a
#: column of its own in a new migration.
USAGE_CODES = (
    "authorization-required",
    "basic-authorization-required",
    "invalid-authorization",
    "invalid-credentials",
    "key-inactive",
    "gate-unavailable",
    "too-many-failures",
    "package-not-authorized",
    "rate-limit-exceeded",
    "quota-exceeded",
)


class UsageMixin:
    """Columns of ``basic_gate_usage``: one row per key and UTC day.

    ``allowed``, ``blocked`` and ``other`` are the gateway report's three
    classes; each errorCode has a column of its own (:data:`USAGE_CODES`),
    so that every count is added to in place by one upsert, whichever
    process or host writes it. The requests that named no known key are
    counted in the row whose key is empty (no key can be).

    .. versionadded:: 0.1
    """

    key: Mapped[str] = mapped_column(_KEY_STRING, primary_key=True)
    #: The UTC day.
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True, index=True)
    #: The key's package when it was last counted (``NULL``: not known then).
    package: Mapped[Optional[str]] = mapped_column(String(255), nullable=True)
    allowed: Mapped[int] = _count()
    blocked: Mapped[int] = _count()
    other: Mapped[int] = _count()
    authorization_required: Mapped[int] = _count()
    basic_authorization_required: Mapped[int] = _count()
    invalid_authorization: Mapped[int] = _count()
    invalid_credentials: Mapped[int] = _count()
    key_inactive: Mapped[int] = _count()
    gate_unavailable: Mapped[int] = _count()
    too_many_failures: Mapped[int] = _count()
    package_not_authorized: Mapped[int] = _count()
    rate_limit_exceeded: Mapped[int] = _count()
    quota_exceeded: Mapped[int] = _count()

    def __repr__(self) -> str:
        return f"<Usage {self.key!r} {self.day}>"


class Models(NamedTuple):
    """The concrete model classes made for one ``db`` and bind."""

    Package: Any
    PackageKey: Any
    KeySecret: Any
    #: .. versionadded:: 0.1
    Usage: Any


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
    usage = type(
        f"BasicGateUsage{suffix}",
        (UsageMixin, db.Model),
        {"__tablename__": USAGE_TABLE, **attrs},
    )
    return Models(package, key, secret, usage)

"""The key store's administration: writes to the gate's tables.

Every write (the API the CLI calls) runs in a short session of its own, all
or nothing, and after its commit tells the listeners in
:attr:`KeyStore.on_change` which key changed, so caches drop it at once.
Reads for requests go through :class:`~flask_basic_gate.store.lookup.KeyLookup`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import enum
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Callable, NamedTuple, Optional, Union

from sqlalchemy import ColumnElement, Engine, and_, exists, func, inspect, not_, or_, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from ..config import Settings
from ..hashing import KDF, PLAINTEXT, StoredSecret, generate_secret, hash_secret
from ..hashpool import Progress, hash_secrets
from ..models import Models
from ..plans import check_limit, parse_quota
from ..records import (
    ACTIVE,
    DEFAULT_PERIOD,
    DISABLED,
    EXPIRED,
    NOT_YET_VALID,
    PERIODS,
    WAITING,
    Plan,
    effective_plan,
    is_live,
)
from ..records import key_state as _key_state
from .lookup import MAX_KEY_LENGTH, KeyLookup

__all__ = [
    "AdminError",
    "ImportRowError",
    "KeyImport",
    "KeyInfo",
    "KeyLimits",
    "KeyPage",
    "KeyStore",
    "NewSecret",
    "STATES",
    "UNSET",
    "check_import_row",
    "check_key",
    "check_owner",
    "check_package_name",
    "check_secret",
    "check_status",
    "driver_reason",
    "key_state",
    "PackageInfo",
    "parse_limit",
    "parse_time",
    "utc_naive",
]

When = Union[dt.datetime, None]

#: The effective states of a key, as the gate sees it now.
STATES = (ACTIVE, DISABLED, EXPIRED, NOT_YET_VALID, WAITING)


class _Unset(enum.Enum):
    UNSET = "unset"


#: The default of the update methods' arguments (:meth:`KeyStore.update_key`,
#: :meth:`KeyStore.update_package`, :meth:`KeyStore.set_key_limits`): leave the
#: field as it is (``None`` clears it, or makes a limit unlimited).
UNSET = _Unset.UNSET


class AdminError(ValueError):
    """An administration call that cannot be done (unknown package or key,
    duplicate key, bad date). Nothing was written.

    .. versionadded:: 0.1
    """


class KeyInfo(NamedTuple):
    """A key as listed by :meth:`KeyStore.list_keys` and :meth:`KeyStore.show_key`;
    never a secret. Datetimes are naive UTC.
    """

    key: str
    package: str
    #: The stored switch: ``active`` or ``disabled``, or ``waiting`` for an
    #: imported key never approved.
    status: str
    owner_name: Optional[str]
    owner_email: Optional[str]
    not_before: Optional[dt.datetime]
    expires_at: Optional[dt.datetime]
    #: How many secrets work now (expired grace secrets are not counted).
    secrets: int
    created_at: dt.datetime
    #: What the gate does with the key now, from :func:`key_state`.
    state: str = "active"
    #: The expiry of each secret that works now (``None``: never), oldest first.
    secret_expiries: tuple[Optional[dt.datetime], ...] = ()
    #: The key's own calls per second (``None``: its package's).
    qps: Optional[int] = None
    #: The key's own quota, in its package's period (``None``: its package's).
    quota: Optional[int] = None
    #: No calls-per-second limit for the key.
    qps_exempt: bool = False
    #: No quota for the key.
    quota_exempt: bool = False
    #: The limits that apply to the key, its own or its package's (see
    #: :func:`~flask_basic_gate.records.effective_plan`); ``None``: unlimited.
    plan: Optional[Plan] = None


class KeyPage(NamedTuple):
    """One page of keys from :meth:`KeyStore.find_keys`, by key.

    .. versionadded:: 0.1
    """

    #: The keys on this page, in the order of their key.
    keys: list[KeyInfo]
    #: How many keys match the search and filters, over every page.
    total: int
    #: The ``before=`` of the previous page, or ``None`` on the first.
    before: Optional[str]
    #: The ``after=`` of the next page, or ``None`` on the last.
    after: Optional[str]


class KeyLimits(NamedTuple):
    """A key's own limits and the plan that applies to it, from
    :meth:`KeyStore.key_limits`.

    .. versionadded:: 0.1
    """

    #: The key's own calls per second (``None``: its package's).
    qps: Optional[int]
    #: The key's own quota, in :attr:`period` (``None``: its package's).
    quota: Optional[int]
    #: No calls-per-second limit for the key.
    qps_exempt: bool
    #: No quota for the key.
    quota_exempt: bool
    #: The period of the key's quota: its package's, else a day.
    period: str
    #: What applies now (package plan, overrides, exemptions); ``None``: unlimited.
    plan: Optional[Plan]


#: The most keys :meth:`KeyStore.find_keys` returns at once.
MAX_PAGE = 500

#: A quota: ``"5000/day"``, or ``(5000, "day")``.
Quota = Union[str, tuple[int, str]]


class PackageInfo(NamedTuple):
    """A package as listed by :meth:`KeyStore.list_packages`.

    .. versionadded:: 0.1
    """

    name: str
    #: Calls per second, or ``None`` for unlimited.
    qps: Optional[int]
    #: Calls per :attr:`quota_period`, or ``None`` for unlimited.
    quota: Optional[int]
    quota_period: Optional[str]
    #: How many keys the package holds.
    keys: int
    created_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class KeyImport:
    """One key to load with :meth:`KeyStore.import_keys`.

    The secret is the plaintext a platform kept; it is hashed on the way in
    and left out of the repr.
    """

    key: str
    secret: str = dataclasses.field(repr=False)
    package: str
    status: str = ACTIVE
    owner_email: Optional[str] = None
    owner_name: Optional[str] = None
    #: The gateway's ``qpsLimitCeiling``: the key's own calls per second.
    qps: Optional[int] = None
    #: The gateway's ``rateLimitCeiling``: the key's own quota (package's period).
    quota: Optional[int] = None
    #: The gateway's ``qpsLimitExempt``.
    qps_exempt: bool = False
    #: The gateway's ``rateLimitExempt``.
    quota_exempt: bool = False
    #: The gateway's ``created``: when the key was made (``None``: now).
    created_at: Optional[dt.datetime] = None
    #: The gateway's ``expires``: when the key stops working (``None``: never).
    expires_at: Optional[dt.datetime] = None


class ImportRowError(AdminError):
    """The row at :attr:`index` of an import cannot be loaded; nothing was."""

    def __init__(self, index: int, problem: str, *, unknown_package: bool = False) -> None:
        super().__init__(problem)
        #: Position of the first bad row in the rows given.
        self.index = index
        #: The row names a package that does not exist.
        self.unknown_package = unknown_package


@dataclasses.dataclass(frozen=True)
class NewSecret:
    """A key and the secret just made for it.

    The secret is here once, to show the person who asked for it; it is not
    kept anywhere readable and is left out of the repr.
    """

    key: str
    secret: str = dataclasses.field(repr=False)


def utc_naive(when: When) -> Optional[dt.datetime]:
    """A datetime as naive UTC, the way the tables hold it (naive means UTC)."""
    if when is None or when.tzinfo is None:
        return when
    return when.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def key_state(
    status: str,
    not_before: Optional[dt.datetime],
    expires_at: Optional[dt.datetime],
    now: Optional[dt.datetime] = None,
) -> str:
    """A key's effective state: ``active``, ``disabled``, ``expired``,
    ``not-yet-valid`` or ``waiting``; every state but ``active`` gets 403
    ``key-inactive``.

    The rule the policy applies, :func:`flask_basic_gate.records.key_state`:
    valid from ``not_before`` on, until (not at) ``expires_at``.

    :param now: naive UTC; default: the current time.

    .. versionadded:: 0.1
    """
    state = _key_state(status, not_before, expires_at, _now() if now is None else now)
    # A stored status the gate does not know refuses the key, as disabled does.
    return state if state in STATES else DISABLED


def generate_key() -> str:
    """A new random key of 24 URL-safe characters that never starts with ``-``
    (a command line would read such a key as an option)."""
    while True:
        key = generate_secret()[:24]
        if not key.startswith("-"):
            return key


class KeyStore:
    """Reads and writes the gate's tables for one app.

    :param models: the model classes from :func:`~flask_basic_gate.models.get_models`.
    :param engine: the engine of the bind holding the tables.
    :param settings: the gate's frozen settings (hash method, plaintext).

    .. versionadded:: 0.1
    """

    def __init__(self, models: Models, engine: Engine, settings: Settings) -> None:
        self.models = models
        self.engine = engine
        self.settings = settings
        #: The hot read path the policy uses.
        self.reader = KeyLookup(models, engine, settings)
        #: Called with a key after a change to it has been committed.
        self.on_change: list[Callable[[str], object]] = []

    def release_connections(self) -> None:
        """Give the connections kept for lookups back to the pool.

        See :meth:`KeyLookup.release_connections
        <flask_basic_gate.store.lookup.KeyLookup.release_connections>`.

        .. versionadded:: 0.1
        """
        self.reader.release_connections()

    def list_keys(
        self, package: Optional[str] = None, *, state: Optional[str] = None
    ) -> list[KeyInfo]:
        """Every key (of one package, in one effective state), by package and key.

        :param state: one of ``active``, ``disabled``, ``expired``,
            ``not-yet-valid``, ``waiting`` (see :func:`key_state`).
        :raises AdminError: unknown package or state.
        """
        if state is not None and state not in STATES:
            raise AdminError(f"the state must be one of {', '.join(STATES)}, not {state!r}")
        m = self.models
        stmt = (
            select(m.PackageKey)
            .join(m.Package, m.Package.id == m.PackageKey.package_id)
            .order_by(m.Package.name, m.PackageKey.key)
        )
        now = _now()
        with self._session() as session:
            if package is not None:
                self._package(session, package)
                stmt = stmt.where(m.Package.name == package)
            found = [self._info(k, now) for k in session.scalars(stmt)]
        return [info for info in found if state is None or info.state == state]

    def find_keys(
        self,
        search: Optional[str] = None,
        *,
        state: Optional[str] = None,
        package: Optional[str] = None,
        after: Optional[str] = None,
        before: Optional[str] = None,
        limit: int = 50,
    ) -> KeyPage:
        """One page of the keys that match, by key, with their number.

        Pages are found by key (keyset pagination on the key's unique
        index), so a page deep into many keys costs what the first does.

        :param search: keep keys whose key, developer email or owner name
            holds this text, in any case.
        :param state: keep keys in this effective state (see :func:`key_state`).
        :param package: keep the keys of this package.
        :param after: the page of keys after this one (a :attr:`KeyPage.after`).
        :param before: the page of keys before this one (a :attr:`KeyPage.before`).
        :param limit: keys per page, 1 to :data:`MAX_PAGE`.
        :raises AdminError: unknown state or package, bad limit, or both
            ``after`` and ``before``.

        .. versionadded:: 0.1
        """
        if state is not None and state not in STATES:
            raise AdminError(f"the state must be one of {', '.join(STATES)}, not {state!r}")
        if not 1 <= limit <= MAX_PAGE:
            raise AdminError(f"a page holds 1 to {MAX_PAGE} keys, not {limit!r}")
        if after is not None and before is not None:
            raise AdminError("give after or before, not both")
        if search is not None and len(search) > MAX_KEY_LENGTH:
            raise AdminError(f"a search has at most {MAX_KEY_LENGTH} characters")
        k = self.models.PackageKey
        now = _now()
        where: list[ColumnElement[bool]] = []
        with self._session() as session:
            if package is not None:
                where.append(k.package_id == self._package(session, package).id)
            if state is not None:
                where.append(_state_filter(k, state, now))
            if search:
                where.append(
                    or_(
                        k.key.icontains(search, autoescape=True),
                        k.owner_email.icontains(search, autoescape=True),
                        k.owner_name.icontains(search, autoescape=True),
                    )
                )
            query = select(k).where(*where)
            if before is not None:
                query = query.where(k.key < before).order_by(k.key.desc())
            else:
                if after is not None:
                    query = query.where(k.key > after)
                query = query.order_by(k.key)
            found = list(session.scalars(query.limit(limit + 1)))
            more = len(found) > limit
            found = found[:limit]
            if before is not None:
                found.reverse()
            keys = [self._info(record, now) for record in found]
            total = session.scalar(select(func.count()).select_from(k).where(*where)) or 0

            def any_where(extra: ColumnElement[bool]) -> bool:
                return bool(session.scalar(select(exists().where(*where, extra))))

            if before is not None:
                previous = keys[0].key if more else None
                following = keys[-1].key if keys and any_where(k.key > keys[-1].key) else None
            else:
                following = keys[-1].key if more else None
                previous = (
                    keys[0].key
                    if after is not None and keys and any_where(k.key < keys[0].key)
                    else None
                )
        return KeyPage(keys, int(total), previous, following)

    def key_limits(self, key: str) -> KeyLimits:
        """A key's own limits and the plan that applies to it.

        :raises AdminError: no such key.

        .. versionadded:: 0.1
        """
        with self._session() as session:
            record = self._key(session, key)
            package = record.package
            return KeyLimits(
                record.qps,
                record.quota,
                bool(record.qps_exempt),
                bool(record.quota_exempt),
                package.quota_period or DEFAULT_PERIOD,
                effective_plan(
                    package.qps,
                    package.quota,
                    package.quota_period,
                    record.qps,
                    record.quota,
                    record.qps_exempt,
                    record.quota_exempt,
                ),
            )

    def top_usage_keys(self, day: dt.date, *, refusals: bool = False, limit: int = 10) -> list[str]:
        """The keys with the most calls (or refusals: blocked and other
        calls) on the UTC ``day``, most first, from ``basic_gate_usage``;
        only keys with at least one, and never the row of unknown keys.

        One ordered read of the day's rows, for the admin pages; read each
        key's counts with :func:`flask_basic_gate.usage.read_usage`.

        :raises AdminError: a limit out of 1 to :data:`MAX_PAGE`.
        :raises sqlalchemy.exc.SQLAlchemyError: the table cannot be read.

        .. versionadded:: 0.1
        """
        if not 1 <= limit <= MAX_PAGE:
            raise AdminError(f"give 1 to {MAX_PAGE} keys, not {limit!r}")
        u = self.models.Usage
        counted = u.blocked + u.other if refusals else u.allowed + u.blocked + u.other
        query = (
            select(u.key)
            # The empty key is the row of the requests that named no known key.
            .where(u.day == day, u.key != "", counted > 0)
            .order_by(counted.desc(), u.key)
            .limit(limit)
        )
        with self._session() as session:
            return list(session.scalars(query))

    def show_key(self, key: str) -> KeyInfo:
        """One key, as :meth:`list_keys` shows it.

        :raises AdminError: no such key.
        """
        with self._session() as session:
            return self._info(self._key(session, key), _now())

    @staticmethod
    def _info(record: Any, now: dt.datetime) -> KeyInfo:
        live = [s.expires_at for s in record.secrets if is_live(s.expires_at, now)]
        package = record.package
        plan = effective_plan(
            package.qps,
            package.quota,
            package.quota_period,
            record.qps,
            record.quota,
            record.qps_exempt,
            record.quota_exempt,
        )
        return KeyInfo(
            record.key,
            record.package.name,
            record.status,
            record.owner_name,
            record.owner_email,
            record.not_before,
            record.expires_at,
            len(live),
            record.created_at,
            key_state(record.status, record.not_before, record.expires_at, now),
            tuple(live),
            record.qps,
            record.quota,
            bool(record.qps_exempt),
            bool(record.quota_exempt),
            plan,
        )

    def database_problem(self) -> Optional[str]:
        """What keeps the store from working, in one line, or ``None``: the
        database cannot be reached (with the driver's reason: no such
        database, refused, wrong password ...), or the gate's tables or some
        of their columns are missing.

        Asked after a failure, to tell these apart; it connects once.

        .. versionadded:: 0.1
        """
        missing: list[str] = []
        columns: list[str] = []
        try:
            with self.engine.connect() as conn:
                inspector = inspect(conn)
                for model in self.models:
                    table = model.__table__
                    if not inspector.has_table(table.name):
                        missing.append(table.name)
                        continue
                    have = {column["name"] for column in inspector.get_columns(table.name)}
                    columns += [
                        f"{table.name}.{column.name}"
                        for column in table.columns
                        if column.name not in have
                    ]
        except SQLAlchemyError as exc:
            return f"cannot connect to the database: {driver_reason(exc)}"
        if missing:
            return (
                f"the gate's tables are missing ({', '.join(missing)}):"
                " run 'flask basic-gate init-db'"
            )
        if columns:
            return (
                f"the gate's tables lack the columns {', '.join(columns)}: apply the"
                " gate's migrations (see the models page of the docs)"
            )
        return None

    # -- writing ---------------------------------------------------------

    def create_tables(self) -> list[str]:
        """Create the gate's tables (only those) where they do not exist.

        :return: the names of the tables created (empty: all existed).
        """
        tables = [m.__table__ for m in self.models]
        existing = set(inspect(self.engine).get_table_names())
        tables[0].metadata.create_all(self.engine, tables=tables)
        return [table.name for table in tables if table.name not in existing]

    def create_package(
        self, name: str, *, qps: Optional[int] = None, quota: Optional[Quota] = None
    ) -> None:
        """Create a package.

        :param qps: its plan's calls per second (``None``: unlimited; 0
            blocks every call).
        :param quota: its plan's quota, ``"5000/day"`` or ``(5000, "day")``,
            per ``minute``, ``hour``, ``day`` or ``month`` (``None``: unlimited).
        :raises AdminError: when the name is empty or taken, or a limit is bad.
        """
        limits = _package_limits(qps, quota)
        check_package_name(name)
        with self._writing(f"package {name!r} exists already") as session:
            session.add(self.models.Package(name=name, **limits))

    def create_key(
        self,
        package: str,
        *,
        key: Optional[str] = None,
        secret: Optional[str] = None,
        owner_name: Optional[str] = None,
        owner_email: Optional[str] = None,
        not_before: When = None,
        expires_at: When = None,
    ) -> NewSecret:
        """Create a key in ``package`` with its first secret.

        :param key: the key; generated when ``None``.
        :param secret: the secret; generated when ``None`` (and then stored as
            a SHA-256 digest, while a given one is hashed with the configured
            KDF).
        :return: the key and its secret, to show once.
        :raises AdminError: unknown package, taken key, bad value.
        """
        key = generate_key() if key is None else key
        check_key(key)
        check_owner(owner_name, owner_email)
        not_before, expires_at = utc_naive(not_before), utc_naive(expires_at)
        if not_before and expires_at and expires_at <= not_before:
            raise AdminError("the key would expire before it becomes valid")
        plain, stored = self._new_secret(secret)
        with self._writing(f"key {key!r} exists already") as session:
            record = self.models.PackageKey(
                key=key,
                package_id=self._package(session, package).id,
                status=ACTIVE,
                owner_name=owner_name,
                owner_email=owner_email,
                not_before=not_before,
                expires_at=expires_at,
            )
            record.secrets.append(self.models.KeySecret(method=stored.method, value=stored.value))
            session.add(record)
        return NewSecret(key, plain)

    def add_secret(
        self, key: str, secret: Optional[str] = None, *, expires_at: When = None
    ) -> NewSecret:
        """Give ``key`` one more secret; the others keep working."""
        plain, stored = self._new_secret(secret)
        with self._writing() as session:
            record = self._key(session, key)
            record.secrets.append(
                self.models.KeySecret(
                    method=stored.method, value=stored.value, expires_at=utc_naive(expires_at)
                )
            )
        self._changed(key)
        return NewSecret(key, plain)

    def rotate_secret(
        self, key: str, secret: Optional[str] = None, *, grace: float = 0
    ) -> NewSecret:
        """Give ``key`` a new secret that works at once.

        :param grace: seconds the current secrets keep working; 0 removes them
            now. Secrets already expired are removed either way.
        :return: the key and its new secret, to show once.
        """
        if grace < 0:
            raise AdminError("the grace period cannot be negative")
        plain, stored = self._new_secret(secret)
        now = _now()
        until = now + dt.timedelta(seconds=grace)
        with self._writing() as session:
            record = self._key(session, key)
            for old in list(record.secrets):
                if grace == 0 or not is_live(old.expires_at, now):
                    record.secrets.remove(old)
                elif is_live(old.expires_at, until):
                    # It would outlive the grace period: it ends with it.
                    old.expires_at = until
            record.secrets.append(self.models.KeySecret(method=stored.method, value=stored.value))
        self._changed(key)
        return NewSecret(key, plain)

    def set_status(self, key: str, status: str) -> None:
        """Set a key ``active`` or ``disabled``.

        A ``waiting`` key (from an import) leaves that state for good: as on
        the gateway, no key goes back to ``waiting``.

        :raises AdminError: no such key, or another status.
        """
        if status == WAITING:
            raise AdminError(
                "a key cannot be put back in 'waiting': as on the gateway, only keys never"
                " approved are waiting (an import brings them); disable it instead"
            )
        check_status(status)
        with self._writing() as session:
            self._key(session, key).status = status
        self._changed(key)

    def disable_key(self, key: str) -> None:
        """Switch a key off; its cached verifications here are dropped at once."""
        self.set_status(key, DISABLED)

    def enable_key(self, key: str) -> None:
        """Switch a key back on, or approve a ``waiting`` one."""
        self.set_status(key, ACTIVE)

    def set_validity(self, key: str, *, not_before: When = None, expires_at: When = None) -> None:
        """Set the window in which a key is valid (``None``: open on that side).

        :raises AdminError: no such key, or ``expires_at`` is not after ``not_before``.
        """
        self.update_key(key, not_before=not_before, expires_at=expires_at)

    def set_owner(
        self,
        key: str,
        *,
        owner_name: Union[Optional[str], _Unset] = UNSET,
        owner_email: Union[Optional[str], _Unset] = UNSET,
    ) -> None:
        """Set who a key belongs to (``None`` clears a field).

        .. versionadded:: 0.1
        """
        self.update_key(key, owner_name=owner_name, owner_email=owner_email)

    def update_key(
        self,
        key: str,
        *,
        not_before: Union[When, _Unset] = UNSET,
        expires_at: Union[When, _Unset] = UNSET,
        owner_name: Union[Optional[str], _Unset] = UNSET,
        owner_email: Union[Optional[str], _Unset] = UNSET,
    ) -> KeyInfo:
        """Change some of a key's fields in one transaction; the others stay.

        Each argument left at :data:`UNSET` keeps its field; ``None`` clears
        it (for the dates: open on that side). Cached verifications of the
        key in this process are dropped after the commit, as for
        :meth:`disable_key`.

        :return: the key as it is now.
        :raises AdminError: no such key, a value too long, or a window whose
            end is not after its start; nothing was written.

        .. versionadded:: 0.1
        """
        check_owner(
            None if isinstance(owner_name, _Unset) else owner_name,
            None if isinstance(owner_email, _Unset) else owner_email,
        )
        with self._writing() as session:
            record = self._key(session, key)
            if not isinstance(not_before, _Unset):
                record.not_before = utc_naive(not_before)
            if not isinstance(expires_at, _Unset):
                record.expires_at = utc_naive(expires_at)
            if not isinstance(owner_name, _Unset):
                record.owner_name = owner_name
            if not isinstance(owner_email, _Unset):
                record.owner_email = owner_email
            if (
                record.not_before is not None
                and record.expires_at is not None
                and record.expires_at <= record.not_before
            ):
                raise AdminError("the key would expire before it becomes valid")
            info = self._info(record, _now())
        self._changed(key)
        return info

    def delete_key(self, key: str) -> None:
        """Remove a key and its secrets.

        The secrets go through the relationship's ORM cascade in the same
        transaction, so none is left behind even where the database does not
        enforce ``ON DELETE CASCADE`` (SQLite without ``PRAGMA foreign_keys``).

        :raises AdminError: no such key.
        """
        with self._writing() as session:
            session.delete(self._key(session, key))
        self._changed(key)

    def check_import(self, rows: Sequence[KeyImport], *, create_packages: bool = False) -> None:
        """Check rows for :meth:`import_keys` without writing anything.

        :raises ImportRowError: for the first bad row of
            :meth:`import_problems`.
        """
        problems = self.import_problems(rows, create_packages=create_packages)
        if problems:
            raise problems[0]

    def import_problems(
        self, rows: Sequence[KeyImport], *, create_packages: bool = False
    ) -> list[ImportRowError]:
        """Every row :meth:`import_keys` would refuse, in the rows' order,
        without writing anything: one problem per bad row.

        A row is bad when it is malformed (see :func:`check_import_row`),
        names a key that exists already or appears twice, or names a package
        that does not exist while ``create_packages`` is false (the message
        then names the closest existing package, if one is close).

        .. versionadded:: 0.1
        """
        problems: dict[int, ImportRowError] = {}
        seen: dict[str, int] = {}
        for index, row in enumerate(rows):
            try:
                check_import_row(row)
            except AdminError as exc:
                problems[index] = ImportRowError(index, str(exc))
                continue
            if row.key in seen:
                problems[index] = ImportRowError(index, f"key {row.key!r} appears twice")
                continue
            seen[row.key] = index
        wanted = {row.package for index, row in enumerate(rows) if index not in problems}
        with self._session() as session:
            packages = self._packages_named(session, wanted)
            taken = self._keys_named(session, list(seen))
            unknown = set() if create_packages else wanted - set(packages)
            names = self._package_names(session) if unknown else []
        for index, row in enumerate(rows):
            if index in problems:
                continue
            if row.key in taken:
                problems[index] = ImportRowError(index, f"key {row.key!r} exists already")
            elif row.package in unknown:
                problems[index] = ImportRowError(
                    index,
                    f"no package named {row.package!r}{_did_you_mean(row.package, names)}",
                    unknown_package=True,
                )
        return [problems[index] for index in sorted(problems)]

    def import_keys(
        self,
        rows: Sequence[KeyImport],
        *,
        create_packages: bool = False,
        workers: Optional[int] = None,
        progress: Optional[Progress] = None,
    ) -> list[str]:
        """Load keys with their plaintext secrets, all or nothing.

        Secrets are hashed like a person's (``BASIC_GATE_HASH_METHOD``)
        before the one transaction opens, so a slow KDF holds no locks, on
        every core (see :func:`~flask_basic_gate.hashpool.hash_secrets`).

        :param create_packages: create the packages that do not exist yet.
        :param workers: processes to hash on (``None``: every core; ``1``:
            this process only).
        :param progress: called with the secrets hashed so far and their
            number, after each and at least every half second.
        :return: the names of the packages created.
        :raises ImportRowError: see :meth:`check_import`.
        :raises AdminError: a key or package appeared meanwhile; nothing was
            written.
        """
        self.check_import(rows, create_packages=create_packages)
        stored = self._hash_all([row.secret for row in rows], workers, progress)
        created: list[str] = []
        conflict = "a key or package of the import was created meanwhile; nothing was imported"
        m = self.models
        with self._writing(conflict) as session:
            packages = self._packages_named(session, {row.package for row in rows})
            for row, secret in zip(rows, stored):
                package = packages.get(row.package)
                if package is None:
                    package = packages[row.package] = m.Package(name=row.package)
                    session.add(package)
                    created.append(row.package)
                # Left out when unknown, so the column's default (now) applies.
                made = {} if row.created_at is None else {"created_at": utc_naive(row.created_at)}
                record = m.PackageKey(
                    key=row.key,
                    package=package,
                    status=row.status,
                    owner_email=row.owner_email,
                    owner_name=row.owner_name,
                    expires_at=utc_naive(row.expires_at),
                    qps=row.qps,
                    quota=row.quota,
                    qps_exempt=row.qps_exempt or None,
                    quota_exempt=row.quota_exempt or None,
                    **made,
                )
                record.secrets.append(m.KeySecret(method=secret.method, value=secret.value))
                session.add(record)
        return created

    # -- package plans and key limits -----------------------------------

    def update_package(self, name: str, *, qps: Any = UNSET, quota: Any = UNSET) -> None:
        """Change a package's plan; every key of it is told (caches drop them).

        :param qps: calls per second, ``None`` for unlimited, 0 to block.
        :param quota: ``"5000/day"`` or ``(5000, "day")``, ``None`` for
            unlimited. Counts made in the current window are kept.
        :raises AdminError: unknown package, bad value; nothing was written.

        .. versionadded:: 0.1
        """
        changes = _package_limits(None if qps is UNSET else qps, None if quota is UNSET else quota)
        if qps is UNSET:
            del changes["qps"]
        if quota is UNSET:
            del changes["quota"], changes["quota_period"]
        m = self.models
        with self._writing() as session:
            package = self._package(session, name)
            for column, value in changes.items():
                setattr(package, column, value)
            keys = list(
                session.scalars(
                    select(m.PackageKey.key).where(m.PackageKey.package_id == package.id)
                )
            )
        for key in keys:
            self._changed(key)

    def list_packages(self) -> list[PackageInfo]:
        """Every package with its plan and its number of keys.

        .. versionadded:: 0.1
        """
        m = self.models
        count = (
            select(func.count(m.PackageKey.id))
            .where(m.PackageKey.package_id == m.Package.id)
            .scalar_subquery()
        )
        with self._session() as session:
            return [
                PackageInfo(p.name, p.qps, p.quota, p.quota_period, n, p.created_at)
                for p, n in session.execute(select(m.Package, count).order_by(m.Package.name))
            ]

    def set_key_limits(
        self,
        key: str,
        *,
        qps: Any = UNSET,
        quota: Any = UNSET,
        qps_exempt: Any = UNSET,
        quota_exempt: Any = UNSET,
    ) -> None:
        """Override a key's plan (the gateway's ``qpsLimitCeiling``,
        ``rateLimitCeiling``, ``qpsLimitExempt`` and ``rateLimitExempt``).

        :param qps: the key's own calls per second; ``None`` goes back to
            the package's.
        :param quota: the key's own quota, in its package's period (a day
            when the package has none); ``None`` goes back to the package's.
        :param qps_exempt: no calls-per-second limit for the key.
        :param quota_exempt: no quota for the key.
        :raises AdminError: unknown key, bad value; nothing was written.

        .. versionadded:: 0.1
        """
        changes: dict[str, Any] = {}
        for column, value in (("qps", qps), ("quota", quota)):
            if value is not UNSET:
                changes[column] = None if value is None else _limit(value, column)
        for column, value in (("qps_exempt", qps_exempt), ("quota_exempt", quota_exempt)):
            if value is not UNSET:
                if not isinstance(value, bool):
                    raise AdminError(f"{column} must be True or False, not {value!r}")
                # NULL and false mean the same; false is kept as NULL.
                changes[column] = value or None
        with self._writing() as session:
            record = self._key(session, key)
            for column, value in changes.items():
                setattr(record, column, value)
        self._changed(key)

    # -- helpers ---------------------------------------------------------

    def _new_secret(self, secret: Optional[str]) -> tuple[str, StoredSecret]:
        generated = secret is None
        plain = generate_secret() if secret is None else secret
        check_secret(plain)
        return plain, self._hash(plain, generated=generated)

    def _hash_all(
        self, secrets: Sequence[str], workers: Optional[int], progress: Optional[Progress]
    ) -> list[StoredSecret]:
        """Person-chosen secrets as :meth:`_hash` stores them, on every core."""
        if self.settings.store_plaintext_secrets:
            return [StoredSecret(PLAINTEXT, secret) for secret in secrets]
        hashes = hash_secrets(
            secrets, self.settings.hash_method, workers=workers, progress=progress
        )
        return [StoredSecret(KDF, value) for value in hashes]

    def _hash(self, plain: str, *, generated: bool) -> StoredSecret:
        return hash_secret(
            plain,
            generated=generated,
            kdf_method=self.settings.hash_method,
            plaintext=self.settings.store_plaintext_secrets,
        )

    def _package_names(self, session: Session) -> list[str]:
        """Every package's name (for suggestions, when a name is unknown)."""
        return list(session.scalars(select(self.models.Package.name)))

    def _packages_named(self, session: Session, names: set[str]) -> dict[str, Any]:
        """The packages of these names that exist (exact matches only)."""
        m = self.models
        found: dict[str, Any] = {}
        for part in _chunks(sorted(names)):
            for package in session.scalars(select(m.Package).where(m.Package.name.in_(part))):
                found[package.name] = package
        return {name: p for name, p in found.items() if name in names}

    def _keys_named(self, session: Session, keys: Sequence[str]) -> set[str]:
        """Which of these keys exist (exact matches only)."""
        m = self.models
        found: set[str] = set()
        for part in _chunks(keys):
            found.update(
                session.scalars(select(m.PackageKey.key).where(m.PackageKey.key.in_(part)))
            )
        return found & set(keys)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def _writing(self, conflict: str = "conflicting change") -> Iterator[Session]:
        """A session committed at the end, rolled back on any error."""
        with self._session() as session:
            try:
                yield session
                session.commit()
            except IntegrityError:
                session.rollback()
                raise AdminError(conflict) from None
            except BaseException:
                session.rollback()
                raise

    def _package(self, session: Session, name: str) -> Any:
        found = session.execute(
            select(self.models.Package).where(self.models.Package.name == name)
        ).scalar_one_or_none()
        if found is None or found.name != name:
            suggestion = _did_you_mean(name, self._package_names(session))
            raise AdminError(f"no package named {name!r}{suggestion}")
        return found

    def _key(self, session: Session, key: str) -> Any:
        found = session.execute(
            select(self.models.PackageKey).where(self.models.PackageKey.key == key)
        ).scalar_one_or_none()
        if found is None or found.key != key:
            raise AdminError(f"no key {key!r}")
        return found

    def _changed(self, key: str) -> None:
        for listener in self.on_change:
            listener(key)


def _state_filter(k: Any, state: str, now: dt.datetime) -> ColumnElement[bool]:
    """The rule of :func:`key_state` for ``state``, as SQL on the key table."""
    expired = and_(k.expires_at.is_not(None), k.expires_at <= now)
    early = and_(k.not_before.is_not(None), k.not_before > now)
    if state == WAITING:
        return k.status == WAITING  # type: ignore[no-any-return]
    if state == DISABLED:
        # Any stored status but active (and waiting, a state of its own)
        # refuses the key, as disabled does.
        return k.status.not_in([ACTIVE, WAITING])  # type: ignore[no-any-return]
    if state == EXPIRED:
        return and_(k.status == ACTIVE, expired)
    if state == NOT_YET_VALID:
        return and_(k.status == ACTIVE, not_(expired), early)
    return and_(k.status == ACTIVE, not_(expired), not_(early))


#: Names looked up per query (well under every backend's bound-parameter limit).
_CHUNK = 500


def driver_reason(exc: SQLAlchemyError) -> str:
    """The first line of the database driver's message, after its type:
    ``OperationalError: ... database "api" does not exist``.

    Only for a failure to connect or to read the schema: the message of a
    failed statement may quote its parameters.

    .. versionadded:: 0.1
    """
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines()
    name = type(original).__name__
    return f"{name}: {lines[0].strip()}" if lines else name


def _did_you_mean(name: str, names: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` naming the closest of ``names``, or ``""``."""
    close = difflib.get_close_matches(name, names, n=1)
    if not close:
        # A name in another case is close whatever its length.
        close = [other for other in names if other.lower() == name.lower()][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _limit(value: object, what: str) -> int:
    try:
        return check_limit(value, what)
    except ValueError as exc:
        raise AdminError(str(exc)) from None


def _package_limits(qps: Optional[int], quota: Optional[Quota]) -> dict[str, Any]:
    """The package columns of a plan, checked."""
    limits: dict[str, Any] = {
        "qps": None if qps is None else _limit(qps, "qps"),
        "quota": None,
        "quota_period": None,
    }
    if quota is not None:
        try:
            count, period = parse_quota(quota) if isinstance(quota, str) else quota
        except ValueError as exc:
            raise AdminError(str(exc)) from None
        except TypeError:
            raise AdminError(f"a quota is 'N/PERIOD' or (N, PERIOD), not {quota!r}") from None
        if period not in PERIODS:
            raise AdminError(
                f"the quota period must be one of {', '.join(PERIODS)}, not {period!r}"
            )
        limits["quota"], limits["quota_period"] = _limit(count, "the quota"), period
    return limits


def check_package_name(name: str) -> None:
    """Refuse a package name the tables cannot hold.

    :raises AdminError: the name is empty or longer than 255 characters.

    .. versionadded:: 0.1
    """
    if not name or len(name) > MAX_KEY_LENGTH:
        raise AdminError("a package name must have 1 to 255 characters")


def check_owner(owner_name: Optional[str], owner_email: Optional[str]) -> None:
    """Refuse an owner name or developer email the tables cannot hold
    (``None``: no value, accepted).

    :raises AdminError: a value longer than 255 characters.

    .. versionadded:: 0.1
    """
    if owner_name is not None and len(owner_name) > 255:
        raise AdminError("an owner name must have at most 255 characters")
    if owner_email is not None and len(owner_email) > 255:
        raise AdminError("a developer email must have at most 255 characters")


def check_key(key: str) -> None:
    """Refuse a key that cannot be stored or sent as a Basic user name.

    :raises AdminError: the key is empty, longer than 255 characters, or
        holds a colon (it would end the user name) or NUL.

    .. versionadded:: 0.1
    """
    if not key or len(key) > MAX_KEY_LENGTH or "\x00" in key or ":" in key:
        raise AdminError("a key must have 1 to 255 characters and no colon or NUL")


#: The statuses a key may be imported with, in the gateway's order.
IMPORT_STATUSES = (WAITING, ACTIVE, DISABLED)


def check_status(status: str, *, waiting: bool = False) -> None:
    """Refuse a stored status other than ``active`` or ``disabled``.

    The value is not quoted: in an import whose columns are mixed up it
    could be a secret.

    :param waiting: accept ``waiting`` too (an import: no key goes back to
        ``waiting`` once it left it).
    :raises AdminError: any other value.

    .. versionadded:: 0.1
    """
    if waiting:
        if status not in IMPORT_STATUSES:
            raise AdminError(f"the status must be {WAITING!r}, {ACTIVE!r} or {DISABLED!r}")
    elif status not in (ACTIVE, DISABLED):
        raise AdminError(f"the status must be {ACTIVE!r} or {DISABLED!r}")


def check_secret(secret: str, key: Optional[str] = None) -> None:
    """Refuse an empty secret.

    :param key: the key the secret is for, named in the message (an import
        has many).
    :raises AdminError: the secret is empty.

    .. versionadded:: 0.1
    """
    if not secret:
        raise AdminError(
            "a secret cannot be empty" if key is None else f"key {key!r} has no secret"
        )


def parse_limit(text: str, what: str) -> int:
    """Read a limit written as a whole number (``"5000"``).

    :param what: the limit's name, for the message (an option or a column).
    :raises AdminError: not a whole number from 0 to
        :data:`~flask_basic_gate.plans.MAX_LIMIT`.

    .. versionadded:: 0.1
    """
    digits = text.strip()
    # Anything but digits reaches check_limit as text, which it refuses.
    return _limit(int(digits) if digits.isdigit() else text, what)


# An offset without a colon (+0000, as the gateway writes it), which
# datetime.fromisoformat reads only from Python 3.11 on.
_OFFSET = re.compile(r"([+-]\d\d)(\d\d)$")


def parse_time(text: str, what: str, *, quote: bool = True) -> dt.datetime:
    """Read an ISO 8601 date, or date and time, as naive UTC.

    A value without an offset is UTC; ``Z``, ``+02:00`` and the gateway's
    ``+0000`` (``2017-09-04T11:54:56.000+0000``) are read on every Python.

    :param what: the value's name, for the message (an option or a column).
    :param quote: name the value in the message (not for a file's cells,
        where a value in the wrong column could be a secret).
    :raises AdminError: not ISO 8601, or a date that does not exist
        (``2027-02-30: day is out of range for month``).

    .. versionadded:: 0.1
    """
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        # datetime.fromisoformat reads "Z" only from Python 3.11 on.
        value = value[:-1] + "+00:00"
    value = _OFFSET.sub(r"\1:\2", value) if "T" in value or " " in value else value
    named = f"{what} {text!r}" if quote else what
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        if str(exc).startswith("Invalid isoformat string"):
            raise AdminError(
                f"{named} is not an ISO 8601 date or time,"
                " such as 2027-01-31 or 2027-01-31T12:00:00Z"
            ) from None
        # Well formed, but no such day or time: say which part is wrong.
        raise AdminError(f"{named}: {exc}") from None
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return when


def check_import_row(row: KeyImport) -> None:
    """Refuse a row of an import that no database could take, without
    reading one: the checks :meth:`KeyStore.check_import` makes on each row
    before it looks for existing keys and packages.

    :raises AdminError: for the first problem: key, secret, package name,
        status, owner, then limits.

    .. versionadded:: 0.1
    """
    check_key(row.key)
    check_secret(row.secret, row.key)
    check_package_name(row.package)
    check_status(row.status, waiting=True)
    check_owner(row.owner_name, row.owner_email)
    for value, what in ((row.qps, "qpsLimitCeiling"), (row.quota, "rateLimitCeiling")):
        if value is not None:
            _limit(value, what)

"""The ``flask basic-gate`` commands: key administration from the shell.

Every command runs in the app context and calls the app's
:class:`~flask_basic_gate.store.KeyStore`. Bad input (an unknown package or
key, a duplicate key, a bad date, a bad CSV row) ends the command with a
one-line error on stderr and exit status 1, and nothing is written; a usage
error (an unknown or missing option) exits with status 2, as Click does.

Every command first prints ``database: <URL>`` (password hidden) on
stderr, so an operator whose shell lacks the app's database setting sees at
once which database is read or changed. When the database cannot be used,
the error says why: the driver's reason when it cannot be reached, or the
tables or columns that are missing.

A secret is printed only once: by ``create-key`` and ``rotate-secret``, in
the two lines ``key: <KEY>`` and ``secret: <SECRET>`` that scripts can read.
No other command prints a secret or a stored hash.

A change made here reaches the process that made it at once. After a
change to existing keys, a command says on stderr where it went: announced
on the Redis of ``BASIC_GATE_REDIS_URL`` (every process drops the keys at
once), or, without Redis, that servers running elsewhere see it when their
cached verification of the key expires, within ``BASIC_GATE_CACHE_TTL``
seconds.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Callable, NoReturn, Optional

import click
from flask.cli import AppGroup
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError

from .csvimport import (
    ImportFileError,
    ImportRow,
    PackageMapping,
    map_packages,
    read_file,
    read_package_map,
)
from .errors import StoreUnavailable
from .plans import parse_quota
from .records import DEFAULT_PERIOD
from .state import get_state
from .store import (
    STATES,
    AdminError,
    ImportRowError,
    KeyInfo,
    KeyStore,
    NewSecret,
    parse_limit,
    parse_time,
)
from .usage import parse_day, read_usage, recent_usage, usage_csv, usage_json, usage_table

__all__ = ["basic_gate_cli"]

basic_gate_cli = AppGroup("basic-gate", help="Manage the gate's packages, keys and secrets.")

# The longest grace period rotate-secret accepts: ten years, in seconds.
_MAX_GRACE = 10 * 365 * 24 * 3600


def _store() -> KeyStore:
    """The store, after saying on stderr which database it reads or changes."""
    store = get_state().store
    click.echo(f"database: {store.engine.url.render_as_string(hide_password=True)}", err=True)
    return store


@contextmanager
def _changing() -> Iterator[KeyStore]:
    """The store, for a command that writes: the database is named first,
    and where the change went is said after it succeeded."""
    store = _store()
    with _announced(store):
        yield store


class _AnnounceFailures(logging.Handler):
    """Notices the revocation's error when it could not publish a change
    (it logs one on the ``flask_basic_gate`` logger, and the command goes on)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("could not announce"):
            self.failed = True


@contextmanager
def _announced(store: KeyStore) -> Iterator[None]:
    """Around a write: after it succeeded, say on stderr where the change
    went (announced on Redis, or seen elsewhere within the cache's TTL)."""
    changed: list[str] = []
    listener = changed.append
    failures = _AnnounceFailures()
    logger = logging.getLogger("flask_basic_gate")
    store.on_change.append(listener)
    logger.addHandler(failures)
    try:
        yield
    finally:
        store.on_change.remove(listener)
        logger.removeHandler(failures)
    click.echo(_announcement(bool(changed), failures.failed), err=True)


def _announcement(changed: bool, failed: bool) -> str:
    """The line that says where a change went (see :func:`_announced`)."""
    if not changed:
        # New keys and packages: no process can hold them in its cache.
        return "nothing to announce: no existing key changed"
    settings = get_state().settings
    ttl = settings.cache_ttl
    within = (
        f"within {ttl:g} s (BASIC_GATE_CACHE_TTL)"
        if ttl
        else "at once (BASIC_GATE_CACHE_TTL = 0: nothing is cached)"
    )
    if settings.redis_url is None:
        return f"no BASIC_GATE_REDIS_URL: other processes see this change {within}"
    where = _without_password(settings.redis_url)
    if failed:
        return (
            f"could not announce this change on Redis {where}: other processes see it"
            f" {within}; repeat the command once Redis answers"
        )
    return f"announced on Redis {where}"


def _without_password(url: str) -> str:
    """A URL as it may be printed: its password, in the user part or in the
    query (``?password=``), shown as ``***``."""
    shown = make_url(url).render_as_string(hide_password=True)
    return re.sub(r"(?<=[?&]password=)[^&]*", "***", shown)


@contextmanager
def _admin_errors() -> Iterator[None]:
    """Turn the store's refusals and database failures into one-line errors."""
    try:
        yield
    except AdminError as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        problem = get_state().store.database_problem()
        if problem is None:
            # The driver's message may quote the statement's parameters, so
            # only the error's type is shown.
            problem = f"the database could not be used ({type(exc).__name__})"
        raise click.ClickException(problem) from None


def _parse_when(value: str, option: str) -> dt.datetime:
    """Read an ISO 8601 date or date and time as naive UTC.

    A trailing ``Z`` means UTC, and so does a value without an offset.

    :param option: the option's name, for the error message.
    :raises click.ClickException: the value is not ISO 8601, or names a day
        or time that does not exist (the message says which part).
    """
    try:
        return parse_time(value, option)
    except AdminError as exc:
        raise click.ClickException(str(exc)) from None


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _read_secret(secret: Optional[str]) -> Optional[str]:
    """``-`` reads the secret from the first line of standard input, which
    keeps it out of the shell's history and the process list; at a terminal
    it asks twice, without echoing what is typed."""
    if secret != "-":
        return secret
    if _stdin_is_terminal():
        # On stderr: stdout carries only the two lines scripts read.
        value: str = click.prompt("Secret", hide_input=True, confirmation_prompt=True, err=True)
        return value
    return sys.stdin.readline().rstrip("\r\n")


def _show(new: NewSecret) -> None:
    # Exactly two lines, for scripts; the only place a secret is printed.
    click.echo(f"key: {new.key}")
    click.echo(f"secret: {new.secret}")


@basic_gate_cli.command("init-db")
def init_db() -> None:
    """Create the gate's tables (only those)."""
    with _admin_errors(), _changing() as store:
        created = store.create_tables()
    if not created:
        click.echo("basic-gate tables found: nothing to create")
    elif len(created) == len(store.models):
        click.echo("basic-gate tables created")
    else:
        click.echo(f"basic-gate tables created: {', '.join(created)} (the others existed)")


@basic_gate_cli.command("create-package")
@click.argument("name")
@click.option("--qps", metavar="N", help="Calls per second (default: unlimited; 0 blocks).")
@click.option(
    "--quota", metavar="N/PERIOD", help="Calls per minute, hour, day or month (5000/day)."
)
def create_package(name: str, qps: Optional[str], quota: Optional[str]) -> None:
    """Create the package NAME, with its plan's limits."""
    limits = _plan_options(qps, quota, allow_none=False)
    with _admin_errors(), _changing() as store:
        store.create_package(name, **limits)
    click.echo(f"package {name!r} created")


@basic_gate_cli.command("create-key")
@click.option("--package", required=True, metavar="NAME", help="The package the key belongs to.")
@click.option("--key", metavar="KEY", help="The key (Basic user name); generated when left out.")
@click.option(
    "--secret",
    metavar="SECRET",
    help="The secret; generated when left out. '-' reads it from standard input.",
)
@click.option("--developer", metavar="EMAIL", help="Email of the developer who owns the key.")
@click.option("--owner", metavar="NAME", help="Name of the developer or application.")
@click.option("--not-before", metavar="ISO8601", help="The key works from then on (UTC).")
@click.option("--expires", metavar="ISO8601", help="The key stops working then (UTC).")
def create_key(
    package: str,
    key: Optional[str],
    secret: Optional[str],
    developer: Optional[str],
    owner: Optional[str],
    not_before: Optional[str],
    expires: Optional[str],
) -> None:
    """Create a key in a package and print it with its secret.

    Prints two lines, 'key: KEY' and 'secret: SECRET'. A generated secret is
    shown this once: only its digest is stored.
    """
    starts = _parse_when(not_before, "--not-before") if not_before is not None else None
    ends = _parse_when(expires, "--expires") if expires is not None else None
    if ends is not None and ends <= _utcnow():
        raise click.ClickException(f"--expires {expires!r} is in the past")
    with _admin_errors(), _changing() as store:
        new = store.create_key(
            package,
            key=key,
            secret=_read_secret(secret),
            owner_name=owner,
            owner_email=developer,
            not_before=starts,
            expires_at=ends,
        )
    _show(new)


@basic_gate_cli.command("disable-key")
@click.argument("key")
def disable_key(key: str) -> None:
    """Switch KEY off (its secrets are kept)."""
    with _admin_errors(), _changing() as store:
        store.disable_key(key)
    click.echo(f"key {key!r} disabled")


@basic_gate_cli.command("enable-key")
@click.argument("key")
def enable_key(key: str) -> None:
    """Switch KEY back on, or approve a waiting KEY."""
    with _admin_errors(), _changing() as store:
        store.enable_key(key)
    click.echo(f"key {key!r} enabled")


@basic_gate_cli.command("rotate-secret")
@click.argument("key")
@click.option(
    "--secret",
    metavar="NEW",
    help="The new secret; generated when left out. '-' reads it from standard input.",
)
@click.option(
    "--grace",
    type=float,
    default=0,
    show_default=True,
    metavar="SECONDS",
    help="How long the current secrets keep working.",
)
def rotate_secret(key: str, secret: Optional[str], grace: float) -> None:
    """Give KEY a new secret that works at once, and print it.

    The current secrets keep working for --grace seconds (default 0: they
    stop at once). Prints 'key: KEY' and 'secret: SECRET'.
    """
    if not math.isfinite(grace) or grace > _MAX_GRACE:
        raise click.ClickException(
            f"--grace {grace:g} is out of range: give 0 to {_MAX_GRACE} seconds"
        )
    with _admin_errors(), _changing() as store:
        new = store.rotate_secret(key, _read_secret(secret), grace=grace)
    _show(new)


@basic_gate_cli.command("update-key")
@click.argument("key")
@click.option(
    "--not-before",
    metavar="ISO8601|none",
    help="The key works from then on (UTC); 'none': from now on.",
)
@click.option(
    "--expires", metavar="ISO8601|none", help="The key stops working then (UTC); 'none': never."
)
@click.option(
    "--owner", metavar="NAME", help="Name of the developer or application ('' clears it)."
)
@click.option("--developer", metavar="EMAIL", help="Email of the developer ('' clears it).")
@click.option(
    "--qps", metavar="N|none", help="The key's own calls per second; 'none': its package's."
)
@click.option(
    "--quota",
    metavar="N[/PERIOD]|none",
    help="The key's own quota, in its package's period; 'none': its package's.",
)
@click.option(
    "--qps-exempt/--no-qps-exempt", default=None, help="No calls-per-second limit for the key."
)
@click.option("--quota-exempt/--no-quota-exempt", default=None, help="No quota for the key.")
def update_key(key: str, **options: Any) -> None:
    """Change some of KEY's fields; the others stay as they are.

    Prints what changed and the key's state afterwards. Like disable-key,
    the change takes effect at once in this process.
    """
    changes: dict[str, Any] = {}
    said: list[str] = []
    for name, parse in _UPDATES.items():
        value = options[name]
        if value is not None:
            fields, description = parse(value)
            changes.update(fields)
            said.append(description)
    # Every value is checked before anything is written.
    limits = _key_limit_options(options["qps"], options["quota"])
    for flag in ("qps_exempt", "quota_exempt"):
        if options[flag] is not None:
            limits[flag] = options[flag]
    said.extend(_describe_limits(limits))
    if not changes and not limits:
        raise click.UsageError(
            "nothing to change: give at least one of " + ", ".join(_UPDATE_OPTIONS)
        )
    with _admin_errors(), _changing() as store:
        if limits:
            _check_quota_period(store, key, options["quota"])
            store.set_key_limits(key, **limits)
        info = store.update_key(key, **changes) if changes else store.show_key(key)
    click.echo(f"key {key!r} updated: {', '.join(said)}; state {info.state}")


def _key_limit_options(qps: Optional[str], quota: Optional[str]) -> dict[str, Any]:
    # A key's quota counts in its package's period: N, or N/PERIOD naming it.
    limits = _plan_options(qps, None, allow_none=True)
    if quota is not None:
        text = quota.strip()
        if text.lower() == _NONE:
            limits["quota"] = None
        else:
            if "/" in text:
                # The period must be the package's: see _check_quota_period.
                limits["quota"], _ = _plan_options(None, text, allow_none=False)["quota"]
            else:
                try:
                    limits["quota"] = parse_limit(text, "--quota")
                except AdminError as exc:
                    raise click.ClickException(str(exc)) from None
    return limits


def _check_quota_period(store: KeyStore, key: str, quota: Optional[str]) -> None:
    if quota is None or "/" not in quota:
        return
    period = quota.partition("/")[2].strip().lower()
    package = store.show_key(key).package
    found = next(info for info in store.list_packages() if info.name == package)
    expected = found.quota_period or DEFAULT_PERIOD
    if period != expected:
        raise click.ClickException(
            f"--quota {quota!r}: a key's quota counts in its package's period,"
            f" which is {expected} for {package!r}; give {quota.partition('/')[0]}/{expected}"
        )


def _describe_limits(limits: dict[str, Any]) -> list[str]:
    said = []
    for name in ("qps", "quota"):
        if name in limits:
            value = limits[name]
            said.append(f"{name} {'of the package' if value is None else value}")
    for name in ("qps_exempt", "quota_exempt"):
        if name in limits:
            said.append(f"{name.replace('_', '-')} {'on' if limits[name] else 'off'}")
    return said


def _update_not_before(value: str) -> tuple[dict[str, Any], str]:
    when = _parse_when_or_none(value, "--not-before")
    return {"not_before": when}, f"not-before {_iso(when) if when else 'none'}"


def _update_expires(value: str) -> tuple[dict[str, Any], str]:
    when = _parse_when_or_none(value, "--expires")
    if when is not None and when <= _utcnow():
        raise click.ClickException(f"--expires {value!r} is in the past")
    return {"expires_at": when}, f"expires {_iso(when) if when else 'never'}"


def _update_owner(value: str) -> tuple[dict[str, Any], str]:
    return {"owner_name": value or None}, f"owner {value!r}" if value else "owner cleared"


def _update_developer(value: str) -> tuple[dict[str, Any], str]:
    return {"owner_email": value or None}, (
        f"developer {value!r}" if value else "developer cleared"
    )


#: update-key's options, by parameter name: each turns the option's value into
#: keyword arguments of KeyStore.update_key and the words that report the
#: change. A new option is a click.option on the command plus an entry here.
_UPDATES: dict[str, Callable[[str], tuple[dict[str, Any], str]]] = {
    "not_before": _update_not_before,
    "expires": _update_expires,
    "owner": _update_owner,
    "developer": _update_developer,
}
_UPDATE_OPTIONS = [
    *(f"--{name.replace('_', '-')}" for name in _UPDATES),
    "--qps",
    "--quota",
    "--[no-]qps-exempt",
    "--[no-]quota-exempt",
]


def _parse_when_or_none(value: str, option: str) -> Optional[dt.datetime]:
    if value.strip().lower() == "none":
        return None
    return _parse_when(value, option)


@basic_gate_cli.command("delete-key")
@click.argument("key")
@click.option("--yes", is_flag=True, help="Delete without asking.")
def delete_key(key: str, yes: bool) -> None:
    """Delete KEY and all its secrets, for good.

    Asks first at a terminal; without one, --yes is required.
    """
    with _admin_errors(), _changing() as store:
        info = store.show_key(key)
        if not yes:
            if not _stdin_is_terminal():
                raise click.UsageError(
                    "standard input is not a terminal: give --yes to delete without asking"
                )
            click.confirm(
                f"Delete key {key!r} of package {info.package!r} and its"
                f" {_plural(info.secrets, 'live secret')}?",
                abort=True,
                err=True,
            )
        store.delete_key(key)
    click.echo(f"key {key!r} deleted")


@basic_gate_cli.command("list-keys")
@click.option("--package", metavar="NAME", help="Only the keys of this package.")
@click.option("--state", type=click.Choice(STATES), help="Only the keys in this state.")
def list_keys(package: Optional[str], state: Optional[str]) -> None:
    """List the keys, one line each: package, state, validity, live secrets
    and their expiries, calls per second and quota, developer, owner.

    The state is what the gate does with the key now: active, disabled,
    expired, not-yet-valid or waiting (all but active get 403
    key-inactive). QPS and QUOTA say whose limit applies: the key's own
    (key), its package's (package), exempt or unlimited. Never shows a
    secret.
    """
    with _admin_errors():
        keys = _store().list_keys(package, state=state)
    if not keys:
        where = [f"in package {package!r}"] if package is not None else []
        where += [f"in state {state!r}"] if state is not None else []
        click.echo(" ".join(["no keys", *where]))
        return
    rows: list[tuple[str, ...]] = [_LIST_HEADER]
    rows.extend(_key_row(info) for info in keys)
    used = _quota_used([info.key for info in keys])
    if used is not None:
        rows = [(*row, cell) for row, cell in zip(rows, ["QUOTA-USED", *used])]
    _echo_table(rows)


_LIST_HEADER = (
    "KEY",
    "PACKAGE",
    "STATE",
    "NOT-BEFORE",
    "EXPIRES",
    "SECRETS",
    "SECRETS-EXPIRE",
    "QPS",
    "QUOTA",
    "DEVELOPER",
    "OWNER",
)


def _echo_table(rows: Sequence[Sequence[str]]) -> None:
    """Print rows as columns aligned on their widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _quota_used(keys: list[str]) -> Optional[list[str]]:
    """Each key's calls in its current quota window, as ``used/quota (period)``,
    or ``None`` when this process cannot read the servers' counters: they
    are shared only on Redis (``BASIC_GATE_REDIS_URL``); in memory, they
    live in each server process."""
    state = get_state()
    if state.settings.redis_url is None:
        return None
    cells = []
    for key in keys:
        try:
            record = state.store.reader.lookup(key)
            plan = record.plan if record is not None else None
            used = state.policy.plans.quota_used(key, plan) if plan is not None else None
        except StoreUnavailable:
            cells.append("unknown")
            continue
        if plan is None or used is None:
            cells.append("-")
        else:
            cells.append(f"{used}/{plan.quota} ({plan.period})")
    return cells


def _key_row(info: KeyInfo) -> tuple[str, ...]:
    return (
        info.key,
        info.package,
        info.state,
        _iso(info.not_before) if info.not_before is not None else "none",
        _iso(info.expires_at) if info.expires_at is not None else "never",
        str(info.secrets),
        ",".join(_iso(when) if when else "never" for when in info.secret_expiries) or "-",
        _qps_limit(info),
        _quota_limit(info),
        info.owner_email or "-",
        info.owner_name or "-",
    )


def _qps_limit(info: KeyInfo) -> str:
    """The key's calls per second and whose they are: ``5 (key)``,
    ``2 (package)``, ``exempt`` or ``unlimited``."""
    if info.qps_exempt:
        return "exempt"
    plan = info.plan
    if plan is None or plan.qps is None:
        return "unlimited"
    return f"{plan.qps} ({'key' if plan.qps_override else 'package'})"


def _quota_limit(info: KeyInfo) -> str:
    """The key's quota and whose it is: ``100/day (key)``, ``5000/day
    (package)``, ``exempt`` or ``unlimited``."""
    if info.quota_exempt:
        return "exempt"
    plan = info.plan
    if plan is None or plan.quota is None:
        return "unlimited"
    return f"{plan.quota}/{plan.period} ({'key' if plan.quota_override else 'package'})"


@basic_gate_cli.command("show-key")
@click.argument("key")
def show_key(key: str) -> None:
    """Show KEY: package, state, validity, calls per second and quota,
    owner, live secrets and their expiries. Never shows a secret."""
    store = _store()
    with _admin_errors():
        info = store.show_key(key)
    lines = [
        ("key", info.key),
        ("package", info.package),
        ("state", info.state),
        ("status", info.status),
        ("not-before", _iso(info.not_before) if info.not_before is not None else "none"),
        ("expires", _iso(info.expires_at) if info.expires_at is not None else "never"),
        ("qps", _qps_limit(info)),
        ("quota", _quota_limit(info)),
        ("owner", info.owner_name or "-"),
        ("developer", info.owner_email or "-"),
        ("created", _iso(info.created_at)),
        ("live secrets", str(info.secrets)),
    ]
    used = _quota_used([key])
    if used is not None:
        lines.append(("quota used", used[0]))
    for name, value in lines:
        click.echo(f"{name + ':':<14}{value}")
    for number, when in enumerate(info.secret_expiries, 1):
        click.echo(f"  {number}. expires {_iso(when) if when else 'never'}")
    if get_state().settings.usage:
        for line in recent_usage(store.engine, store.models, key):
            click.echo(line)


@basic_gate_cli.command("usage")
@click.option("--key", metavar="KEY", help="Only this key.")
@click.option("--package", metavar="NAME", help="Only the keys of this package.")
@click.option("--since", metavar="YYYY-MM-DD", help="From this UTC day on.")
@click.option("--until", metavar="YYYY-MM-DD", help="Up to this UTC day.")
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="json adds the counts per errorCode.",
)
def usage(
    key: Optional[str],
    package: Optional[str],
    since: Optional[str],
    until: Optional[str],
    output: str,
) -> None:
    """Show the calls per key and UTC day: allowed, blocked and other.

    Blocked calls came with the key's right secret (or were throttled) and
    were refused for the key's state, package or plan; other calls are wrong
    secrets and calls the gate could not check. The row of key '-' counts the
    calls that named no known key. Servers write their counts every
    BASIC_GATE_USAGE_FLUSH seconds and when they stop.
    """
    try:
        first = parse_day(since, "--since") if since is not None else None
        last = parse_day(until, "--until") if until is not None else None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    store = _store()
    with _admin_errors():
        rows = read_usage(
            store.engine, store.models, key=key, package=package, since=first, until=last
        )
    if output == "json":
        click.echo(usage_json(rows))
    elif output == "csv":
        click.echo(usage_csv(rows), nl=False)
    elif rows:
        _echo_table(usage_table(rows))
    else:
        where = [f"of key {key!r}"] if key is not None else []
        where += [f"in package {package!r}"] if package is not None else []
        where += [f"from {first}"] if first is not None else []
        where += [f"until {last}"] if last is not None else []
        click.echo(" ".join(["no usage", *where]))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


# -- package plans ---------------------------------------------------------------
#
# The options' text becomes the store's arguments through the store's and
# the plans' own readers (parse_limit, parse_quota), so a value is refused
# here with the message the store would give. A key's own limits come from
# update-key's options and, for import-keys, from csvimport.


_NONE = "none"


def _plan_options(qps: Optional[str], quota: Optional[str], *, allow_none: bool) -> dict[str, Any]:
    """The store's arguments for --qps and --quota (``none``: unlimited).

    :raises click.ClickException: a bad value, before anything is written.
    """
    limits: dict[str, Any] = {}
    try:
        if qps is not None:
            if allow_none and qps.strip().lower() == _NONE:
                limits["qps"] = None
            else:
                limits["qps"] = parse_limit(qps, "--qps")
        if quota is not None:
            if allow_none and quota.strip().lower() == _NONE:
                limits["quota"] = None
            else:
                limits["quota"] = parse_quota(quota)
    except ValueError as exc:
        hint = " (or 'none' for unlimited)" if allow_none else ""
        raise click.ClickException(f"{exc}{hint}") from None
    return limits


@basic_gate_cli.command("update-package")
@click.argument("name")
@click.option("--qps", metavar="N|none", help="Calls per second; 'none' for unlimited.")
@click.option(
    "--quota", metavar="N/PERIOD|none", help="Calls per minute, hour, day or month; 'none'."
)
def update_package(name: str, qps: Optional[str], quota: Optional[str]) -> None:
    """Change the plan of the package NAME (the options left out stay)."""
    if qps is None and quota is None:
        raise click.ClickException("give --qps, --quota or both")
    limits = _plan_options(qps, quota, allow_none=True)
    with _admin_errors(), _changing() as store:
        store.update_package(name, **limits)
    click.echo(f"package {name!r} updated")


@basic_gate_cli.command("list-packages")
def list_packages() -> None:
    """List the packages: calls per second, quota, number of keys."""
    with _admin_errors():
        packages = _store().list_packages()
    if not packages:
        click.echo("no packages")
        return
    rows = [("PACKAGE", "QPS", "QUOTA", "KEYS")]
    for info in packages:
        quota = "unlimited" if info.quota is None else f"{info.quota}/{info.quota_period}"
        qps = "unlimited" if info.qps is None else str(info.qps)
        rows.append((info.name, qps, quota, str(info.keys)))
    _echo_table(rows)


# -- import-keys ---------------------------------------------------------------
#
# Reading the file and mapping its packages are csvimport's job; checking rows
# against the database and the one-transaction write are the store's
# (KeyStore.import_problems, KeyStore.import_keys); the command says what
# happened.

#: How many bad rows an import lists; the others are counted.
MAX_PROBLEMS_SHOWN = 50
#: Without a terminal, a progress line at most this often (seconds); the
#: store reports at least every half second, so lines come at least every 2 s.
PROGRESS_INTERVAL = 1.5
#: From how many secrets the start and the end of hashing are said.
_SAY_HASHING = 20


@basic_gate_cli.command("import-keys")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--create-packages",
    is_flag=True,
    help="Create the packages the file names that do not exist yet (default: refuse).",
)
@click.option(
    "--package-map",
    metavar="MAP.csv",
    type=click.Path(dir_okay=False),
    help="CSV file 'package,plan,gate package': where the keys of a gateway package and"
    " plan go (an empty plan: any plan).",
)
@click.option("--dry-run", is_flag=True, help="Check the file against the database; write nothing.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    metavar="N",
    help="Processes to hash the secrets on (default: every core; 1: this one only).",
)
def import_keys(
    file: str,
    create_packages: bool,
    package_map: Optional[str],
    dry_run: bool,
    workers: Optional[int],
) -> None:
    """Load the keys of the gateway's export FILE (CSV or JSON).

    FILE is CSV as the gateway writes it, or the JSON list of package keys
    its API returns, with their plaintext secrets ('-': standard input).

    Fields: apikey (or key), secret and package, required; plan; status
    (waiting, active or disabled; empty means active); created; expires;
    qpsLimitCeiling, rateLimitCeiling, qpsLimitExempt, rateLimitExempt;
    developer email. Other fields are ignored and named. A package whose keys
    are on several plans becomes one package per plan, PACKAGE/PLAN, unless
    --package-map says otherwise. Each secret is hashed with
    BASIC_GATE_HASH_METHOD on every core.

    All or nothing: every bad row is reported with its line (or JSON index)
    and no key is imported. A key that exists already is a bad row, and so
    is an unknown package unless --create-packages is given.
    """
    with _admin_errors():
        store = _store()
    try:
        read = read_file(file)
        overrides = read_package_map(package_map) if package_map is not None else None
    except ImportFileError as exc:
        raise click.ClickException(str(exc)) from None
    if read.ignored:
        kind = "columns" if read.format == "csv" else "fields"
        click.echo(f"ignored {kind}: {', '.join(read.ignored)}", err=True)
    rows, unmapped, mappings = map_packages(read.rows, overrides)
    _say_mappings(mappings)
    keys = [row.key for row in rows]
    problems = [(bad.position, str(bad)) for bad in [*read.problems, *unmapped]]
    with _admin_errors():
        found = store.import_problems(keys, create_packages=create_packages)
    problems += [_import_problem(rows[problem.index], problem) for problem in found]
    if problems:
        _refuse_import(sorted(problems), dry_run)
    if dry_run:
        with _admin_errors():
            existing = {info.name for info in store.list_packages()}
        new = list(dict.fromkeys(key.package for key in keys if key.package not in existing))
        _say_imported("would import", len(keys), new, "to create")
        return
    with _admin_errors():
        try:
            with _announced(store), _hash_progress(len(keys)) as progress:
                created = store.import_keys(
                    keys, create_packages=create_packages, workers=workers, progress=progress
                )
        except ImportRowError as exc:
            # A key made (or a package removed) by someone else since the check.
            _refuse_import([_import_problem(rows[exc.index], exc)], dry_run)
    _say_imported("imported", len(keys), created, "created")


def _say_mappings(mappings: list[PackageMapping]) -> None:
    """Where the gateway's packages and plans go, on stderr, when the file
    names plans or a package map was given (else each package is itself)."""
    if not any(mapping.plan or mapping.mapped for mapping in mappings):
        return
    for mapping in mappings:
        plan = f"plan {mapping.plan!r}" if mapping.plan else "no plan"
        how = ", package map" if mapping.mapped else ""
        click.echo(
            f"package {mapping.package!r} {plan} -> {mapping.gate_package!r}"
            f" ({_plural(mapping.keys, 'key')}{how})",
            err=True,
        )


def _import_problem(row: ImportRow, problem: ImportRowError) -> tuple[int, str]:
    hint = "; create it first, or pass --create-packages" if problem.unknown_package else ""
    return row.position, f"{row.where}: {problem}{hint}"


def _refuse_import(problems: list[tuple[int, str]], dry_run: bool) -> NoReturn:
    """Every bad row, one a line on stderr (after the first 50, a count),
    then the error; a single bad row is the error's own line."""
    outcome = "nothing would be imported" if dry_run else "nothing was imported"
    if len(problems) == 1:
        raise click.ClickException(f"{problems[0][1]}; {outcome}")
    for _, problem in problems[:MAX_PROBLEMS_SHOWN]:
        click.echo(problem, err=True)
    if len(problems) > MAX_PROBLEMS_SHOWN:
        click.echo(f"and {len(problems) - MAX_PROBLEMS_SHOWN} more bad rows", err=True)
    raise click.ClickException(f"{len(problems)} bad rows; {outcome}")


def _say_imported(done: str, count: int, packages: list[str], made: str) -> None:
    message = f"{done} {_plural(count, 'key')}"
    if packages:
        message += f" (packages {made}: {', '.join(packages)})"
    click.echo(message)


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


@contextmanager
def _hash_progress(total: int) -> Iterator[Callable[[int, int], None]]:
    """A progress callback for hashing ``total`` secrets: a bar on stderr at
    a terminal, else :class:`_ProgressLines`."""
    if _stderr_is_terminal():
        # Any: click types its progress bar differently across versions.
        bar: Any = click.progressbar(
            length=total,
            label="hashing secrets",
            show_eta=True,
            show_pos=True,
            file=sys.stderr,
        )
        shown = [0]

        def advance(done: int, total: int) -> None:
            bar.update(done - shown[0])
            shown[0] = done

        with bar:
            yield advance
        return
    lines = _ProgressLines(total)
    yield lines
    lines.finish()


class _ProgressLines:
    """Hashing progress as lines on stderr, for logs: the count done, the
    total and the time left, at most every :data:`PROGRESS_INTERVAL` seconds;
    for :data:`_SAY_HASHING` secrets or more, a first and a last line too."""

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.clock = clock
        self.started = self.last = clock()
        self.said = total >= _SAY_HASHING
        if self.said:
            click.echo(f"hashing {_plural(total, 'secret')} (BASIC_GATE_HASH_METHOD)", err=True)

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if now - self.last < PROGRESS_INTERVAL or done >= total:
            return
        self.last = now
        self.said = True
        elapsed = now - self.started
        left = elapsed / done * (total - done) if done else None
        click.echo(
            f"hashed {done}/{total} secrets, "
            + (f"{_duration(left)} left" if left is not None else "time left unknown"),
            err=True,
        )

    def finish(self) -> None:
        if self.said:
            elapsed = self.clock() - self.started
            click.echo(f"hashed {_plural(self.total, 'secret')} in {_duration(elapsed)}", err=True)


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"

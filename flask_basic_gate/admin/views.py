"""The admin pages' views, their checks and their headers.

Every page is rendered on the server from the store's administration API
(:class:`~flask_basic_gate.store.KeyStore`). A change is a POST whose answer
is the page itself, rendered after the change (never a redirect): the secret
made by a creation or a rotation is shown in that one answer and is kept
nowhere else. Each change is logged on the ``flask_basic_gate`` logger and
sent as :data:`~flask_basic_gate.signals.admin_changed`.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Callable, NamedTuple, Optional, Union

from flask import Blueprint, Flask, current_app, g, render_template, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.datastructures import MultiDict

from ..errors import GateError, StoreUnavailable
from ..guard import get_current_key
from ..identity import KeyIdentity
from ..records import PERIODS, Plan
from ..signals import admin_changed
from ..state import GateState, get_state
from ..store import STATES, AdminError, KeyPage
from ..store.admin import generate_key
from ..usage import UNKNOWN_KEY, UsageRow, read_usage, today, usage_counter
from .chart import Chart, usage_chart
from .csrf import TOKEN_FIELD, form_token, origin_problem, secrets_fingerprint, token_problem
from .forms import iso, read_grace, read_limit, read_quota, read_text, read_when

__all__ = ["BLUEPRINT_NAME", "PAGE_SIZE", "SECURITY_HEADERS", "register"]

logger = logging.getLogger("flask_basic_gate")

#: The admin blueprint's name (its endpoints are ``basic_gate_admin.keys``, ...).
BLUEPRINT_NAME = "basic_gate_admin"
#: Keys per page of the keys page.
PAGE_SIZE = 50
#: Keys in each top list of the usage page.
TOP = 10
#: Days in a key's usage chart, today included.
CHART_DAYS = 30
#: Longest a page waits for this process's usage counts to be written before
#: it reads the table, in seconds.
FLUSH_WAIT = 2.0
#: Headers set on every response of the admin pages: no script runs (the
#: pages have none), nothing is loaded from elsewhere, no site may frame
#: them, nothing is cached, no URL leaks in a ``Referer``.
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none';"
        " form-action 'self'; frame-ancestors 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
)
_TEMPLATES = "basic_gate/admin/"
_G = "basic_gate_admin"

Page = tuple[str, int]
#: A page with headers of its own.
PageWithHeaders = tuple[str, int, dict[str, str]]


class Admin(NamedTuple):
    """The admin behind the current request, kept on ``g.basic_gate_admin``."""

    identity: KeyIdentity
    #: The form token of its credential.
    token: str


class Notice(NamedTuple):
    """What a change did, shown at the top of the page rendered after it."""

    text: str
    #: Where the change went: the database, and how other processes learn of it.
    where: str


def register(blueprint: Blueprint) -> None:
    """Add the views, checks, headers and error pages to ``blueprint``."""
    blueprint.before_request(_admit)
    blueprint.after_request(_secure)
    blueprint.context_processor(_context)
    blueprint.register_error_handler(GateError, _refused)
    blueprint.register_error_handler(StoreUnavailable, _unavailable)
    blueprint.register_error_handler(SQLAlchemyError, _unavailable)
    rules: list[tuple[str, str, Callable[[], Any], str]] = [
        ("/", "keys", keys_page, "GET"),
        ("/keys", "keys", keys_page, "GET"),
        ("/keys", "create_key", create_key, "POST"),
        ("/key", "key", key_page, "GET"),
        ("/key", "change_key", change_key, "POST"),
        ("/packages", "packages", packages_page, "GET"),
        ("/packages", "create_package", create_package, "POST"),
        ("/package", "package", package_page, "GET"),
        ("/package", "change_package", change_package, "POST"),
        ("/usage", "usage", usage_page, "GET"),
    ]
    for rule, endpoint, view, method in rules:
        blueprint.add_url_rule(rule, endpoint, view, methods=[method])


# -- checks and headers ------------------------------------------------------------


def _admit() -> Union[Page, PageWithHeaders, None]:
    """Refuse what the gate let through without an admin key; check a POST's
    origin and token."""
    if request.endpoint == f"{BLUEPRINT_NAME}.static" or request.method == "OPTIONS":
        return None
    state = get_state()
    identity = get_current_key()
    if identity is None or identity.package not in state.settings.admin_packages:
        # Only reached when the gate lets refused requests through
        # (BASIC_GATE_REPORT_ONLY): the admin pages are never opened by it.
        return _not_admin(state, identity)
    record = state.store.reader.lookup(identity.key)
    if record is None:
        return _page("refused.html", 403, reason="This key no longer exists.")
    token = form_token(_app_secret(current_app), record.id, record.key, record.secrets)
    setattr(g, _G, Admin(identity, token))
    if request.method == "POST":
        problem = origin_problem(request.scheme, request.host, request.headers) or token_problem(
            token, request.form.get(TOKEN_FIELD)
        )
        if problem is not None:
            logger.warning(
                "admin-refused admin=%r path=%r reason=%r",
                identity.key,
                request.path,
                problem,
                extra={
                    "basic_gate": {
                        "event": "admin-refused",
                        "admin": identity.key,
                        "path": request.path,
                        "reason": problem,
                    }
                },
            )
            return _page("refused.html", 403, reason=f"The form was refused: {problem}.")
    return None


def _not_admin(state: GateState, identity: Optional[KeyIdentity]) -> PageWithHeaders:
    if identity is not None:
        body, status = _page("refused.html", 403, not_admin=True)
        return body, status, {}
    if state.settings.mashery_mode:
        body, status = _page("refused.html", 403, sign_in=True)
        return body, status, {}
    body, status = _page("refused.html", 401, sign_in=True)
    return body, status, {"WWW-Authenticate": state.settings.challenge}


def _app_secret(app: Flask) -> Optional[bytes]:
    secret = app.secret_key
    if not secret:
        return None
    return secret if isinstance(secret, bytes) else str(secret).encode("utf-8")


def _secure(response: Any) -> Any:
    for name, value in SECURITY_HEADERS:
        response.headers[name] = value
    return response


def _refused(error: GateError) -> Any:
    """The gate's refusal as a page, with its status and headers (the
    challenge of a 401, or the gateway's ``X-Mashery-*`` headers)."""
    body, status = _page(
        "refused.html",
        error.code or 403,
        refusal=error,
        # Read, not picked: the policy chose the code (no credentials sent).
        sign_in=error.error_code == "authorization-required",
    )
    headers = [(name, value) for name, value in error.get_headers() if name != "Content-Type"]
    return body, status, headers


def _unavailable(error: Exception) -> Any:
    # The driver's message may quote parameters: only the error's type is shown.
    logger.error("admin: the key store could not be used (%s)", type(error).__name__)
    return _page(
        "refused.html",
        503,
        reason=f"The key store could not be used ({type(error).__name__}); try again shortly.",
    )


def _context() -> dict[str, Any]:
    admin: Optional[Admin] = getattr(g, _G, None)
    return {
        "admin_key": admin.identity.key if admin is not None else None,
        "csrf_token": admin.token if admin is not None else "",
        "token_field": TOKEN_FIELD,
        "when": _when,
        "plan_text": _plan_text,
        "limit_text": _limit_text,
        "iso": iso,
        "mashery_mode": get_state().settings.mashery_mode,
    }


# -- pages ---------------------------------------------------------------------------


def keys_page() -> Page:
    """The keys: search, filter by state or package, one page at a time."""
    return _keys()


def _keys(
    notice: Optional[Notice] = None,
    error: Optional[str] = None,
    status: int = 200,
    form: Optional[MultiDict[str, str]] = None,
) -> Page:
    store = get_state().store
    args = request.args
    search = (args.get("q") or "").strip()
    state = args.get("state") or ""
    package = args.get("package") or ""
    try:
        page = store.find_keys(
            search or None,
            state=state or None,
            package=package or None,
            after=args.get("after") or None,
            before=args.get("before") or None,
            limit=PAGE_SIZE,
        )
    except AdminError as exc:
        page = KeyPage([], 0, None, None)
        error, status = error or str(exc), 400
    filters = {"q": search, "state": state, "package": package}
    return _page(
        "keys.html",
        status,
        page=page,
        filters={name: value for name, value in filters.items() if value},
        states=STATES,
        packages=store.list_packages(),
        new_key=generate_key(),
        form=form if form is not None else MultiDict(),
        notice=notice,
        error=error,
    )


def create_key() -> Page:
    """Create a key; its secret is shown in this answer only."""
    form = request.form
    store = get_state().store
    try:
        package = form.get("package", "")
        not_before = read_when(form, "not_before", "Valid from")
        expires = read_when(form, "expires", "Expires")
        _not_past(expires, "Expires")
        owner, developer = read_text(form, "owner"), read_text(form, "developer")
        new = store.create_key(
            package,
            key=read_text(form, "key"),
            owner_name=owner,
            owner_email=developer,
            not_before=not_before,
            expires_at=expires,
        )
    except AdminError as exc:
        return _keys(error=str(exc), status=400, form=form)
    _changed(
        "create-key",
        new.key,
        package=package,
        owner=owner,
        developer=developer,
        not_before=iso(not_before) or None,
        expires=iso(expires) or None,
    )
    return _key(new.key, notice=_notice(f"Key {new.key} created."), new_secret=new.secret)


def key_page() -> Page:
    """One key: state, validity, owner, secrets' expiries, limits, usage, actions."""
    return _key(request.args.get("key", ""))


def _key(
    key: str,
    *,
    notice: Optional[Notice] = None,
    error: Optional[str] = None,
    status: int = 200,
    new_secret: Optional[str] = None,
) -> Page:
    state = get_state()
    store = state.store
    try:
        info = store.show_key(key)
        limits = store.key_limits(key)
    except AdminError:
        return _missing(f"There is no key {key!r}.", notice)
    record = store.reader.lookup(key)
    chart, usage_problem = _chart(state, key)
    return _page(
        "key.html",
        status,
        info=info,
        limits=limits,
        fingerprint=secrets_fingerprint(record.secrets if record is not None else ()),
        chart=chart,
        usage_problem=usage_problem,
        periods=PERIODS,
        notice=notice,
        error=error,
        new_secret=new_secret,
    )


def change_key() -> Page:
    """Disable, enable, rotate, edit, or delete (after a confirmation) a key."""
    form = request.form
    key = form.get("key", "")
    action = _KEY_ACTIONS.get(form.get("action", ""))
    if action is None:
        return _page("refused.html", 400, reason="The form names no action this page knows.")
    if action in (_disable, _delete, _delete_confirmed) and key == _admin().identity.key:
        return _key(
            key,
            error="This is the key you are signed in with: disabling or deleting it would"
            " lock you out. Sign in with another admin key, or use the command line.",
            status=409,
        )
    try:
        return action(key, form)
    except AdminError as exc:
        if not _key_exists(key):
            return _missing(f"There is no key {key!r}.")
        return _key(key, error=str(exc), status=400)


def _disable(key: str, form: Any) -> Page:
    get_state().store.disable_key(key)
    _changed("disable-key", key)
    return _key(key, notice=_notice(f"Key {key} disabled: its calls get 403 key-inactive."))


def _enable(key: str, form: Any) -> Page:
    get_state().store.enable_key(key)
    _changed("enable-key", key)
    return _key(key, notice=_notice(f"Key {key} enabled."))


def _rotate(key: str, form: Any) -> Page:
    store = get_state().store
    grace = read_grace(form, "grace")
    record = store.reader.lookup(key)
    if record is None:
        raise AdminError(f"no key {key!r}")
    if form.get("secrets") != secrets_fingerprint(record.secrets):
        # The form was shown before the last change to the key's secrets:
        # sent again (a reload), it must not rotate the new secret away.
        return _key(
            key,
            error="The key's secrets changed since this form was shown (was it sent twice?):"
            " nothing was rotated. Rotate again from this page if you meant to.",
            status=409,
        )
    new = store.rotate_secret(key, grace=grace)
    _changed("rotate-secret", key, grace=grace)
    if grace:
        done = f"Key {key} has a new secret; the previous ones work for {grace:g} more seconds."
    else:
        done = f"Key {key} has a new secret; the previous ones stopped working."
    if key == _admin().identity.key:
        done += " It is the key you are signed in with: sign in again with the new secret."
    return _key(key, notice=_notice(done), new_secret=new.secret)


def _details(key: str, form: Any) -> Page:
    store = get_state().store
    current = store.show_key(key)
    not_before = read_when(form, "not_before", "Valid from")
    expires = read_when(form, "expires", "Expires")
    if expires != current.expires_at:
        _not_past(expires, "Expires")
    owner, developer = read_text(form, "owner"), read_text(form, "developer")
    info = store.update_key(
        key,
        not_before=not_before,
        expires_at=expires,
        owner_name=owner,
        owner_email=developer,
    )
    _changed(
        "update-key",
        key,
        not_before=iso(not_before) or None,
        expires=iso(expires) or None,
        owner=owner,
        developer=developer,
    )
    return _key(key, notice=_notice(f"Key {key} updated: its state is {info.state}."))


def _limits(key: str, form: Any) -> Page:
    store = get_state().store
    changes = {
        "qps": read_limit(form, "qps", "Calls per second"),
        "quota": read_limit(form, "quota", "Quota"),
        "qps_exempt": form.get("qps_exempt") == "on",
        "quota_exempt": form.get("quota_exempt") == "on",
    }
    store.set_key_limits(key, **changes)
    _changed("update-key", key, **changes)
    return _key(key, notice=_notice(f"Key {key}'s limits saved."))


def _delete(key: str, form: Any) -> Page:
    info = get_state().store.show_key(key)
    return _page("delete.html", 200, info=info)


def _delete_confirmed(key: str, form: Any) -> Page:
    get_state().store.delete_key(key)
    _changed("delete-key", key)
    return _keys(notice=_notice(f"Key {key} and its secrets deleted."))


_KEY_ACTIONS: dict[str, Callable[[str, Any], Page]] = {
    "disable": _disable,
    "enable": _enable,
    "rotate": _rotate,
    "details": _details,
    "limits": _limits,
    "delete": _delete,
    "delete-confirmed": _delete_confirmed,
}


def packages_page() -> Page:
    """The packages: plans, keys per package, and a form to create one."""
    return _packages()


def _packages(
    notice: Optional[Notice] = None,
    error: Optional[str] = None,
    status: int = 200,
    form: Optional[MultiDict[str, str]] = None,
) -> Page:
    return _page(
        "packages.html",
        status,
        packages=get_state().store.list_packages(),
        periods=PERIODS,
        form=form if form is not None else MultiDict(),
        notice=notice,
        error=error,
    )


def create_package() -> Page:
    """Create a package with its plan."""
    form = request.form
    try:
        name = read_text(form, "name") or ""
        qps = read_limit(form, "qps", "Calls per second")
        quota = read_quota(form, "quota", "period", "Quota")
        get_state().store.create_package(name, qps=qps, quota=quota)
    except AdminError as exc:
        return _packages(error=str(exc), status=400, form=form)
    _changed("create-package", name, qps=qps, quota=_quota_text(quota))
    return _packages(notice=_notice(f"Package {name} created."))


def package_page() -> Page:
    """One package's plan, to edit."""
    return _package(request.args.get("name", ""))


def _package(
    name: str, notice: Optional[Notice] = None, error: Optional[str] = None, status: int = 200
) -> Page:
    found = [info for info in get_state().store.list_packages() if info.name == name]
    if not found:
        return _missing(f"There is no package {name!r}.", notice)
    return _page(
        "package.html",
        status,
        package=found[0],
        periods=PERIODS,
        notice=notice,
        error=error,
    )


def change_package() -> Page:
    """Change a package's plan; every key of it follows."""
    form = request.form
    name = form.get("name", "")
    try:
        qps = read_limit(form, "qps", "Calls per second")
        quota = read_quota(form, "quota", "period", "Quota")
        get_state().store.update_package(name, qps=qps, quota=quota)
    except AdminError as exc:
        return _package(name, error=str(exc), status=400)
    _changed("update-package", name, qps=qps, quota=_quota_text(quota))
    return _package(name, notice=_notice(f"Package {name}'s plan saved."))


class Top(NamedTuple):
    """The usage page's lists for one day."""

    day: dt.date
    by_calls: list[UsageRow]
    by_refusals: list[UsageRow]
    #: Calls that named no known key that day.
    unknown: int


def usage_page() -> Page:
    """Today's and yesterday's top keys by calls and by refusals."""
    state = get_state()
    days: list[Top] = []
    problem = _flush(state)
    if problem is None:
        now = today()
        try:
            days = [_top(state, day) for day in (now, now - dt.timedelta(days=1))]
        except SQLAlchemyError as exc:
            problem = _usage_unreadable(state, exc)
    return _page("usage.html", 200, days=days, usage_problem=problem)


def _top(state: GateState, day: dt.date) -> Top:
    # The store orders the day's rows; each top key's row is then read as
    # the usage report reads it (its package, its errorCodes).
    store = state.store

    def rows(keys: list[str]) -> list[UsageRow]:
        found = []
        for key in keys:
            found.extend(read_usage(store.engine, store.models, key=key, since=day, until=day))
        return found

    unknown = read_usage(store.engine, store.models, key=UNKNOWN_KEY, since=day, until=day)
    return Top(
        day,
        rows(store.top_usage_keys(day, limit=TOP)),
        rows(store.top_usage_keys(day, refusals=True, limit=TOP)),
        sum(row.allowed + row.blocked + row.other for row in unknown),
    )


# -- helpers -------------------------------------------------------------------------


def _page(template: str, status: int, **context: Any) -> Page:
    return render_template(_TEMPLATES + template, **context), status


def _missing(text: str, notice: Optional[Notice] = None) -> Page:
    return _page("missing.html", 404, text=text, notice=notice)


def _key_exists(key: str) -> bool:
    try:
        get_state().store.show_key(key)
    except AdminError:
        return False
    return True


def _not_past(when: Optional[dt.datetime], label: str) -> None:
    if when is not None and when <= dt.datetime.now(dt.timezone.utc).replace(tzinfo=None):
        raise AdminError(f"{label}: {iso(when)} is in the past")


def _notice(text: str) -> Notice:
    state = get_state()
    database = state.store.engine.url.render_as_string(hide_password=True)
    settings = state.settings
    if settings.redis_url is not None:
        where = (
            f"Saved in {database} and announced on Redis: every process of the app drops"
            " what it cached about it now."
        )
    elif not settings.cache_ttl:
        where = (
            f"Saved in {database}. No process caches verifications (BASIC_GATE_CACHE_TTL"
            " is 0): every process follows it from its next request."
        )
    else:
        where = (
            f"Saved in {database}. This process follows it now; other processes and"
            f" servers follow it within {settings.cache_ttl:g} seconds"
            " (BASIC_GATE_CACHE_TTL), when what they cached expires. Set"
            " BASIC_GATE_REDIS_URL to announce changes at once."
        )
    return Notice(text, where)


def _admin() -> Admin:
    admin: Admin = getattr(g, _G)
    return admin


def _changed(action: str, target: str, **changes: Any) -> None:
    """Log a committed change with the admin key that made it, and send it."""
    admin = _admin()
    key = admin.identity.key
    fields = {"event": "admin-change", "admin": key, "action": action, "target": target}
    # %r keeps a key or a name from forging log lines; no change holds a secret.
    logger.info(
        "admin-change admin=%r action=%r target=%r changes=%r",
        key,
        action,
        target,
        changes,
        extra={"basic_gate": {**fields, "changes": changes}},
    )
    if admin_changed.receivers:
        admin_changed.send(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            admin=admin.identity,
            action=action,
            target=target,
            changes=changes,
        )


def _flush(state: GateState) -> Optional[str]:
    """Write this process's usage counts, so the page shows them; or why
    there is no usage to show."""
    if not state.settings.usage:
        return "Usage is not counted: BASIC_GATE_USAGE is off."
    counter = usage_counter(state.telemetry)
    if counter is not None:
        counter.flush(wait=FLUSH_WAIT)
    return None


def _usage_unreadable(state: GateState, exc: Exception) -> str:
    table = state.store.models.Usage.__tablename__
    return (
        f"The usage table {table} cannot be read ({type(exc).__name__}): create it with"
        " 'flask basic-gate init-db' or the migration 0003."
    )


def _chart(state: GateState, key: str) -> tuple[Optional[Chart], Optional[str]]:
    problem = _flush(state)
    if problem is not None:
        return None, problem
    last = today()
    try:
        rows = read_usage(
            state.store.engine,
            state.store.models,
            key=key,
            since=last - dt.timedelta(days=CHART_DAYS - 1),
            until=last,
        )
    except SQLAlchemyError as exc:
        return None, _usage_unreadable(state, exc)
    counts = [(row.day, row.allowed, row.blocked, row.other) for row in rows]
    return usage_chart(counts, last, CHART_DAYS), None


def _when(when: Optional[dt.datetime], empty: str = "never") -> str:
    return empty if when is None else when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _limit_text(value: Optional[int], unit: str = "") -> str:
    if value is None:
        return "unlimited"
    return f"{value:,}{unit}"


def _plan_text(plan: Optional[Plan]) -> str:
    if plan is None:
        return "unlimited"
    qps = _limit_text(plan.qps, " calls per second")
    quota = _limit_text(plan.quota, f" calls per {plan.period}")
    return f"{qps}; {quota}"


def _quota_text(quota: Union[tuple[int, str], None]) -> Optional[str]:
    return None if quota is None else f"{quota[0]}/{quota[1]}"

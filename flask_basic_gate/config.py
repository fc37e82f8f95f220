"""Every ``BASIC_GATE_*`` setting: its name, default and validation.

``init_app`` calls :func:`load_settings` once. It fills in defaults with
``setdefault``, normalises what :meth:`flask.Config.from_prefixed_env` hands
over (JSON values or plain strings), raises :class:`ConfigurationError`
naming the setting (and the environment variable it came from) when a value
is wrong, warns about ``BASIC_GATE_*`` names it does not know, and returns a
frozen :class:`Settings`. The gate reads only that object afterwards: a
change to ``app.config`` after ``init_app`` has no effect, as with
Flask-SQLAlchemy's engine options.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import warnings
from collections.abc import Iterable, MutableMapping
from typing import Any, Optional

import click
from werkzeug.security import generate_password_hash

__all__ = [
    "ADMIN",
    "ADMIN_PACKAGES",
    "ADMIN_URL_PREFIX",
    "BIND_KEY",
    "CACHE_SIZE",
    "CACHE_TTL",
    "ConfigurationError",
    "EXEMPT_METHODS",
    "FAILURE_LIMIT",
    "HASH_METHOD",
    "KDF_BUDGET",
    "LOOKUP_CONNECTIONS",
    "MASHERY_ALIAS",
    "MASHERY_MODE",
    "METRICS",
    "METRICS_PATH",
    "PROTECT_ALL",
    "RATE_LIMIT_HEADERS",
    "REALM",
    "REDIS_URL",
    "REPORT_ONLY",
    "STORE_PLAINTEXT_SECRETS",
    "STORE_TIMEOUT",
    "Settings",
    "USAGE",
    "USAGE_FLUSH",
    "load_settings",
    "parse_bool",
]

#: Guard every endpoint except exempt ones and static files (``True``), or
#: only decorated routes and protected blueprints (``False``).
PROTECT_ALL = "BASIC_GATE_PROTECT_ALL"
#: The realm named in the ``WWW-Authenticate`` challenge.
REALM = "BASIC_GATE_REALM"
#: Answer like the gateway's legacy mode: every 401 becomes a 403 with the
#: platform's ``X-Mashery-Error-Code`` headers.
MASHERY_MODE = "BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE"
#: The connector's own parameter name, accepted as an alias of
#: :data:`MASHERY_MODE`.
MASHERY_ALIAS = "Keep_Mashery_Default_Response_Code"
#: HTTP methods let through without credentials (CORS preflight).
EXEMPT_METHODS = "BASIC_GATE_EXEMPT_METHODS"
#: Flask-SQLAlchemy bind that holds the gate's tables (``None``: the default).
BIND_KEY = "BASIC_GATE_BIND_KEY"
#: werkzeug.security method used for secrets chosen by a person.
HASH_METHOD = "BASIC_GATE_HASH_METHOD"
#: Keep new secrets readable in the database (only to migrate from a platform
#: that keeps them readable).
STORE_PLAINTEXT_SECRETS = "BASIC_GATE_STORE_PLAINTEXT_SECRETS"
#: How many successful verifications the in-process cache remembers.
CACHE_SIZE = "BASIC_GATE_CACHE_SIZE"
#: How long, in seconds, a successful verification is remembered (0: never).
CACHE_TTL = "BASIC_GATE_CACHE_TTL"
#: How many pooled connections the key store keeps checked out between
#: lookups (in autocommit), so a lookup skips the pool (0: none).
LOOKUP_CONNECTIONS = "BASIC_GATE_LOOKUP_CONNECTIONS"
#: Failed verifications allowed per (client address, key), in the ``limits``
#: library's notation (``"10/minute"``, ``"5/minute;50/hour"``); ``"off"``
#: turns the throttle off.
FAILURE_LIMIT = "BASIC_GATE_FAILURE_LIMIT"
#: Seconds of key-derivation CPU time (scrypt, PBKDF2) one process may spend
#: per second on person-chosen secrets that did not match (0.08: about one
#: scrypt verification a second, with a burst of ten to sixteen); past it a request
#: that needs a KDF is answered 429 at once instead of queueing work. Secrets
#: verified before never need it. ``"off"``: no bound.
KDF_BUDGET = "BASIC_GATE_KDF_BUDGET"
#: Seconds a key lookup may take before it is abandoned and the request
#: answered 503 ``gate-unavailable``.
STORE_TIMEOUT = "BASIC_GATE_STORE_TIMEOUT"
#: Run every decision but let every request through, logging, signalling and
#: counting what would have been refused: to run beside the gateway until
#: the two agree. Never leave it on.
REPORT_ONLY = "BASIC_GATE_REPORT_ONLY"
#: A Redis URL (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``
#: or ``redis+cluster://``): revocation reaches every process at once and
#: counters are shared (``None``: each process on its own).
REDIS_URL = "BASIC_GATE_REDIS_URL"
#: Send the IETF ``RateLimit-Policy`` and ``RateLimit`` fields (and, in
#: Mashery mode, the gateway's ``X-Plan-*`` headers) on successful responses.
RATE_LIMIT_HEADERS = "BASIC_GATE_RATE_LIMIT_HEADERS"
#: Serve the gate's Prometheus metrics at :data:`METRICS_PATH` (needs
#: ``prometheus_client``: ``pip install flask-basic-gate[metrics]``).
METRICS = "BASIC_GATE_METRICS"
#: Where the metrics are served.
METRICS_PATH = "BASIC_GATE_METRICS_PATH"
#: The packages whose keys may read the gate's own endpoints (the metrics).
ADMIN_PACKAGES = "BASIC_GATE_ADMIN_PACKAGES"
#: Count every decision on a known key per key and UTC day (allowed,
#: blocked, other) into the ``basic_gate_usage`` table.
USAGE = "BASIC_GATE_USAGE"
#: Seconds between two writes of the usage counts held in memory.
USAGE_FLUSH = "BASIC_GATE_USAGE_FLUSH"
#: Serve the admin pages (keys, packages, usage) to keys of
#: :data:`ADMIN_PACKAGES`, behind the gate itself.
ADMIN = "BASIC_GATE_ADMIN"
#: Where the admin pages are served.
ADMIN_URL_PREFIX = "BASIC_GATE_ADMIN_URL_PREFIX"

#: The longest cache lifetime allowed: a change made in another process is
#: seen within this many seconds (without Redis).
MAX_CACHE_TTL = 30.0
#: The longest store timeout allowed, in seconds.
MAX_STORE_TIMEOUT = 60.0
#: The methods RFC 9110 defines (and PATCH): the only ones that may be exempt.
STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
#: The longest interval between two writes of the usage counts, in seconds.
MAX_USAGE_FLUSH = 3600.0
#: Where :meth:`flask.Config.from_prefixed_env` reads settings from, by default.
ENV_PREFIX = "FLASK_"

DEFAULTS: dict[str, Any] = {
    PROTECT_ALL: True,
    REALM: "api",
    MASHERY_MODE: False,
    EXEMPT_METHODS: ["OPTIONS"],
    BIND_KEY: None,
    HASH_METHOD: "scrypt",
    STORE_PLAINTEXT_SECRETS: False,
    CACHE_SIZE: 10_000,
    CACHE_TTL: 30,
    LOOKUP_CONNECTIONS: 1,
    FAILURE_LIMIT: "10/minute",
    KDF_BUDGET: 0.08,
    STORE_TIMEOUT: 3,
    REDIS_URL: None,
    RATE_LIMIT_HEADERS: False,
    REPORT_ONLY: False,
    METRICS: False,
    METRICS_PATH: "/basic-gate/metrics",
    ADMIN_PACKAGES: ["admin"],
    USAGE: True,
    USAGE_FLUSH: 10,
    ADMIN: False,
    ADMIN_URL_PREFIX: "/basic-gate/admin",
}

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


class ConfigurationError(ValueError, click.ClickException):
    """A ``BASIC_GATE_*`` setting has a value the gate cannot use.

    Also a :class:`click.ClickException`, so that under the ``flask``
    command (``flask run``, ``flask basic-gate ...``) it is one
    ``Error: ...`` line naming the setting, not a traceback.

    .. versionadded:: 0.1
    """

    def __init__(self, message: str) -> None:
        ValueError.__init__(self, message)
        click.ClickException.__init__(self, message)

    def __str__(self) -> str:
        return self.message


@dataclasses.dataclass(frozen=True)
class Settings:
    """The gate's settings for one app, checked and frozen at ``init_app``.

    Every component takes this object, never ``app.config``.

    .. versionadded:: 0.1
    """

    protect_all: bool
    realm: str
    mashery_mode: bool
    exempt_methods: frozenset[str]
    bind_key: Optional[str]
    hash_method: str
    store_plaintext_secrets: bool
    cache_size: int
    cache_ttl: float
    lookup_connections: int
    #: The failure limit in ``limits`` notation, or ``None`` when off.
    failure_limit: Optional[str]
    #: Seconds of KDF work per second per process, or ``None`` when off.
    kdf_budget: Optional[float]
    store_timeout: float
    redis_url: Optional[str]
    rate_limit_headers: bool
    #: Decide but never refuse (``BASIC_GATE_REPORT_ONLY``).
    report_only: bool = False
    #: Serve the Prometheus metrics (``BASIC_GATE_METRICS``).
    metrics: bool = False
    #: The metrics' URL path.
    metrics_path: str = "/basic-gate/metrics"
    #: The packages whose keys may read the metrics.
    admin_packages: frozenset[str] = frozenset({"admin"})
    #: Count usage per key and day (``BASIC_GATE_USAGE``).
    usage: bool = True
    #: Seconds between two writes of the usage counts.
    usage_flush: float = 10.0
    #: Serve the admin pages (``BASIC_GATE_ADMIN``).
    admin: bool = False
    #: Where the admin pages are served, without a trailing slash.
    admin_url_prefix: str = "/basic-gate/admin"

    #: The ``WWW-Authenticate`` challenge of a 401.
    @property
    def challenge(self) -> str:
        """``Basic realm="<realm>", charset="UTF-8"``."""
        return f'Basic realm="{self.realm}", charset="UTF-8"'


def _source(name: str) -> str:
    variable = ENV_PREFIX + name
    if variable in os.environ:
        return f" (set by the environment variable {variable})"
    return ""


def _bad(name: str, value: Any, expected: str) -> ConfigurationError:
    return ConfigurationError(
        f"{name} = {value!r}{_source(name)} is not valid: expected {expected}."
    )


def parse_bool(name: str, value: Any) -> bool:
    """Read a boolean setting that may arrive as a string.

    Accepts bools and the strings true/false/1/0/yes/no/on/off in any case
    (environment variables arrive as strings, and ``"false"`` means false).

    :raises ConfigurationError: for anything else, naming the setting.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise _bad(name, value, "true or false (or 1/0, yes/no, on/off)")


def _listed(name: str, value: Any, expected: str) -> Any:
    """A list setting as Python has it, or as the environment gives it: a
    JSON list, or words separated by commas or spaces."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text.startswith("["):
        return [part for part in text.replace(",", " ").split() if part]
    try:
        return json.loads(text)
    except ValueError:
        raise _bad(name, value, expected) from None


def _parse_methods(name: str, value: Any) -> frozenset[str]:
    expected = f"a list of HTTP methods from {', '.join(sorted(STANDARD_METHODS))}"
    value = _listed(name, value, expected)
    if not isinstance(value, Iterable) or not all(isinstance(m, str) for m in value):
        raise _bad(name, value, expected)
    methods = frozenset(m.strip().upper() for m in value)
    unknown = sorted(methods - STANDARD_METHODS)
    if unknown:
        raise _bad(name, value, f"{expected} ({unknown[0]!r} is not one)")
    return methods


def _parse_packages(name: str, value: Any) -> frozenset[str]:
    expected = "a list of package names (a JSON list, or names separated by commas or spaces)"
    value = _listed(name, value, expected)
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Iterable)
        or not all(isinstance(p, str) and 0 < len(p.strip()) <= 255 for p in value)
    ):
        raise _bad(name, value, expected)
    packages = frozenset(p.strip() for p in value)
    if not packages:
        raise _bad(name, value, f"{expected}, at least one")
    return packages


def _parse_path(name: str, value: Any) -> str:
    expected = "a URL path such as '/basic-gate/metrics'"
    if (
        not isinstance(value, str)
        or not value.startswith("/")
        or value == "/"
        or any(char.isspace() or char in "<>?#" for char in value)
    ):
        raise _bad(name, value, expected)
    return value


def _parse_prefix(name: str, value: Any) -> str:
    # A blueprint's prefix, kept without its trailing slash; "/" alone (or
    # "//") would put the admin pages over the app's own routes.
    prefix = _parse_path(name, value).rstrip("/")
    if not prefix:
        raise _bad(name, value, "a URL path below the root, such as '/basic-gate/admin'")
    return prefix


def _check_admin_methods(exempt: frozenset[str]) -> None:
    # The admin pages are read with GET (and HEAD) and changed with POST: a
    # method let through without credentials would open them to anyone.
    opened = sorted(exempt & {"GET", "HEAD", "POST"})
    if opened:
        raise ConfigurationError(
            f"{ADMIN} is on, but {EXEMPT_METHODS} lets {', '.join(opened)} through without"
            f" credentials, which would open the admin pages to anyone: remove"
            f" {', '.join(opened)} from {EXEMPT_METHODS}, or turn {ADMIN} off."
        )


def _parse_number(
    name: str,
    value: Any,
    *,
    integer: bool,
    upper: Optional[float] = None,
    positive: bool = False,
) -> float:
    if isinstance(value, bool):
        raise _bad(name, value, "a number")
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        raise _bad(name, value, "a whole number" if integer else "a number") from None
    low_ok = number > 0 if positive else number >= 0
    if not math.isfinite(number) or not low_ok or (upper is not None and number > upper):
        low = "above 0" if positive else "from 0"
        bound = f"{low} to {upper:g}" if upper is not None else f"{low} up"
        raise _bad(name, value, f"a number {bound}")
    return number


def _parse_failure_limit(name: str, value: Any) -> Optional[str]:
    expected = 'a rate such as "10/minute" or "5/minute;50/hour", or "off"'
    if value is None or value is False:
        return None
    if not isinstance(value, str):
        raise _bad(name, value, expected)
    text = value.strip()
    if text.lower() in ("off", "none", "false", ""):
        return None
    from limits import parse_many

    try:
        items = parse_many(text)
    except ValueError:
        raise _bad(name, value, expected) from None
    if not items or any(item.amount < 1 for item in items):
        raise _bad(name, value, expected)
    return text


def _parse_redis_url(name: str, value: Any) -> Optional[str]:
    """Read ``BASIC_GATE_REDIS_URL``: one server (``redis://``, ``rediss://``
    for TLS, ``unix://``), a Sentinel (``redis+sentinel://host:port[,...]/service``)
    or a Cluster (``redis+cluster://host:port[,...]``), as redis-py and
    :mod:`limits` take them (see :mod:`flask_basic_gate.backends`).

    The error shows ``<url>`` instead of the value, which may hold a password.
    """
    if value is None or value == "":
        return None
    expected = (
        "a redis://, rediss://, unix://, redis+sentinel://host:port[,host:port...]/service"
        " or redis+cluster://host:port[,host:port...] URL, or None"
    )
    if not isinstance(value, str):
        raise _bad(name, value, expected)
    from .backends import parse_redis_url

    try:
        parse_redis_url(value)
    except ValueError as exc:
        raise _bad(name, "<url>", f"{expected} ({exc})") from None
    return value


def check_hash_method(name: str, method: Any) -> str:
    """Check that werkzeug.security can hash with ``method``.

    Only the method's name and the shape of its parameters are tested, with
    the smallest work factor, so the check costs microseconds.

    :raises ConfigurationError: naming the setting when it cannot.
    """
    expected = "a werkzeug.security method: 'scrypt[:N:r:p]' or 'pbkdf2[:hash[:iterations]]'"
    if not isinstance(method, str):
        raise _bad(name, method, expected)
    base, *params = method.split(":")
    if base == "scrypt" and (not params or len(params) == 3):
        probe = "scrypt:1024:8:1"
        numbers = params
        if params and (
            not params[0].isdigit() or int(params[0]) < 2 or int(params[0]) & (int(params[0]) - 1)
        ):
            raise _bad(name, method, "scrypt's N to be a power of 2")
    elif base == "pbkdf2" and len(params) <= 2:
        probe = f"pbkdf2:{params[0] if params else 'sha256'}:1"
        numbers = params[1:]
    else:
        raise _bad(name, method, expected)
    if not all(p.isdigit() and int(p) > 0 for p in numbers):
        raise _bad(name, method, expected)
    try:
        generate_password_hash("probe", probe)
    except (ValueError, TypeError):
        raise _bad(name, method, expected) from None
    return method


def _warn_unknown(config: MutableMapping[str, Any]) -> None:
    known = list(DEFAULTS)
    for name in list(config):
        if not isinstance(name, str) or not name.startswith("BASIC_GATE_") or name in DEFAULTS:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else "; it is ignored."
        warnings.warn(
            f"{name}{_source(name)} is not a flask-basic-gate setting{hint}",
            UserWarning,
            stacklevel=4,
        )


def load_settings(config: MutableMapping[str, Any]) -> Settings:
    """Check every ``BASIC_GATE_*`` setting once and freeze the result.

    Defaults are filled into ``config`` and values normalised there too, so
    ``app.config`` shows what the gate uses.

    :raises ConfigurationError: naming the first setting whose value is wrong
        (and the environment variable, when it came from one).
    """
    _warn_unknown(config)
    if MASHERY_ALIAS in config and MASHERY_MODE not in config:
        config[MASHERY_MODE] = config[MASHERY_ALIAS]
    for name, default in DEFAULTS.items():
        config.setdefault(name, list(default) if isinstance(default, list) else default)

    for name in (
        PROTECT_ALL,
        MASHERY_MODE,
        STORE_PLAINTEXT_SECRETS,
        RATE_LIMIT_HEADERS,
        REPORT_ONLY,
        METRICS,
        USAGE,
        ADMIN,
    ):
        config[name] = parse_bool(name, config[name])
    if MASHERY_ALIAS in config:
        parse_bool(MASHERY_ALIAS, config[MASHERY_ALIAS])

    realm = config[REALM]
    if not isinstance(realm, str) or not realm or '"' in realm or "\\" in realm:
        raise _bad(REALM, realm, "a non-empty string without quotes or backslashes")
    if any(ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 or ord(char) > 0xFF for char in realm):
        # It goes into the WWW-Authenticate header of every 401: a header
        # holds ISO-8859-1 text and no control character (a line break would
        # end the header).
        raise _bad(
            REALM,
            realm,
            "ISO-8859-1 text without control characters (it goes into a response header)",
        )
    config[EXEMPT_METHODS] = _parse_methods(EXEMPT_METHODS, config[EXEMPT_METHODS])
    bind_key = config[BIND_KEY]
    if bind_key is not None and not isinstance(bind_key, str):
        raise _bad(BIND_KEY, bind_key, "a bind name from SQLALCHEMY_BINDS, or None")
    config[HASH_METHOD] = check_hash_method(HASH_METHOD, config[HASH_METHOD])
    config[CACHE_SIZE] = int(_parse_number(CACHE_SIZE, config[CACHE_SIZE], integer=True))
    config[LOOKUP_CONNECTIONS] = int(
        _parse_number(LOOKUP_CONNECTIONS, config[LOOKUP_CONNECTIONS], integer=True)
    )
    config[CACHE_TTL] = _parse_number(
        CACHE_TTL, config[CACHE_TTL], integer=False, upper=MAX_CACHE_TTL
    )
    failure_limit = _parse_failure_limit(FAILURE_LIMIT, config[FAILURE_LIMIT])
    kdf_budget = config[KDF_BUDGET]
    if kdf_budget is None or (isinstance(kdf_budget, str) and kdf_budget.strip().lower() == "off"):
        kdf_budget = None
    else:
        kdf_budget = _parse_number(KDF_BUDGET, kdf_budget, integer=False, upper=1.0, positive=True)
    config[STORE_TIMEOUT] = _parse_number(
        STORE_TIMEOUT, config[STORE_TIMEOUT], integer=False, upper=MAX_STORE_TIMEOUT, positive=True
    )
    redis_url = _parse_redis_url(REDIS_URL, config[REDIS_URL])
    config[METRICS_PATH] = _parse_path(METRICS_PATH, config[METRICS_PATH])
    config[ADMIN_PACKAGES] = _parse_packages(ADMIN_PACKAGES, config[ADMIN_PACKAGES])
    config[USAGE_FLUSH] = _parse_number(
        USAGE_FLUSH, config[USAGE_FLUSH], integer=False, upper=MAX_USAGE_FLUSH, positive=True
    )
    config[ADMIN_URL_PREFIX] = _parse_prefix(ADMIN_URL_PREFIX, config[ADMIN_URL_PREFIX])
    if config[ADMIN]:
        _check_admin_methods(config[EXEMPT_METHODS])

    if config[STORE_PLAINTEXT_SECRETS]:
        warnings.warn(
            f"{STORE_PLAINTEXT_SECRETS} is on: new secrets are stored readable in the"
            " database. Use it only while migrating keys, then turn it off.",
            UserWarning,
            stacklevel=4,
        )
    return Settings(
        protect_all=config[PROTECT_ALL],
        realm=realm,
        mashery_mode=config[MASHERY_MODE],
        exempt_methods=config[EXEMPT_METHODS],
        bind_key=bind_key,
        hash_method=config[HASH_METHOD],
        store_plaintext_secrets=config[STORE_PLAINTEXT_SECRETS],
        cache_size=config[CACHE_SIZE],
        cache_ttl=config[CACHE_TTL],
        lookup_connections=config[LOOKUP_CONNECTIONS],
        failure_limit=failure_limit,
        kdf_budget=kdf_budget,
        store_timeout=config[STORE_TIMEOUT],
        redis_url=redis_url,
        rate_limit_headers=config[RATE_LIMIT_HEADERS],
        report_only=config[REPORT_ONLY],
        metrics=config[METRICS],
        metrics_path=config[METRICS_PATH],
        admin_packages=config[ADMIN_PACKAGES],
        usage=config[USAGE],
        usage_flush=config[USAGE_FLUSH],
        admin=config[ADMIN],
        admin_url_prefix=config[ADMIN_URL_PREFIX],
    )

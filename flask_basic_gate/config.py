"""Every ``BASIC_GATE_*`` setting: its name, default and validation.

``init_app`` calls :func:`apply_defaults` once, which fills in defaults with
``setdefault``, normalises what :meth:`flask.Config.from_prefixed_env` hands
over (JSON values or plain strings) and raises :class:`ConfigurationError`
naming the setting when a value is wrong. The policy reads the settings from
``app.config`` at request time.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, MutableMapping
from typing import Any, Optional

from werkzeug.security import generate_password_hash

__all__ = [
    "BIND_KEY",
    "CACHE_SIZE",
    "CACHE_TTL",
    "ConfigurationError",
    "EXEMPT_METHODS",
    "HASH_METHOD",
    "LOOKUP_CONNECTIONS",
    "MASHERY_ALIAS",
    "MASHERY_MODE",
    "PROTECT_ALL",
    "REALM",
    "STORE_PLAINTEXT_SECRETS",
    "apply_defaults",
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

#: The longest cache lifetime allowed: a change made in another process is
#: seen within this many seconds.
MAX_CACHE_TTL = 30.0

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
}

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


class ConfigurationError(ValueError):
    """A ``BASIC_GATE_*`` setting has a value the gate cannot use.

    .. versionadded:: 0.1
    """


def _bad(name: str, value: Any, expected: str) -> ConfigurationError:
    return ConfigurationError(f"{name} = {value!r} is not valid: expected {expected}.")


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


def _parse_methods(name: str, value: Any) -> frozenset[str]:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise _bad(name, value, "a list of HTTP methods") from None
        else:
            value = [part for part in text.replace(",", " ").split() if part]
    if not isinstance(value, Iterable) or not all(isinstance(m, str) for m in value):
        raise _bad(name, value, "a list of HTTP methods")
    return frozenset(m.strip().upper() for m in value)


def _parse_number(name: str, value: Any, *, integer: bool, upper: Optional[float] = None) -> float:
    if isinstance(value, bool):
        raise _bad(name, value, "a number")
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        raise _bad(name, value, "a whole number" if integer else "a number") from None
    if number < 0 or (upper is not None and number > upper):
        bound = f"from 0 to {upper:g}" if upper is not None else "0 or more"
        raise _bad(name, value, f"a number {bound}")
    return number


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


def apply_defaults(config: MutableMapping[str, Any]) -> None:
    """Fill in defaults and normalise every ``BASIC_GATE_*`` setting in place.

    :raises ConfigurationError: naming the first setting whose value is wrong.
    """
    if MASHERY_ALIAS in config and MASHERY_MODE not in config:
        config[MASHERY_MODE] = config[MASHERY_ALIAS]
    for name, default in DEFAULTS.items():
        config.setdefault(name, list(default) if isinstance(default, list) else default)

    for name in (PROTECT_ALL, MASHERY_MODE, STORE_PLAINTEXT_SECRETS):
        config[name] = parse_bool(name, config[name])
    if MASHERY_ALIAS in config:
        parse_bool(MASHERY_ALIAS, config[MASHERY_ALIAS])

    realm = config[REALM]
    if not isinstance(realm, str) or not realm or '"' in realm or "\\" in realm:
        raise _bad(REALM, realm, "a non-empty string without quotes or backslashes")
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

    if config[STORE_PLAINTEXT_SECRETS]:
        warnings.warn(
            f"{STORE_PLAINTEXT_SECRETS} is on: new secrets are stored readable in the"
            " database. Use it only while migrating keys, then turn it off.",
            UserWarning,
            stacklevel=3,
        )

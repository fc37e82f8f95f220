"""Wiring: the :class:`BasicGate` extension, its guard and its decorators.

The guard (a ``before_request`` function) and the decorators only decide
*whether* a request must be authenticated; the app's
:class:`~flask_basic_gate.policy.GatePolicy` decides the outcome.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Mapping
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Literal,
    NamedTuple,
    Optional,
    TypeVar,
    Union,
    overload,
)

from flask import Blueprint, Config, Flask, current_app, has_request_context, request
from werkzeug.local import LocalProxy

from . import config as cfg
from .cache import VerificationCache
from .errors import GateError
from .identity import KeyIdentity
from .models import get_models
from .policy import GatePolicy
from .signals import request_authenticated, request_rejected
from .store import KeyStore

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

__all__ = ["BasicGate", "GateState", "current_key", "get_current_key"]

logger = logging.getLogger("flask_basic_gate")

F = TypeVar("F", bound=Callable[..., Any])

#: Name of the gate's entry in ``app.extensions``.
EXTENSION_NAME = "basic_gate"
#: Where a request's identity is kept: the WSGI environ is per request, so
#: nothing of one request is seen in another, even when a test keeps one app
#: context pushed around many requests (which would share ``g``).
ENVIRON_KEY = "flask_basic_gate.identity"
_MARK = "_basic_gate_mark"
_UNSET: Any = object()


class _Required(NamedTuple):
    optional: bool


_EXEMPT = "exempt"
# Read on every request: module constants spare an attribute lookup each.
_EXEMPT_METHODS = cfg.EXEMPT_METHODS
_PROTECT_ALL = cfg.PROTECT_ALL
_DEBUG = logging.DEBUG
#: Most (route, method) decisions a guard remembers before starting over.
_MAX_DECISIONS = 1024


class GateState(NamedTuple):
    """What the gate keeps for one app, in ``app.extensions["basic_gate"]``.

    .. versionadded:: 0.1
    """

    gate: BasicGate
    policy: GatePolicy
    store: KeyStore
    cache: VerificationCache


class BasicGate:
    """HTTP Basic authentication against package keys in the app's database.

    :param app: the Flask app, or ``None`` to call :meth:`init_app` later
        (app factory).
    :param db: the app's :class:`~flask_sqlalchemy.SQLAlchemy`; its
        ``init_app`` must have run on the app first. The gate never makes an
        engine of its own.
    :param policy_class: the :class:`~flask_basic_gate.policy.GatePolicy`
        (sub)class that decides outcomes.

    One gate object may serve several apps; everything per app lives in
    ``app.extensions["basic_gate"]`` (a :class:`GateState`).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        app: Optional[Flask] = None,
        db: Optional[SQLAlchemy] = None,
        *,
        policy_class: type[GatePolicy] = GatePolicy,
    ) -> None:
        self.db = db
        self.policy_class = policy_class
        # Blueprint objects, not names: a blueprint registered under another
        # name, or nested (a dotted name), is still the same object.
        self._exempt_blueprints: set[Blueprint] = set()
        self._protected_blueprints: set[Blueprint] = set()
        # Each guard's remembered decisions; marking a view or a blueprint
        # clears them.
        self._decisions: list[dict[Any, Optional[str]]] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Check the settings, build the store and policy, register the guard
        and the ``flask basic-gate`` commands.

        :raises RuntimeError: the gate is already set up on ``app``, or ``db``
            is missing or not initialised on it.
        :raises ConfigurationError: a ``BASIC_GATE_*`` setting is wrong.
        """
        if EXTENSION_NAME in app.extensions:
            raise RuntimeError(
                "BasicGate is already initialised on this app; call init_app once per app."
            )
        db = self.db
        if db is None:
            raise RuntimeError(
                "BasicGate needs the app's Flask-SQLAlchemy object: BasicGate(app, db=db),"
                " or BasicGate(db=db) and then gate.init_app(app)."
            )
        if app.extensions.get("sqlalchemy") is not db:
            raise RuntimeError(
                "The Flask-SQLAlchemy object given to BasicGate is not initialised on this app:"
                " call db.init_app(app) before gate.init_app(app)."
            )
        cfg.apply_defaults(app.config)
        bind_key = app.config[cfg.BIND_KEY]
        with app.app_context():
            engines = app.extensions["sqlalchemy"].engines
            if bind_key not in engines:
                raise cfg.ConfigurationError(
                    f"{cfg.BIND_KEY} = {bind_key!r} names no bind: add it to SQLALCHEMY_BINDS"
                    " or unset it."
                )
            engine = engines[bind_key]
        store = KeyStore(get_models(db, bind_key), engine, app.config)
        cache = VerificationCache(app.config[cfg.CACHE_SIZE])
        policy = self.policy_class(store, app.config, cache)
        state = GateState(self, policy, store, cache)
        app.extensions[EXTENSION_NAME] = state
        app.before_request(self._make_guard(app, state))

        from .cli import basic_gate_cli

        app.cli.add_command(basic_gate_cli)

    # -- per-app state -------------------------------------------------------

    @staticmethod
    def state(app: Optional[Flask] = None) -> GateState:
        """The gate's state for ``app`` (default: the current app)."""
        app = app if app is not None else current_app
        try:
            return app.extensions[EXTENSION_NAME]  # type: ignore[no-any-return]
        except KeyError:
            raise RuntimeError(
                "BasicGate is not initialised on this app: call gate.init_app(app) first."
            ) from None

    @property
    def store(self) -> KeyStore:
        """The current app's key store (administration API)."""
        return self.state().store

    @property
    def policy(self) -> GatePolicy:
        """The current app's policy."""
        return self.state().policy

    # -- marking routes ------------------------------------------------------

    @overload
    def required(self, view: F) -> F: ...

    @overload
    def required(self, *, optional: bool = False) -> Callable[[F], F]: ...

    def required(
        self, view: Optional[F] = None, *, optional: bool = False
    ) -> Union[F, Callable[[F], F]]:
        """Protect a view, bare (``@gate.required``) or with arguments.

        :param optional: let a request without an ``Authorization`` header
            through, with :data:`current_key` ``None``; a header that is
            present must still be valid.

        Works on async views. Under ``BASIC_GATE_PROTECT_ALL`` the guard has
        already checked the request; it is never checked twice.
        """

        def decorate(func: F) -> F:
            if inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    self._check(optional)
                    return await func(*args, **kwargs)

                wrapper: Any = async_wrapper
            else:

                @functools.wraps(func)
                def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                    self._check(optional)
                    return func(*args, **kwargs)

                wrapper = sync_wrapper
            setattr(wrapper, _MARK, _Required(optional))
            return wrapper  # type: ignore[no-any-return]

        if view is not None:
            return decorate(view)
        return decorate

    @overload
    def exempt(self, view: F) -> F: ...

    @overload
    def exempt(self, view: Blueprint) -> Blueprint: ...

    def exempt(self, view: Union[F, Blueprint]) -> Union[F, Blueprint]:
        """Leave a view or a whole blueprint open under ``BASIC_GATE_PROTECT_ALL``.

        Only marks. A view decorated with :meth:`required` stays protected,
        in whichever order the two decorators are applied: the explicit
        requirement wins.
        """
        if isinstance(view, Blueprint):
            self._exempt_blueprints.add(view)
        elif not isinstance(getattr(view, _MARK, None), _Required):
            setattr(view, _MARK, _EXEMPT)
        self._forget_decisions()
        return view

    def protect(self, blueprint: Blueprint) -> Blueprint:
        """Guard every route of ``blueprint`` (for ``BASIC_GATE_PROTECT_ALL = False``)."""
        self._protected_blueprints.add(blueprint)
        self._forget_decisions()
        return blueprint

    def _forget_decisions(self) -> None:
        for decisions in self._decisions:
            decisions.clear()

    # -- the guard -----------------------------------------------------------

    def protection(
        self, endpoint: Optional[str], method: str = "GET", app: Optional[Flask] = None
    ) -> Optional[Literal["required", "optional"]]:
        """Whether the gate asks for credentials on a request to ``endpoint``.

        The guard asks this on every request; documentation generators (see
        :mod:`flask_basic_gate.openapi`) ask it per route.

        :param endpoint: the endpoint name, or ``None`` for a URL no route
            matches.
        :param method: the request's HTTP method.
        :param app: the app (default: the current app).
        :return: ``"required"``; ``"optional"`` (checked only when
            credentials are sent); or ``None`` when the request goes through
            unchecked (exempt view, blueprint or method, static files, or a
            route nothing protects under ``BASIC_GATE_PROTECT_ALL = False``).
        """
        app = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
        self.state(app)
        return self._decide(
            app.config, app.view_functions, app.blueprints, method.upper(), endpoint
        )

    def _decide(
        self,
        config: Config,
        views: dict[str, Any],
        blueprints: Mapping[str, Any],
        method: str,
        endpoint: Optional[str],
    ) -> Optional[Literal["required", "optional"]]:
        if method in config[_EXEMPT_METHODS]:
            return None
        if endpoint is None:  # no route: guarded like a gateway, then 404
            return "required" if config[_PROTECT_ALL] else None
        mark = getattr(views.get(endpoint), _MARK, None)
        # Flask names the static route "static", a blueprint's "<name>.static".
        if mark == _EXEMPT or endpoint == "static" or endpoint.endswith(".static"):
            return None
        required = mark is not None
        protect = required or config[_PROTECT_ALL]
        if self._exempt_blueprints or self._protected_blueprints:
            chain = [blueprints.get(name) for name in _blueprint_names(endpoint)]
            if not self._exempt_blueprints.isdisjoint(chain):
                protect = required  # the decorator's explicit requirement wins
            elif not self._protected_blueprints.isdisjoint(chain):
                protect = True
        if not protect:
            return None
        return "optional" if mark is not None and mark.optional else "required"

    def _make_guard(self, app: Flask, state: GateState) -> Callable[[], None]:
        """The ``before_request`` function for ``app``.

        A plain closure over the app's config, views and blueprints: it runs
        on every request, so it makes no lookup through ``current_app`` (and
        Flask's ``ensure_sync`` recognises a plain function fastest). It
        remembers :meth:`_decide`'s answer per route and method, for as long
        as the two settings it reads keep their values.
        """
        config, views, blueprints = app.config, app.view_functions, app.blueprints
        decide, admit, policy = self._decide, self._admit, state.policy
        decisions: dict[Any, Optional[str]] = {}
        self._decisions.append(decisions)
        made_under: list[Any] = [None, None]  # PROTECT_ALL and EXEMPT_METHODS

        def basic_gate_guard() -> None:
            req = request._get_current_object()  # type: ignore[attr-defined]
            rule, method = req.url_rule, req.method
            endpoint = rule.endpoint if rule is not None else None
            protect_all, exempt_methods = config[_PROTECT_ALL], config[_EXEMPT_METHODS]
            if protect_all is not made_under[0] or exempt_methods is not made_under[1]:
                decisions.clear()
                made_under[:] = protect_all, exempt_methods
            try:
                decision = decisions[endpoint, method]
            except KeyError:
                decision = decide(config, views, blueprints, method, endpoint)
                # Any method name a client sends on a URL without a route
                # gets its own entry: a bound keeps that from growing.
                if len(decisions) >= _MAX_DECISIONS:
                    decisions.clear()
                decisions[endpoint, method] = decision
            if decision is not None:
                admit(policy, req, decision == "optional")

        return basic_gate_guard

    def _check(self, optional: bool) -> None:
        """Run by a decorated view before its body."""
        policy = self.state().policy  # a clear error when init_app never ran on this app
        req = request._get_current_object()  # type: ignore[attr-defined]
        if req.method in policy.config[cfg.EXEMPT_METHODS]:
            return
        # The guard may have checked this request already (PROTECT_ALL).
        done = req.environ.get(ENVIRON_KEY, _UNSET)
        if done is _UNSET or (done is None and not optional):
            self._admit(policy, req, optional)

    @staticmethod
    def _admit(policy: GatePolicy, req: Any, optional: bool) -> None:
        """Ask ``policy`` about the request; log, signal, keep the identity."""
        environ = req.environ
        try:
            identity = policy.authenticate(environ.get("HTTP_AUTHORIZATION"), optional=optional)
        except GateError as error:
            if logger.isEnabledFor(logging.INFO):
                _log(
                    logging.INFO,
                    "rejected",
                    error.key,
                    error.package,
                    req.remote_addr,
                    error_code=error.error_code,
                    status=error.code,
                )
            if request_rejected.receivers:
                request_rejected.send(
                    current_app._get_current_object(),  # type: ignore[attr-defined]
                    error_code=error.error_code,
                    status=error.code,
                )
            raise
        environ[ENVIRON_KEY] = identity
        if identity is None:
            return
        if logger.isEnabledFor(_DEBUG):
            _log(_DEBUG, "authenticated", identity.key, identity.package, req.remote_addr)
        if request_authenticated.receivers:
            request_authenticated.send(
                current_app._get_current_object(),  # type: ignore[attr-defined]
                key=identity,
            )


def _log(
    level: int,
    event: str,
    key: Optional[str],
    package: Optional[str],
    client: Optional[str],
    **more: Any,
) -> None:
    # One line a decision, with the same fields as a dict on the record
    # (``record.basic_gate``) for JSON log formatters. Never the secret or
    # the raw header; %r keeps a hostile key from forging log lines.
    fields = {"event": event, "key": key, "package": package, "client": client, **more}
    text = " ".join(f"{name}={value!r}" for name, value in fields.items() if name != "event")
    logger.log(level, "%s %s", event, text, extra={"basic_gate": fields})


def _blueprint_names(endpoint: str) -> list[str]:
    # What flask.Request.blueprints gives for ``endpoint``: the blueprint's
    # dotted name, then each parent's (the keys of app.blueprints).
    names = []
    name = endpoint.rpartition(".")[0]
    while name:
        names.append(name)
        name = name.rpartition(".")[0]
    return names


def get_current_key() -> Optional[KeyIdentity]:
    """The identity that authenticated the current request, or ``None``.

    ``None`` outside a request, on an unprotected route, or when optional
    authentication saw no header.

    .. versionadded:: 0.1
    """
    if not has_request_context():
        return None
    identity: Optional[KeyIdentity] = request.environ.get(ENVIRON_KEY)
    return identity


#: The :class:`~flask_basic_gate.identity.KeyIdentity` of the current
#: request (a context-local proxy). Use ``if current_key:`` or
#: :func:`get_current_key` to test for ``None``.
#:
#: .. versionadded:: 0.1
current_key: KeyIdentity = LocalProxy(get_current_key)  # type: ignore[assignment]

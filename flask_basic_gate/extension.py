"""Wiring: the :class:`BasicGate` extension, its guard and its decorators.

The guard (a ``before_request`` function) and the decorators only decide
*whether* a request must be authenticated; the app's
:class:`~flask_basic_gate.policy.GatePolicy` decides the outcome.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Iterable
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

from flask import Blueprint, Flask, current_app, has_request_context, request
from werkzeug.local import LocalProxy

from . import config as cfg
from .cache import VerificationCache
from .errors import GateError
from .identity import ANONYMOUS, AnonymousKey, KeyIdentity
from .models import get_models
from .plans import take_usage
from .policy import GatePolicy
from .revocation import Revocation, make_revocation
from .routing import EXEMPT, MARK, Requirement, Routes, packages_of
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
_UNSET: Any = object()
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
    #: The settings checked and frozen at ``init_app``.
    settings: cfg.Settings
    #: Changes across processes (a no-op without ``BASIC_GATE_REDIS_URL``).
    revocation: Revocation


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
        self._routes = Routes()
        # Each guard's remembered decisions; marking a view or a blueprint
        # clears them.
        self._decisions: list[dict[Any, Optional[Requirement]]] = []
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
        settings = cfg.load_settings(app.config)
        bind_key = settings.bind_key
        with app.app_context():
            engines = app.extensions["sqlalchemy"].engines
            if bind_key not in engines:
                raise cfg.ConfigurationError(
                    f"{cfg.BIND_KEY} = {bind_key!r} names no bind: add it to SQLALCHEMY_BINDS"
                    " or unset it."
                )
            engine = engines[bind_key]
        store = KeyStore(get_models(db, bind_key), engine, settings)
        cache = VerificationCache(settings.cache_size)
        policy = self.policy_class(store, settings, cache)
        revocation = make_revocation(settings, engine, cache, policy.throttle)
        policy.revocation = revocation
        store.on_change.append(revocation.key_changed)
        state = GateState(self, policy, store, cache, settings, revocation)
        app.extensions[EXTENSION_NAME] = state
        app.before_request(self._make_guard(app, state))
        if settings.rate_limit_headers:
            app.after_request(_rate_limit_headers(settings.mashery_mode))

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
    def required(
        self, *, optional: bool = False, packages: Optional[Iterable[str]] = None
    ) -> Callable[[F], F]: ...

    def required(
        self,
        view: Optional[F] = None,
        *,
        optional: bool = False,
        packages: Optional[Iterable[str]] = None,
    ) -> Union[F, Callable[[F], F]]:
        """Protect a view, bare (``@gate.required``) or with arguments.

        Write it *below* the route decorator, so the route registers the
        protected view::

            @app.get("/reports")
            @gate.required(packages=["reports"])
            def reports(): ...

        Written above it, the route would register the unprotected view; the
        gate notices at the app's first request and raises.

        :param optional: let a request without an ``Authorization`` header
            through, with :data:`current_key` anonymous; a header that is
            present must still be valid.
        :param packages: reserve the route for keys of these packages; a
            valid key of another package gets 403 ``package-not-authorized``.

        Works on async views. Under ``BASIC_GATE_PROTECT_ALL`` the guard has
        already checked the request; it is never checked twice.
        """
        requirement = Requirement(optional, packages_of(packages))

        def decorate(func: F) -> F:
            if inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    refused = self._check(requirement)
                    if refused is not None:
                        return refused
                    return await func(*args, **kwargs)

                wrapper: Any = async_wrapper
            else:

                @functools.wraps(func)
                def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                    refused = self._check(requirement)
                    if refused is not None:
                        return refused
                    return func(*args, **kwargs)

                wrapper = sync_wrapper
            setattr(wrapper, MARK, requirement)
            self._routes.wrapped.add(func)
            self._forget_decisions()
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
            self._routes.exempt_blueprints.add(view)
        elif not isinstance(getattr(view, MARK, None), Requirement):
            setattr(view, MARK, EXEMPT)
        self._forget_decisions()
        return view

    def protect(
        self, blueprint: Blueprint, *, packages: Optional[Iterable[str]] = None
    ) -> Blueprint:
        """Guard every route of ``blueprint`` (for ``BASIC_GATE_PROTECT_ALL = False``).

        :param packages: reserve the blueprint's routes for keys of these
            packages (with ``BASIC_GATE_PROTECT_ALL`` too).
        """
        self._routes.protected_blueprints[blueprint] = Requirement(False, packages_of(packages))
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

        Documentation generators (see :mod:`flask_basic_gate.openapi`) ask
        this per route; :meth:`requirement` also says which packages.

        :param endpoint: the endpoint name, or ``None`` for a URL no route
            matches.
        :param method: the request's HTTP method.
        :param app: the app (default: the current app).
        :return: ``"required"``; ``"optional"`` (checked only when
            credentials are sent); or ``None`` when the request goes through
            unchecked (exempt view, blueprint or method, static files, or a
            route nothing protects under ``BASIC_GATE_PROTECT_ALL = False``).
        """
        found = self.requirement(endpoint, method, app)
        if found is None:
            return None
        return "optional" if found.optional else "required"

    def requirement(
        self, endpoint: Optional[str], method: str = "GET", app: Optional[Flask] = None
    ) -> Optional[Requirement]:
        """What a request to ``endpoint`` must show, or ``None`` when it goes
        through unchecked.

        .. versionadded:: 0.1
        """
        app = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
        state = self.state(app)
        return self._routes.resolve(
            state.settings, app.view_functions, app.blueprints, method.upper(), endpoint
        )

    def _make_guard(self, app: Flask, state: GateState) -> Callable[[], Any]:
        """The ``before_request`` function for ``app``.

        A plain closure over the app's views and blueprints and the frozen
        settings: it runs on every request, so it makes no lookup through
        ``current_app`` (and Flask's ``ensure_sync`` recognises a plain
        function fastest). It remembers each route's requirement per method.
        """
        settings, views, blueprints = state.settings, app.view_functions, app.blueprints
        resolve, admit, policy, routes = (
            self._routes.resolve,
            self._admit,
            state.policy,
            self._routes,
        )
        decisions: dict[Any, Optional[Requirement]] = {}
        self._decisions.append(decisions)
        checked: list[bool] = []

        def basic_gate_guard() -> Any:
            req = request._get_current_object()  # type: ignore[attr-defined]
            rule, method = req.url_rule, req.method
            endpoint = rule.endpoint if rule is not None else None
            try:
                requirement = decisions[endpoint, method]
            except KeyError:
                if not checked:
                    _check_order(routes, views)
                    checked.append(True)
                requirement = resolve(settings, views, blueprints, method, endpoint)
                # Any method name a client sends on a URL without a route
                # gets its own entry: a bound keeps that from growing.
                if len(decisions) >= _MAX_DECISIONS:
                    decisions.clear()
                decisions[endpoint, method] = requirement
            if requirement is not None:
                try:
                    admit(policy, req, requirement)
                except _Answered as answered:
                    return answered.response
            return None

        return basic_gate_guard

    def _check(self, requirement: Requirement) -> Any:
        """Run by a decorated view before its body: the refusal's response,
        or ``None`` to run the view."""
        state = self.state()  # a clear error when init_app never ran on this app
        req = request._get_current_object()  # type: ignore[attr-defined]
        if req.method in state.settings.exempt_methods:
            return None
        # The guard may have checked this request already (PROTECT_ALL), for
        # the same route and so the same requirement.
        done = req.environ.get(ENVIRON_KEY, _UNSET)
        if done is _UNSET or (done is None and not requirement.optional):
            try:
                self._admit(state.policy, req, requirement)
            except _Answered as answered:
                return answered.response
        return None

    @staticmethod
    def _admit(policy: GatePolicy, req: Any, requirement: Requirement) -> None:
        """Ask ``policy`` about the request; log, signal, keep the identity."""
        environ = req.environ
        try:
            identity = policy.decide(
                requirement, environ.get("HTTP_AUTHORIZATION"), req.remote_addr
            )
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
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            if _handled_by_app(app, error, req.blueprints):
                raise
            # No handler of the app's would see it: answer here. Raising
            # would make Flask run the exception as a WSGI app to turn it into
            # a response, which costs more than the rest of a refusal.
            raise _Answered(_response(app, error)) from None
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


class _Answered(Exception):
    """Carries the response to a refusal out of :meth:`BasicGate._admit`."""

    def __init__(self, response: Any) -> None:
        super().__init__()
        self.response = response


def _response(app: Flask, error: GateError) -> Any:
    return app.response_class(error.get_body(), error.code, error.get_headers())


def _handled_by_app(app: Flask, error: GateError, blueprints: Iterable[str]) -> bool:
    """Whether Flask would hand ``error`` to a handler of the app's (or trap it).

    Mirrors Flask's own search: by the exception's class and its bases,
    under the request's blueprints and then the app. ``GateError`` sets its
    status per instance, so handlers registered for a status code do not
    apply to it, as with Flask itself.
    """
    if app.trap_http_exception(error):
        return True
    spec = app.error_handler_spec
    classes = type(error).__mro__
    for name in (*blueprints, None):
        handlers = spec.get(name, {}).get(None)
        if handlers and any(cls in handlers for cls in classes):
            return True
    return False


def _rate_limit_headers(mashery: bool) -> Callable[[Any], Any]:
    """The ``after_request`` hook of ``BASIC_GATE_RATE_LIMIT_HEADERS``: the
    plan's fields on every response to a request the gate admitted."""

    def basic_gate_rate_limit_headers(response: Any) -> Any:
        if request.environ.get(ENVIRON_KEY) is not None:
            found = take_usage()
            if found is not None:
                usage, now = found
                for name, value in usage.headers(now, mashery=mashery):
                    response.headers.setdefault(name, value)
        return response

    return basic_gate_rate_limit_headers


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


def _check_order(routes: Routes, views: dict[str, Any]) -> None:
    endpoint = routes.misordered(views)
    if endpoint is not None:
        raise RuntimeError(
            f"The view {endpoint!r} was registered without @gate.required: the decorator is"
            " written above the route decorator, so the route serves the unprotected view."
            " Put @gate.required (or @gate.required(...)) below @app.route / @bp.route,"
            " next to the function."
        )


def get_current_key() -> Optional[KeyIdentity]:
    """The identity that authenticated the current request, or ``None``.

    ``None`` outside a request, on an unprotected route, or when optional
    authentication saw no header (where :data:`current_key` is the falsy
    anonymous identity).

    .. versionadded:: 0.1
    """
    if not has_request_context():
        return None
    identity: Optional[KeyIdentity] = request.environ.get(ENVIRON_KEY)
    return identity


def _current_key() -> Union[KeyIdentity, AnonymousKey]:
    return get_current_key() or ANONYMOUS


#: The :class:`~flask_basic_gate.identity.KeyIdentity` of the current
#: request (a context-local proxy). Without an authenticated key it is the
#: falsy :class:`~flask_basic_gate.identity.AnonymousKey`, whose fields are
#: ``None``: test it with ``if current_key:``, never ``is None`` (a proxy is
#: never ``None``).
#:
#: .. versionadded:: 0.1
current_key: Union[KeyIdentity, AnonymousKey] = LocalProxy(_current_key)  # type: ignore[assignment]

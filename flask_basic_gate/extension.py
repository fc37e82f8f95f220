"""Wiring: the :class:`BasicGate` extension, its guard and its decorators.

The guard (a ``before_request`` function) and the decorators only decide
*whether* a request must be authenticated; the app's
:class:`~flask_basic_gate.policy.GatePolicy` decides the outcome.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional, TypeVar, Union, overload

from flask import Blueprint, Flask, current_app, has_request_context, request
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
        self._exempt_blueprints: set[str] = set()
        self._protected_blueprints: set[str] = set()
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
        app.extensions[EXTENSION_NAME] = GateState(self, policy, store, cache)
        app.before_request(self._guard)

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

        Only marks; a view that is also decorated with :meth:`required` is
        still checked by the decorator.
        """
        if isinstance(view, Blueprint):
            self._exempt_blueprints.add(view.name)
        else:
            setattr(view, _MARK, _EXEMPT)
        return view

    def protect(self, blueprint: Blueprint) -> Blueprint:
        """Guard every route of ``blueprint`` (for ``BASIC_GATE_PROTECT_ALL = False``)."""
        self._protected_blueprints.add(blueprint.name)
        return blueprint

    # -- the guard -----------------------------------------------------------

    def _guard(self) -> None:
        """``before_request``: decide whether this request is protected."""
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        config = app.config
        req = request._get_current_object()  # type: ignore[attr-defined]
        if req.method in config[cfg.EXEMPT_METHODS]:
            return
        endpoint = req.endpoint
        view = app.view_functions.get(endpoint) if endpoint is not None else None
        mark = getattr(view, _MARK, None)
        if mark == _EXEMPT or (endpoint is not None and _is_static(endpoint)):
            return
        protect = mark is not None or config[cfg.PROTECT_ALL]
        if self._exempt_blueprints or self._protected_blueprints:
            blueprints = req.blueprints
            if not self._exempt_blueprints.isdisjoint(blueprints):
                return  # a decorated view still checks itself
            protect = protect or not self._protected_blueprints.isdisjoint(blueprints)
        if protect:
            self._authenticate(app, req, mark.optional if mark is not None else False)

    def _check(self, optional: bool) -> None:
        """Run by a decorated view before its body."""
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        req = request._get_current_object()  # type: ignore[attr-defined]
        self.state(app)  # a clear error when init_app never ran on this app
        if req.method in app.config[cfg.EXEMPT_METHODS]:
            return
        self._authenticate(app, req, optional)

    def _authenticate(self, app: Flask, req: Any, optional: bool) -> None:
        environ = req.environ
        done = environ.get(ENVIRON_KEY, _UNSET)
        if done is not _UNSET and (done is not None or optional):
            return
        state = app.extensions[EXTENSION_NAME]
        try:
            identity = state.policy.authenticate(
                environ.get("HTTP_AUTHORIZATION"), optional=optional
            )
        except GateError as error:
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "rejected errorCode=%s status=%s key=%r client=%s",
                    error.error_code,
                    error.code,
                    error.key,
                    req.remote_addr,
                )
            if request_rejected.receivers:
                request_rejected.send(app, error_code=error.error_code, status=error.code)
            raise
        environ[ENVIRON_KEY] = identity
        if identity is not None and request_authenticated.receivers:
            request_authenticated.send(app, key=identity)


def _is_static(endpoint: str) -> bool:
    # Flask names the static route of the app "static" and of a blueprint
    # "<blueprint>.static"; static files are never guarded.
    return endpoint == "static" or endpoint.endswith(".static")


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

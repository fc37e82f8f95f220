"""The :class:`BasicGate` extension: the one composition root.

:meth:`BasicGate.init_app` checks the settings, builds every component of
the gate once from the frozen :class:`~flask_basic_gate.config.Settings`
(store, cache, counters, throttle, KDF budget, plan counter, revocation,
policy, guard), wires every listener, and keeps them in the app's
:class:`~flask_basic_gate.state.GateState`. The decorators here only mark
views and blueprints; the guard (:mod:`~flask_basic_gate.guard`) asks the
policy (:mod:`~flask_basic_gate.policy`), which alone decides.
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
    Optional,
    TypeVar,
    Union,
    overload,
)

from flask import Blueprint, Flask, current_app

from . import config as cfg
from .backends import make_storage
from .cache import VerificationCache
from .cli import basic_gate_cli
from .guard import Guard, current_key, get_current_key
from .hashing import KnownGood
from .kdf import KdfBudget
from .metrics import ENDPOINT as METRICS_ENDPOINT
from .metrics import GateMetrics, metrics_view
from .models import get_models
from .plans import PlanCounter
from .policy import GatePolicy
from .revocation import RedisRevocation, make_revocation
from .routing import EXEMPT, MARK, Requirement, Routes, packages_of
from .state import EXTENSION_NAME, GateState, get_state
from .store import KeyStore
from .telemetry import Fanout, Telemetry
from .throttle import FailureThrottle
from .usage import UsageCounter

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

__all__ = ["BasicGate", "GateState", "current_key", "get_current_key"]

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger("flask_basic_gate")


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
        # The guards of the apps this gate serves: marking a view or a
        # blueprint makes them resolve their routes again.
        self._guards: list[Guard] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Check the settings, build and wire every component, register the
        guard and the ``flask basic-gate`` commands.

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

        # -- the components, each built once ---------------------------------
        store = KeyStore(get_models(db, bind_key), engine, settings)
        cache = VerificationCache(settings.cache_size)
        # One storage for the failure counters and the plans; the plan
        # counter makes it at its first counted call when no throttle needs it.
        counters = None
        throttle = None
        if settings.failure_limit is not None:
            counters = make_storage(settings.redis_url)
            throttle = FailureThrottle(settings.failure_limit, counters)
        kdf_budget = KdfBudget(settings.kdf_budget) if settings.kdf_budget is not None else None
        plans = PlanCounter(counters, redis_url=settings.redis_url)
        revocation = make_revocation(settings, engine, cache, throttle)
        telemetry = self._telemetry(app, settings, store)
        policy = self.policy_class(
            store,
            settings,
            cache,
            throttle=throttle,
            kdf_budget=kdf_budget,
            plans=plans,
            revocation=revocation,
            known_good=KnownGood(),
            telemetry=telemetry,
        )
        guard = Guard(app, policy, settings, self._routes)
        self._guards.append(guard)

        # -- the listeners, all wired here ----------------------------------
        if throttle is not None:
            throttle.telemetry = telemetry
        if isinstance(revocation, RedisRevocation):
            revocation.telemetry = telemetry
        store.on_change.append(cache.evict_key)
        store.on_change.append(policy.key_changed)
        store.on_change.append(revocation.key_changed)
        if throttle is not None:
            throttle.on_blocked.append(revocation.pair_blocked)

        app.extensions[EXTENSION_NAME] = GateState(
            self, policy, store, cache, settings, revocation, guard, telemetry
        )
        app.before_request(guard.before_request())
        if settings.rate_limit_headers:
            app.after_request(guard.rate_limit_headers())
        if settings.metrics:
            # Guarded by the gate itself, whatever BASIC_GATE_PROTECT_ALL says.
            # Never opened by BASIC_GATE_REPORT_ONLY: a dry run of the gate
            # must not publish its figures.
            own = Requirement(packages=settings.admin_packages, always=True)
            view = self._requiring(own)(metrics_view())
            app.add_url_rule(settings.metrics_path, METRICS_ENDPOINT, view, methods=["GET"])
        app.cli.add_command(basic_gate_cli)
        if settings.report_only:
            logger.warning(
                "%s is on: the gate decides every request but refuses none (it logs"
                " 'would-refuse' instead). Turn it off to enforce.",
                cfg.REPORT_ONLY,
            )
        if settings.admin:
            # Imported only when on; guarded by the gate itself, whatever
            # BASIC_GATE_PROTECT_ALL says, for the admin packages only.
            from .admin import make_admin_blueprint

            admin = make_admin_blueprint(settings)
            self._routes.protected_blueprints[admin] = Requirement(
                packages=settings.admin_packages, always=True
            )
            self._forget_decisions()
            app.register_blueprint(admin)

    @staticmethod
    def _telemetry(app: Flask, settings: cfg.Settings, store: KeyStore) -> Telemetry:
        """The listeners the settings turn on, as one :class:`Telemetry`:
        Prometheus metrics (``BASIC_GATE_METRICS``) and usage per key and
        day (``BASIC_GATE_USAGE``)."""
        listeners: list[Telemetry] = []
        if settings.metrics:
            listeners.append(GateMetrics())
        if settings.usage:
            listeners.append(UsageCounter(store.engine, store.models, settings.usage_flush))
        if len(listeners) == 1:
            return listeners[0]
        return Fanout(listeners) if listeners else Telemetry()

    # -- per-app state -------------------------------------------------------

    @staticmethod
    def state(app: Optional[Flask] = None) -> GateState:
        """The gate's state for ``app`` (default: the current app); the
        same as :func:`~flask_basic_gate.state.get_state`."""
        return get_state(app)

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
        decorate = self._requiring(Requirement(optional, packages_of(packages)))
        if view is not None:
            return decorate(view)
        return decorate

    def _requiring(self, requirement: Requirement) -> Callable[[F], F]:
        """The decorator that protects a view with ``requirement``."""

        def decorate(func: F) -> F:
            if inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    refused = get_state().guard.check(requirement)
                    if refused is not None:
                        return refused
                    return await func(*args, **kwargs)

                wrapper: Any = async_wrapper
            else:

                @functools.wraps(func)
                def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                    refused = get_state().guard.check(requirement)
                    if refused is not None:
                        return refused
                    return func(*args, **kwargs)

                wrapper = sync_wrapper
            setattr(wrapper, MARK, requirement)
            self._routes.wrapped.add(func)
            self._forget_decisions()
            return wrapper  # type: ignore[no-any-return]

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
        for guard in self._guards:
            guard.requirements.clear()

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

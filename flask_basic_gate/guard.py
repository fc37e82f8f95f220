"""The request side of the gate: the ``before_request`` guard, the check a
decorated view runs, and the per-request record behind :data:`current_key`.

Both entry points only find *what a route requires* (through
:mod:`~flask_basic_gate.routing`) and ask the app's
:class:`~flask_basic_gate.policy.GatePolicy`; neither decides an outcome.
What the policy let through is kept as one
:class:`~flask_basic_gate.policy.Decision` in the request's WSGI environ:
the environ is per request, so nothing of one request is seen in another,
even when a test keeps one app context pushed around many requests (which
would share ``g``).
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from flask import Flask, has_request_context, request
from werkzeug.local import LocalProxy

from .bounded import BoundedMap
from .errors import GateError
from .identity import ANONYMOUS, AnonymousKey, KeyIdentity
from .policy import Decision, GatePolicy
from .routing import Requirement, Routes, is_exempt_method
from .signals import request_authenticated, request_rejected

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["ENVIRON_KEY", "Guard", "current_decision", "current_key", "get_current_key"]

logger = logging.getLogger("flask_basic_gate")

#: Where a request's :class:`~flask_basic_gate.policy.Decision` is kept.
ENVIRON_KEY = "flask_basic_gate.decision"
#: Most (route, method) requirements a guard remembers: any method name a
#: client sends on a URL without a route would otherwise get its own entry.
MAX_ROUTES = 1024
_UNSET: Any = object()
_DEBUG = logging.DEBUG


class Guard:
    """Asks the policy about the requests to one app.

    Made by :meth:`BasicGate.init_app <flask_basic_gate.BasicGate.init_app>`.

    :param app: the app whose views and blueprints are resolved.
    :param policy: the app's policy.
    :param settings: the gate's frozen settings.
    :param routes: the gate's marks on views and blueprints.

    .. versionadded:: 0.1
    """

    def __init__(self, app: Flask, policy: GatePolicy, settings: Settings, routes: Routes) -> None:
        self.app = app
        self.policy = policy
        self.telemetry = policy.telemetry
        self.settings = settings
        self.routes = routes
        #: Each route's requirement per method, as resolved; cleared when a
        #: view or blueprint is marked.
        self.requirements: BoundedMap[tuple[Optional[str], str], Optional[Requirement]] = (
            BoundedMap(MAX_ROUTES)
        )
        # Flask's own handler search: it takes the request's blueprints from
        # Flask 3.0 on, and reads them from the request itself in 2.3.
        find = app._find_error_handler
        self._find_handler: Callable[[GateError, Any], Any] = (
            find
            if len(inspect.signature(find).parameters) > 1
            else lambda error, blueprints: find(error)  # type: ignore[call-arg]
        )
        # Whether a handler of the app's takes each kind of refusal, per
        # route's blueprints: Flask refuses new handlers once the app has
        # served a request, so the answer never changes.
        self._handled: BoundedMap[tuple[type, int, tuple[str, ...]], bool] = BoundedMap(MAX_ROUTES)
        self._order_checked = False

    def before_request(self) -> Callable[[], Any]:
        """The ``before_request`` function: a plain closure (it runs on
        every request, and Flask's ``ensure_sync`` recognises a plain
        function fastest) that resolves the route's requirement, remembered
        per method, and asks the policy."""
        app, settings, routes, remembered = self.app, self.settings, self.routes, self.requirements
        resolve, admit = routes.resolve, self.admit
        views, blueprints = app.view_functions, app.blueprints

        def basic_gate_guard() -> Any:
            req = request._get_current_object()  # type: ignore[attr-defined]
            rule, method = req.url_rule, req.method
            endpoint = rule.endpoint if rule is not None else None
            requirement = remembered.get((endpoint, method), _UNSET)
            if requirement is _UNSET:
                if not self._order_checked:
                    _check_order(routes, views)
                    self._order_checked = True
                requirement = resolve(settings, views, blueprints, method, endpoint)
                remembered.put((endpoint, method), requirement)
            if requirement is None:
                return None
            return admit(req, requirement)

        return basic_gate_guard

    def check(self, requirement: Requirement) -> Any:
        """Run by a decorated view before its body: the refusal's response,
        or ``None`` to run the view."""
        req = request._get_current_object()  # type: ignore[attr-defined]
        if is_exempt_method(self.settings, req.method):
            return None
        # The guard may have checked this request already (PROTECT_ALL), for
        # the same route and so the same requirement.
        done = req.environ.get(ENVIRON_KEY, _UNSET)
        if done is _UNSET or (done is None and not requirement.optional):
            return self.admit(req, requirement)
        return None

    def admit(self, req: Any, requirement: Requirement) -> Any:
        """Ask the policy about ``req``; log, signal, keep the decision.

        :return: ``None`` to go on, or the refusal's response.
        :raises GateError: a refusal that a handler of the app's renders.
        """
        environ = req.environ
        try:
            decision = self.policy.decide(
                requirement, environ.get("HTTP_AUTHORIZATION"), req.remote_addr
            )
        except GateError as error:
            reported = self.settings.report_only and not requirement.always
            self.telemetry.decided(None, error, enforced=not reported)
            return self._refused(req, error, reported)
        self.telemetry.decided(decision, None)
        environ[ENVIRON_KEY] = decision
        if decision is None:
            return None
        identity = decision.identity
        if identity is not None:
            if logger.isEnabledFor(_DEBUG):
                _log(_DEBUG, "authenticated", identity.key, identity.package, req.remote_addr)
            if request_authenticated.receivers:
                request_authenticated.send(self.app, key=identity)
        return None

    def _refused(self, req: Any, error: GateError, reported: bool) -> Any:
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
        app = self.app
        if reported:
            return self._reported(req, error)
        if request_rejected.receivers:
            request_rejected.send(app, error_code=error.error_code, status=error.code)
        if app.trap_http_exception(error) or self._has_handler(error, req.blueprints):
            raise error
        # No handler of the app's would see the error: answer with its
        # response. Raised, Flask would find no handler and then run the
        # exception as a WSGI app to turn it into a response
        # (``python -m bench`` measures both, "refused" and "refused, raised").
        return app.response_class(error.get_body(), error.code, error.get_headers())

    def _has_handler(self, error: GateError, blueprints: list[str]) -> bool:
        """Whether Flask's own handler search finds a handler for ``error``
        on a route of ``blueprints`` (remembered per kind of refusal)."""
        memo = (type(error), error.code or 0, tuple(blueprints))
        handled = self._handled.get(memo)
        if handled is None:
            handled = self._find_handler(error, blueprints) is not None
            self._handled.put(memo, handled)
        return handled

    def _reported(self, req: Any, error: GateError) -> None:
        """``BASIC_GATE_REPORT_ONLY``: the refusal is logged, signalled and
        counted, and the request goes on; :data:`current_key` is the key when
        its credentials were good (a package or plan refusal), else anonymous."""
        _log(
            logging.WARNING,
            "would-refuse",
            error.key,
            error.package,
            req.remote_addr,
            error_code=error.error_code,
            status=error.code,
        )
        if request_rejected.receivers:
            request_rejected.send(
                self.app, error_code=error.error_code, status=error.code, enforced=False
            )
        req.environ[ENVIRON_KEY] = Decision(error.identity, None, self.policy.clock())
        return None

    def rate_limit_headers(self) -> Callable[[Any], Any]:
        """The ``after_request`` hook of ``BASIC_GATE_RATE_LIMIT_HEADERS``:
        the plan's fields on every response to a request the plan counted."""
        mashery = self.settings.mashery_mode

        def basic_gate_rate_limit_headers(response: Any) -> Any:
            decision = request.environ.get(ENVIRON_KEY)
            if decision is not None and decision.usage is not None:
                for name, value in decision.usage.headers(decision.now, mashery=mashery):
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


def current_decision() -> Optional[Decision]:
    """The current request's :class:`~flask_basic_gate.policy.Decision`,
    or ``None`` (outside a request, or on a route the gate did not check).

    .. versionadded:: 0.1
    """
    if not has_request_context():
        return None
    decision: Optional[Decision] = request.environ.get(ENVIRON_KEY)
    return decision


def get_current_key() -> Optional[KeyIdentity]:
    """The identity that authenticated the current request, or ``None``.

    ``None`` outside a request, on an unprotected route, or when optional
    authentication saw no header (where :data:`current_key` is the falsy
    anonymous identity).

    .. versionadded:: 0.1
    """
    decision = current_decision()
    return None if decision is None else decision.identity


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

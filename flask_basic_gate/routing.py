"""What a route requires: the marks the decorators leave and how they resolve.

The guard and the decorators only say *what a route requires* (a
:class:`Requirement`, or nothing); the policy decides the outcome. This
module knows the marks on views and blueprints, recognises Flask's static
view, and answers :meth:`Routes.resolve` for an endpoint and method.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from typing import Any, Callable, NamedTuple, Optional

from flask import Blueprint

try:
    from flask.sansio.scaffold import Scaffold
except ImportError:  # Flask 2.3
    from flask.scaffold import Scaffold  # type: ignore[no-redef,import-not-found,unused-ignore]

from .config import Settings

__all__ = [
    "EXEMPT",
    "Requirement",
    "Routes",
    "is_exempt_method",
    "is_static_view",
    "packages_of",
]

#: Attribute a decorator sets on a view: a :class:`Requirement` or :data:`EXEMPT`.
MARK = "_basic_gate_mark"
#: The mark of a view left open under ``BASIC_GATE_PROTECT_ALL``.
EXEMPT = "exempt"


class Requirement(NamedTuple):
    """What a request to a route must show.

    .. versionadded:: 0.1
    """

    #: Let a request without an ``Authorization`` header through.
    optional: bool = False
    #: The packages whose keys may use the route (``None``: any package).
    packages: Optional[frozenset[str]] = None
    #: Refused even under ``BASIC_GATE_REPORT_ONLY``: the gate's own pages
    #: (metrics, admin) are never opened by a dry run.
    always: bool = False


#: A route that any valid key may use.
REQUIRED = Requirement()


def packages_of(packages: Optional[Iterable[str]]) -> Optional[frozenset[str]]:
    """Normalise a ``packages=`` argument (a string counts as one name).

    :raises TypeError: for something that is not names.
    :raises ValueError: for an empty list, which no key could satisfy.
    """
    if packages is None:
        return None
    names = frozenset([packages] if isinstance(packages, str) else packages)
    if not all(isinstance(name, str) and name for name in names):
        raise TypeError("packages must be package names (non-empty strings)")
    if not names:
        raise ValueError("packages=[] would refuse every key: name at least one package")
    return names


def is_static_view(view: Any) -> bool:
    """Whether ``view`` is Flask's static-file view of an app or blueprint.

    The view is recognised, not its endpoint's name: a blueprint view
    named ``static`` stays guarded.
    """
    func = getattr(view, "__func__", None)
    if func is not None:  # a blueprint's: its bound send_static_file
        return isinstance(getattr(view, "__self__", None), Scaffold) and (
            getattr(func, "__name__", None) == "send_static_file"
        )
    # The app's: a lambda in flask.app that calls the app's send_static_file.
    code = getattr(view, "__code__", None)
    return (
        code is not None
        and getattr(view, "__module__", None) == "flask.app"
        and "send_static_file" in code.co_names
    )


class Routes:
    """The marks of one gate: blueprints exempted or protected, decorated views.

    .. versionadded:: 0.1
    """

    def __init__(self) -> None:
        # Blueprint objects, not names: a blueprint registered under another
        # name, or nested (a dotted name), is still the same object.
        self.exempt_blueprints: set[Blueprint] = set()
        self.protected_blueprints: dict[Blueprint, Requirement] = {}
        #: The undecorated functions :meth:`BasicGate.required` wrapped: one
        #: of them registered as a view means the decorators were misordered.
        self.wrapped: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()

    def resolve(
        self,
        settings: Settings,
        views: Mapping[str, Any],
        blueprints: Mapping[str, Any],
        method: str,
        endpoint: Optional[str],
    ) -> Optional[Requirement]:
        """What a request with ``method`` to ``endpoint`` must show, or
        ``None`` when it goes through unchecked."""
        if is_exempt_method(settings, method):
            return None
        if endpoint is None:  # no route: guarded like a gateway, then 404
            return REQUIRED if settings.protect_all else None
        view = views.get(endpoint)
        mark = getattr(view, MARK, None)
        if mark == EXEMPT or is_static_view(view):
            return None
        required: Optional[Requirement] = mark if isinstance(mark, Requirement) else None
        protect: Optional[Requirement] = required or (REQUIRED if settings.protect_all else None)
        if self.exempt_blueprints or self.protected_blueprints:
            chain = [blueprints.get(name) for name in blueprint_names(endpoint)]
            if not self.exempt_blueprints.isdisjoint(chain):
                protect = required  # the decorator's explicit requirement wins
            else:
                for blueprint in chain:
                    by_blueprint = self.protected_blueprints.get(blueprint)  # type: ignore[arg-type]
                    if by_blueprint is not None:
                        protect = _narrowest(required, by_blueprint)
                        break
        return protect

    def misordered(self, views: Mapping[str, Any]) -> Optional[str]:
        """The endpoint of a view registered without the wrapper that
        :meth:`BasicGate.required` made for it (``@gate.required`` written
        above ``@app.route``), or ``None``."""
        if not len(self.wrapped):
            return None
        for endpoint, view in views.items():
            if view in self.wrapped and not isinstance(getattr(view, MARK, None), Requirement):
                return endpoint
        return None


def is_exempt_method(settings: Settings, method: str) -> bool:
    """Whether requests with ``method`` go through unchecked everywhere
    (``BASIC_GATE_EXEMPT_METHODS``: ``OPTIONS`` by default, so CORS
    preflights, which never carry credentials, are answered)."""
    return method in settings.exempt_methods


def _narrowest(view: Optional[Requirement], blueprint: Requirement) -> Requirement:
    # A view's own requirement keeps its optional flag; packages named by
    # both must both allow the key.
    if view is None:
        return blueprint
    if view.packages is None or blueprint.packages is None:
        packages = view.packages or blueprint.packages
    else:
        packages = view.packages & blueprint.packages
    return Requirement(view.optional, packages, view.always or blueprint.always)


def blueprint_names(endpoint: str) -> list[str]:
    """What :attr:`flask.Request.blueprints` gives for ``endpoint``: the
    blueprint's dotted name, then each parent's (the keys of app.blueprints)."""
    names = []
    name = endpoint.rpartition(".")[0]
    while name:
        names.append(name)
        name = name.rpartition(".")[0]
    return names

"""Describe the gate in an OpenAPI document.

:func:`register_security_scheme` adds an HTTP Basic ``securitySchemes``
entry to the document an `APIFlask`_ app or a `flask-smorest`_ ``Api``
serves, and a ``security`` requirement to each operation the gate protects;
exempt operations get none. Whether an operation is protected is decided the
way the gate's guard decides it (:func:`route_protection`), so the document
follows ``@gate.required``, ``@gate.exempt``, ``gate.protect(blueprint)``,
``BASIC_GATE_PROTECT_ALL`` and ``BASIC_GATE_EXEMPT_METHODS``.

Neither library is a dependency of flask-basic-gate: each is imported only
when it is used (``pip install "flask-basic-gate[openapi]"`` installs
APIFlask). :func:`add_security` works on any OpenAPI document held as a
``dict``, whatever made it.

.. _APIFlask: https://apiflask.com/
.. _flask-smorest: https://flask-smorest.readthedocs.io/
"""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from flask import Flask

    from .extension import BasicGate

__all__ = [
    "DEFAULT_SCHEME_NAME",
    "OPTIONAL",
    "REQUIRED",
    "add_security",
    "register_security_scheme",
    "route_packages",
    "route_protection",
    "security_scheme",
]

#: Name of the entry in ``components.securitySchemes`` unless told otherwise.
DEFAULT_SCHEME_NAME = "basicGate"
#: :func:`route_protection`: credentials are required.
REQUIRED = "required"
#: :func:`route_protection`: credentials are checked when sent
#: (``@gate.required(optional=True)``).
OPTIONAL = "optional"

_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
# A werkzeug rule to an OpenAPI path: ``/a/<int:id>`` is ``/a/{id}``, the
# conversion APIFlask and flask-smorest both make.
_RULE_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")


def security_scheme(description: Optional[str] = None) -> dict[str, str]:
    """The ``securitySchemes`` entry for the gate: HTTP Basic (RFC 7617).

    :param description: shown by documentation viewers; a default says what
        the credentials are.

    .. versionadded:: 0.1
    """
    return {
        "type": "http",
        "scheme": "basic",
        "description": description
        or "HTTP Basic authentication: the package key as user name, its secret as password.",
    }


def route_protection(
    gate: BasicGate, app: Flask, endpoint: str, method: str = "GET"
) -> Optional[str]:
    """Whether the gate asks for credentials on a request to ``endpoint``.

    :param gate: the gate set up on ``app``.
    :param app: the app serving the endpoint.
    :param endpoint: the endpoint name, as in :attr:`flask.Flask.view_functions`.
    :param method: the HTTP method of the request.
    :return: :data:`REQUIRED`, :data:`OPTIONAL` (credentials checked only when
        sent), or ``None`` when the request is let through unchecked (exempt
        view, exempt blueprint, static files, an exempt method, or a route
        nothing protects under ``BASIC_GATE_PROTECT_ALL = False``).
    :raises RuntimeError: the gate is not set up on ``app``.

    .. versionadded:: 0.1
    """
    return gate.protection(endpoint, method, app)


#: Operation extension listing the packages a route is reserved for.
PACKAGES_EXTENSION = "x-basic-gate-packages"


def route_packages(
    gate: BasicGate, app: Flask, endpoint: str, method: str = "GET"
) -> Optional[list[str]]:
    """The packages whose keys may use ``endpoint``, sorted, or ``None`` when
    any valid key may (or the route is open).

    .. versionadded:: 0.1
    """
    requirement = gate.requirement(endpoint, method, app)
    if requirement is None or requirement.packages is None:
        return None
    return sorted(requirement.packages)


def _describe(
    operation: MutableMapping[str, Any],
    gate: BasicGate,
    app: Flask,
    endpoint: str,
    method: str,
    name: str,
) -> Optional[str]:
    # The gate's part of one operation: its security, and the packages it is
    # reserved for (OpenAPI has no word for these, hence an extension).
    protection = route_protection(gate, app, endpoint, method)
    _secure(operation, protection, name)
    packages = route_packages(gate, app, endpoint, method)
    if packages:
        operation[PACKAGES_EXTENSION] = packages
    else:
        operation.pop(PACKAGES_EXTENSION, None)
    return protection


def _secure(operation: MutableMapping[str, Any], protection: Optional[str], name: str) -> None:
    """Set one operation's ``security`` for the gate's ``protection``."""
    existing = [
        {k: v for k, v in requirement.items() if k != name}
        for requirement in operation.get("security") or ()
    ]
    existing = [requirement for requirement in existing if requirement]
    if protection is None:
        if existing:
            operation["security"] = existing
        else:
            operation.pop("security", None)
        return
    # Requirements in the list are alternatives; the gate comes on top of
    # each one another scheme (an APIFlask auth, say) already asks for.
    combined = [{**requirement, name: []} for requirement in existing] or [{name: []}]
    if protection == OPTIONAL:
        # ``{}`` is the anonymous alternative: no credentials at all.
        combined += existing or [{}]
    operation["security"] = combined


def _openapi_path(rule: str) -> str:
    return _RULE_ARGUMENT.sub(r"{\1}", rule)


def add_security(
    spec: MutableMapping[str, Any],
    gate: BasicGate,
    app: Flask,
    *,
    name: str = DEFAULT_SCHEME_NAME,
    description: Optional[str] = None,
) -> MutableMapping[str, Any]:
    """Describe the gate in an OpenAPI 3 document held as a ``dict``.

    Adds ``components.securitySchemes[name]`` and, on each operation of
    ``spec["paths"]`` served by one of ``app``'s routes, sets ``security``
    from :func:`route_protection`: ``[{name: []}]`` when protected,
    ``[{name: []}, {}]`` when optional, nothing of the gate's when open. An
    operation's other requirements are kept, with the gate added to each. A
    route reserved for packages gets ``x-basic-gate-packages``, the sorted
    list of their names (:func:`route_packages`).

    :param spec: the document, changed in place.
    :param gate: the gate set up on ``app``.
    :param app: the app whose routes the document describes.
    :param name: the scheme's name in ``securitySchemes``.
    :param description: the scheme's description (see :func:`security_scheme`).
    :return: ``spec``.

    .. versionadded:: 0.1
    """
    components = spec.setdefault("components", {})
    components.setdefault("securitySchemes", {})[name] = security_scheme(description)
    paths = spec.get("paths") or {}
    # Open operations must say so when the document asks for credentials
    # everywhere by default.
    global_security = bool(spec.get("security"))
    for rule in app.url_map.iter_rules():
        operations = paths.get(_openapi_path(rule.rule))
        if not operations:
            continue
        for method in rule.methods or ():
            operation = operations.get(method.lower())
            if isinstance(operation, MutableMapping):
                protection = _describe(operation, gate, app, rule.endpoint, method, name)
                if protection is None and global_security and "security" not in operation:
                    operation["security"] = []
    return spec


def _secure_operations(
    operations: MutableMapping[str, Any],
    gate: BasicGate,
    app: Flask,
    endpoint: str,
    name: str,
    methods: Iterable[str],
) -> None:
    for method in methods:
        operation = operations.get(method)
        if method in _HTTP_METHODS and isinstance(operation, MutableMapping):
            _describe(operation, gate, app, endpoint, method, name)


def register_security_scheme(
    owner: Any,
    gate: BasicGate,
    *,
    name: str = DEFAULT_SCHEME_NAME,
    description: Optional[str] = None,
) -> None:
    """Describe the gate in the OpenAPI document of an APIFlask app or a
    flask-smorest ``Api``.

    :param owner: an :class:`apiflask.APIFlask` app, or a
        :class:`flask_smorest.Api` that has been given its app.
    :param gate: the gate, already set up on that app.
    :param name: the scheme's name in ``securitySchemes``.
    :param description: the scheme's description (see :func:`security_scheme`).
    :raises TypeError: ``owner`` is neither.

    APIFlask: the document is changed each time it is generated, so routes
    added later are covered; a spec processor the app already has runs first.

    flask-smorest: the routes of blueprints registered with the ``Api``
    before and after this call are covered, as the gate marks them when
    they are registered with the ``Api``.

    .. code-block:: python

        gate = BasicGate(app, db)
        register_security_scheme(app, gate)  # APIFlask
        register_security_scheme(api, gate)  # flask-smorest

    .. versionadded:: 0.1
    """
    if callable(getattr(owner, "spec_processor", None)) and hasattr(owner, "spec_callback"):
        _register_apiflask(owner, gate, name, description)
    elif hasattr(owner, "spec") and hasattr(owner, "register_blueprint"):
        _register_smorest(owner, gate, name, description)
    else:
        raise TypeError(
            f"register_security_scheme() needs an APIFlask app or a flask-smorest Api,"
            f" not {type(owner).__name__}; for another OpenAPI generator, pass its"
            " document to add_security()."
        )


def _register_apiflask(app: Any, gate: BasicGate, name: str, description: Optional[str]) -> None:
    previous = app.spec_callback

    def describe_gate(spec: Any) -> Any:
        if previous is not None:
            spec = previous(spec)
        if isinstance(spec, MutableMapping):
            return add_security(spec, gate, app, name=name, description=description)
        # SPEC_PROCESSOR_PASS_OBJECT: an apispec.APISpec, whose to_dict()
        # hands out its own paths mapping, so changing it changes the spec.
        spec.components.security_scheme(name, security_scheme(description))
        add_security({"paths": spec.to_dict()["paths"]}, gate, app, name=name)
        return spec

    # APIFlask keeps one processor; ours wraps the app's.
    app.spec_processor(describe_gate)


def _register_smorest(api: Any, gate: BasicGate, name: str, description: Optional[str]) -> None:
    from apispec import BasePlugin

    # flask-smorest keeps the app it was given in ``_app``; it has no public
    # name for it.
    app = getattr(api, "_app", None)
    spec = api.spec
    if app is None or spec is None:
        raise RuntimeError(
            "The flask-smorest Api has no app yet: call api.init_app(app) before"
            " register_security_scheme(api, gate)."
        )

    flask_app: Flask = app

    class BasicGatePlugin(BasePlugin):
        """Adds the gate's requirement to each operation flask-smorest documents."""

        def operation_helper(
            self,
            path: Optional[str] = None,
            operations: Optional[MutableMapping[str, Any]] = None,
            **kwargs: Any,
        ) -> None:
            rule = kwargs.get("rule")
            if rule is not None and operations:
                _secure_operations(
                    operations, gate, flask_app, rule.endpoint, name, list(operations)
                )

    spec.components.security_scheme(name, security_scheme(description))
    # Blueprints registered from now on pass through the plugin ...
    spec.plugins = [*spec.plugins, BasicGatePlugin()]
    # ... and those registered already are described now (to_dict() hands
    # out the spec's own paths mapping).
    add_security({"paths": spec.to_dict()["paths"]}, gate, app, name=name)

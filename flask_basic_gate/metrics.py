"""The gate's Prometheus metrics, and the endpoint that serves them.

With ``BASIC_GATE_METRICS`` on, ``init_app`` makes a :class:`GateMetrics`
listener (a :class:`~flask_basic_gate.telemetry.Telemetry`) and registers
:func:`metrics_view` at ``BASIC_GATE_METRICS_PATH``, reserved with
:meth:`BasicGate.required <flask_basic_gate.BasicGate.required>` for the
keys of ``BASIC_GATE_ADMIN_PACKAGES`` (Prometheus scrapes with
``basic_auth``). Only counters and histograms, so that prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, for gunicorn) adds the
workers up exactly.

Each app has a registry of its own, so two apps in one process do not
collide; in multiprocess mode every process writes its values to the
directory and the scrape reads them all, so the apps of one process share
their metrics there.

A request costs a dict look-up and a counter increment per event: the
labelled children are made once and kept by their labels.

``prometheus_client`` is imported only when a :class:`GateMetrics` is made.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import TYPE_CHECKING, Any, Callable, Optional

from flask import current_app

from .config import METRICS, ConfigurationError
from .state import get_state
from .telemetry import Fanout, Telemetry

if TYPE_CHECKING:
    from .errors import GateError
    from .policy import Decision

__all__ = [
    "ENDPOINT",
    "KDF_BUCKETS",
    "LOOKUP_BUCKETS",
    "GateMetrics",
    "metrics_of",
    "metrics_view",
    "multiprocess_mode",
]

#: The endpoint name of the metrics route.
ENDPOINT = "basic_gate_metrics"
#: Histogram buckets of ``basic_gate_kdf_seconds`` (scrypt takes about 0.1 s).
KDF_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Histogram buckets of ``basic_gate_store_lookup_seconds``.
LOOKUP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_OUTCOMES = ("allowed", "refused", "unavailable", "report_only")


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigurationError(
            f"{METRICS} is on, but prometheus_client is not installed: install"
            f" flask-basic-gate[metrics] (or prometheus_client), or set {METRICS} = False."
        ) from None
    return prometheus_client


def multiprocess_mode() -> bool:
    """Whether prometheus_client counts in its multiprocess mode (the
    environment variable ``PROMETHEUS_MULTIPROC_DIR`` was set before it was
    first imported).

    .. versionadded:: 0.1
    """
    from prometheus_client import values

    found = getattr(values.ValueClass, "_multiprocess", None)
    if found is None:  # an older prometheus_client
        return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    return bool(found)


class _Families:
    """The metric families, registered in ``registry`` (``None``: nowhere)."""

    def __init__(self, client: Any, registry: Any) -> None:
        counter, histogram = client.Counter, client.Histogram
        self.requests = counter(
            "basic_gate_requests",
            "Requests the gate checked, by outcome, errorCode and the key's package.",
            ["outcome", "error_code", "package"],
            registry=registry,
        )
        self.kdf_seconds = histogram(
            "basic_gate_kdf_seconds",
            "CPU seconds of each key-derivation run, by whether the secret matched.",
            ["result"],
            buckets=KDF_BUCKETS,
            registry=registry,
        )
        self.kdf_refusals = counter(
            "basic_gate_kdf_refusals",
            "Verifications the KDF budget refused.",
            registry=registry,
        )
        self.lookup_seconds = histogram(
            "basic_gate_store_lookup_seconds",
            "Seconds of each key lookup that the store answered.",
            buckets=LOOKUP_BUCKETS,
            registry=registry,
        )
        self.store_errors = counter(
            "basic_gate_store_errors",
            "Key lookups the store could not answer.",
            registry=registry,
        )
        self.cache = counter(
            "basic_gate_cache",
            "Looks into the decision cache, by result.",
            ["result"],
            registry=registry,
        )
        self.redis_errors = counter(
            "basic_gate_redis_errors",
            "Redis failures, by what Redis was used for.",
            ["use"],
            registry=registry,
        )
        self.plan_refusals = counter(
            "basic_gate_plan_refusals",
            "Calls refused over their plan, by limit.",
            ["limit"],
            registry=registry,
        )


# In multiprocess mode a value is kept per process and per labels in one
# file: two apps' families would overwrite each other's values, so the
# process has one set of families, made once.
_shared: Optional[_Families] = None
_shared_lock = threading.Lock()


def _shared_families(client: Any) -> _Families:
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = _Families(client, None)
        return _shared


class GateMetrics(Telemetry):
    """Counts the gate's work in Prometheus metrics (see the module).

    :raises ConfigurationError: prometheus_client is not installed.

    ``basic_gate_requests_total{outcome, error_code, package}``
        Every request the gate checked: ``outcome`` is ``allowed``,
        ``refused``, ``unavailable`` (503) or ``report_only`` (refused but
        let through); ``error_code`` the errorCode (empty when allowed);
        ``package`` the key's package when known (else empty).
    ``basic_gate_kdf_seconds{result}``, ``basic_gate_kdf_refusals_total``
        KDF runs (``matched``, ``not_matched``) and the KDF budget's refusals.
    ``basic_gate_store_lookup_seconds``, ``basic_gate_store_errors_total``
        Lookups the store answered, and those it could not.
    ``basic_gate_cache_total{result}``
        Decision cache ``hit`` or ``miss``.
    ``basic_gate_redis_errors_total{use}``
        Redis failures for ``revocation`` or ``counters``.
    ``basic_gate_plan_refusals_total{limit}``
        Calls refused over ``qps`` or ``quota``.

    .. versionadded:: 0.1
    """

    def __init__(self) -> None:
        client = _prometheus()
        #: Whether the values live in ``PROMETHEUS_MULTIPROC_DIR``.
        self.multiprocess = multiprocess_mode()
        #: What :meth:`exposition` renders.
        self.registry: Any = client.CollectorRegistry()
        if self.multiprocess:
            # Reads every process's file in PROMETHEUS_MULTIPROC_DIR at each scrape.
            multiprocess: Any = importlib.import_module("prometheus_client.multiprocess")
            multiprocess.MultiProcessCollector(self.registry)
            families = _shared_families(client)
        else:
            families = _Families(client, self.registry)
        self._client = client
        self._families = families
        self._requests = families.requests
        # Children by their labels, made once each (packages come from the
        # store, errorCodes from one table: both are few).
        self._allowed: dict[str, Any] = {}
        self._refused: dict[tuple[str, str, str], Any] = {}
        self._hit = families.cache.labels("hit")
        self._miss = families.cache.labels("miss")
        self._matched = families.kdf_seconds.labels("matched")
        self._not_matched = families.kdf_seconds.labels("not_matched")
        self._kdf_refusals = families.kdf_refusals
        self._lookup_seconds = families.lookup_seconds
        self._store_errors = families.store_errors
        self._plan = {limit: families.plan_refusals.labels(limit) for limit in ("qps", "quota")}
        self._redis = {use: families.redis_errors.labels(use) for use in ("revocation", "counters")}

    def decided(
        self,
        decision: Optional[Decision],
        error: Optional[GateError],
        *,
        enforced: bool = True,
    ) -> None:
        if error is None:
            identity = decision.identity if decision is not None else None
            package = identity.package if identity is not None else ""
            child = self._allowed.get(package)
            if child is None:
                child = self._allowed[package] = self._requests.labels("allowed", "", package)
            child.inc()
            return
        if not enforced:
            outcome = "report_only"
        elif error.code == 503:
            outcome = "unavailable"
        else:
            outcome = "refused"
        labels = (outcome, error.error_code, error.package or "")
        child = self._refused.get(labels)
        if child is None:
            child = self._refused[labels] = self._requests.labels(*labels)
        child.inc()

    def cache(self, hit: bool) -> None:
        (self._hit if hit else self._miss).inc()

    def lookup(self, seconds: float, failed: bool) -> None:
        if failed:
            self._store_errors.inc()
        else:
            self._lookup_seconds.observe(seconds)

    def kdf(self, seconds: float, matched: bool) -> None:
        (self._matched if matched else self._not_matched).observe(seconds)

    def kdf_refused(self) -> None:
        self._kdf_refusals.inc()

    def plan_refused(self, limit: str) -> None:
        child = self._plan.get(limit)
        if child is None:
            child = self._plan[limit] = self._families.plan_refusals.labels(limit)
        child.inc()

    def redis_error(self, use: str) -> None:
        child = self._redis.get(use)
        if child is None:
            child = self._redis[use] = self._families.redis_errors.labels(use)
        child.inc()

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in the Prometheus text format, and its content type."""
        client = self._client
        return client.generate_latest(self.registry), client.CONTENT_TYPE_LATEST


def metrics_of(telemetry: Telemetry) -> Optional[GateMetrics]:
    """The :class:`GateMetrics` among an app's listeners
    (``get_state(app).telemetry``), or ``None`` when metrics are off.

    .. versionadded:: 0.1
    """
    listeners = telemetry.listeners if isinstance(telemetry, Fanout) else (telemetry,)
    return next((one for one in listeners if isinstance(one, GateMetrics)), None)


def metrics_view() -> Callable[[], Any]:
    """A new view function that answers with the current app's metrics;
    ``init_app`` reserves it for the admin packages and registers it.

    .. versionadded:: 0.1
    """

    def basic_gate_metrics() -> Any:
        metrics = metrics_of(get_state().telemetry)
        if metrics is None:  # registered on an app whose gate has metrics off
            return current_app.response_class("metrics are off\n", 404, mimetype="text/plain")
        body, content_type = metrics.exposition()
        response = current_app.response_class(body, 200, content_type=content_type)
        response.headers["Cache-Control"] = "no-store"
        return response

    return basic_gate_metrics

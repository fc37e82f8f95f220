"""App factories for the HTTP mode, loaded by gunicorn in its workers.

``gunicorn "bench.serve:bare()"`` serves the bare route;
``gunicorn "bench.serve:gate()"`` serves it behind a gate over the SQLite store
named by the ``BENCH_GATE_STORE`` environment variable (cache on, defaults);
``gunicorn "bench.serve:gate_redis()"`` the same with its revocation and
plan counters on the Redis named by ``BENCH_GATE_REDIS``;
``gunicorn "bench.serve:plan_redis()"`` adds an exempt route to it, the
yardstick of the plan-on-Redis case of ``python -m bench --http``;
``gunicorn "bench.serve:flood()"`` adds an exempt route and trusts
``X-Forwarded-For``, for :mod:`bench.flood`; ``flood_short_cache()`` is the
same with a one-second decision cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from bench import peers
from bench.gateapps import gate_app
from flask_basic_gate import BasicGate

#: Environment variable naming the SQLite store the gate app opens.
STORE_ENV = "BENCH_GATE_STORE"
#: Environment variable naming the Redis URL of :func:`gate_redis`.
REDIS_URL_ENV = "BENCH_GATE_REDIS"
#: The route the flood app leaves open (``@gate.exempt``).
EXEMPT_PATH = "/health"


def bare() -> Flask:
    """The bare member route."""
    return peers.bare_app()


def gate() -> Flask:
    """The member route behind the gate."""
    app, _ = gate_app(Path(os.environ[STORE_ENV]), "bench_serve_gate")
    return app


def gate_redis() -> Flask:
    """The member route behind a gate whose revocation and plan counters are
    on the Redis named by ``BENCH_GATE_REDIS``."""
    app, _ = gate_app(
        Path(os.environ[STORE_ENV]),
        "bench_serve_gate_redis",
        BASIC_GATE_REDIS_URL=os.environ[REDIS_URL_ENV],
    )
    return app


def plan_redis() -> Flask:
    """:func:`gate_redis` with an exempt :data:`EXEMPT_PATH`: the same
    server answers the gate with a plan and the route the gate lets by."""
    app, gate = gate_app(
        Path(os.environ[STORE_ENV]),
        "bench_serve_plan_redis",
        BASIC_GATE_REDIS_URL=os.environ[REDIS_URL_ENV],
    )
    _add_exempt(app, gate)
    return app


def _add_exempt(app: Flask, gate: BasicGate) -> None:
    @app.get(EXEMPT_PATH)
    @gate.exempt
    def health() -> dict[str, str]:
        return {"status": "ok"}


def flood_short_cache() -> Flask:
    """:func:`flood` with ``BASIC_GATE_CACHE_TTL = 1``: a valid client's
    key is read again every second (and its secret, if person-chosen, is
    then verified as known good)."""
    return flood(BASIC_GATE_CACHE_TTL=1)


def flood(**config: object) -> Flask:
    """The gate app with an exempt :data:`EXEMPT_PATH`, behind ``ProxyFix(x_for=1)``.

    Every ``BASIC_GATE_*`` setting keeps its default, so a flood measures
    what users get. ``ProxyFix`` makes the last ``X-Forwarded-For`` address
    the request's ``remote_addr``: the attackers of :mod:`bench.flood` come
    from many addresses while their traffic stays on 127.0.0.1.
    """
    app, gate = gate_app(Path(os.environ[STORE_ENV]), "bench_serve_flood", **config)
    _add_exempt(app, gate)

    # Flask's documented idiom: wrap wsgi_app, so the factory still returns
    # the Flask app.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    return app

"""App factories for the HTTP mode, loaded by gunicorn in its workers.

``gunicorn "bench.serve:bare()"`` serves the bare route;
``gunicorn "bench.serve:gate()"`` serves it behind a gate over the SQLite store
named by the ``BENCH_GATE_STORE`` environment variable (cache on, defaults).
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask

from bench import peers
from bench.gateapps import gate_app

#: Environment variable naming the SQLite store the gate app opens.
STORE_ENV = "BENCH_GATE_STORE"


def bare() -> Flask:
    """The bare member route."""
    return peers.bare_app()


def gate() -> Flask:
    """The member route behind the gate."""
    app, _ = gate_app(Path(os.environ[STORE_ENV]), "bench_serve_gate")
    return app

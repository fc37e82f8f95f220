"""The example app for multi-process tests: the same app, plus an open route
that says which worker answered and whether it trusts its cache, and
headers naming the worker and when the gate decided."""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, jsonify

import example_app
from flask_basic_gate import BasicGate
from flask_basic_gate.guard import current_decision

#: The open route each worker answers with its state.
WORKER_PATH = "/_test/worker"


def create_app() -> Flask:
    """``example_app.create_app()`` with :data:`WORKER_PATH`, an
    ``X-Worker`` header (the worker's PID) on every response, and
    ``X-Decided-At`` (the POSIX time the gate decided) on those it decided."""
    app = example_app.create_app()

    @app.get(WORKER_PATH)
    @example_app.gate.exempt
    def worker() -> Any:
        state = BasicGate.state()
        return jsonify(
            pid=os.getpid(),
            trusted=time.time() < state.revocation.trusted_until,
            cached=len(state.cache),
        )

    @app.after_request
    def name_worker(response: Any) -> Any:
        response.headers["X-Worker"] = str(os.getpid())
        decision = current_decision()
        if decision is not None:
            response.headers["X-Decided-At"] = repr(decision.now)
        return response

    return app

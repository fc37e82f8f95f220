"""The example's routes: the members API and an open health check."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify
from werkzeug.exceptions import MethodNotAllowed, NotFound

from flask_basic_gate.errors import error_body

from . import gate
from .members import MEMBERS

__all__ = ["bp", "register_error_handlers"]

bp = Blueprint("members", __name__)


@bp.get("/api/v2/members/<member_id>")
def get_member(member_id: str) -> Any:
    """One member, as the published example answers it.

    Protected: the gate guards every route that is not exempt, so this view
    runs only for a caller whose key and secret are valid.
    """
    member = MEMBERS.get(member_id)
    if member is None:
        return _error(404, "member-not-found", f"No member with id {member_id!r}")
    return jsonify(member)


@bp.get("/api/v2/reports/members")
@gate.required(packages=["reports"])
def member_report() -> Any:
    """How many members there are: reserved for keys of the package ``reports``.

    The demo key (package ``members``) gets 403 ``package-not-authorized``.
    """
    return jsonify(members=len(MEMBERS))


@bp.get("/health")
@gate.exempt
def health() -> Any:
    """Liveness for load balancers and orchestrators: open, no credentials."""
    return jsonify(status="ok")


def _error(status: int, code: str, message: str) -> Response:
    # The same body as the gate's own failures.
    return current_app.response_class(
        error_body(code, message), status, mimetype="application/json"
    )


def register_error_handlers(app: Flask) -> None:
    """Answer unknown URLs and methods in JSON too (the gate's errors already are)."""

    @app.errorhandler(NotFound)
    def not_found(error: NotFound) -> Response:
        return _error(404, "not-found", "The requested URL was not found")

    @app.errorhandler(MethodNotAllowed)
    def method_not_allowed(error: MethodNotAllowed) -> Response:
        response = _error(405, "method-not-allowed", "The method is not allowed for this URL")
        response.headers["Allow"] = ", ".join(error.valid_methods or ())
        return response

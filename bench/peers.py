"""The apps the gate is compared with: a bare route and the usual ways to guard it.

Every app serves the same route with the same small JSON body, so the only
difference between two cases is the authentication in front of it.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
from pathlib import Path
from typing import Optional

from flask import Flask, Response, abort, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String, insert, select
from sqlalchemy.orm import Mapped, mapped_column

#: The key every single-key case authenticates with.
KEY = "bench-key"
#: A secret of the shape the gate generates (43 url-safe characters); it
#: guards nothing outside the benchmark.
SECRET = "bench-secret-0123456789abcdefghijklmnopqrst"


def add_member_route(app: Flask) -> None:
    """Add the route every case serves: ``GET /api/v2/members/<member_id>``."""

    @app.get("/api/v2/members/<member_id>")
    def member(member_id: str) -> dict[str, str]:
        return {"memberId": member_id}


def bare_app() -> Flask:
    """A Flask app with the member route and no authentication."""
    app = Flask("bench_bare")
    add_member_route(app)
    return app


def bare_db_app(path: Path) -> Flask:
    """The bare app with Flask-SQLAlchemy set up on it but unused: the floor of any DB-backed guard.

    Flask-SQLAlchemy removes the scoped session when each app context ends,
    so an app that has it pays for that on every request, guard or not.
    """
    app = Flask("bench_bare_db")
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{path}"
    SQLAlchemy().init_app(app)
    add_member_route(app)
    return app


def hook_floor_app(path: Path) -> Flask:
    """:func:`bare_db_app` plus a ``before_request`` function that does nothing.

    The floor of any guard built as a ``before_request`` on an app with
    Flask-SQLAlchemy: what Flask's hook dispatch and the session teardown
    cost before the guard does any work.
    """
    app = bare_db_app(path)

    @app.before_request
    def nothing() -> None:
        return None

    return app


def httpauth_app() -> Flask:
    """Flask-HTTPAuth: ``verify_password`` over a plaintext dict and ``hmac.compare_digest``."""
    from flask_httpauth import HTTPBasicAuth  # type: ignore[import-untyped]

    app = Flask("bench_httpauth")
    auth = HTTPBasicAuth()
    users = {KEY: SECRET}

    @auth.verify_password  # type: ignore[untyped-decorator]
    def verify_password(username: str, password: str) -> Optional[str]:
        stored = users.get(username)
        if stored is not None and hmac.compare_digest(stored.encode(), password.encode()):
            return username
        return None

    @app.get("/api/v2/members/<member_id>")
    @auth.login_required  # type: ignore[untyped-decorator]
    def member(member_id: str) -> dict[str, str]:
        return {"memberId": member_id}

    return app


def basicauth_app() -> Optional[Flask]:
    """Flask-BasicAuth forcing auth on every route, or ``None`` when it is not installed."""
    if importlib.util.find_spec("flask_basicauth") is None:
        return None
    from flask_basicauth import BasicAuth  # type: ignore[import-untyped]

    app = Flask("bench_basicauth")
    app.config.update(BASIC_AUTH_FORCE=True, BASIC_AUTH_USERNAME=KEY, BASIC_AUTH_PASSWORD=SECRET)
    BasicAuth(app)
    add_member_route(app)
    return app


def naive_db_app(path: Path, keys: int) -> Flask:
    """A ``before_request`` that runs an ORM query per request and compares a SHA-256 digest.

    This is what a hand-written guard usually looks like: ``db.session.execute(select(...))``
    in a fresh session on every request. The database at ``path`` is rebuilt
    with ``keys`` keys, one of them :data:`KEY`.
    """
    db = SQLAlchemy()

    class ApiKey(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "naive_api_key"
        key: Mapped[str] = mapped_column(String(64), primary_key=True)
        secret_sha256: Mapped[str] = mapped_column(String(64))

    app = Flask("bench_naive_db")
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{path}"
    db.init_app(app)
    path.unlink(missing_ok=True)
    with app.app_context():
        db.create_all()
        rows = [
            {"key": f"naive-{i:07d}", "secret_sha256": _sha256(f"naive-secret-{i}")}
            for i in range(keys - 1)
        ]
        rows.append({"key": KEY, "secret_sha256": _sha256(SECRET)})
        db.session.execute(insert(ApiKey), rows)
        db.session.commit()

    @app.before_request
    def guard() -> Optional[Response]:
        auth = request.authorization
        if auth is None or auth.type != "basic" or auth.username is None or auth.password is None:
            abort(401)
        row = db.session.execute(
            select(ApiKey).where(ApiKey.key == auth.username)
        ).scalar_one_or_none()
        if row is None or not hmac.compare_digest(row.secret_sha256, _sha256(auth.password)):
            abort(403)
        return None

    add_member_route(app)
    return app


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()

"""The key store on every backend: lookups, rotation, hashing, admin API."""

from __future__ import annotations

import datetime as dt
import os
import warnings
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event

from flask_basic_gate import AdminError, BasicGate
from flask_basic_gate.hashing import GENERATED, KDF, PLAINTEXT

from .support.apps import AppFactory, provision, store_of
from .support.backends import backend_url


@pytest.fixture
def backend_app(app_factory: AppFactory, database_url: str) -> Flask:
    """The standard app on each backend, with cache off so every request reads."""
    app = app_factory({"BASIC_GATE_CACHE_TTL": 0}, url=database_url)
    provision(app)
    return app


def policy_of(app: Flask) -> Any:
    return BasicGate.state(app).policy


def test_success_and_failures(backend_app: Flask, auth: Any) -> None:
    client = backend_app.test_client()
    assert client.get("/thing", headers=auth("criticalmix", "topsecret")).status_code == 200
    assert client.get("/thing", headers=auth("criticalmix", "wrong")).status_code == 403
    assert client.get("/thing", headers=auth("nobody", "topsecret")).status_code == 403


@pytest.mark.parametrize("key", ["CRITICALMIX", "Criticalmix", "criticalmix ", " criticalmix"])
def test_key_case_sensitive_everywhere(backend_app: Flask, auth: Any, key: str) -> None:
    response = backend_app.test_client().get("/thing", headers=auth(key, "topsecret"))
    assert response.status_code == 403
    assert response.get_json()["errorCode"] == "invalid-credentials"


def test_keys_differing_in_case_are_two_keys(backend_app: Flask, auth: Any) -> None:
    provision(backend_app, key="CriticalMix", secret="other")
    client = backend_app.test_client()
    assert (
        client.get("/thing", headers=auth("CriticalMix", "other")).get_json()["key"]
        == "CriticalMix"
    )
    assert client.get("/thing", headers=auth("criticalmix", "topsecret")).get_json()["key"] == (
        "criticalmix"
    )
    assert client.get("/thing", headers=auth("CriticalMix", "topsecret")).status_code == 403


def test_non_ascii_key_and_secret(backend_app: Flask, auth: Any) -> None:
    provision(backend_app, key="jürgen-ключ", secret="päss-秘密")
    response = backend_app.test_client().get("/thing", headers=auth("jürgen-ключ", "päss-秘密"))
    assert response.get_json()["key"] == "jürgen-ключ"


def test_rotation_grace_then_expiry(backend_app: Flask, auth: Any) -> None:
    with backend_app.app_context():
        new = store_of(backend_app).rotate_secret("criticalmix", grace=60)
    client = backend_app.test_client()
    assert client.get("/thing", headers=auth("criticalmix", "topsecret")).status_code == 200
    assert client.get("/thing", headers=auth("criticalmix", new.secret)).status_code == 200
    policy = policy_of(backend_app)
    real = policy.clock
    policy.clock = lambda: real() + 61
    old = client.get("/thing", headers=auth("criticalmix", "topsecret"))
    assert old.status_code == 403
    assert old.get_json()["errorCode"] == "invalid-credentials"
    assert client.get("/thing", headers=auth("criticalmix", new.secret)).status_code == 200


def test_rotation_without_grace(backend_app: Flask, auth: Any) -> None:
    with backend_app.app_context():
        new = store_of(backend_app).rotate_secret("criticalmix", "chosen-by-me")
        assert new.secret == "chosen-by-me"
        assert [k.secrets for k in store_of(backend_app).list_keys()] == [1]
    client = backend_app.test_client()
    assert client.get("/thing", headers=auth("criticalmix", "topsecret")).status_code == 403
    assert client.get("/thing", headers=auth("criticalmix", "chosen-by-me")).status_code == 200


def test_secret_with_own_expiry(backend_app: Flask, auth: Any) -> None:
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    with backend_app.app_context():
        store_of(backend_app).add_secret("criticalmix", "temporary", expires_at=past)
    response = backend_app.test_client().get("/thing", headers=auth("criticalmix", "temporary"))
    assert response.status_code == 403
    assert response.get_json()["errorCode"] == "invalid-credentials"


def test_validity_window(backend_app: Flask, auth: Any) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    client = backend_app.test_client()
    with backend_app.app_context():
        store_of(backend_app).set_validity("criticalmix", expires_at=now + dt.timedelta(hours=1))
    assert client.get("/thing", headers=auth("criticalmix", "topsecret")).status_code == 200
    policy = policy_of(backend_app)
    real = policy.clock
    policy.clock = lambda: real() + 7200
    response = client.get("/thing", headers=auth("criticalmix", "topsecret"))
    assert response.get_json()["errorCode"] == "key-inactive"


def test_admin_errors_write_nothing(backend_app: Flask) -> None:
    store = store_of(backend_app)
    with backend_app.app_context():
        with pytest.raises(AdminError, match="no package"):
            store.create_key("nosuch", key="k1", secret="s")
        with pytest.raises(AdminError, match="exists already"):
            store.create_key("members", key="criticalmix", secret="s")
        with pytest.raises(AdminError, match="exists already"):
            store.create_package("members")
        with pytest.raises(AdminError, match="no key"):
            store.disable_key("nosuch")
        with pytest.raises(AdminError, match="no key"):
            store.rotate_secret("CRITICALMIX")
        with pytest.raises(AdminError):
            store.create_key("members", key="bad:key", secret="s")
        with pytest.raises(AdminError):
            store.create_key("members", key="k2", secret="")
        assert [k.key for k in store.list_keys()] == ["criticalmix"]
        assert store.list_keys()[0].secrets == 1


def test_generated_key_and_secret(backend_app: Flask, auth: Any) -> None:
    with backend_app.app_context():
        made = store_of(backend_app).create_key("members", owner_email="dev@example.com")
    assert len(made.secret) >= 43
    assert made.secret not in repr(made)
    response = backend_app.test_client().get("/thing", headers=auth(made.key, made.secret))
    assert response.get_json()["owner"] == "dev@example.com"


def _stored(app: Flask) -> list[tuple[str, str]]:
    models = store_of(app).models
    with app.app_context():
        rows = (
            app.extensions["sqlalchemy"].session.execute(models.KeySecret.__table__.select()).all()
        )
        return [(row.method, row.value) for row in rows]


def test_hash_methods_per_secret(backend_app: Flask) -> None:
    with backend_app.app_context():
        generated = store_of(backend_app).create_key("members", key="gen")
    stored = dict(_stored(backend_app))
    assert set(stored) == {GENERATED, KDF}
    assert stored[KDF].startswith("pbkdf2:sha256:1000$")
    assert "topsecret" not in stored[KDF]
    assert generated.secret not in stored[GENERATED]


def test_default_kdf_is_scrypt(app_factory: AppFactory, auth: Any) -> None:
    app = app_factory({"BASIC_GATE_HASH_METHOD": "scrypt"})
    provision(app)
    assert dict(_stored(app))[KDF].startswith("scrypt:")
    assert (
        app.test_client().get("/thing", headers=auth("criticalmix", "topsecret")).status_code == 200
    )


def test_db_file_never_holds_supplied_secret(app_factory: AppFactory, tmp_path: Any) -> None:
    app = app_factory()
    supplied = "Supplied-Secret-7f3a9c"
    provision(app, key="person", secret=supplied)
    with app.app_context():
        generated = store_of(app).create_key("members", key="machine").secret
        store_of(app).rotate_secret("person", "Rotated-Secret-1b2c3d", grace=30)
    data = (tmp_path / "gate.sqlite").read_bytes()
    for secret in (supplied, "Rotated-Secret-1b2c3d", generated):
        assert secret.encode() not in data
    assert b"person" in data  # the file is the one the store wrote


def test_plaintext_only_when_asked(app_factory: AppFactory, tmp_path: Any, auth: Any) -> None:
    with pytest.warns(UserWarning):
        app = app_factory({"BASIC_GATE_STORE_PLAINTEXT_SECRETS": True})
    provision(app, key="legacy", secret="Readable-Secret-42")
    assert dict(_stored(app)) == {PLAINTEXT: "Readable-Secret-42"}
    assert (
        app.test_client().get("/thing", headers=auth("legacy", "Readable-Secret-42")).status_code
        == 200
    )
    assert (
        app.test_client().get("/thing", headers=auth("legacy", "readable-secret-42")).status_code
        == 403
    )


def test_damaged_hash_never_matches(app_factory: AppFactory, auth: Any) -> None:
    app = app_factory()
    provision(app)
    models = store_of(app).models
    with app.app_context():
        session = app.extensions["sqlalchemy"].session
        session.execute(models.KeySecret.__table__.update().values(method=KDF, value="garbage"))
        session.commit()
    response = app.test_client().get("/thing", headers=auth("criticalmix", "topsecret"))
    assert response.status_code == 403


def test_bind_key(app_factory: AppFactory, tmp_path: Any, auth: Any) -> None:
    app = app_factory(
        {
            "SQLALCHEMY_BINDS": {"auth": f"sqlite:///{tmp_path / 'auth.sqlite'}"},
            "BASIC_GATE_BIND_KEY": "auth",
        }
    )
    provision(app)
    assert (
        app.test_client().get("/thing", headers=auth("criticalmix", "topsecret")).status_code == 200
    )
    assert b"criticalmix" in (tmp_path / "auth.sqlite").read_bytes()


def test_recovers_when_tables_come_back(backend_app: Flask, auth: Any) -> None:
    client = backend_app.test_client()
    db = backend_app.extensions["sqlalchemy"]
    with backend_app.app_context():
        db.drop_all()
    assert client.get("/thing", headers=auth("criticalmix", "topsecret")).status_code == 503
    with backend_app.app_context():
        db.create_all()
    provision(backend_app)
    assert client.get("/thing", headers=auth("criticalmix", "topsecret")).status_code == 200


KILL_OTHERS = {
    "postgresql": "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()",
    "mariadb": "SELECT id FROM information_schema.processlist"
    " WHERE id <> connection_id() AND db = database()",
}


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_dropped_connection_retried_once(
    app_factory: AppFactory, tmp_path: Any, auth: Any, backend: str
) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    url = backend_url(backend, tmp_path)
    app = app_factory({"BASIC_GATE_CACHE_TTL": 0}, url=url)
    provision(app)
    client = app.test_client()
    assert client.get("/thing", headers=auth("criticalmix", "topsecret")).status_code == 200
    # The server drops every pooled connection, as a restart would.
    killer = create_engine(url, poolclass=NullPool)
    with killer.connect() as conn:
        rows = conn.execute(text(KILL_OTHERS[backend])).all()
        if backend == "mariadb":
            for (ident,) in rows:
                conn.execute(text(f"KILL {int(ident)}"))
    killer.dispose()
    assert rows
    response = client.get("/thing", headers=auth("criticalmix", "topsecret"))
    assert response.status_code == 200
    assert client.get("/thing", headers=auth("criticalmix", "wrong")).status_code == 403


# -- connections kept for lookups -------------------------------------------

OK = ("criticalmix", "topsecret")


def test_lookups_keep_one_connection(backend_app: Flask, auth: Any) -> None:
    engine = store_of(backend_app).engine
    client = backend_app.test_client()
    assert [client.get("/thing", headers=auth(*OK)).status_code for _ in range(3)] == [200] * 3
    assert engine.pool.checkedout() == 1


def cold_app(app_factory: AppFactory, url: str, *, connections: int) -> Flask:
    """A provisioned app with the cache off that keeps ``connections`` for lookups."""
    app = app_factory(
        {
            "BASIC_GATE_CACHE_TTL": 0,
            "BASIC_GATE_LOOKUP_CONNECTIONS": connections,
            # Wrong secrets from one address would throttle the right one,
            # and every request runs the (cheap) KDF: neither bound is tested here.
            "BASIC_GATE_FAILURE_LIMIT": "off",
            "BASIC_GATE_KDF_BUDGET": "off",
        },
        url=url,
    )
    provision(app)
    return app


def test_lookup_connections_zero_gives_each_back(
    app_factory: AppFactory, database_url: str, auth: Any
) -> None:
    app = cold_app(app_factory, database_url, connections=0)
    assert app.test_client().get("/thing", headers=auth(*OK)).status_code == 200
    assert store_of(app).engine.pool.checkedout() == 0


def test_kept_connection_sees_another_process_change_at_once(
    app_factory: AppFactory, database_url: str, auth: Any
) -> None:
    # Two apps on one database stand for two worker processes. The kept
    # connection is in autocommit, so it holds no snapshot (MariaDB's
    # REPEATABLE READ would otherwise keep showing the key as active).
    serving = app_factory({"BASIC_GATE_CACHE_TTL": 0}, url=database_url)
    provision(serving)
    admin = app_factory(url=database_url, create=False)
    client = serving.test_client()
    assert client.get("/thing", headers=auth(*OK)).status_code == 200
    with admin.app_context():
        store_of(admin).disable_key("criticalmix")
    assert client.get("/thing", headers=auth(*OK)).status_code == 403
    with admin.app_context():
        store_of(admin).enable_key("criticalmix")
    assert client.get("/thing", headers=auth(*OK)).status_code == 200


def test_kept_connection_idles_outside_a_transaction(
    app_factory: AppFactory, tmp_path: Any, auth: Any
) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    url = backend_url("postgresql", tmp_path)
    app = app_factory({"BASIC_GATE_CACHE_TTL": 0}, url=url)
    provision(app)
    assert app.test_client().get("/thing", headers=auth(*OK)).status_code == 200
    observer = create_engine(url, poolclass=NullPool)
    with observer.connect() as conn:
        states = conn.execute(
            text(
                "SELECT state FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalars()
        seen = sorted(states)
    observer.dispose()
    assert seen
    assert "idle in transaction" not in seen


def test_dispose_closes_kept_connections(backend_app: Flask, auth: Any) -> None:
    engine = store_of(backend_app).engine
    engine.dispose()
    opened: list[Any] = []
    closed: list[Any] = []
    event.listen(engine, "connect", lambda dbapi_conn, record: opened.append(dbapi_conn))
    event.listen(engine, "close", lambda dbapi_conn, record: closed.append(dbapi_conn))
    client = backend_app.test_client()
    assert client.get("/thing", headers=auth(*OK)).status_code == 200
    assert len(opened) == 1 and closed == []  # kept
    engine.dispose()
    assert closed == opened  # closed, not handed to the disposed pool
    assert client.get("/thing", headers=auth(*OK)).status_code == 200
    assert engine.pool.checkedout() == 1


def test_kept_connections_under_threads(
    app_factory: AppFactory, database_url: str, auth: Any
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    app = cold_app(app_factory, database_url, connections=2)

    def calls(secret: str) -> list[int]:
        client = app.test_client()
        headers = auth("criticalmix", secret)
        return [client.get("/thing", headers=headers).status_code for _ in range(25)]

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(calls, ["topsecret", "wrong"] * 3))
    assert results == [[200] * 25, [403] * 25] * 3
    assert store_of(app).engine.pool.checkedout() <= 2


def in_autocommit(dbapi_connection: Any) -> bool:
    """The driver's own autocommit flag (sqlite3, psycopg or PyMySQL)."""
    if hasattr(dbapi_connection, "get_autocommit"):
        return bool(dbapi_connection.get_autocommit())
    if hasattr(dbapi_connection, "isolation_level"):
        return dbapi_connection.isolation_level is None
    return bool(dbapi_connection.autocommit)


def test_released_connections_leave_autocommit(backend_app: Flask, auth: Any) -> None:
    store = store_of(backend_app)
    engine = store.engine
    engine.dispose()
    assert backend_app.test_client().get("/thing", headers=auth(*OK)).status_code == 200
    store.release_connections()
    assert engine.pool.checkedout() == 0
    assert engine.pool.checkedin() == 1  # the kept one, given back
    conn = engine.raw_connection()
    try:
        assert not in_autocommit(conn.dbapi_connection)
    finally:
        conn.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_opens_its_own_connection(app_factory: AppFactory, auth: Any) -> None:
    app = app_factory({"BASIC_GATE_CACHE_TTL": 0})
    provision(app)
    client = app.test_client()
    assert client.get("/thing", headers=auth(*OK)).status_code == 200
    connects: list[int] = []
    engine = store_of(app).engine
    event.listen(engine, "connect", lambda *args: connects.append(1))
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() when other threads exist; none is
        # ours, and the child only serves one request.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report, then leave without running pytest's exit
        try:
            status = client.get("/thing", headers=auth(*OK)).status_code
            os.write(write_end, f"{status} {len(connects)}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as reader:
        child = reader.read()
    assert child == "200 1"  # it connected anew instead of using ours
    assert client.get("/thing", headers=auth(*OK)).status_code == 200
    assert connects == []  # and ours still works, untouched

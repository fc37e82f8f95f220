"""The example app as a real HTTP server on 127.0.0.1, with real clients.

``requests`` (which sends non-ASCII ``str`` credentials as ISO-8859-1 and
``bytes`` as they are), the standard library's ``urllib.request`` (which
sends credentials only after a 401 challenge naming the realm) and ``curl``.
One test runs ``flask --app example_app run`` as a process with no setting
at all, as the README's first command does.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
from flask import Flask

from example_app.provision import DEMO_KEY, DEMO_SECRET
from flask_basic_gate import BasicGate, request_authenticated, request_rejected
from flask_basic_gate.testing import basic_auth_header

from .support import ROOT
from .support.apps import FAST_KDF
from .support.example import M0001, MEMBER_PATH, MakeApp
from .support.servers import child_env, flask_run, http_session, serve_in_thread

pytestmark = [pytest.mark.server, pytest.mark.usefixtures("no_flask_environment")]

#: Non-ASCII credentials, made through the store.
KEY, SECRET = "clé", "päss"
CURL = shutil.which("curl")


def app_with_non_ascii_key(make_example_app: MakeApp, **config: Any) -> Flask:
    """The example app (``TESTING`` off) on SQLite in tmp_path, with a non-ASCII key too."""
    app = make_example_app(testing=False, **config)
    with app.app_context():
        BasicGate.state().store.create_key("members", key=KEY, secret=SECRET)
    return app


@pytest.fixture
def app(make_example_app: MakeApp) -> Flask:
    return app_with_non_ascii_key(make_example_app)


@pytest.fixture
def url(app: Flask) -> Iterator[str]:
    """The base URL of the example app served on 127.0.0.1."""
    with serve_in_thread(app) as base:
        yield base


# -- requests -------------------------------------------------------------------


def test_requests_demo_key(url: str) -> None:
    with http_session() as client:
        response = client.get(url + MEMBER_PATH, auth=(DEMO_KEY, DEMO_SECRET))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == M0001


def test_requests_failures(url: str) -> None:
    with http_session() as client:
        missing = client.get(url + MEMBER_PATH)
        wrong = client.get(url + MEMBER_PATH, auth=(DEMO_KEY, "wrong"))
        health = client.get(url + "/health")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Basic realm="api", charset="UTF-8"'
    assert missing.json()["errorCode"] == "authorization-required"
    assert wrong.status_code == 403
    assert "WWW-Authenticate" not in wrong.headers
    assert wrong.json()["errorCode"] == "invalid-credentials"
    assert (health.status_code, health.json()) == (200, {"status": "ok"})


def test_requests_non_ascii_str_is_sent_latin1(url: str) -> None:
    with http_session() as client:
        response = client.get(url + MEMBER_PATH, auth=(KEY, SECRET))
    sent = response.request.headers["Authorization"]
    assert sent == basic_auth_header(KEY, SECRET, encoding="iso-8859-1")
    assert response.status_code == 200
    assert response.json() == M0001


def test_requests_non_ascii_utf8_bytes(url: str) -> None:
    with http_session() as client:
        # requests sends bytes credentials as they are (its stubs say str only).
        auth: Any = (KEY.encode(), SECRET.encode())
        response = client.get(url + MEMBER_PATH, auth=auth)
    sent = response.request.headers["Authorization"]
    assert sent == basic_auth_header(KEY, SECRET, encoding="utf-8")
    assert response.status_code == 200


def test_requests_non_ascii_wrong_secret(url: str) -> None:
    with http_session() as client:
        response = client.get(url + MEMBER_PATH, auth=(KEY, "pass"))
    assert response.status_code == 403


# -- urllib.request ----------------------------------------------------------------


class BasicAuthHandler(urllib.request.HTTPBasicAuthHandler):
    """The standard handler, closing the 401 response it answers.

    urllib retries with credentials but leaves the challenge's response (and
    its socket) open, which ``filterwarnings = error`` turns into a failure.
    """

    def http_error_401(self, req: Any, fp: Any, code: int, msg: str, headers: Any) -> Any:
        try:
            retried = super().http_error_401(req, fp, code, msg, headers)
        except urllib.error.HTTPError:
            fp.close()
            raise
        if retried is not None:
            fp.close()
        return retried


def opener(url: str, key: str, secret: str, realm: Optional[str]) -> urllib.request.OpenerDirector:
    """An opener that answers a Basic challenge for ``realm`` (any when None)."""
    if realm is None:
        passwords: urllib.request.HTTPPasswordMgr = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    else:
        passwords = urllib.request.HTTPPasswordMgr()
    # None is the catch-all realm of HTTPPasswordMgrWithDefaultRealm.
    passwords.add_password(realm, url, key, secret)  # type: ignore[arg-type]
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), BasicAuthHandler(passwords))


def outcomes(app: Flask) -> list[str]:
    """What the gate decided, request by request (filled by signals)."""
    seen: list[str] = []

    def authenticated(sender: Flask, key: Any, **extra: Any) -> None:
        seen.append(f"ok {key.key}")

    def rejected(sender: Flask, error_code: str, **extra: Any) -> None:
        seen.append(error_code)

    request_authenticated.connect(authenticated, app, weak=False)
    request_rejected.connect(rejected, app, weak=False)
    return seen


@pytest.mark.parametrize("realm", ["api", None], ids=["realm-api", "default-realm"])
@pytest.mark.parametrize(("key", "secret"), [(DEMO_KEY, DEMO_SECRET), (KEY, SECRET)])
def test_urllib_answers_the_challenge(
    app: Flask, url: str, realm: Optional[str], key: str, secret: str
) -> None:
    seen = outcomes(app)
    with opener(url, key, secret, realm).open(url + MEMBER_PATH, timeout=30) as response:
        status, body = response.status, json.load(response)
    assert (status, body) == (200, M0001)
    # Sent without credentials first, then again after the 401 challenge.
    assert seen == ["authorization-required", f"ok {key}"]


def test_urllib_wrong_secret_is_403(url: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        opener(url, DEMO_KEY, "wrong", "api").open(url + MEMBER_PATH, timeout=30)
    with info.value as error:
        assert error.code == 403
        assert json.load(error)["errorCode"] == "invalid-credentials"


def test_urllib_other_realm_sends_no_credentials(url: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        opener(url, DEMO_KEY, DEMO_SECRET, "elsewhere").open(url + MEMBER_PATH, timeout=30)
    with info.value as error:
        assert error.code == 401
        assert error.headers["WWW-Authenticate"] == 'Basic realm="api", charset="UTF-8"'


def test_urllib_in_mashery_mode_gets_no_challenge(make_example_app: MakeApp) -> None:
    # Why RFC mode is the default: without a 401 challenge, clients that
    # wait for one never send their credentials.
    app = app_with_non_ascii_key(
        make_example_app, BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE=True
    )
    with serve_in_thread(app) as url, pytest.raises(urllib.error.HTTPError) as info:
        opener(url, DEMO_KEY, DEMO_SECRET, "api").open(url + MEMBER_PATH, timeout=30)
    with info.value as error:
        assert error.code == 403
        assert error.headers["X-Mashery-Error-Code"] == "ERR_403_NOT_AUTHORIZED"
        assert json.load(error)["errorCode"] == "authorization-required"


# -- curl ------------------------------------------------------------------------------


def curl(*args: str) -> tuple[int, dict[str, str], bytes]:
    """Run curl; return the status, the headers (lower-case names) and the body."""
    if CURL is None:
        pytest.skip("curl is not installed")
    done = subprocess.run(
        [CURL, "--silent", "--show-error", "--noproxy", "*", "--include", *args],
        capture_output=True,
        check=True,
        timeout=60,
    )
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def test_curl_demo_key(url: str) -> None:
    status, headers, body = curl("-u", f"{DEMO_KEY}:{DEMO_SECRET}", url + MEMBER_PATH)
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == M0001


def test_curl_failures(url: str) -> None:
    status, headers, body = curl(url + MEMBER_PATH)
    assert status == 401
    assert headers["www-authenticate"] == 'Basic realm="api", charset="UTF-8"'
    assert json.loads(body) == {
        "errorCode": "authorization-required",
        "errorMessage": "Authorization is Required",
        "errors": [],
    }
    status, headers, body = curl("-u", f"{DEMO_KEY}:wrong", url + MEMBER_PATH)
    assert status == 403
    assert "www-authenticate" not in headers
    assert json.loads(body)["errorCode"] == "invalid-credentials"


def test_curl_non_ascii_utf8(url: str) -> None:
    status, _, body = curl("-u", f"{KEY}:{SECRET}", url + MEMBER_PATH)
    assert status == 200
    assert json.loads(body) == M0001


# -- flask run, no settings at all --------------------------------------------------


def test_flask_run_with_no_settings(tmp_path: Path) -> None:
    # A copy of the example, so its instance folder (and SQLite file) is made
    # in tmp_path; the default KDF (scrypt) stores the demo secret.
    shutil.copytree(
        ROOT / "example_app",
        tmp_path / "example_app",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    with flask_run(tmp_path, env=child_env()) as server:
        with http_session() as client:
            ok = client.get(server.url + MEMBER_PATH, auth=(DEMO_KEY, DEMO_SECRET))
            missing = client.get(server.url + MEMBER_PATH)
            wrong = client.get(server.url + MEMBER_PATH, auth=(DEMO_KEY, "wrong"))
            health = client.get(server.url + "/health")
        output = server.output
    assert (ok.status_code, ok.json()) == (200, M0001)
    assert (missing.status_code, missing.json()["errorCode"]) == (401, "authorization-required")
    assert (wrong.status_code, wrong.json()["errorCode"]) == (403, "invalid-credentials")
    assert health.status_code == 200
    assert "DEMO credential" in output
    assert DEMO_SECRET not in output

    database = tmp_path / "instance" / "example.sqlite"
    assert DEMO_SECRET.encode() not in database.read_bytes()
    with sqlite3.connect(database) as conn:
        [(method, value)] = conn.execute("SELECT method, value FROM basic_gate_secret").fetchall()
    conn.close()
    assert method == "werkzeug"
    assert value.startswith("scrypt:")


# -- several workers starting at once -----------------------------------------------


def test_workers_starting_at_once_provision_one_demo_key(tmp_path: Path) -> None:
    # Like the workers of a WSGI server, each making the app on a new database.
    database = tmp_path / "shared.sqlite"
    env = child_env(
        FLASK_SQLALCHEMY_DATABASE_URI=f"sqlite:///{database}",
        FLASK_BASIC_GATE_HASH_METHOD=FAST_KDF,
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", "from example_app import create_app; create_app()"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=120)[0])
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    assert [worker.returncode for worker in workers] == [0, 0, 0, 0], outputs
    assert sum("DEMO credential" in output for output in outputs) == 1, outputs
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT key FROM basic_gate_key").fetchall()
    conn.close()
    assert rows == [(DEMO_KEY,)]

"""The admin pages in-process (``BASIC_GATE_ADMIN``): who gets in, the
headers, the form checks, the one-time secret, every change, the pages'
markup and the template override. ``test_admin_browser.py`` drives the same
pages in a real browser against a real server."""

from __future__ import annotations

import configparser
import datetime as dt
import fnmatch
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from sqlalchemy import select

from flask_basic_gate import BasicGate, ConfigurationError, admin_changed
from flask_basic_gate.admin.chart import usage_chart
from flask_basic_gate.admin.csrf import form_token, origin_problem, token_problem
from flask_basic_gate.records import SecretRecord
from flask_basic_gate.testing import basic_auth_headers

from .support.admin import (
    ADMIN_KEY,
    ADMIN_SECRET,
    PREFIX,
    SECURITY_HEADERS,
    AdminClient,
    Markup,
    admin_app,
    new_secret,
)
from .support.apps import AppFactory, provision, store_of
from .support.servers import child_env

pytestmark = pytest.mark.usefixtures("no_flask_environment")

PAGES = ["/", "/key?key=criticalmix", "/packages", "/package?name=members", "/usage"]


@pytest.fixture
def app(app_factory: AppFactory) -> Flask:
    return admin_app(app_factory)


@pytest.fixture
def admin(app: Flask) -> AdminClient:
    return AdminClient(app)


def api(app: Flask, key: str = "criticalmix", secret: str = "topsecret") -> tuple[int, Any]:
    response = app.test_client().get("/thing", headers=basic_auth_headers(key, secret))
    return response.status_code, response.get_json()


# -- on, off, where --------------------------------------------------------------


def test_off_by_default_and_not_imported(app_factory: AppFactory, tmp_path: Path) -> None:
    app = app_factory()
    provision(app, ADMIN_KEY, ADMIN_SECRET, package="admin")
    response = app.test_client().get(
        PREFIX + "/", headers=basic_auth_headers(ADMIN_KEY, ADMIN_SECRET)
    )
    assert response.status_code == 404
    # Nothing of the admin pages is imported unless they are on.
    code = (
        "import sys; from tests.support.apps import gate_app;"
        f" app, _ = gate_app('sqlite:///{tmp_path / 'off.sqlite'}');"
        " print('flask_basic_gate.admin' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=child_env(), capture_output=True, text=True
    )
    assert result.stdout.strip() == "False", result.stderr


def test_url_prefix_moves_the_pages(app_factory: AppFactory) -> None:
    app = admin_app(app_factory, {"BASIC_GATE_ADMIN_URL_PREFIX": "/ops/gate/"})
    client = app.test_client()
    headers = basic_auth_headers(ADMIN_KEY, ADMIN_SECRET)
    assert client.get("/ops/gate/", headers=headers).status_code == 200
    assert client.get("/ops/gate/packages", headers=headers).status_code == 200
    assert client.get(PREFIX + "/", headers=headers).status_code == 404
    assert app.config["BASIC_GATE_ADMIN_URL_PREFIX"] == "/ops/gate"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"BASIC_GATE_ADMIN_URL_PREFIX": "/"}, "BASIC_GATE_ADMIN_URL_PREFIX"),
        ({"BASIC_GATE_ADMIN_URL_PREFIX": "//"}, "below the root"),
        ({"BASIC_GATE_ADMIN_URL_PREFIX": "admin"}, "BASIC_GATE_ADMIN_URL_PREFIX"),
        ({"BASIC_GATE_ADMIN": "maybe"}, "BASIC_GATE_ADMIN"),
        ({"BASIC_GATE_EXEMPT_METHODS": ["OPTIONS", "GET"]}, "remove GET from"),
        ({"BASIC_GATE_EXEMPT_METHODS": "post"}, "remove POST from"),
    ],
)
def test_settings_are_checked(
    app_factory: AppFactory, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        app_factory({"BASIC_GATE_ADMIN": True, **config})


def test_exempt_get_is_fine_while_the_pages_are_off(app_factory: AppFactory) -> None:
    app = app_factory({"BASIC_GATE_EXEMPT_METHODS": ["OPTIONS", "GET"]})
    assert BasicGate.state(app).settings.admin is False


# -- who gets in --------------------------------------------------------------------


@pytest.mark.parametrize("protect_all", [True, False])
def test_only_admin_keys_get_in(app_factory: AppFactory, protect_all: bool) -> None:
    app = admin_app(app_factory, {"BASIC_GATE_PROTECT_ALL": protect_all})
    client = app.test_client()
    for path in PAGES:
        anonymous = client.get(PREFIX + path)
        assert anonymous.status_code == 401, path
        assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="api", charset="UTF-8"'
        assert "<h1>Sign in</h1>" in anonymous.get_data(as_text=True)
        member = client.get(PREFIX + path, headers=basic_auth_headers("criticalmix", "topsecret"))
        assert member.status_code == 403, path
        assert "package-not-authorized" in member.get_data(as_text=True)
        assert "<h1>Not an admin key</h1>" in member.get_data(as_text=True)
        wrong = client.get(PREFIX + path, headers=basic_auth_headers(ADMIN_KEY, "wrong"))
        assert wrong.status_code == 403 and "invalid-credentials" in wrong.get_data(as_text=True)
        assert AdminClient(app).get(path).status_code == 200, path
    # A member posting a form gets the same 403, and nothing changes.
    member = AdminClient(app, "criticalmix", "topsecret")
    assert member.post("/key", {"key": ADMIN_KEY, "action": "disable"}, token="x").status_code == (
        403
    )
    assert store_of(app).show_key(ADMIN_KEY).status == "active"


def test_admin_packages_setting_decides(app_factory: AppFactory) -> None:
    app = admin_app(app_factory, {"BASIC_GATE_ADMIN_PACKAGES": "ops, sre"})
    provision(app, "pager", "pager-secret", package="sre")
    assert AdminClient(app).get("/").status_code == 403  # package admin is not one now
    assert AdminClient(app, "pager", "pager-secret").get("/").status_code == 200


def test_mashery_mode_refuses_without_a_challenge(app_factory: AppFactory) -> None:
    app = admin_app(app_factory, {"BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE": True})
    anonymous = app.test_client().get(PREFIX + "/")
    assert anonymous.status_code == 403
    assert "WWW-Authenticate" not in anonymous.headers
    assert anonymous.headers["X-Mashery-Error-Code"] == "ERR_403_NOT_AUTHORIZED"
    page = anonymous.get_data(as_text=True)
    assert "<h1>Sign in</h1>" in page and "send the <code>Authorization</code> header" in page
    assert AdminClient(app).get("/").status_code == 200


def test_report_only_never_opens_the_pages(
    app_factory: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "flask_basic_gate"):
        app = admin_app(app_factory, {"BASIC_GATE_REPORT_ONLY": True})
        client = app.test_client()
        anonymous = client.get(PREFIX + "/")
        # The gate's own pages are never opened by a dry run: it refuses.
        assert "would-refuse key=" not in caplog.text
        assert anonymous.status_code == 401 and "WWW-Authenticate" in anonymous.headers
        member = client.get(PREFIX + "/", headers=basic_auth_headers("criticalmix", "topsecret"))
        assert member.status_code == 403
        wrong = client.get(PREFIX + "/", headers=basic_auth_headers(ADMIN_KEY, "wrong"))
        assert wrong.status_code == 403
        assert AdminClient(app).get("/").status_code == 200
        for response in (anonymous, member, wrong):
            for name, value in SECURITY_HEADERS.items():
                assert response.headers[name] == value


# -- headers and markup ---------------------------------------------------------------


def test_security_headers_on_every_answer(app: Flask, admin: AdminClient) -> None:
    client = app.test_client()
    answers = [admin.get(path) for path in PAGES]
    answers.append(admin.get("/key?key=nobody"))
    answers.append(admin.get("/static/basic_gate_admin.css"))
    answers.append(client.get(PREFIX + "/"))
    answers.append(client.get(PREFIX + "/", headers=basic_auth_headers("criticalmix", "topsecret")))
    admin.get("/")
    answers.append(admin.post("/key", {"key": "criticalmix", "action": "disable"}, token=None))
    assert [r.status_code for r in answers] == [200] * 5 + [404, 200, 401, 403, 403]
    for response in answers:
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value, (response.request.path, name)
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "script-src 'none'" in csp


@pytest.mark.parametrize("path", PAGES)
def test_no_script_nothing_from_elsewhere(admin: AdminClient, path: str) -> None:
    page = admin.get(path).get_data(as_text=True)
    markup = Markup(page)
    assert markup.all("script") == []
    assert [name for _, attrs in markup.tags for name in attrs if name.startswith("on")] == []
    assert "style=" not in page and "<style" not in page
    for _, attrs in markup.tags:
        for name in ("src", "href", "action"):
            assert "//" not in attrs.get(name, ""), (path, attrs)
    stylesheets = [a["href"] for a in markup.all("link") if a.get("rel") == "stylesheet"]
    assert stylesheets == [PREFIX + "/static/basic_gate_admin.css"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_are_labelled_for_keyboard_and_screen_reader(admin: AdminClient, path: str) -> None:
    admin.get("/key?key=criticalmix")
    admin.get(path)
    markup = Markup(admin.page)
    assert markup.all("html")[0]["lang"] == "en"
    assert [h for h in markup.headings if h[0] == "h1"] and len(
        [h for h in markup.headings if h[0] == "h1"]
    ) == 1
    assert markup.all("a")[0] == {"class": "skip", "href": "#main"}
    assert markup.all("main")[0]["id"] == "main"
    assert any("width=device-width" in m.get("content", "") for m in markup.all("meta"))
    labels = {attrs.get("for") for attrs in markup.all("label")}
    fields = [
        attrs
        for tag, attrs in markup.tags
        if tag in ("input", "select", "textarea") and attrs.get("type") != "hidden"
    ]
    assert fields or path == "/usage", path
    for attrs in fields:
        assert attrs.get("id") in labels, (path, attrs)
    ids = [attrs["id"] for _, attrs in markup.tags if "id" in attrs]
    assert len(ids) == len(set(ids)), path
    for _, attrs in markup.tags:
        for reference in attrs.get("aria-describedby", "").split():
            assert reference in ids, (path, reference)
    current = [a for a in markup.all("a") if a.get("aria-current") == "page"]
    assert len(current) == 1
    for attrs in markup.all("button"):
        assert attrs.get("type") == "submit"
    # Headings do not skip a level.
    levels = [int(tag[1]) for tag, _ in markup.headings]
    assert all(b <= a + 1 for a, b in zip(levels, levels[1:])), (path, markup.headings)


# -- the form checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "headers", "reason"),
    [
        (None, {"Origin": "http://localhost"}, "the form carries no token"),
        ("forged", {"Origin": "http://localhost"}, "not the one of the key that sent it"),
        ("page", {"Origin": "https://attacker.example"}, "sent from https://attacker.example"),
        ("page", {"Origin": "http://localhost:8080"}, "sent from http://localhost:8080"),
        ("page", {"Sec-Fetch-Site": "cross-site", "Origin": "null"}, "another site"),
        ("page", {"Sec-Fetch-Site": "same-site"}, "another site"),
        ("page", {"Referer": "https://attacker.example/form"}, "sent from https://attacker"),
        ("page", {}, "neither where it comes from"),
        ("page", {"Origin": "null"}, "neither where it comes from"),
    ],
)
def test_post_refused_nothing_changed(
    app: Flask,
    admin: AdminClient,
    token: Any,
    headers: dict[str, str],
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = store_of(app)
    admin.get("/key?key=criticalmix")
    with caplog.at_level(logging.WARNING, "flask_basic_gate"):
        response = admin.post(
            "/key", {"key": "criticalmix", "action": "disable"}, token=token, headers=headers
        )
    assert response.status_code == 403
    assert reason in response.get_data(as_text=True)
    assert store.show_key("criticalmix").status == "active"
    assert api(app)[0] == 200
    refused = [
        r for r in caplog.records if getattr(r, "basic_gate", {}).get("event") == ("admin-refused")
    ]
    assert len(refused) == 1 and refused[0].basic_gate["admin"] == ADMIN_KEY  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://localhost"},
        # What a browser sends under the pages' Referrer-Policy: no-referrer.
        {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "same-origin"},
        {"Referer": "http://localhost/basic-gate/admin/key"},
        {"Origin": "HTTP://LOCALHOST", "Sec-Fetch-Site": "same-origin"},
    ],
)
def test_post_from_this_site_with_its_token(
    app: Flask, admin: AdminClient, headers: dict[str, str]
) -> None:
    admin.get("/key?key=criticalmix")
    response = admin.post("/key", {"key": "criticalmix", "action": "disable"}, headers=headers)
    assert response.status_code == 200
    assert store_of(app).show_key("criticalmix").status == "disabled"


def test_token_is_bound_to_the_admin_credential(app_factory: AppFactory) -> None:
    app = admin_app(app_factory, {"SECRET_KEY": "one"})
    provision(app, "deputy", "deputy-secret", package="admin")
    boss, deputy = AdminClient(app), AdminClient(app, "deputy", "deputy-secret")
    boss.get("/")
    deputy.get("/")
    assert boss.token != deputy.token
    # The deputy's form with the boss's token: refused.
    refused = deputy.post("/key", {"key": "criticalmix", "action": "disable"}, token=boss.token)
    assert refused.status_code == 403
    # The same token on every page and in a second process with the same SECRET_KEY.
    first = boss.token
    boss.get("/packages")
    assert boss.token == first
    twin = app_factory({"BASIC_GATE_ADMIN": True, "SECRET_KEY": "one"}, create=False)
    other = app_factory({"BASIC_GATE_ADMIN": True, "SECRET_KEY": "two"}, create=False)
    twin_client, other_client = AdminClient(twin), AdminClient(other)
    twin_client.get("/")
    other_client.get("/")
    assert twin_client.token == first and other_client.token != first
    # Rotating the admin key's secret ends its tokens, even while the old
    # secret still works.
    store_of(app).rotate_secret(ADMIN_KEY, "boss-new", grace=3600)
    assert boss.post(
        "/key", {"key": "criticalmix", "action": "disable"}, token=first
    ).status_code == (403)
    assert store_of(app).show_key("criticalmix").status == "active"
    boss.get("/")
    assert boss.token != first


# -- changes ----------------------------------------------------------------------------


def test_disable_and_enable(app: Flask, admin: AdminClient) -> None:
    admin.get("/key?key=criticalmix")
    assert '<button type="submit" name="action" value="disable"' in admin.page
    page = admin.post("/key", {"key": "criticalmix", "action": "disable"}).get_data(as_text=True)
    assert "Key criticalmix disabled" in page
    assert "within 30 seconds (BASIC_GATE_CACHE_TTL)" in page
    assert "Saved in sqlite:///" in page
    status, body = api(app)
    assert (status, body["errorCode"]) == (403, "key-inactive")
    assert '<button type="submit" name="action" value="enable">Enable</button>' in page
    admin.post("/key", {"key": "criticalmix", "action": "enable"})
    assert api(app)[0] == 200


def test_notice_says_a_change_was_announced_on_redis(
    app_factory: AppFactory, redis_url: str
) -> None:
    app = admin_app(app_factory, {"BASIC_GATE_REDIS_URL": redis_url})
    try:
        admin = AdminClient(app)
        admin.get("/key?key=criticalmix")
        page = admin.post("/key", {"key": "criticalmix", "action": "disable"}).get_data(
            as_text=True
        )
        assert "announced on Redis" in page
    finally:
        BasicGate.state(app).revocation.close()


def stored_values(app: Flask) -> list[str]:
    store = store_of(app)
    with store.engine.connect() as conn:
        return list(conn.execute(select(store.models.KeySecret.__table__.c.value)).scalars())


def test_secret_shown_once_never_stored_on_a_page(app: Flask, admin: AdminClient) -> None:
    admin.get("/")
    response = admin.post("/keys", {"package": "members", "key": "fresh", "owner": "Ada"})
    secret = new_secret(admin.page)
    assert response.status_code == 200 and secret
    assert api(app, "fresh", secret)[0] == 200
    pages = [admin.get(path).get_data(as_text=True) for path in [*PAGES, "/key?key=fresh"]]
    for page in pages:
        assert secret not in page and 'id="new-secret"' not in page
        for value in stored_values(app):
            assert value not in page
    # Rotation: the new secret works, the old one does not, a page shown
    # again never holds it.
    admin.get("/key?key=fresh")
    admin.post("/key", {"key": "fresh", "action": "rotate", "secrets": _fingerprint(admin)})
    rotated = new_secret(admin.page)
    assert rotated and rotated != secret
    assert api(app, "fresh", rotated)[0] == 200
    assert api(app, "fresh", secret)[0] == 403
    again = admin.get("/key?key=fresh").get_data(as_text=True)
    assert rotated not in again and 'id="new-secret"' not in again


def _fingerprint(admin: AdminClient) -> str:
    found = re.search(r'name="secrets" value="([^"]+)"', admin.page)
    assert found is not None
    return found[1]


def test_rotation_form_sent_twice_rotates_once(app: Flask, admin: AdminClient) -> None:
    admin.get("/key?key=criticalmix")
    form = {"key": "criticalmix", "action": "rotate", "secrets": _fingerprint(admin), "grace": "60"}
    admin.post("/key", form)
    first = new_secret(admin.page)
    assert first and "the previous ones work for 60 more seconds" in admin.page
    assert api(app)[0] == 200  # the old secret, within its grace
    again = admin.post("/key", form)
    assert again.status_code == 409 and new_secret(admin.page) is None
    assert "nothing was rotated" in admin.page
    assert api(app, "criticalmix", first)[0] == 200


def test_changes_are_logged_and_signalled(
    app: Flask, admin: AdminClient, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[tuple[str, str, str, dict[str, Any]]] = []

    def receiver(
        sender: Flask, admin: Any, action: str, target: str, changes: Any, **extra: Any
    ) -> None:
        assert sender is app
        heard.append((admin.key, action, target, changes))

    admin_changed.connect(receiver, app)
    try:
        with caplog.at_level(logging.INFO, "flask_basic_gate"):
            admin.get("/")
            admin.post("/keys", {"package": "members", "key": "k2"})
            created = new_secret(admin.page)
            admin.post("/key", {"key": "k2", "action": "disable"})
            admin.post("/key", {"key": "k2", "action": "enable"})
            admin.post("/key", {"key": "k2", "action": "rotate", "secrets": _fingerprint(admin)})
            rotated = new_secret(admin.page)
            admin.post(
                "/key",
                {"key": "k2", "action": "details", "expires": "2999-01-01", "owner": "Grace"},
            )
            admin.post("/key", {"key": "k2", "action": "limits", "qps": "5", "quota_exempt": "on"})
            admin.post("/key", {"key": "k2", "action": "delete-confirmed"})
            admin.post("/packages", {"name": "gold", "qps": "9", "quota": "100", "period": "hour"})
            admin.post("/package", {"name": "gold", "qps": "", "quota": "5", "period": "day"})
    finally:
        admin_changed.disconnect(receiver, app)
    assert [(a, action, target) for a, action, target, _ in heard] == [
        (ADMIN_KEY, "create-key", "k2"),
        (ADMIN_KEY, "disable-key", "k2"),
        (ADMIN_KEY, "enable-key", "k2"),
        (ADMIN_KEY, "rotate-secret", "k2"),
        (ADMIN_KEY, "update-key", "k2"),
        (ADMIN_KEY, "update-key", "k2"),
        (ADMIN_KEY, "delete-key", "k2"),
        (ADMIN_KEY, "create-package", "gold"),
        (ADMIN_KEY, "update-package", "gold"),
    ]
    assert heard[4][3]["expires"] == "2999-01-01T00:00:00Z" and heard[4][3]["owner"] == "Grace"
    assert heard[5][3] == {"qps": 5, "quota": None, "qps_exempt": False, "quota_exempt": True}
    assert heard[8][3] == {"qps": None, "quota": "5/day"}
    lines = [
        r for r in caplog.records if getattr(r, "basic_gate", {}).get("event") == "admin-change"
    ]
    assert len(lines) == 9
    assert lines[1].getMessage() == (
        "admin-change admin='boss' action='disable-key' target='k2' changes={}"
    )
    assert created and rotated
    for record in caplog.records:
        for secret in (created, rotated, ADMIN_SECRET):
            assert secret not in record.getMessage()
    assert all(created not in repr(c) and rotated not in repr(c) for *_, c in heard)


def test_validity_and_owner(app: Flask, admin: AdminClient) -> None:
    store = store_of(app)
    admin.get("/key?key=criticalmix")
    bad = admin.post("/key", {"key": "criticalmix", "action": "details", "expires": "2001-01-01"})
    assert bad.status_code == 400 and "is in the past" in admin.page
    assert "Nothing was changed" in admin.page
    bad = admin.post("/key", {"key": "criticalmix", "action": "details", "not_before": "soon"})
    assert bad.status_code == 400 and "is not an ISO 8601 date" in admin.page
    assert store.show_key("criticalmix").not_before is None
    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)).strftime("%Y-%m-%d")
    admin.post(
        "/key",
        {
            "key": "criticalmix",
            "action": "details",
            "not_before": later,
            "owner": "Ada",
            "developer": "ada@example.com",
        },
    )
    info = store.show_key("criticalmix")
    assert (info.state, info.owner_name, info.owner_email) == (
        "not-yet-valid",
        "Ada",
        "ada@example.com",
    )
    assert "its state is not-yet-valid" in admin.page
    assert api(app)[1]["errorCode"] == "key-inactive"
    # An expiry already past may stay as it is while other fields change.
    store.update_key("criticalmix", not_before=None, expires_at=dt.datetime(2001, 1, 1))
    admin.get("/key?key=criticalmix")
    ok = admin.post(
        "/key",
        {
            "key": "criticalmix",
            "action": "details",
            "expires": "2001-01-01T00:00:00Z",
            "owner": "B",
        },
    )
    assert ok.status_code == 200 and store.show_key("criticalmix").owner_name == "B"


def test_limits(app: Flask, admin: AdminClient) -> None:
    store = store_of(app)
    store.update_package("members", qps=100, quota="1000/hour")
    admin.get("/key?key=criticalmix")
    assert "100 calls per second; 1,000 calls per hour" in admin.page
    admin.post("/key", {"key": "criticalmix", "action": "limits", "qps": "7", "quota": "2"})
    limits = store.key_limits("criticalmix")
    assert (limits.qps, limits.quota, limits.qps_exempt, limits.quota_exempt) == (
        7,
        2,
        False,
        False,
    )
    assert "7 calls per second; 2 calls per hour" in admin.page
    answers = [api(app) for _ in range(3)]
    assert [status for status, _ in answers[:2]] == [200, 200]
    assert answers[2][1]["errorCode"] == "quota-exceeded"
    admin.post("/key", {"key": "criticalmix", "action": "limits", "quota_exempt": "on"})
    assert store.key_limits("criticalmix").quota_exempt is True
    assert api(app)[0] == 200
    bad = admin.post("/key", {"key": "criticalmix", "action": "limits", "qps": "-1"})
    assert bad.status_code == 400 and "Nothing was changed" in admin.page
    limits = store.key_limits("criticalmix")
    assert (limits.qps, limits.quota, limits.quota_exempt) == (None, None, True)


def test_delete_asks_first(app: Flask, admin: AdminClient) -> None:
    store = store_of(app)
    admin.get("/key?key=criticalmix")
    confirm = admin.post("/key", {"key": "criticalmix", "action": "delete"})
    assert confirm.status_code == 200
    assert "<h1>Delete key" in admin.page and 'value="delete-confirmed"' in admin.page
    assert store.show_key("criticalmix")
    admin.post("/key", {"key": "criticalmix", "action": "delete-confirmed"})
    assert "Key criticalmix and its secrets deleted" in admin.page
    assert [info.key for info in store.list_keys()] == [ADMIN_KEY]
    gone = admin.get("/key?key=criticalmix")
    assert gone.status_code == 404


def test_the_admin_cannot_lock_itself_out(app: Flask, admin: AdminClient) -> None:
    for action in ("disable", "delete", "delete-confirmed"):
        admin.get(f"/key?key={ADMIN_KEY}")
        refused = admin.post("/key", {"key": ADMIN_KEY, "action": action})
        assert refused.status_code == 409 and "would lock you out" in admin.page, action
    assert store_of(app).show_key(ADMIN_KEY).state == "active"
    admin.get(f"/key?key={ADMIN_KEY}")
    admin.post("/key", {"key": ADMIN_KEY, "action": "rotate", "secrets": _fingerprint(admin)})
    assert "sign in again with the new secret" in admin.page
    rotated = new_secret(admin.page)
    assert rotated and AdminClient(app, ADMIN_KEY, rotated).get("/").status_code == 200


def test_names_are_escaped(app: Flask, admin: AdminClient) -> None:
    hostile = '<img src=x onerror="alert(1)">&'
    store_of(app).create_key("members", key=hostile, secret="s", owner_name=hostile)
    for path in ["/", "/key?key=" + quote(hostile), "/?q=" + quote(hostile)]:
        page = admin.get(path).get_data(as_text=True)
        assert hostile not in page, path
        assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;&amp;" in page, path


def test_unknown_action_and_key(app: Flask, admin: AdminClient) -> None:
    admin.get("/")
    assert admin.post("/key", {"key": "criticalmix", "action": "explode"}).status_code == 400
    admin.get("/")
    assert admin.post("/key", {"key": "nobody", "action": "disable"}).status_code == 404
    assert admin.get("/key?key=nobody").status_code == 404
    assert admin.get("/package?name=nope").status_code == 404
    assert admin.get("/?state=paused").status_code == 400


def test_packages_create_and_edit_and_the_api_follows(app: Flask, admin: AdminClient) -> None:
    store = store_of(app)
    admin.get("/packages")
    bad = admin.post("/packages", {"name": "gold", "qps": "x"})
    assert bad.status_code == 400 and [p.name for p in store.list_packages()] == [
        "admin",
        "members",
    ]
    assert 'value="gold"' in admin.page  # what was typed is kept
    admin.post("/packages", {"name": "gold", "qps": "9", "quota": "100", "period": "hour"})
    gold = next(p for p in store.list_packages() if p.name == "gold")
    assert (gold.qps, gold.quota, gold.quota_period) == (9, 100, "hour")
    assert "Package gold created" in admin.page
    admin.get("/package?name=members")
    admin.post("/package", {"name": "members", "qps": "", "quota": "2", "period": "day"})
    members = next(p for p in store.list_packages() if p.name == "members")
    assert (members.qps, members.quota, members.quota_period) == (None, 2, "day")
    answers = [api(app) for _ in range(3)]
    assert [status for status, _ in answers[:2]] == [200, 200]
    assert answers[2][1]["errorCode"] == "quota-exceeded"
    admin.post("/package", {"name": "members", "qps": "", "quota": "", "period": "day"})
    assert api(app)[0] == 200


def test_keys_page(app: Flask, admin: AdminClient) -> None:
    store = store_of(app)
    for number in range(60):
        store.create_key(
            "members", key=f"bulk-{number:02d}", secret="s", owner_email=f"d{number}@x.org"
        )
    store.disable_key("bulk-07")
    first = Markup(admin.get("/").get_data(as_text=True))
    rows = [a for a in first.all("a") if a.get("href", "").startswith(PREFIX + "/key?key=")]
    assert len(rows) == 50
    assert "62 keys; this page shows boss to bulk-48." in admin.page
    link = re.search(r'<th scope="row"><a href="([^"]+)">([^<]+)</a></th>', admin.page)
    assert link is not None and link[1] == PREFIX + "/key?key=boss" and link[2] == "boss"
    following = re.search(r'<a href="([^"]+)" rel="next">Next page</a>', admin.page)
    assert following is not None
    second = admin.client.get(following[1].replace("&amp;", "&"), headers=admin.headers)
    assert "bulk-49 to criticalmix" in second.get_data(as_text=True)
    assert 'rel="prev">Previous page' in second.get_data(as_text=True)
    found = admin.get("/?q=D7%40X")
    assert "1 key matches" in admin.page and "bulk-07" in admin.page
    assert found.status_code == 200
    admin.get("/?state=disabled")
    assert "1 key matches; this page shows bulk-07 to bulk-07." in admin.page
    options = re.findall(
        r'<option value="([^"]*)"', admin.page.split('id="state"')[1].split("</select>")[0]
    )
    # The store has no "waiting" state: the filter offers the four it has.
    assert options == ["", "active", "disabled", "expired", "not-yet-valid", "waiting"]
    admin.get("/?package=admin")
    assert "1 key matches" in admin.page


def test_usage_page_and_chart(app: Flask, admin: AdminClient) -> None:
    for _ in range(3):
        api(app)
    api(app, "criticalmix", "wrong")
    store_of(app).disable_key("criticalmix")
    api(app)
    page = admin.get("/usage").get_data(as_text=True)
    today_section = page.split("<h2")[1]
    calls = today_section.split("Top keys by refusals")[0]
    assert re.search(
        r"criticalmix</a></th>\s*<td>members</td>\s*<td class=\"number\">5</td>", calls
    )
    refusals = today_section.split("Top keys by refusals", 1)[1]
    assert "invalid-credentials 1, key-inactive 1" in refusals
    assert "Yesterday" in page
    key_page = admin.get("/key?key=criticalmix").get_data(as_text=True)
    assert '<rect class="allowed"' in key_page and '<rect class="blocked"' in key_page
    assert "3 allowed, 1 blocked, 1 other" in key_page


def test_usage_off(app_factory: AppFactory) -> None:
    app = admin_app(app_factory, {"BASIC_GATE_USAGE": False})
    admin = AdminClient(app)
    assert "BASIC_GATE_USAGE is off" in admin.get("/usage").get_data(as_text=True)
    assert "BASIC_GATE_USAGE is off" in admin.get("/key?key=criticalmix").get_data(as_text=True)


def test_chart_numbers() -> None:
    last = dt.date(2027, 1, 31)
    chart = usage_chart(
        [(last, 6, 2, 2), (dt.date(2027, 1, 30), 1, 0, 0), (dt.date(2026, 1, 1), 99, 0, 0)], last
    )
    assert len(chart.bars) == 30 and chart.top == 10
    assert chart.days[0].day == dt.date(2027, 1, 2)
    bar = chart.bars[-1]
    # Stacked from the base up: allowed, then blocked, then other, to the ceiling.
    room = chart.base - chart.ceiling
    assert bar.allowed == pytest.approx((chart.base - 0.6 * room, 0.6 * room))
    assert bar.blocked == pytest.approx((chart.base - 0.8 * room, 0.2 * room))
    assert bar.other == pytest.approx((chart.ceiling, 0.2 * room))
    assert chart.bars[-2].allowed[1] == pytest.approx(0.1 * room)
    assert chart.total.calls == 11
    empty = usage_chart([], last)
    assert empty.top == 1 and all(b.allowed[1] == 0 for b in empty.bars)


# -- templates ---------------------------------------------------------------------------


def test_app_templates_override_the_packages(app_factory: AppFactory, tmp_path: Path) -> None:
    folder = tmp_path / "templates" / "basic_gate" / "admin"
    folder.mkdir(parents=True)
    (folder / "keys.html").write_text(
        '{% extends "basic_gate/admin/base.html" %}{% block content %}'
        "<h1>Our keys</h1>{{ page.total }}{% endblock %}",
        encoding="utf-8",
    )
    app = admin_app(app_factory)
    app.template_folder = str(tmp_path / "templates")
    admin = AdminClient(app)
    assert "<h1>Our keys</h1>2" in admin.get("/").get_data(as_text=True)
    assert "<h1>Packages</h1>" in admin.get("/packages").get_data(as_text=True)


def test_templates_and_stylesheet_ship_in_wheel_and_sdist() -> None:
    root = Path(__file__).resolve().parents[1]
    package = root / "flask_basic_gate" / "admin"
    shipped = sorted(
        path.relative_to(package).as_posix()
        for folder in ("templates", "static")
        for path in (package / folder).rglob("*")
        if path.is_file()
    )
    assert "templates/basic_gate/admin/keys.html" in shipped
    assert "static/basic_gate_admin.css" in shipped
    setup = configparser.ConfigParser()
    setup.read(root / "setup.cfg", encoding="utf-8")
    globs = setup["options.package_data"]["flask_basic_gate.admin"].split()
    assert [p for p in shipped if not any(fnmatch.fnmatch(p, g) for g in globs)] == []
    manifest = (root / "MANIFEST.in").read_text(encoding="utf-8").splitlines()
    assert "graft flask_basic_gate/admin/templates" in manifest
    assert "graft flask_basic_gate/admin/static" in manifest


# -- the checks themselves ----------------------------------------------------------------


def test_origin_rules() -> None:
    def problem(**headers: str) -> Any:
        named = {name.replace("_", "-").title(): value for name, value in headers.items()}
        return origin_problem("https", "Gate.Example:8443", named)

    assert problem(origin="https://gate.example:8443") is None
    assert problem(origin="null", sec_fetch_site="same-origin") is None
    assert problem(referer="https://gate.example:8443/x?y") is None
    assert "http://gate.example:8443" in problem(origin="http://gate.example:8443")
    assert problem(origin="https://gate.example") is not None
    assert problem(origin="https://gate.example:8443", sec_fetch_site="cross-site") is not None
    assert problem(sec_fetch_site="none") is not None
    assert problem(origin="null") is not None
    assert problem() is not None


def test_token_rules() -> None:
    secrets = [SecretRecord(2, "sha256", "b" * 64, None), SecretRecord(1, "scrypt", "a", 5.0)]
    token = form_token(None, 1, "boss", secrets)
    assert token == form_token(None, 1, "boss", list(reversed(secrets)))
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    others = {
        form_token(b"key", 1, "boss", secrets),
        form_token(None, 2, "boss", secrets),
        form_token(None, 1, "bos", secrets),
        form_token(None, 1, "boss", secrets[:1]),
        form_token(None, 1, "boss", [SecretRecord(2, "sha256", "c" * 64, None), secrets[1]]),
    }
    assert token not in others and len(others) == 5
    assert token_problem(token, token) is None
    assert token_problem(token, "") == "the form carries no token"
    assert token_problem(token, None) == "the form carries no token"
    assert token_problem(token, "é" * 43) is not None

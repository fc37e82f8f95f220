"""The admin pages in a real browser against a real server.

Headless Chromium, driven by Selenium, against ``flask --app example_app
run`` with ``BASIC_GATE_ADMIN`` on (``tests.support.browser``): an operator
signs in through the browser's own Basic authentication, finds a key,
disables and enables it, rotates its secret, edits a package's quota, and
the API follows each change; a key of another package, a form without its
token and a form posted from another site are refused with nothing changed.

Screenshots of each page are saved, at desktop and phone widths, into
``tmp_path``; ``BASIC_GATE_SCREENSHOTS=1 python -m pytest
tests/test_admin_browser.py`` writes them into ``docs/_static/admin/``.
Skipped without selenium, chromium or chromedriver, except under ``CI=true``.
"""

from __future__ import annotations

import datetime as dt
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import insert

from example_app.provision import DEMO_KEY, DEMO_SECRET
from flask_basic_gate.usage import today

from .support import ROOT
from .support.admin import PREFIX
from .support.apps import FAST_KDF, dispose, store_of
from .support.browser import (
    WAIT,
    chromium,
    require_chromium,
    screenshot,
    screenshot_folder,
    send_authorization,
)
from .support.example import MEMBER_PATH, example_app_at
from .support.servers import child_env, flask_run, http_session, serve_in_thread

pytestmark = pytest.mark.server

ADMIN, ADMIN_SECRET = "ops-admin", "admin-secret-1234"
#: Keys of the seeded database: (key, package, owner, developer); secret "<key>-secret".
KEYS = [
    ("acme-mobile", "members", "Acme mobile app", "mobile@acme.example"),
    ("acme-web", "members", "Acme web shop", "web@acme.example"),
    ("acme-batch", "members", "Acme nightly batch", "batch@acme.example"),
    ("globex-partner", "partners", "Globex", "api@globex.example"),
    ("initech-reports", "partners", "Initech reporting", "bill@initech.example"),
    ("old-integration", "members", "Retired integration", None),
    ("soylent-beta", "trial", "Soylent beta", "beta@soylent.example"),
    ("trial-key", "trial", "Trial account", "trial@example.org"),
    ("umbrella-ci", "members", "Umbrella CI", "ci@umbrella.example"),
]


class Site:
    """The example app served by ``flask run``, and an app on the same
    database in this process to set up and inspect the keys."""

    def __init__(self, app: Flask, url: str, env: dict[str, str], folder: Path) -> None:
        self.app = app
        self.url = url
        self.env = env
        self.folder = folder
        self.store = store_of(app)

    def admin_url(self, path: str = "/", key: str = ADMIN, secret: str = ADMIN_SECRET) -> str:
        """The page's URL with credentials, which the browser answers the challenge with."""
        return self.url.replace("://", f"://{key}:{secret}@") + PREFIX + path

    def api(self, key: str, secret: str) -> tuple[int, Any]:
        with http_session() as client:
            response = client.get(self.url + MEMBER_PATH, auth=(key, secret))
        return response.status_code, response.json()


def seed(app: Flask) -> None:
    """Packages, keys in each state, and 29 days of usage before today."""
    store = store_of(app)
    store.create_package("admin")
    store.create_key("admin", key=ADMIN, secret=ADMIN_SECRET, owner_name="Operations")
    store.create_package("partners", qps=10, quota="10000/day")
    store.create_package("trial", qps=2, quota="100/day")
    for key, package, owner, developer in KEYS:
        store.create_key(
            package, key=key, secret=f"{key}-secret", owner_name=owner, owner_email=developer
        )
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    store.disable_key("old-integration")
    store.update_key("soylent-beta", not_before=now + dt.timedelta(days=7))
    store.update_key("initech-reports", expires_at=now - dt.timedelta(days=3))
    first = today() - dt.timedelta(days=29)
    rows = []
    for offset in range(29):
        day = first + dt.timedelta(days=offset)
        for number, key in enumerate(["acme-mobile", "acme-web", "globex-partner"]):
            allowed = 400 + (offset * 37 + number * 101) % 350 - number * 120
            blocked = (offset * 13 + number * 7) % 40 if offset % 6 else 90
            other = (offset * 5 + number) % 12
            rows.append(
                {
                    "key": key,
                    "day": day,
                    "package": "partners" if key == "globex-partner" else "members",
                    "allowed": allowed,
                    "blocked": blocked,
                    "other": other,
                    "quota_exceeded": blocked,
                    "invalid_credentials": other,
                }
            )
    with store.engine.begin() as conn:
        conn.execute(insert(store.models.Usage.__table__), rows)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require_chromium()  # skip (or fail in CI) before anything starts
    folder = tmp_path_factory.mktemp("admin-browser")
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("FLASK_"):
                patch.delenv(name)
        app = example_app_at(folder, EXAMPLE_DEMO_KEY=True)
    seed(app)
    env = child_env(
        FLASK_SQLALCHEMY_DATABASE_URI=f"sqlite:///{folder / 'example.sqlite'}",
        FLASK_BASIC_GATE_ADMIN="true",
        FLASK_BASIC_GATE_HASH_METHOD=FAST_KDF,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    try:
        with flask_run(folder, env=env) as server:
            yield Site(app, server.url, env, folder)
    finally:
        dispose(app)


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


# -- page helpers ---------------------------------------------------------------------


def by(kind: str) -> Any:
    from selenium.webdriver.common.by import By

    return getattr(By, kind)


def wait(driver: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT)


def heading(driver: Any) -> str:
    text: str = driver.find_element(by("TAG_NAME"), "h1").text
    return text


def show(driver: Any, url: str) -> None:
    driver.get(url)
    wait(driver).until(lambda d: d.find_elements(by("TAG_NAME"), "h1"))


def wait_replaced(driver: Any, old: Any) -> None:
    """Wait until the page holding ``old`` has been replaced."""
    from selenium.common.exceptions import WebDriverException

    def replaced(d: Any) -> bool:
        # Gone with its document: chromedriver says so as a stale element,
        # or (newer ones, mid-swap) as a node that belongs to no document.
        try:
            old.is_enabled()
        except WebDriverException:
            return True
        return False

    wait(driver).until(replaced)


def submit(driver: Any, button: Any) -> None:
    """Click a submit button and wait for the page the answer brings."""

    old = driver.find_element(by("TAG_NAME"), "html")
    button.click()
    wait_replaced(driver, old)
    wait(driver).until(lambda d: d.find_elements(by("TAG_NAME"), "h1"))


def button(driver: Any, label: str) -> Any:
    return driver.find_element(by("XPATH"), f"//button[normalize-space()='{label}']")


def field(driver: Any, element_id: str, value: str) -> None:
    element = driver.find_element(by("ID"), element_id)
    element.clear()
    element.send_keys(value)


def notice(driver: Any) -> str:
    text: str = driver.find_element(by("CSS_SELECTOR"), "[role=status]").text
    return text


def sign_in(driver: Any, site: Site, path: str = "/") -> None:
    show(driver, site.admin_url(path))
    assert driver.find_element(by("CSS_SELECTOR"), ".who strong").text == ADMIN


def open_key(driver: Any, site: Site, key: str) -> None:
    show(driver, f"{site.url}{PREFIX}/key?key={key}")
    assert heading(driver) == f"Key {key}"


# -- the scenarios ------------------------------------------------------------------------


def test_sign_in_and_find_a_key(site: Site, browser: Any) -> None:
    sign_in(browser, site)
    assert heading(browser) == "Keys"
    field(browser, "q", "ACME-MOB")
    submit(browser, button(browser, "Search"))
    assert browser.find_element(by("ID"), "count").text.startswith("1 key matches")
    rows = browser.find_elements(by("CSS_SELECTOR"), "table.keys tbody tr")
    assert len(rows) == 1
    link = rows[0].find_element(by("CSS_SELECTOR"), "th a")
    assert link.text == "acme-mobile"
    submit(browser, link)
    assert heading(browser) == "Key acme-mobile"
    facts = browser.find_element(by("CSS_SELECTOR"), "dl.facts").text
    assert "Acme mobile app" in facts and "mobile@acme.example" in facts
    # The 30 days drawn on the server: one bar group a day.
    assert len(browser.find_elements(by("CSS_SELECTOR"), "figure.chart svg g")) == 30


def test_filter_by_state(site: Site, browser: Any) -> None:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def settled(read: Any) -> Any:
        # Read again until the page holds still: a node of the page being
        # replaced raises while the browser swaps documents.
        return WebDriverWait(browser, WAIT, ignored_exceptions=(WebDriverException,)).until(
            lambda d: read(d) or None
        )

    sign_in(browser, site)
    states = settled(lambda d: [o.text for o in Select(d.find_element(by("ID"), "state")).options])
    assert states == ["any state", "active", "disabled", "expired", "not-yet-valid", "waiting"]
    for state, key in [
        ("disabled", "old-integration"),
        ("expired", "initech-reports"),
        ("not-yet-valid", "soylent-beta"),
    ]:
        Select(browser.find_element(by("ID"), "state")).select_by_visible_text(state)
        submit(browser, button(browser, "Search"))
        links = settled(
            lambda d: [a.text for a in d.find_elements(by("CSS_SELECTOR"), "table.keys tbody th a")]
        )
        assert links == [key], state


def test_disable_then_enable(site: Site, browser: Any) -> None:
    secret = "acme-mobile-secret"
    assert site.api("acme-mobile", secret)[0] == 200
    sign_in(browser, site)
    open_key(browser, site, "acme-mobile")
    submit(browser, button(browser, "Disable"))
    assert "Key acme-mobile disabled" in notice(browser)
    assert "within 30 seconds (BASIC_GATE_CACHE_TTL)" in notice(browser)
    status, body = site.api("acme-mobile", secret)
    assert (status, body["errorCode"]) == (403, "key-inactive")
    assert site.store.show_key("acme-mobile").state == "disabled"
    submit(browser, button(browser, "Enable"))
    assert "Key acme-mobile enabled" in notice(browser)
    assert site.api("acme-mobile", secret)[0] == 200


def test_rotate_secret(site: Site, browser: Any) -> None:
    old = "acme-web-secret"
    assert site.api("acme-web", old)[0] == 200
    sign_in(browser, site)
    open_key(browser, site, "acme-web")
    field(browser, "grace", "0")
    submit(browser, button(browser, "Rotate secret"))
    new = browser.find_element(by("ID"), "new-secret").text
    assert len(new) >= 40 and new != old
    assert site.api("acme-web", new)[0] == 200
    assert site.api("acme-web", old)[1]["errorCode"] == "invalid-credentials"
    open_key(browser, site, "acme-web")
    assert browser.find_elements(by("ID"), "new-secret") == []
    assert new not in browser.page_source
    assert site.api("acme-web", new)[0] == 200


def test_edit_a_package_quota(site: Site, browser: Any) -> None:
    from selenium.webdriver.support.ui import Select

    sign_in(browser, site, "/packages")
    submit(browser, browser.find_element(by("LINK_TEXT"), "trial"))
    assert heading(browser) == "Package trial"
    field(browser, "qps", "")
    field(browser, "quota", "2")
    Select(browser.find_element(by("ID"), "period")).select_by_visible_text("hour")
    submit(browser, button(browser, "Save plan"))
    assert "Package trial's plan saved" in notice(browser)
    trial = next(p for p in site.store.list_packages() if p.name == "trial")
    assert (trial.qps, trial.quota, trial.quota_period) == (None, 2, "hour")
    answers = [site.api("trial-key", "trial-key-secret") for _ in range(3)]
    assert [status for status, _ in answers[:2]] == [200, 200]
    assert answers[2][1]["errorCode"] == "quota-exceeded"
    # Back to unlimited: the next call goes through.
    field(browser, "quota", "")
    submit(browser, button(browser, "Save plan"))
    assert site.api("trial-key", "trial-key-secret")[0] == 200


def test_key_of_another_package_refused(site: Site, browser: Any, tmp_path: Path) -> None:
    show(browser, site.admin_url("/", DEMO_KEY, DEMO_SECRET))
    assert heading(browser) == "Not an admin key"
    assert "package-not-authorized" in browser.page_source
    assert browser.find_elements(by("TAG_NAME"), "form") == []
    assert browser.find_elements(by("TAG_NAME"), "nav") == []
    screenshot(browser, screenshot_folder(tmp_path), "refused", ("phone",))
    with http_session() as client:
        answer = client.get(site.url + PREFIX + "/", auth=(DEMO_KEY, DEMO_SECRET))
    assert answer.status_code == 403


def test_post_without_its_token_refused(site: Site, browser: Any) -> None:
    sign_in(browser, site)
    open_key(browser, site, "acme-batch")
    browser.execute_script(
        "document.querySelectorAll('input[name=csrf_token]').forEach(e => e.remove())"
    )
    submit(browser, button(browser, "Disable"))
    assert heading(browser) == "Refused"
    assert "the form carries no token" in browser.page_source
    assert site.store.show_key("acme-batch").status == "active"
    assert site.api("acme-batch", "acme-batch-secret")[0] == 200


def attack_page(target: str, token: str) -> Flask:
    """Another site, with a form that posts to the admin pages."""
    attacker = Flask("attacker")

    @attacker.get("/")
    def page() -> str:
        return (
            "<!doctype html><title>Win a prize</title><h1>Win a prize</h1>"
            f'<form method="post" action="{target}">'
            '<input type="hidden" name="key" value="acme-batch">'
            '<input type="hidden" name="action" value="disable">'
            f'<input type="hidden" name="csrf_token" value="{token}">'
            "<button>Claim</button></form>"
        )

    return attacker


def test_post_from_another_site_refused(site: Site, browser: Any) -> None:
    sign_in(browser, site)
    open_key(browser, site, "acme-batch")
    # Even with the token (which another site cannot read), the origin decides.
    token = browser.find_element(by("NAME"), "csrf_token").get_attribute("value")
    with serve_in_thread(attack_page(site.url + PREFIX + "/key", token)) as evil:
        show(browser, evil.replace("127.0.0.1", "localhost") + "/")
        assert heading(browser) == "Win a prize"
        submit(browser, button(browser, "Claim"))
    assert heading(browser) == "Refused"
    assert "sent by a page of another site" in browser.page_source
    assert site.store.show_key("acme-batch").status == "active"
    assert site.api("acme-batch", "acme-batch-secret")[0] == 200


def test_delete_asks_first(site: Site, browser: Any) -> None:
    sign_in(browser, site)
    open_key(browser, site, "old-integration")
    submit(browser, button(browser, "Delete"))
    assert heading(browser) == "Delete key old-integration?"
    submit(browser, browser.find_element(by("LINK_TEXT"), "Cancel: keep the key"))
    assert site.store.show_key("old-integration")
    submit(browser, button(browser, "Delete"))
    submit(browser, button(browser, "Delete key old-integration for good"))
    assert heading(browser) == "Keys"
    assert "Key old-integration and its secrets deleted" in notice(browser)
    assert "old-integration" not in [info.key for info in site.store.list_keys()]


def test_keyboard_only(site: Site, browser: Any) -> None:
    from selenium.webdriver.common.keys import Keys

    sign_in(browser, site)
    body = browser.find_element(by("TAG_NAME"), "body")
    body.send_keys(Keys.TAB)
    skip = browser.switch_to.active_element
    assert skip.text == "Skip to content"
    skip.send_keys(Keys.ENTER)
    assert browser.switch_to.active_element.get_attribute("id") == "main"
    browser.switch_to.active_element.send_keys(Keys.TAB)
    search = browser.switch_to.active_element
    assert search.get_attribute("id") == "q"
    old = browser.find_element(by("TAG_NAME"), "html")
    search.send_keys("globex", Keys.ENTER)
    wait_replaced(browser, old)
    wait(browser).until(lambda d: d.find_elements(by("TAG_NAME"), "h1"))
    links = browser.find_elements(by("CSS_SELECTOR"), "table.keys tbody th a")
    assert [a.text for a in links] == ["globex-partner"]


def test_mashery_mode_sign_in_with_a_header(site: Site, browser: Any) -> None:
    env = {**site.env, "FLASK_BASIC_GATE_KEEP_MASHERY_DEFAULT_RESPONSE_CODE": "true"}
    with flask_run(site.folder, env=env) as mashery:
        show(browser, mashery.url + PREFIX + "/")
        assert heading(browser) == "Sign in"
        assert (
            "send the Authorization header yourself"
            in browser.find_element(by("TAG_NAME"), "main").text
        )
        send_authorization(browser, ADMIN, ADMIN_SECRET)
        show(browser, mashery.url + PREFIX + "/")
        assert heading(browser) == "Keys"
        send_authorization(browser, DEMO_KEY, DEMO_SECRET)
        show(browser, mashery.url + PREFIX + "/")
        assert heading(browser) == "Not an admin key"
        send_authorization(browser, None)


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_screenshots_of_each_page(site: Site, browser: Any, tmp_path: Path) -> None:
    folder = screenshot_folder(tmp_path)
    for _ in range(5):
        site.api("acme-mobile", "acme-mobile-secret")
    site.api("globex-partner", "wrong")
    saved: list[Path] = []
    sign_in(browser, site)
    saved += screenshot(browser, folder, "keys", ("desktop", "phone"))
    open_key(browser, site, "acme-mobile")
    saved += screenshot(browser, folder, "key", ("desktop", "phone"))
    open_key(browser, site, "umbrella-ci")
    submit(browser, button(browser, "Rotate secret"))
    assert browser.find_element(by("ID"), "new-secret").text
    saved += screenshot(browser, folder, "key-new-secret")
    open_key(browser, site, "umbrella-ci")
    submit(browser, button(browser, "Delete"))
    saved += screenshot(browser, folder, "delete")
    show(browser, f"{site.url}{PREFIX}/packages")
    saved += screenshot(browser, folder, "packages", ("desktop", "phone"))
    show(browser, f"{site.url}{PREFIX}/package?name=partners")
    saved += screenshot(browser, folder, "package")
    show(browser, f"{site.url}{PREFIX}/usage")
    assert "acme-mobile" in browser.find_element(by("TAG_NAME"), "main").text
    saved += screenshot(browser, folder, "usage", ("desktop", "phone"))
    sizes = {path.name: png_size(path) for path in saved}
    assert len(sizes) == 11
    for name, size in sizes.items():
        assert size == ((390, 844) if "phone" in name else (1280, 860)), name
        assert (folder / name).stat().st_size < 400_000, name


def test_phone_width_without_sideways_scrolling(site: Site, browser: Any) -> None:
    """At a phone's width only the tables scroll sideways, in their own region."""
    sign_in(browser, site)
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True},
    )
    for path in ["/", "/key?key=acme-mobile", "/packages", "/package?name=partners", "/usage"]:
        show(browser, f"{site.url}{PREFIX}{path}")
        widths = browser.execute_script(
            "return [window.innerWidth, document.documentElement.scrollWidth]"
        )
        assert widths == [390, 390], path


def test_no_outside_request(site: Site, browser: Any) -> None:
    """Every request a page makes goes to the site itself."""
    sign_in(browser, site)
    for path in ["/", "/key?key=acme-mobile", "/packages", "/package?name=members", "/usage"]:
        show(browser, f"{site.url}{PREFIX}{path}")
        entries = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert entries == [f"{site.url}{PREFIX}/static/basic_gate_admin.css"], path

"""A headless Chromium driven by Selenium, for the admin pages' browser tests.

Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them);
nothing is downloaded: the driver's path is given, so Selenium Manager never
runs. Without selenium, chromium or chromedriver the tests are skipped with
the reason, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from . import ROOT
from .backends import missing

#: ``BASIC_GATE_SCREENSHOTS=1`` writes the screenshots into the docs.
SCREENSHOTS_ENV = "BASIC_GATE_SCREENSHOTS"
#: Where the docs' screenshots are kept.
DOCS_SCREENSHOTS = ROOT / "docs" / "_static" / "admin"
#: The sizes screenshots are taken at: (name, width, height, mobile).
SIZES = (("desktop", 1280, 860, False), ("phone", 390, 844, True))
#: Longest wait for a page or an element, in seconds.
WAIT = 20.0


def require_chromium() -> tuple[str, str]:
    """The paths of chromium and chromedriver; skips the test (fails it
    under ``CI=true``) when they or selenium are missing."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing("selenium is not installed: pip install -e '.[test]'")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        missing(
            "chromium and chromedriver are not on PATH: apt-get install chromium chromium-driver"
        )
    return browser, driver


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (a Selenium ``WebDriver``), quit after.

    The driver process is Selenium's child, stopped by ``quit()`` (its own
    PID), which closes the browser first.
    """
    browser, driver_path = require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--hide-scrollbars",
        "--window-size=1280,860",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium's sandbox refuses root
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.set_page_load_timeout(WAIT)
        yield driver
    finally:
        driver.quit()


def send_authorization(driver: Any, key: Optional[str], secret: str = "") -> None:
    """Have the browser send Basic credentials with every request (what an
    operator's header extension or proxy does in Mashery mode), or stop."""
    driver.execute_cdp_cmd("Network.enable", {})
    headers = {}
    if key is not None:
        token = base64.b64encode(f"{key}:{secret}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": headers})


def screenshot_folder(tmp_path: Path) -> Path:
    """The docs' folder under ``BASIC_GATE_SCREENSHOTS=1``, else ``tmp_path``."""
    if os.environ.get(SCREENSHOTS_ENV) == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return DOCS_SCREENSHOTS
    return tmp_path


def screenshot(
    driver: Any, folder: Path, name: str, sizes: tuple[str, ...] = ("desktop",)
) -> list[Path]:
    """PNGs of the page as shown now, one per size named: ``<name>-<size>.png``."""
    saved = []
    for size, width, height, mobile in SIZES:
        if size not in sizes:
            continue
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )
        path = folder / f"{name}-{size}.png"
        assert driver.save_screenshot(str(path)), path
        saved.append(path)
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return saved

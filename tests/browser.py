"""Headless Chromium for the viewer's tests and benchmark, driven by selenium.

Only the system's browser and driver are used (Debian's ``chromium`` and
``chromium-driver``; ``.ci/run`` installs them): nothing is downloaded. Where
they are missing the browser tests are skipped with the reason, except in CI
(``CI`` set), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

__all__ = [
    "CHROMEDRIVER",
    "CHROMIUM",
    "chromium",
    "leaves",
    "require_browser",
    "wait_js",
    "wait_until",
]

CHROMIUM = os.environ.get("RSTREAM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = (
    os.environ.get("RSTREAM_CHROMEDRIVER")
    or shutil.which("chromedriver")
    or "/usr/bin/chromedriver"
)
# The machine's network is closed: without these Chromium waits on connections
# to Google's services (updates, sync, field trials) that never answer.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,860",
)
TIMEOUT = 10.0


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (apt-get install {package})"
    return None


def require_browser() -> None:
    """Skip the test where Chromium cannot run; in CI (``CI`` set), fail instead."""
    reason = _missing()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"browser tests must run in CI: {reason}")
    pytest.skip(f"no headless browser: {reason}")


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (selenium ``WebDriver``) with a fresh profile; quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    require_browser()
    with tempfile.TemporaryDirectory(prefix="rstream-chromium-") as profile:
        options = Options()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        try:
            driver.set_script_timeout(TIMEOUT)
            yield driver
        finally:
            driver.quit()


def wait_until(driver: Any, predicate: Callable[[Any], Any], timeout: float = TIMEOUT) -> Any:
    """What ``predicate(driver)`` returns once it is truthy; TimeoutException after ``timeout``."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(predicate)


def wait_js(driver: Any, expression: str, timeout: float = TIMEOUT) -> Any:
    """The value of the JavaScript ``expression`` once it is truthy."""
    return wait_until(driver, lambda d: d.execute_script(f"return ({expression});"), timeout)


# The tree's leaves as [path, JSON text]: what the page shows, field by field.
_LEAVES_JS = """
return Array.from(document.querySelectorAll('#tree .value'),
                  (el) => [el.dataset.path, el.textContent]);
"""


def leaves(driver: Any) -> dict[tuple[Any, ...], str]:
    """The fields the viewer's tree shows: path tuple -> the value's JSON text."""
    import json

    return {tuple(json.loads(path)): text for path, text in driver.execute_script(_LEAVES_JS)}

"""A real headless Chromium for UI tests (Debian's chromium + chromium-driver, driven by selenium).

``chromium()`` yields a selenium WebDriver, or skips the test with the reason when no browser is installed
(``apt-get install chromium chromium-driver``). The flags are what a headless Chromium needs on a machine
without a display, a GPU or outside network.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time

import pytest

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
)


def missing() -> str | None:
    """Why no browser test can run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for exe in ("chromium", "chromedriver"):
        if shutil.which(exe) is None:
            return f"no {exe} on PATH (apt-get install chromium chromium-driver)"
    return None


@contextlib.contextmanager
def chromium():
    """A headless Chromium WebDriver with a fresh profile; skips the test when there is none."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory() as profile:
        opts = webdriver.ChromeOptions()
        opts.binary_location = shutil.which("chromium")
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
        try:
            yield driver
        finally:
            driver.quit()


def wait_for_text(driver, text: str, timeout: float = 60.0) -> str:
    """Poll the page until its visible text contains ``text``; returns the text (fails with it if not)."""
    deadline = time.time() + timeout
    body = ""
    while time.time() < deadline:
        try:
            body = driver.find_element("tag name", "body").text
        except Exception:  # noqa: BLE001 - the page may be re-rendering
            body = ""
        if text in body:
            return body
        time.sleep(0.5)
    raise AssertionError(f"{text!r} never appeared on {driver.current_url}; page text:\n{body[:3000]}")


def close_assistant(driver) -> None:
    """Close MLflow's assistant side panel if it opened (it covers a third of the page)."""
    for button in driver.find_elements("css selector", "button[aria-label='Close']"):
        with contextlib.suppress(Exception):
            if button.is_displayed():
                button.click()

"""A real headless Chromium from Debian's packages for the page tests (Selenium with
Debian's chromium-driver; no browser is downloaded). Installed with apt-get when the
tests run as root on Debian and it is missing, as the stack's servers are."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

PACKAGES = ("chromium", "chromium-driver", "fonts-wqy-microhei")


def ensure_chromium() -> tuple[str, str]:
    """(browser, driver) paths; installs the Debian packages when missing and allowed."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None or not Path("/usr/share/fonts/truetype/wqy").exists():
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise RuntimeError(
                f"the page tests need Debian's {', '.join(PACKAGES)}: apt-get install them"
            )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
            check=True,
            env=env,
        )
        browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert browser is not None
    assert driver is not None
    return browser, driver


@contextmanager
def chromium(
    width: int = 1600, height: int = 1000, *, performance_log: bool = False
) -> Iterator[webdriver.Chrome]:
    """Debian's Chromium, headless; ``performance_log`` records the network requests
    (``browser.get_log("performance")``)."""
    browser, driver = ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        "--lang=zh-CN",
    ):
        options.add_argument(flag)
    if performance_log:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    session = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield session
    finally:
        session.quit()

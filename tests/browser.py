"""A headless Chromium page for browser tests, or a clear skip where no browser can be had.

    from browser import chromium_page

    def test_page(service_url):
        with chromium_page() as page:          # a Playwright ``Page``, 1280x900 by default
            page.goto(service_url)
            ...

    with chromium_page(viewport={"width": 390, "height": 844}) as page: ...   # a phone's width

The browser is Debian's ``chromium`` package (``/usr/bin/chromium``) driven by Playwright's Python
client, whose own browser download (``playwright install``) cannot be used here. On a fresh
machine the helper installs what is missing: the ``playwright`` package at the version pinned in
``pyproject.toml`` (dev extra) and, as root, ``apt-get install -y chromium``. Where either cannot
be had, or the browser does not start, the test is skipped with a message saying which.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from debian import apt_install

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = "/usr/bin/chromium"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
DEFAULT_VIEWPORT = {"width": 1280, "height": 900}


def _pinned_playwright() -> str | None:
    """The ``playwright==X`` requirement of the dev extra, the one place its version is named."""
    dev = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]["dev"]
    return next((r for r in dev if r.startswith("playwright==")), None)


def _ensure_playwright() -> None:
    try:
        import playwright.sync_api  # noqa: F401
        return
    except ImportError:
        pass
    requirement = _pinned_playwright()
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if requirement is None or uv is None:
        pytest.skip(f"browser test: the playwright package is not installed and cannot be installed here (requirement {requirement}, uv {uv})")
    done = subprocess.run([uv, "pip", "install", "--python", sys.executable, requirement], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.skip(f"browser test: could not install {requirement}: {done.stderr.strip()[-500:]}")


def chromium_executable() -> str:
    """The path of Debian's Chromium, installed with apt-get when missing; skips the test if it cannot be had."""
    problem = apt_install(["chromium"], [CHROMIUM])
    if problem:
        pytest.skip(f"browser test: {problem}")
    return CHROMIUM


@contextmanager
def chromium_page(viewport: dict | None = None, **context_options) -> Iterator[Page]:
    """A fresh headless Chromium page (its own browser context); closed with the browser on exit.

    ``viewport`` defaults to 1280x900; other keyword arguments go to ``Browser.new_context``
    (``locale``, ``timezone_id``, ...). Navigation and waits time out after 30 s.
    """
    _ensure_playwright()
    executable = chromium_executable()
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"], headless=True)
        except Error as exc:
            pytest.skip(f"browser test: {executable} did not start under Playwright: {exc}")
        try:
            context = browser.new_context(viewport=viewport or DEFAULT_VIEWPORT, **context_options)
            context.set_default_timeout(30_000)
            yield context.new_page()
        finally:
            browser.close()

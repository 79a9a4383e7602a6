"""A real browser for the tests: Debian's Chromium, driven by Playwright (no browser download at run time).

Chromium is installed with apt-get when it is missing, like the test sshd. It runs headless with
the flags this machine's closed network needs (no background networking, no component updates).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.debian import ensure_packages

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def ensure_chromium() -> str:
    """The path of Debian's Chromium, installing the package when it is missing."""
    ensure_packages(["chromium"], Path(CHROMIUM).exists)
    return CHROMIUM


@contextlib.contextmanager
def browser_page(width: int = 1600, height: int = 1000) -> Iterator:
    """A Playwright page in a fresh headless Chromium profile."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="docroute-chromium-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile, executable_path=ensure_chromium(), headless=True, args=FLAGS,
                viewport={"width": width, "height": height},
            )
            try:
                yield context.pages[0] if context.pages else context.new_page()
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)

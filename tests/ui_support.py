"""Browser tests of the dashboard: Debian's Chromium driven by Playwright (``executable_path``).

Playwright never downloads a browser here: ``make test`` installs the ``chromium`` package with
apt-get, and the tests skip (saying why) when it or the ``playwright`` package is missing.
:class:`Watched` collects everything that must fail a test: console errors, uncaught page
errors, Content-Security-Policy violations and JavaScript dialogs (an ``alert`` means
injected script ran).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

#: The flags every dashboard test launches Chromium with (no network beyond the gateway).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: Set to 1 to write a screenshot of each page to docs/img/ (committed; the README shows one).
SCREENSHOTS = os.environ.get("TOOLMESH_UI_SCREENSHOTS") == "1"
IMG_DIR = Path(__file__).resolve().parent.parent / "docs" / "img"

# Runs in every page before its own scripts (injected by the driver, so the page's CSP does not apply).
_WATCH_SCRIPT = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__violations.push(e.violatedDirective + ' ' + (e.blockedURI || '') + ' ' + (e.sample || ''));
  console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI);
});
"""


def chromium_path() -> str:
    """Debian's Chromium, or skip the test naming what is missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("Debian's chromium is not installed (make test installs it with apt-get)")
    return found


class Watched:
    """A page plus everything that went wrong in it; :meth:`check` fails the test if anything did."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("dialog", self._dialog)

    def _console(self, msg: Any) -> None:
        if msg.type in ("error", "assert"):
            self.problems.append(f"console {msg.type}: {msg.text}")

    def _dialog(self, dialog: Any) -> None:
        self.problems.append(f"a {dialog.type} dialog opened: {dialog.message!r} (script ran)")
        dialog.dismiss()

    def check(self, *, expected: str | None = None) -> None:
        """Fail on any problem seen so far; ``expected``: a substring of console errors the test caused on
        purpose (e.g. the browser's own "Failed to load resource … 401" line for a refused key)."""
        violations = self.page.evaluate("window.__violations || []")
        problems = [p for p in self.problems if expected is None or expected not in p]
        problems += [f"CSP violation: {v}" for v in violations]
        self.problems = []
        assert not problems, "\n".join(problems)

    def shot(self, name: str) -> None:
        """Save docs/img/ui-<name>.png when screenshots are asked for."""
        if SCREENSHOTS:
            IMG_DIR.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(IMG_DIR / f"ui-{name}.png"), full_page=False)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright ``Browser``) for the duration of the block."""
    path = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Any, *, width: int = 1280, height: int = 800) -> Watched:
    """A fresh context and page (own sessionStorage), watched for errors."""
    context = browser.new_context(viewport={"width": width, "height": height}, service_workers="block")
    context.add_init_script(_WATCH_SCRIPT)
    context.set_default_timeout(20_000)
    return Watched(context.new_page())


@contextmanager
def prefix_proxy(upstream: str, prefix: str = "/gw") -> Iterator[str]:
    """A reverse proxy on loopback serving ``upstream`` under ``prefix`` (as a site proxy would);
    yields its base URL (``http://127.0.0.1:PORT/gw``)."""

    class Handler(BaseHTTPRequestHandler):
        def _relay(self) -> None:
            if not self.path.startswith(prefix + "/"):
                self.send_error(404, "outside the proxied prefix")
                return
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else None
            skip = {"host", "content-length", "connection"}
            headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
            with httpx.Client(timeout=60) as client, client.stream(
                    self.command, upstream + self.path[len(prefix):], headers=headers, content=body) as r:
                data = r.read()
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _relay

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{prefix}"
    finally:
        server.shutdown()
        server.server_close()

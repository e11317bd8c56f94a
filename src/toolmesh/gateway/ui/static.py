"""Serve the dashboard's static files (package data) with strict security headers.

The file set is fixed at start-up (read once from the package): a request names one of
those files or gets 404, so no path from a request ever reaches the file system.
Responses carry an ETag and ``Cache-Control: no-cache``: a browser revalidates each file on
every load, so an upgraded gateway never serves a stale mix of old and new modules.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from toolmesh.gateway.web import header, send_bytes, send_error
from toolmesh.net.asgi import Receive, Scope, Send

__all__ = ["CSP", "SECURITY_HEADERS", "StaticFiles"]

#: No inline script or style, no eval, no foreign origin; DOM sinks need Trusted Types (none are
#: allowed, so ``innerHTML = string`` throws); the dashboard cannot be framed.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
       "require-trusted-types-for 'script'; trusted-types 'none'")

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]

_TYPES = {
    "html": b"text/html; charset=utf-8",
    "js": b"text/javascript; charset=utf-8",
    "css": b"text/css; charset=utf-8",
    "svg": b"image/svg+xml",
    "png": b"image/png",
    "txt": b"text/plain; charset=utf-8",
}


class StaticFiles:
    """The files of ``toolmesh/gateway/ui/static`` served under ``/ui/`` (``/ui/`` is ``index.html``)."""

    def __init__(self, package: str = "toolmesh.gateway.ui", folder: str = "static") -> None:
        #: name -> (body, content type, etag)
        self.files: dict[str, tuple[bytes, bytes, bytes]] = {}
        root = resources.files(package).joinpath(folder)
        for entry in root.iterdir():
            ext = entry.name.rpartition(".")[2]
            if entry.is_file() and ext in _TYPES:
                body = entry.read_bytes()
                etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
                self.files[entry.name] = (body, _TYPES[ext], etag)
        if "index.html" not in self.files:
            raise RuntimeError(f"the dashboard's files are missing from the package ({package}/{folder})")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer ``GET``/``HEAD /ui/<file>``; ``/ui`` redirects to ``ui/`` (relative: works behind any prefix)."""
        if scope["type"] != "http":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008, "reason": "the dashboard is HTTP only"})
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if method not in ("GET", "HEAD"):
            await send_error(send, 405, f"{method} is not allowed on the dashboard's files",
                             headers=[(b"allow", b"GET, HEAD")])
            return
        if path.rstrip("/") == "/ui" and not path.endswith("/"):
            await send_bytes(send, 308, b"", b"text/plain", [(b"location", b"ui/"), *SECURITY_HEADERS])
            return
        name = path[len("/ui/"):] or "index.html"
        found = self.files.get(name)
        if found is None:
            await send_error(send, 404, f"no dashboard file {name!r}", "not_found_error")
            return
        body, ctype, etag = found
        headers = [(b"etag", etag), (b"cache-control", b"no-cache"), *SECURITY_HEADERS]
        if header(scope, b"if-none-match") == etag.decode():
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        if method == "HEAD":
            headers += [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await send_bytes(send, 200, body, ctype, headers)


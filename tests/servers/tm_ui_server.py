"""Test server for the dashboard tests: ``python tm_ui_server.py PORT`` (Streamable HTTP on 127.0.0.1).

Tools: ``echo`` (returns its text), ``html`` (returns markup that would run script if a page
rendered it as HTML), ``pause`` (sleeps, so a browser can see a call in flight).
"""

from __future__ import annotations

import asyncio
import sys

from toolmesh.servers import ToolServer

server = ToolServer("tm-ui")

#: Would run script if rendered as HTML: the dashboard must show it as text.
PAYLOAD = '<img src=x onerror=alert(1)> <script>alert(2)</script> <b id="injected">bold?</b>'


@server.tool()
def echo(text: str) -> str:
    """Return the text."""
    return text


@server.tool()
def html() -> str:
    """Return markup (XSS probe)."""
    return PAYLOAD


@server.tool()
async def pause(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return f"rested {seconds} s"


if __name__ == "__main__":
    server.run("http", port=int(sys.argv[1]))  # type: ignore[arg-type]

"""SSRF at connect time (issue 11, part 2/4; docs/security.md "SSRF"): a host name registered over
the admin API that later resolves to the metadata address is refused when the connection is made,
not only at registration. DNS is a resolver function we control (``(host, port) -> addresses``),
injected where the gateway looks names up (the name is ``localhost``: the demo server's own
DNS-rebinding check accepts that Host header, and the resolver, not /etc/hosts, decides where it
points); the upstream is a real demo MCP server process on loopback, the connections real sockets."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from conftest import free_port, wait_port
from toolmesh.errors import ToolmeshError
from toolmesh.gateway.admin.upstreams import RESOLVER_KEY, connect_guard
from toolmesh.gateway.app import GatewayApp
from toolmesh.gateway.auth import create_key
from toolmesh.gateway.config import GatewaySettings
from toolmesh.hub import Hub, ServerConfig
from toolmesh.hub.configfile import parse_config
from toolmesh.net.addrguard import AddressRefused, ConnectGuard

METADATA = "169.254.169.254"
ARGS = {"sku": "SKU-1001", "user_level": "gold", "coupon": "SAVE20", "city": "广州"}


class Dns:
    """A resolver we control: one answer per name, counted."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if host not in self.answers:
            raise OSError(f"no such name {host!r}")
        return list(self.answers[host])


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    import subprocess

    port = free_port()
    home = tmp_path_factory.mktemp("home")
    proc = subprocess.Popen([sys.executable, "-m", "toolmesh.servers.demo", "pricing", "--transport", "http",
                             "--port", str(port)], env={"TOOLMESH_HOME": str(home), "PATH": ""},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield port
    finally:
        proc.kill()
        proc.wait(10)


def loopback_settings() -> GatewaySettings:
    return GatewaySettings.from_section({"host": "127.0.0.1"})


async def test_guard_refuses_metadata_and_passes_loopback() -> None:
    dns = Dns()
    guard = connect_guard(loopback_settings(), dns)
    dns.answers["ok.test"] = ["127.0.0.1"]
    assert await guard.addresses("ok.test", 80) == ["127.0.0.1"]
    for bad in ([METADATA], ["127.0.0.1", METADATA], ["::ffff:169.254.169.254"], ["fe80::1"]):
        dns.answers["bad.test"] = bad
        with pytest.raises(AddressRefused, match="refused at connect time: the address is link-local"):
            await guard.addresses("bad.test", 80)
    with pytest.raises(AddressRefused, match="does not resolve"):
        await guard.addresses("nowhere.test", 80)
    # an address literal is checked without a lookup
    with pytest.raises(AddressRefused, match="link-local"):
        await guard.addresses(METADATA, 80)
    assert dns.lookups.count("nowhere.test") == 1 and METADATA not in dns.lookups
    public = connect_guard(GatewaySettings.from_section({"host": "0.0.0.0"}), dns)
    with pytest.raises(AddressRefused, match="is loopback"):
        await public.addresses("ok.test", 80)


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_hub_connection_rechecks_the_name_each_time(upstream: int, transport: str) -> None:
    dns = Dns()
    dns.answers["localhost"] = ["127.0.0.1"]
    path = "/mcp" if transport == "http" else "/sse"
    cfg = ServerConfig(name="up", transport=transport, url=f"http://localhost:{upstream}{path}", retries=0,
                       connect_timeout=5, timeout=10, connect_guard=connect_guard(loopback_settings(), dns))
    hub = Hub()
    try:
        await hub.register(cfg)
        result = await hub.call_tool("up", "calculate_discount", ARGS)
        assert not result.is_error  # the name reached the real server through the checked address
        assert "localhost" in dns.lookups
        # The name now points at the metadata service: a fresh connection is refused before connecting.
        dns.answers["localhost"] = [METADATA]
        report = await hub.test_connection("up")
        assert report["ok"] is False
        assert f"localhost ({METADATA})" in report["error"] and "refused at connect time" in report["error"]
        await hub.unregister("up")
        await hub.register(cfg)
        with pytest.raises(ToolmeshError, match="refused at connect time"):
            await hub.call_tool("up", "calculate_discount", ARGS)
    finally:
        await hub.aclose()


async def test_config_file_servers_carry_no_guard() -> None:
    assert ServerConfig(name="a", url="http://x.test/mcp").connect_guard is None
    with pytest.raises(ValueError, match="instance of ConnectGuard"):
        ServerConfig.model_validate({"name": "a", "url": "http://x.test/mcp", "connect_guard": {"policy": None}})


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[tuple[GatewayApp, Dns, str]]:
    dns = Dns()
    gw_app = GatewayApp(parse_config({"gateway": {"host": "127.0.0.1"}}), store_path=str(tmp_path / "g.db"))
    gw = await gw_app.startup()
    gw.extras[RESOLVER_KEY] = dns
    key = (await create_key(gw.store, "default", ["admin"]))["key"]
    try:
        yield gw_app, dns, key
    finally:
        await gw_app.shutdown()


async def test_admin_registered_server_is_checked_at_connect_time(
        app: tuple[GatewayApp, Dns, str], upstream: int) -> None:
    gw_app, dns, key = app
    dns.answers["localhost"] = ["127.0.0.1"]
    transport = httpx.ASGITransport(app=gw_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                 headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        r = await client.post("/admin/servers", json={"name": "rebind", "url": f"http://localhost:{upstream}/mcp"})
        assert r.status_code == 201, r.text
        assert gw_app.gw is not None
        handle = gw_app.gw.hub.servers(tenant="default")["rebind"]
        assert isinstance(handle.config.connect_guard, ConnectGuard)
        ok = await client.post("/admin/servers/rebind/test")
        assert ok.status_code == 200 and ok.json()["ok"] is True, ok.text
        dns.answers["localhost"] = [METADATA]  # rebinding after registration
        r = await client.post("/admin/servers/rebind/test")
        assert r.status_code == 200 and r.json()["ok"] is False
        assert f"localhost ({METADATA})" in r.json()["error"]
        # and registration itself looks the name up through the same resolver
        r = await client.post("/admin/servers", json={"name": "again", "url": f"http://localhost:{upstream}/mcp"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "url"
        assert METADATA in r.json()["error"]["message"]
    await asyncio.sleep(0)

"""Security at the gateway's edge (issue 11, part 4; docs/security.md): scopes on every route,
tenant isolation on every admin endpoint, key lookup without comparable secrets, the SSRF
guard of admin registration, header injection and oversized input. A real ``toolmesh serve``
process; the route list comes from the gateway's own tables, so a new route cannot skip them."""

from __future__ import annotations

import ast
import asyncio
import inspect
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway_support import Gateway, demo_server
from toolmesh.gateway import auth
from toolmesh.gateway.admin import data as admin_data
from toolmesh.gateway.app import ROUTE_SCOPES, GatewayApp
from toolmesh.gateway.mcp import endpoints as mcp_endpoints
from toolmesh.hub.configfile import parse_config
from toolmesh.llm.models import ModelRegistry
from toolmesh.llm.types import Message, Usage
from toolmesh.store.ledger import UsageLedger
from toolmesh.store.sessions import SessionStore
from toolmesh.store.sqlite import Store

DEAD_LLM = "http://127.0.0.1:9/v1"  # never reached by these tests
SCOPES = ("chat", "mcp", "admin")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {
        "servers": {"catalog": demo_server("catalog")},
        "tenants": {"acme": {"servers": {"pricing": demo_server("pricing")}}},
        "llm": {"deployments": [{"name": "small", "provider": "openai", "base_url": DEAD_LLM, "api_key": "x",
                                 "model": "gpt-4o-mini"}]},
        # A gateway that may not be aimed at its own host, except one address allowed explicitly.
        "gateway": {"admin_allow_loopback": False, "admin_allow_networks": ["127.0.0.2/32"], "max_body": 65536},
    }
    g = Gateway(tmp_path_factory.mktemp("security"), config).start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def keys(gw: Gateway) -> dict[tuple[str, str], str]:
    """One key per (tenant, single scope): the first admin key by the CLI, the rest by the admin API."""
    out: dict[tuple[str, str], str] = {}
    for tenant in ("default", "acme"):
        out[(tenant, "admin")] = admin_key = gw.key(tenant, "admin")
        for scope in ("chat", "mcp"):
            r = httpx.post(gw.url + "/admin/keys", json={"scopes": [scope]},
                           headers={"Authorization": f"Bearer {admin_key}"})
            assert r.status_code == 201, r.text
            out[(tenant, scope)] = r.json()["key"]
    return out


def client(gw: Gateway, key: str) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


# -- the route table -----------------------------------------------------------------------------
def live_admin_routes(tmp: Path) -> list[tuple[str, str]]:
    """The admin routes of a gateway built in this process (dashboard routes included)."""

    async def build() -> list[tuple[str, str]]:
        app = GatewayApp(parse_config({"gateway": {"host": "127.0.0.1"}}), store_path=str(tmp / "routes.db"))
        await app.startup()
        try:
            assert app.apps is not None
            return app.apps.admin.route_table()
        finally:
            await app.shutdown()

    return asyncio.run(build())


def route_walk(tmp: Path) -> list[tuple[str, str, str]]:
    """(method, concrete path, scope the edge must demand) for every route of the gateway."""
    routes: list[tuple[str, str, str]] = []
    for head, scope in ROUTE_SCOPES.items():
        if head == "admin":
            for method, template in live_admin_routes(tmp):
                path = template.replace("{id}", "nope").replace("{name}", "nope").replace("{scenario}", "nope")
                routes.append((method, path, scope))
        elif head == "servers":
            routes += [("POST", f"/servers/catalog/{tail}", scope) for tail in ("mcp", "sse", "messages", "ws")]
        elif head == "v1":
            routes += [("POST", "/v1/chat/completions", scope), ("GET", "/v1/models", scope),
                       ("GET", "/v1/models/gpt-4o-mini", scope)]
        elif head == "metrics":
            routes.append(("GET", "/metrics", scope))
        else:  # an MCP endpoint of the whole tenant: POST never opens a stream
            routes.append(("POST", f"/{head}/" if head == "messages" else f"/{head}", scope))
    routes.append(("POST", "/not-a-route", "mcp"))  # unlisted heads still need a key with the mcp scope
    return routes


def test_route_walk_covers_every_head_of_the_edge_table(tmp_path: Path) -> None:
    walked = {path.strip("/").split("/")[0] for _, path, _ in route_walk(tmp_path)}
    assert set(ROUTE_SCOPES) <= walked
    admin = [r for r in route_walk(tmp_path) if r[1].startswith("/admin/")]
    assert {"/admin/servers", "/admin/keys", "/admin/audit", "/admin/usage", "/admin/sessions"} <= {
        p for _, p, _ in admin}
    assert len(admin) >= 20


def test_every_route_demands_its_scope(gw: Gateway, keys: dict[tuple[str, str], str], tmp_path: Path) -> None:
    failures = []
    for method, path, needed in route_walk(tmp_path):
        body = b"{}" if method in ("POST", "PUT", "PATCH") else None
        headers = {"content-type": "application/json"}
        r = httpx.request(method, gw.url + path, content=body, headers=headers, timeout=30)
        if r.status_code != 401:
            failures.append((method, path, "no key", r.status_code))
        for scope in SCOPES:
            h = {**headers, "Authorization": f"Bearer {keys[('default', scope)]}"}
            r = httpx.request(method, gw.url + path, content=body, headers=h, timeout=30)
            if scope == needed and r.status_code in (401, 403):
                failures.append((method, path, scope, r.status_code))
            if scope != needed and (r.status_code != 403 or r.json()["error"]["type"] != "permission_error"):
                failures.append((method, path, scope, r.status_code))
    assert failures == []


def test_health_needs_no_key_but_says_nothing_secret(gw: Gateway) -> None:
    for path in ("/healthz", "/readyz"):
        r = httpx.get(gw.url + path)
        assert r.status_code == 200
        assert "tm_" not in r.text and "api_key" not in r.text


# -- tenant isolation ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rows(gw: Gateway) -> None:
    """Usage, sessions and audit rows of both tenants, written as a second worker would."""

    async def go() -> None:
        async with Store(str(gw.tmp / "toolmesh.db")) as store:
            ledger = UsageLedger(store, ModelRegistry.load().price)
            for tenant, user, n in (("default", "alice", 100), ("acme", "carol", 9999)):
                ledger.record(tenant=tenant, user=user, session=None, model="gpt-4o-mini", provider="openai",
                              usage=Usage(n, n), latency_ms=1.0)
            sessions = SessionStore(store)
            for tenant, user, text in (("default", "alice", "hello"), ("acme", "carol", "acme secret plan")):
                s = await sessions.get(tenant, user, "conv")
                await sessions.append(s, [Message("user", text)])
            for tenant, user, server in (("default", "alice", "catalog"), ("acme", "carol", "pricing")):
                store.audit(tenant=tenant, user=user, server=server, tool="t", arguments_hash="ab" * 32,
                            status="ok", latency_ms=1.0)

    asyncio.run(go())


def test_a_tenant_never_sees_or_changes_another_tenants_data(
    gw: Gateway, keys: dict[tuple[str, str], str], rows: None
) -> None:
    with client(gw, keys[("default", "admin")]) as a, client(gw, keys[("acme", "admin")]) as b:
        # servers: not listed, not readable, not changeable, not removable, not testable
        assert "pricing" not in {s["name"] for s in a.get("/admin/servers").json()["servers"]}
        assert a.get("/admin/servers/pricing").status_code == 404
        assert a.patch("/admin/servers/pricing", json={"coalesce": False}).status_code == 404
        assert a.post("/admin/servers/pricing/test").status_code == 404
        assert a.delete("/admin/servers/pricing").status_code == 404
        # The same name registered by A is A's own: B's server is untouched.
        made = a.post("/admin/servers", json={"name": "pricing", "url": "http://127.0.0.2:1/mcp"})
        assert made.status_code == 201, made.text
        assert b.get("/admin/servers/pricing").json()["config"]["transport"] == "stdio"
        assert a.delete("/admin/servers/pricing").status_code == 200
        assert b.get("/admin/servers/pricing").status_code == 200
        # sessions
        theirs = b.get("/admin/sessions").json()["sessions"]
        assert [s["user"] for s in theirs] == ["carol"]
        mine = a.get("/admin/sessions").json()["sessions"]
        assert all(s["user"] != "carol" for s in mine)
        assert a.get(f"/admin/sessions/{theirs[0]['id']}").status_code == 404
        assert a.delete(f"/admin/sessions/{theirs[0]['id']}").status_code == 404
        assert "acme secret plan" not in a.get("/admin/sessions").text
        assert b.get(f"/admin/sessions/{theirs[0]['id']}").status_code == 200
        # usage
        usage = a.get("/admin/usage", params={"group_by": "tenant,user"}).json()
        assert {r["tenant"] for r in usage["rows"]} == {"default"}
        assert usage["totals"]["input_tokens"] < 9999
        # audit
        assert {e["server"] for e in a.get("/admin/audit").json()["entries"]} == {"catalog"}
        assert {e["server"] for e in b.get("/admin/audit").json()["entries"]} == {"pricing"}
        # keys: not listed, not revocable by id nor by the key itself
        b_keys = b.get("/admin/keys").json()["keys"]
        a_ids = {k["key_id"] for k in a.get("/admin/keys").json()["keys"]}
        assert a_ids.isdisjoint({k["key_id"] for k in b_keys})
        for ref in (b_keys[0]["key_id"], keys[("acme", "chat")]):
            assert a.delete(f"/admin/keys/{ref}").status_code == 404
        assert b.get("/admin/keys").json()["keys"] == b_keys
        # MCP: A's tools are A's servers' only; B's server by name is not found
        listed = tools_list(gw, keys[("default", "mcp")], "/mcp")
        names = [t["name"] for t in listed.json()["result"]["tools"]]
        assert names and not any(n.startswith("pricing") for n in names)
        r = tools_list(gw, keys[("default", "mcp")], "/servers/pricing/mcp")
        assert r.status_code == 404


def tools_list(gw: Gateway, key: str, path: str) -> httpx.Response:
    """A 2026-07-28 ``tools/list`` on ``path``."""
    pv = "2026-07-28"
    meta = {"io.modelcontextprotocol/protocolVersion": pv, "io.modelcontextprotocol/clientCapabilities": {}}
    return httpx.post(gw.url + path, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}},
                      headers={"Authorization": f"Bearer {key}", "MCP-Protocol-Version": pv, "Mcp-Method": "tools/list",
                               "Accept": "application/json, text/event-stream"}, timeout=30)


# -- MCP security best practices: token passthrough, session hijacking, DNS rebinding ----------------
def test_callers_credentials_are_never_forwarded_upstream(gw: Gateway, keys: dict[tuple[str, str], str]) -> None:
    # forward_headers passes chosen caller headers on; the caller's credentials are the gateway's
    # own (its API key): passing them to an upstream is the "token passthrough" anti-pattern.
    with client(gw, keys[("default", "admin")]) as a:
        for header in ("Authorization", "proxy-authorization", "Cookie"):
            r = a.post("/admin/servers", json={"name": "fwd", "url": "http://127.0.0.2:1/mcp",
                                               "forward_headers": [header]})
            assert r.status_code == 400 and "forward_headers may not include" in r.json()["error"]["message"], r.text


def initialize(gw: Gateway, key: str) -> str:
    r = httpx.post(gw.url + "/mcp", headers={"Authorization": f"Bearer {key}",
                                             "Accept": "application/json, text/event-stream"},
                   json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                       "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
                   timeout=30)
    assert r.status_code == 200, r.text
    return r.headers["mcp-session-id"]


def in_session(gw: Gateway, key: str, sid: str) -> httpx.Response:
    return httpx.post(gw.url + "/mcp", headers={"Authorization": f"Bearer {key}", "Mcp-Session-Id": sid,
                                                "MCP-Protocol-Version": "2025-11-25",
                                                "Accept": "application/json, text/event-stream"},
                      json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, timeout=30)


def test_session_ids_cannot_be_forged_or_used_by_another_tenant(
    gw: Gateway, keys: dict[tuple[str, str], str]
) -> None:
    sid = initialize(gw, keys[("default", "mcp")])
    assert in_session(gw, keys[("default", "mcp")], sid).status_code == 200
    # Sealed with the tenant (HMAC): another tenant's valid key cannot use it.
    assert in_session(gw, keys[("acme", "mcp")], sid).status_code == 404
    # Tampered or made up: refused. A session id alone never authenticates (a key is needed too).
    payload, _, mac = sid.partition(".")
    for forged in (payload + "." + mac[:-2] + ("AA" if mac[-2:] != "AA" else "BB"), payload, "x" * 64):
        assert in_session(gw, keys[("default", "mcp")], forged).status_code == 404
    r = httpx.post(gw.url + "/mcp", headers={"Mcp-Session-Id": sid}, json={"jsonrpc": "2.0", "id": 2,
                                                                           "method": "tools/list"})
    assert r.status_code == 401


def test_dns_rebinding_host_and_origin_checks(gw: Gateway, keys: dict[tuple[str, str], str]) -> None:
    auth_header = {"Authorization": f"Bearer {keys[('default', 'admin')]}"}
    # A rebound name reaches the loopback gateway with its own Host: refused before auth.
    assert httpx.get(gw.url + "/admin/servers", headers={**auth_header, "Host": "evil.example"}).status_code == 421
    # A page of another origin: refused.
    r = httpx.get(gw.url + "/admin/servers", headers={**auth_header, "Origin": "https://evil.example"})
    assert r.status_code == 403
    assert httpx.get(gw.url + "/admin/servers", headers={**auth_header, "Origin": "http://localhost:3000"}).status_code == 200


# -- API keys are looked up by hash, never compared ----------------------------------------------
def _eq_comparisons_with(source: str, names: set[str]) -> list[str]:
    """``==`` / ``!=`` comparisons that involve one of ``names`` (a variable or attribute)."""
    found = []
    for node in ast.walk(ast.parse(textwrap.dedent(source))):
        if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
            for side in (node.left, *node.comparators):
                ident = side.id if isinstance(side, ast.Name) else side.attr if isinstance(side, ast.Attribute) else ""
                if ident in names:
                    found.append(ast.unparse(node))
    return found


def test_keys_are_found_by_their_sha256_and_secrets_compared_in_constant_time() -> None:
    # A key is never compared with stored keys: its SHA-256 is the lookup key (an indexed SQL
    # equality on the hash: changing one character of a guess changes the whole hash, so timing
    # tells an attacker nothing about how close the guess was).
    resolve = inspect.getsource(auth.KeyRing.resolve)
    assert "get_api_key(hash_key(token))" in resolve
    assert "sha256" in inspect.getsource(auth.hash_key)
    secrets = {"token", "key", "key_hash", "secret", "mac", "ref"}
    for fn in (auth.KeyRing.resolve, auth.create_key, admin_data.revoke_api_key):
        assert _eq_comparisons_with(inspect.getsource(fn), secrets) == [], fn.__qualname__
    # Sealed session ids are checked with hmac.compare_digest.
    mcp_source = inspect.getsource(mcp_endpoints)
    assert "hmac.compare_digest(" in mcp_source
    assert _eq_comparisons_with(mcp_source, {"mac"}) == []


def test_a_key_one_character_off_is_refused(gw: Gateway, keys: dict[tuple[str, str], str]) -> None:
    key = keys[("default", "admin")]
    near = key[:-1] + ("A" if key[-1] != "A" else "B")
    for token in (near, key[:-1], key + "x", key.upper(), "tm_", "tm_" + "A" * 43):
        r = httpx.get(gw.url + "/admin/servers", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, token


# -- SSRF: where admin registration may point the gateway ---------------------------------------
@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",   # cloud metadata (AWS, GCP, Azure, ...)
    "http://[fd00:ec2::254]/",                    # AWS metadata over IPv6
    "http://[fe80::1]:8080/mcp",                  # IPv6 link-local
    "http://[::ffff:169.254.169.254]/",           # the same, IPv4-mapped
    "http://metadata.google.internal/mcp",
    "http://127.0.0.1:1/mcp",                     # loopback, on a gateway not allowed it
    "http://localhost:1/mcp",
    "http://[::1]:1/mcp",
    "http://0.0.0.0:1/mcp",
    "http://nosuch.invalid/mcp",                  # cannot be checked: refused
])
def test_admin_registration_refuses_internal_addresses(gw: Gateway, keys: dict[tuple[str, str], str],
                                                       url: str) -> None:
    with client(gw, keys[("default", "admin")]) as a:
        for transport in ("http", "sse"):
            r = a.post("/admin/servers", json={"name": "probe", "transport": transport, "url": url})
            assert r.status_code == 400, r.text
            assert r.json()["error"]["param"] == "url"
        assert "probe" not in {s["name"] for s in a.get("/admin/servers").json()["servers"]}


def test_an_explicitly_allowed_network_may_be_registered(gw: Gateway, keys: dict[tuple[str, str], str]) -> None:
    with client(gw, keys[("default", "admin")]) as a:
        r = a.post("/admin/servers", json={"name": "allowed", "url": "http://127.0.0.2:1/mcp"})
        assert r.status_code == 201, r.text
        assert a.delete("/admin/servers/allowed").status_code == 200


# -- header injection, oversized input -------------------------------------------------------------
def raw_request(gw: Gateway, request: bytes) -> bytes:
    """Send bytes as they are (httpx refuses to send malformed headers) and read the answer."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(request)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


def test_header_injection_is_refused(gw: Gateway, keys: dict[tuple[str, str], str]) -> None:
    key = keys[("default", "admin")].encode()
    # CR or LF inside a header value, a header line without a colon, a space in a name.
    for bad in (b"X-Test: a\rSet-Cookie: x=1", b"X-Test: a\x00b", b"NoColonHere", b"Bad Name: v"):
        answer = raw_request(gw, b"GET /admin/servers HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                             + key + b"\r\n" + bad + b"\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400"), (bad, answer[:200])
        assert b"set-cookie" not in answer.lower()
    # Registration cannot smuggle header lines to an upstream either.
    with client(gw, keys[("default", "admin")]) as a:
        for headers in ({"X-A": "v\r\nHost: evil"}, {"X-A\nB": "v"}, {"X-A": "v\x00"}):
            r = a.post("/admin/servers", json={"name": "hdr", "url": "http://127.0.0.2:1/mcp", "headers": headers})
            assert r.status_code == 400 and r.json()["error"]["param"] == "headers", r.text
    assert httpx.get(gw.url + "/healthz").status_code == 200


def test_oversized_headers_and_bodies_are_refused(gw: Gateway, keys: dict[tuple[str, str], str]) -> None:
    auth_header = {"Authorization": f"Bearer {keys[('default', 'chat')]}"}
    big = b"{" + b'"a":"' + b"x" * 100_000 + b'"}'
    # Declared too large: 413 before reading; chunked (no length): 413 once past the limit.
    r = httpx.post(gw.url + "/v1/chat/completions", content=big, headers=auth_header)
    assert r.status_code == 413
    r = httpx.post(gw.url + "/v1/chat/completions", content=iter([big[:40_000], big[40_000:]]), headers=auth_header)
    assert r.status_code == 413
    mcp = {"Authorization": f"Bearer {keys[('default', 'mcp')]}", "MCP-Protocol-Version": "2026-07-28"}
    r = httpx.post(gw.url + "/mcp", content=big, headers={**mcp, "content-type": "application/json"})
    assert r.status_code == 413
    # One header of 1 MB: refused by the HTTP parser (or the connection closed), never served.
    answer = raw_request(gw, b"GET /admin/servers HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"x" * (1 << 20)
                         + b"\r\nConnection: close\r\n\r\n")
    assert not answer.startswith(b"HTTP/1.1 2"), answer[:200]
    assert httpx.get(gw.url + "/healthz").status_code == 200



"""The dashboard (GW-6) in a real Chromium against a real ``toolmesh serve``: demo servers, a test
server, the scripted LLM server. Every page shows real data; console errors, CSP violations and
dialogs fail the test (ui_support.Watched). Waits are on explicit page conditions only.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ServerProcess, free_port
from gateway_support import Gateway, demo_server
from ui_support import Watched, chromium, new_page, prefix_proxy

UI_SERVER = str(Path(__file__).parent / "servers" / "tm_ui_server.py")
PAYLOAD = '<img src=x onerror=alert(1)> <script>alert(2)</script> <b id="injected">bold?</b>'
PV = "2026-07-28"
ENV = {"io.modelcontextprotocol/protocolVersion": PV, "io.modelcontextprotocol/clientCapabilities": {}}

# The reasoning engine's chain (as in test_reasoning_gateway): step 3 is first drafted wrong, rejected, redone.
REASONING_PROMPT = "Sum the squares of 1..5, then double it."
STEPS = ["1*1 + 2*2 = 5", "5 + 3*3 = 14", "14 + 4*4 = 30", "30 + 5*5 = 55", "55 * 2 = 110"]


def chain_rules(steps: list[str], answer: str, prompt_regex: str) -> list[dict[str, Any]]:
    """The scripted model as a step-by-step reasoner: the prompt gets step 1 onwards, "Continue with
    【STEP k】" gets step k onwards (the engine cuts each reply at the next marker)."""
    def reply(k: int) -> str:
        return "\n".join(f"【STEP {i}】 {steps[i - 1]}" for i in range(k, len(steps) + 1)) + f"\n【ANSWER】 {answer}"

    rules = [{"when": {"user_regex": re.escape(f"Continue with 【STEP {k}】")}, "respond": {"text": reply(k)}}
             for k in range(2, len(steps) + 1)]
    rules.append({"when": {"user_regex": re.escape(f"Continue with 【STEP {len(steps) + 1}】")},
                  "respond": {"text": f"【ANSWER】 {answer}"}})
    rules.append({"when": {"user_regex": prompt_regex}, "respond": {"text": reply(1)}})
    return rules

SCRIPT = {"rules": [
    {"when": {"user_regex": re.escape("【STEP 3】 was checked and rejected")},
     "respond": {"text": "【STEP 3】 14 + 4*4 = 30"}},
    {"when": {"user_regex": re.escape("Continue with 【STEP 3】")}, "respond": {"text": "【STEP 3】 14 + 4*4 = 31"}},
    *chain_rules(STEPS, "110", prompt_regex=re.escape(REASONING_PROMPT)),
    {"when": {"last_role": "user", "user_regex": "xss"},
     "respond": {"tool_calls": [{"name": "echo__html", "arguments": {}}]}},
    {"when": {"last_role": "user", "user_regex": "pause"},
     "respond": {"tool_calls": [{"name": "echo__pause", "arguments": {"seconds": 1.5}}]}},
    {"when": {"last_role": "user", "user_regex": "stock"},
     "respond": {"tool_calls": [{"name": "catalog__get_product_info", "arguments": {"sku": "SKU-1001"}}]}},
    {"when": {"last_role": "tool"}, "respond": {"text": "Result: {{tool_results}}"}}],
    "default": {"text": "Hello from the scripted model."}}


def _server(port: int) -> ServerProcess:
    return ServerProcess([sys.executable, UI_SERVER, str(port)], port).start()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ui")
    echo, flaky = _server(free_port()), _server(free_port())
    rules = tmp / "script.json"
    rules.write_text(json.dumps(SCRIPT))
    llm_port = free_port()
    llm = ServerProcess([sys.executable, "-m", "toolmesh.testing.scripted_llm", "--port", str(llm_port),
                         "--rules", str(rules)], llm_port).start()
    base = f"http://127.0.0.1:{llm_port}/v1"
    config = {
        "servers": {
            "catalog": demo_server("catalog"),
            "echo": {"transport": "http", "url": f"http://127.0.0.1:{echo.port}/mcp"},
            "flaky": {"transport": "http", "url": f"http://127.0.0.1:{flaky.port}/mcp", "retries": 0,
                      "circuit": {"failure_threshold": 2, "reset_timeout": 600}},
        },
        "llm": {"deployments": [
            {"name": "cheap", "provider": "openai", "api_key": "k", "base_url": base, "model": "deepseek-chat"},
            {"name": "strong", "provider": "openai", "api_key": "k", "base_url": base, "model": "gpt-4o-mini"},
            # A model without a price: its usage is shown as unpriced, never as $0.
            {"name": "house", "provider": "openai", "api_key": "k", "base_url": base, "model": "house-model"}],
            "rules": {"daily": "cost", "peak": "latency", "complex": "quality"}},
        "reasoning": {"verifiers": ["arithmetic"], "max_revisions": 2},
        "gateway": {"audit": True},
    }
    gw = Gateway(tmp, config).start()
    try:
        yield {"gw": gw, "key": gw.key(), "echo": echo, "flaky": flaky}
    finally:
        gw.stop()
        for proc in (echo, flaky, llm):
            proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def page(browser: Any, stack: dict[str, Any]) -> Watched:
    """One signed-in page shared by the page tests (each test navigates by the URL hash)."""
    w = new_page(browser)
    w.page.goto(stack["gw"].url + "/ui/")
    w.page.get_by_label("Admin API key").fill(stack["key"])
    w.page.get_by_role("button", name="Sign in").click()
    w.page.locator("#nav").wait_for(state="visible")
    return w


def admin(stack: dict[str, Any], path: str) -> Any:
    r = httpx.get(stack["gw"].url + "/admin/" + path, headers={"authorization": f"Bearer {stack['key']}"})
    assert r.status_code == 200, r.text
    return r.json()


def call_tool(stack: dict[str, Any], name: str, arguments: dict[str, Any]) -> httpx.Response:
    """One stateless 2026-07-28 ``tools/call`` through the gateway's ``/mcp``."""
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json",
               "mcp-protocol-version": PV, "mcp-method": "tools/call", "mcp-name": name,
               "authorization": f"Bearer {stack['key']}"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": arguments,
                                                                        "_meta": ENV}}
    return httpx.post(stack["gw"].url + "/mcp", headers=headers, json=body, timeout=60)


def go(w: Watched, name: str) -> Any:
    w.page.get_by_role("link", name=name, exact=True).click()
    w.page.locator(f"#page-{name.lower()}").wait_for()
    return w.page


# -- served files and headers ----------------------------------------------------------------
def test_files_are_served_with_a_strict_policy_and_relative_urls(stack: dict[str, Any]) -> None:
    url = stack["gw"].url
    r = httpx.get(url + "/ui/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    for part in ("default-src 'self'", "script-src 'self'", "require-trusted-types-for 'script'",
                 "frame-ancestors 'none'"):
        assert part in csp
    assert "unsafe" not in csp
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-cache"
    # Every reference is relative (the dashboard works under any path prefix) and there is no inline script.
    refs = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert refs and all(not ref.startswith(("/", "http")) for ref in refs), refs
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", r.text)
    again = httpx.get(url + "/ui/", headers={"if-none-match": r.headers["etag"]})
    assert again.status_code == 304
    redirect = httpx.get(url + "/ui", follow_redirects=False)
    assert redirect.status_code == 308 and redirect.headers["location"] == "ui/"
    assert httpx.get(url + "/ui/../admin/servers").status_code in (401, 404)
    assert httpx.get(url + "/ui/nope.js").status_code == 404
    # Host and Origin are checked for the dashboard's files as for the API (DNS rebinding).
    assert httpx.get(url + "/ui/", headers={"host": "evil.example"}).status_code == 421
    assert httpx.get(url + "/ui/", headers={"origin": "https://evil.example"}).status_code == 403
    assert httpx.post(url + "/ui/app.js").status_code == 405
    # A browser opening the gateway's bare address is sent to the dashboard (no key needed to land).
    root = httpx.get(url + "/")
    assert root.status_code == 307 and root.headers["location"] == "ui/"
    assert httpx.get(url + "/", follow_redirects=True).text == r.text
    assert httpx.post(url + "/").status_code == 401  # only GET/HEAD are sent there; the rest is the API's
    js = httpx.get(url + "/ui/app.js")
    assert js.headers["content-type"].startswith("text/javascript")
    # Data answers are never cached.
    data = httpx.get(url + "/admin/overview", headers={"authorization": f"Bearer {stack['key']}"})
    assert data.headers["cache-control"] == "no-store"
    assert httpx.get(url + "/admin/overview").status_code == 401


def test_every_static_file_ships_as_package_data() -> None:
    """The wheel carries what /ui/ serves (pyproject's package-data globs cover every file)."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parent.parent
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["toolmesh"]
    static = root / "src" / "toolmesh" / "gateway" / "ui" / "static"
    files = [f"gateway/ui/static/{f.name}" for f in static.iterdir() if f.is_file()]
    assert "gateway/ui/static/index.html" in files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert not missing, f"not in package-data: {missing}"


# -- pages ------------------------------------------------------------------------------------
def test_sign_in_and_overview_shows_the_servers(page: Watched, stack: dict[str, Any]) -> None:
    p = page.page
    go(page, "Overview")
    for name in ("catalog", "echo", "flaky"):
        p.locator(f'#servers-table tr[data-server="{name}"]').wait_for()
    assert p.locator('tr[data-server="echo"] [data-circuit]').get_attribute("data-circuit") == "closed"
    # The key lives in this tab's sessionStorage only: no cookie, no localStorage.
    assert p.evaluate("sessionStorage.getItem('toolmesh.adminKey')") == stack["key"]
    assert p.evaluate("localStorage.length") == 0 and p.context.cookies() == []
    # A reload keeps the tab signed in (same tab, same sessionStorage) and knows the tenant again.
    p.reload()
    p.locator('#servers-table tr[data-server="catalog"]').wait_for()
    assert p.locator("#who").inner_text() == "tenant: default"
    page.check()


def test_playground_shows_tool_calls_live_and_as_text(page: Watched) -> None:
    p = go(page, "Playground")
    p.locator("select[name=model] option[value=auto]").wait_for(state="attached")
    p.get_by_label("Message").fill("pause please")
    p.get_by_role("button", name="Send").click()
    # The call shows while it runs (the tool sleeps 1.5 s), then its outcome.
    running = p.locator('.tool[data-status="running"]')
    running.wait_for()
    assert "echo__pause" in running.inner_text() and '"seconds": 1.5' in running.locator("pre.args").inner_text()
    p.locator('.tool[data-status="ok"]').wait_for()
    p.locator('.msg.assistant[data-final="completed"]').wait_for()

    p.get_by_role("button", name="New conversation").click()
    assert p.locator("#transcript > *").count() == 0
    p.get_by_label("Message").fill("xss please")
    p.get_by_role("button", name="Send").click()
    p.locator('.msg.assistant[data-final="completed"]').wait_for()
    card = p.locator('.tool[data-status="ok"]', has_text="echo__html")
    card.locator("summary").click()
    assert card.locator("pre.result").inner_text() == PAYLOAD
    answer = p.locator(".msg.assistant .content").inner_text()
    assert PAYLOAD in answer
    # Shown as text: no element was created from the markup and no script ran (a dialog fails check()).
    assert p.locator("#transcript img, #transcript script, #injected").count() == 0
    page.shot("playground")
    page.check()


def test_playground_shows_reasoning_steps_and_verdicts(page: Watched) -> None:
    p = go(page, "Playground")
    p.locator("select[name=model] option[value=auto]").wait_for(state="attached")
    p.get_by_role("button", name="New conversation").click()
    p.get_by_label("Reasoning engine").check()
    p.get_by_label("Message").fill(REASONING_PROMPT)
    p.get_by_role("button", name="Send").click()
    p.locator('.step[data-step="5"][data-state="committed"]').wait_for()
    p.locator('.msg.assistant[data-final="ok"]').wait_for()
    assert p.locator(".msg.assistant .content").last.inner_text() == "110"
    assert p.locator('.step[data-state="committed"]').count() == 5
    third = p.locator('.step[data-step="3"]')
    assert third.locator(".draft.rejected").inner_text().strip() == "14 + 4*4 = 31"  # the rejected draft, struck out
    assert "14 + 4*4 = 30" in third.locator(".draft:not(.rejected)").inner_text()
    assert third.locator(".verdict").inner_text().startswith("verified")
    page.shot("playground-reasoning")
    p.get_by_label("Reasoning engine").uncheck()
    page.check()


def test_audit_filters_by_tool_and_status(page: Watched, stack: dict[str, Any]) -> None:
    assert call_tool(stack, "echo__echo", {"text": "audited"}).status_code == 200
    p = go(page, "Audit")
    p.locator('#audit-table tr[data-tool="echo"]').first.wait_for()
    page.shot("audit")
    p.get_by_label("Tool").fill("echo")
    p.get_by_role("button", name="Filter").click()
    p.wait_for_function("() => { const rows = document.querySelectorAll('#audit-table tbody tr');"
                        " return rows.length > 0 && [...rows].every(r => r.dataset.tool === 'echo'); }")
    p.get_by_label("Status").select_option("cancelled")
    p.get_by_role("button", name="Filter").click()
    p.locator("#audit-table .empty").wait_for()
    assert "No tool call matches" in p.locator("#audit-table .empty").inner_text()
    p.get_by_role("button", name="Clear").click()
    p.locator('#audit-table tr[data-tool="echo"]').first.wait_for()
    page.check()


def test_costs_and_sessions_show_the_recorded_usage(page: Watched, stack: dict[str, Any]) -> None:
    httpx.post(stack["gw"].url + "/v1/chat/completions", timeout=60,
               headers={"authorization": f"Bearer {stack['key']}", "x-toolmesh-session": "carol-1"},
               json={"model": "deepseek-chat", "user": "carol", "messages": [{"role": "user", "content": "stock?"}]}
               ).raise_for_status()
    httpx.post(stack["gw"].url + "/v1/chat/completions", timeout=60,
               headers={"authorization": f"Bearer {stack['key']}"},
               json={"model": "house-model", "user": "dave", "messages": [{"role": "user", "content": "hi"}]}
               ).raise_for_status()
    p = go(page, "Costs")
    p.locator("tr", has_text="house-model").wait_for()
    assert "unpriced" in p.locator("tr", has_text="house-model").first.inner_text()
    p.wait_for_function("() => document.body.innerText.includes('carol')")
    assert "Savings vs" in p.locator(".cards").inner_text()
    report = admin(stack, "costs")
    assert report["totals"]["requests"] >= 2 and {r["user"] for r in report["by_user"]} >= {"carol", "dashboard"}
    page.shot("costs")

    p = go(page, "Sessions")
    row = p.locator("tr", has_text="carol-1")
    row.wait_for()
    row.get_by_role("button", name="View").click()
    p.locator("#session-detail .msg.user", has_text="stock?").wait_for()
    p.locator("#session-detail .msg.assistant", has_text='→ catalog__get_product_info({"sku":"SKU-1001"})').wait_for()
    assert "carol" in p.locator("#page-sessions table").first.inner_text()  # the users-and-limits table
    page.shot("sessions")
    page.check()


def test_switching_a_routing_rule_changes_the_router(page: Watched, stack: dict[str, Any]) -> None:
    assert admin(stack, "routing")["rules"]["peak"]["strategy"] == "latency"
    p = go(page, "Routing")
    p.locator('select[data-rule="peak"]').select_option("cost")
    p.locator('button[data-apply="peak"]').click()
    dialog = p.get_by_role("dialog")
    assert "peak" in dialog.inner_text()
    page.shot("routing")
    dialog.get_by_role("button", name="Switch").click()
    p.locator('tr[data-scenario="peak"] [data-strategy="cost"]').wait_for()
    assert admin(stack, "routing")["rules"]["peak"]["strategy"] == "cost"
    # Cancelling changes nothing.
    p.locator('select[data-rule="daily"]').select_option("quality")
    p.locator('button[data-apply="daily"]').click()
    p.get_by_role("dialog").wait_for()
    p.keyboard.press("Escape")  # the dialog opens with focus on Cancel; Escape cancels too
    p.get_by_role("dialog").wait_for(state="detached")
    assert p.locator('select[data-rule="daily"]').input_value() == "cost"
    assert admin(stack, "routing")["rules"]["daily"]["strategy"] == "cost"
    page.check()


def test_servers_register_test_and_unregister(page: Watched, stack: dict[str, Any]) -> None:
    p = go(page, "Servers")
    p.locator('#server-list tr[data-server="echo"]').wait_for()
    assert p.get_by_label("Command").is_hidden()  # stdio fields show only for stdio
    p.get_by_label("Transport").select_option("stdio")
    assert p.get_by_label("Command").is_visible() and p.get_by_label("URL").is_hidden()
    p.get_by_label("Transport").select_option("http")
    p.get_by_label("Name").fill("echo2")
    p.get_by_label("URL").fill(f"http://127.0.0.1:{stack['echo'].port}/mcp")
    p.get_by_role("button", name="Register", exact=True).click()
    p.locator('#server-list tr[data-server="echo2"]').wait_for()
    assert "echo2" in {s["name"] for s in admin(stack, "servers")["servers"]}
    p.get_by_role("button", name="Test echo2").click()
    outcome = p.locator('#server-result [data-test-result="ok"]')
    outcome.wait_for()
    assert "OK: 3 tools" in outcome.inner_text()
    page.shot("servers")
    p.get_by_role("button", name="Unregister echo2").click()
    p.get_by_role("dialog").get_by_role("button", name="Unregister", exact=True).click()
    p.locator('#server-list tr[data-server="echo2"]').wait_for(state="detached")
    assert "echo2" not in {s["name"] for s in admin(stack, "servers")["servers"]}
    page.check()


def test_a_dying_server_shows_an_open_circuit(page: Watched, stack: dict[str, Any]) -> None:
    assert call_tool(stack, "flaky__echo", {"text": "alive"}).status_code == 200
    stack["flaky"].stop()
    # Calls fail (connection refused) until the breaker opens after failure_threshold (2) of them.
    for _ in range(10):
        call_tool(stack, "flaky__echo", {"text": "dead?"})
        if {s["name"]: s["circuit"]["state"] for s in admin(stack, "overview")["servers"]}["flaky"] == "open":
            break
    p = go(page, "Overview")
    row = p.locator('#servers-table tr[data-server="flaky"]')
    row.locator('[data-circuit="open"]').wait_for()
    error = {s["name"]: s["last_error"] for s in admin(stack, "overview")["servers"]}["flaky"]
    assert error["message"] and error["message"] != "error", error  # the last error is named
    assert error["message"] in row.locator("td.wrap").inner_text()
    assert p.locator('tr[data-server="echo"] [data-circuit="closed"]').count() == 1
    page.shot("overview")
    page.check()


def test_narrow_window_and_keyboard_only(browser: Any, stack: dict[str, Any]) -> None:
    w = new_page(browser, width=390, height=800)
    p = w.page
    p.goto(stack["gw"].url + "/ui/")
    p.locator("#key:focus").wait_for()  # the key field has focus: type and press Enter
    p.keyboard.type(stack["key"])
    p.keyboard.press("Enter")
    p.locator("#servers-table tr[data-server]").first.wait_for()
    p.locator('#nav a[href="#costs"]').focus()
    p.keyboard.press("Enter")
    p.locator("#page-costs").wait_for()
    # Wide tables scroll inside their own box: the page itself never scrolls sideways.
    assert p.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    p.get_by_role("button", name="Log out").click()
    p.get_by_label("Admin API key").wait_for()
    assert p.evaluate("sessionStorage.getItem('toolmesh.adminKey')") is None
    w.check()
    p.context.close()


def test_the_policy_blocks_html_sinks_and_the_watch_sees_it(browser: Any, stack: dict[str, Any]) -> None:
    """The page's CSP makes ``innerHTML = string`` throw (Trusted Types); such a violation fails a test."""
    w = new_page(browser)
    w.page.goto(stack["gw"].url + "/ui/")
    w.page.get_by_label("Admin API key").wait_for()
    outcome = w.page.evaluate("() => { try { document.createElement('div').innerHTML = '<b>x</b>'; return 'assigned'; }"
                              " catch (e) { return e.name; } }")
    assert outcome == "TypeError"
    w.page.wait_for_function("() => window.__violations.length > 0")
    with pytest.raises(AssertionError, match="require-trusted-types-for"):
        w.check()
    w.page.context.close()


def test_works_behind_a_path_prefix(browser: Any, stack: dict[str, Any]) -> None:
    with prefix_proxy(stack["gw"].url) as base:
        w = new_page(browser)
        p = w.page
        p.goto(base + "/ui")  # the relative redirect keeps the prefix
        p.get_by_label("Admin API key").fill(stack["key"])
        p.get_by_role("button", name="Sign in").click()
        p.locator('#servers-table tr[data-server="catalog"]').wait_for()
        assert p.url.startswith(base + "/ui/")
        p.get_by_role("link", name="Audit", exact=True).click()
        p.locator("#audit-table tbody tr").first.wait_for()
        w.check()
        p.context.close()


def test_a_refused_key_and_an_empty_tenant_say_what_to_do(browser: Any, stack: dict[str, Any]) -> None:
    w = new_page(browser)
    p = w.page
    p.goto(stack["gw"].url + "/ui/")
    p.get_by_label("Admin API key").fill("tm_not-a-real-key")
    p.get_by_role("button", name="Sign in").click()
    p.get_by_role("alert").filter(has_text="not accepted").wait_for()
    assert p.locator("#nav").is_hidden()
    # A tenant with nothing yet: every page explains what would fill it.
    p.get_by_label("Admin API key").fill(stack["gw"].key("acme", "admin"))
    p.get_by_role("button", name="Sign in").click()
    empty = p.locator("#servers-table .empty")
    empty.wait_for()
    assert "Register one on the Servers page" in empty.inner_text()
    assert p.locator("#who").inner_text() == "tenant: acme"
    for name, hint in (("Costs", "No LLM usage in this period"), ("Sessions", "No stored conversations"),
                       ("Audit", "No tool calls recorded yet")):
        go(w, name)
        p.locator(".empty", has_text=hint).first.wait_for()
    w.check(expected="401")
    p.context.close()

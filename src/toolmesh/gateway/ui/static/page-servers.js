// Servers: the tenant's MCP servers; register (HTTP, SSE, WebSocket, or stdio when allowed), test, unregister.
import { api } from "./api.js";
import { badge, confirmDialog, field, fill, fmt, h, table } from "./dom.js";

const CIRCUIT = { closed: "good", "half-open": "warn", open: "bad" };

export default {
  title: "Servers",
  mount(root, { onError }) {
    const list = h("div", { id: "server-list" });
    const result = h("div", { id: "server-result", "aria-live": "polite" });
    const name = h("input", { name: "name", required: true, autocomplete: "off", pattern: "[A-Za-z0-9_.\\-]+" });
    const transport = h("select", { name: "transport" },
      ["http", "sse", "websocket", "stdio"].map((t) => h("option", { value: t }, t)));
    const url = h("input", { name: "url", type: "url", placeholder: "http://127.0.0.1:9000/mcp", autocomplete: "off" });
    const command = h("input", { name: "command", placeholder: "python", autocomplete: "off" });
    const args = h("input", { name: "args", placeholder: "-m my_server (space separated)", autocomplete: "off" });
    const [cmdField] = field("Command", command);
    const [argsField] = field("Arguments", args);
    const [urlField] = field("URL", url);
    const sync = () => {
      const stdio = transport.value === "stdio";
      cmdField.hidden = argsField.hidden = !stdio;
      urlField.hidden = stdio;
      url.required = !stdio;
      command.required = stdio;
    };
    transport.addEventListener("change", sync);
    sync();
    const form = h("form", { class: "row", "aria-label": "Register a server" },
      field("Name", name)[0], field("Transport", transport)[0], urlField, cmdField, argsField,
      h("button", { type: "submit" }, "Register"));
    let shown = "";

    function say(title, body, cls = "") {
      fill(result, h("h2", {}, title), h("pre", { class: cls }, typeof body === "string" ? body : fmt.json(body)));
    }

    async function register(e) {
      e.preventDefault();
      const body = { name: name.value.trim(), transport: transport.value };
      if (transport.value === "stdio") {
        body.command = command.value.trim();
        body.args = args.value.trim() ? args.value.trim().split(/\s+/) : [];
      } else body.url = url.value.trim();
      try {
        const d = await api("admin/servers", { method: "POST", body });
        say("Registered " + d.name, { connected: d.connected, status: d.status, circuit: d.circuit });
        form.reset();
        sync();
        await view.refresh();
      } catch (err) { say("Could not register " + body.name, err.message, "error"); }
    }

    async function test(s) {
      say("Testing " + s.name + "…", "opening a fresh connection and listing tools");
      try {
        const r = await api("admin/servers/" + encodeURIComponent(s.name) + "/test", { method: "POST" });
        fill(result, h("h2", {}, "Test of " + s.name),
          h("p", { class: r.ok ? "good" : "bad", "data-test-result": r.ok ? "ok" : "failed" },
            r.ok ? `OK: ${r.tool_count} tools, protocol ${r.protocol}, ${fmt.ms(r.latency_ms)}`
              : "Failed: " + r.error + ". Check the URL or command, and that the server is running."),
          h("pre", {}, fmt.json(r)));
      } catch (err) { say("Test of " + s.name + " failed", err.message, "error"); }
    }

    async function remove(s) {
      const ok = await confirmDialog("Unregister server?",
        `Unregister "${s.name}" (${s.source || "config"})? Its tools disappear from /mcp for this tenant at once.`, "Unregister");
      if (!ok) return;
      try {
        await api("admin/servers/" + encodeURIComponent(s.name), { method: "DELETE" });
        say("Unregistered " + s.name, "Its tools are gone from this tenant's catalogue.");
        await view.refresh();
      } catch (err) { onError(err); }
    }

    const view = {
      live: true,
      async refresh() {
        const d = await api("admin/servers");
        const sig = JSON.stringify(d.servers.map((s) => [s.name, s.status, s.circuit.state, s.connected, s.transport]));
        if (sig === shown) return;
        shown = sig;
        fill(list, table([
          { label: "Name", cell: (s) => h("strong", {}, s.name) },
          { label: "Transport", cell: (s) => s.transport },
          { label: "Where", wrap: true, cell: (s) => s.config.url || [s.config.command, ...(s.config.args || [])].filter(Boolean).join(" ") },
          { label: "Connected", cell: (s) => (s.connected ? badge("yes", "good") : badge("no", "warn")) },
          { label: "Status", cell: (s) => String(s.status) },
          { label: "Circuit", cell: (s) => badge(s.circuit.state, CIRCUIT[s.circuit.state] || "warn") },
          { label: "Source", cell: (s) => s.source || "config" },
          { label: "Actions", cell: (s) => h("span", { class: "row" },
            h("button", { type: "button", class: "secondary", "data-test": s.name, onclick: () => test(s), "aria-label": "Test " + s.name }, "Test"),
            h("button", { type: "button", class: "danger", "data-remove": s.name, onclick: () => remove(s), "aria-label": "Unregister " + s.name }, "Unregister")) },
        ], d.servers, {
          empty: "No servers for this tenant yet: register one below.", caption: "Servers",
          rowAttrs: (s) => ({ "data-server": s.name }),
        }));
      },
    };
    form.addEventListener("submit", register);
    fill(root, list, h("h2", {}, "Register a server"),
      h("p", { class: "hint" }, "stdio servers run a command on the gateway host and are refused unless gateway.admin_stdio is true."),
      form, result);
    return view;
  },
};

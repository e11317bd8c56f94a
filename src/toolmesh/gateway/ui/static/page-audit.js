// Audit: the tool calls of this tenant, filterable by user, server, tool and status.
import { api } from "./api.js";
import { badge, field, fill, fmt, h, table } from "./dom.js";

const STATUS = { ok: "good", error: "bad", timeout: "bad", tool_error: "warn", cancelled: "warn" };

export default {
  title: "Audit",
  mount(root, { onError }) {
    const inputs = {
      user: h("input", { name: "user", type: "text", autocomplete: "off" }),
      server: h("input", { name: "server", type: "text", autocomplete: "off" }),
      tool: h("input", { name: "tool", type: "text", autocomplete: "off" }),
      status: h("select", { name: "status" }, ["", "ok", "error", "tool_error", "timeout", "cancelled"].map((v) => h("option", { value: v }, v || "any"))),
    };
    const list = h("div", { id: "audit-table" });
    const form = h("form", { class: "row", "aria-label": "Audit filters" },
      field("User", inputs.user)[0], field("Server", inputs.server)[0], field("Tool", inputs.tool)[0],
      field("Status", inputs.status)[0], h("button", { type: "submit" }, "Filter"),
      h("button", { type: "reset", class: "secondary" }, "Clear"));
    const view = {
      live: true,
      async refresh() {
        const q = new URLSearchParams({ limit: "200" });
        for (const [k, el] of Object.entries(inputs)) if (el.value.trim()) q.set(k, el.value.trim());
        const d = await api("admin/audit?" + q);
        fill(list, table([
          { label: "Time", cell: (r) => fmt.time(r.at) },
          { label: "User", cell: (r) => r.user },
          { label: "Server", cell: (r) => r.server },
          { label: "Tool", cell: (r) => r.tool },
          { label: "Status", cell: (r) => badge(r.status, STATUS[r.status] || "warn") },
          { label: "Latency", num: true, cell: (r) => fmt.ms(r.latency_ms) },
          { label: "Error", wrap: true, cell: (r) => r.error || "" },
          { label: "Request", cell: (r) => h("code", {}, (r.request_id || "").slice(0, 12)) },
          { label: "Args SHA-256", cell: (r) => h("code", { title: r.arguments_hash }, (r.arguments_hash || "").slice(0, 10)) },
        ], d.entries, {
          empty: q.size > 1 ? "No tool call matches these filters. Clear them to see everything."
            : "No tool calls recorded yet (gateway.audit must be on). Calls through /mcp or /v1 appear here.",
          caption: "Audit log", rowAttrs: (r) => ({ "data-tool": r.tool, "data-status": r.status }),
        }));
      },
    };
    form.addEventListener("submit", (e) => { e.preventDefault(); view.refresh().catch(onError); });
    form.addEventListener("reset", () => setTimeout(() => view.refresh().catch(onError), 0));
    fill(root, form, h("p", { class: "hint" }, "Arguments are stored as a SHA-256 digest only."), list);
    return view;
  },
};

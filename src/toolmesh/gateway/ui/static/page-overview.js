// Overview: servers (status, circuit, last error, error rate, latency, in flight), slowest tools, traffic.
import { api } from "./api.js";
import { badge, card, fill, fmt, h, table } from "./dom.js";
import { chart } from "./chart.js";

const STATUS = { active: "good", degraded: "warn", error: "bad", unknown: "warn" };
const CIRCUIT = { closed: "good", "half-open": "warn", open: "bad" };

function circuitCell(s) {
  const c = s.circuit;
  return h("span", { "data-circuit": c.state }, badge(c.state, CIRCUIT[c.state] || "warn"),
    c.state === "open" && c.retry_after ? h("span", { class: "hint" }, " probe in " + Math.ceil(c.retry_after) + " s") : null);
}

function lastError(s) {
  const e = s.last_error;
  if (!e) return h("span", { class: "hint" }, "none");
  return h("span", {}, e.message || "error", h("br"),
    h("span", { class: "hint" }, [e.tool ? e.tool + " · " : "", e.at ? fmt.ago(e.at) : e.source].join("")));
}

const SERVER_COLUMNS = [
  { label: "Server", cell: (s) => h("strong", {}, s.name) },
  { label: "Status", cell: (s) => badge(s.status, STATUS[s.status] || "warn") },
  { label: "Circuit", cell: circuitCell },
  { label: "Failures", num: true, cell: (s) => s.circuit.consecutive_failures + " / " + s.circuit.failure_threshold },
  { label: "Opened", cell: (s) => (s.circuit.opened_at ? fmt.clock(s.circuit.opened_at) : "–") },
  { label: "Last error", wrap: true, cell: lastError },
  { label: "Error rate", num: true, cell: (s) => fmt.pct(s.error_rate) },
  { label: "p50", num: true, cell: (s) => fmt.ms(s.p50_ms) },
  { label: "p95", num: true, cell: (s) => fmt.ms(s.p95_ms) },
  { label: "In flight", num: true, cell: (s) => String(s.in_flight) },
  { label: "Calls", num: true, cell: (s) => fmt.int(s.requests) },
];

const TOOL_COLUMNS = [
  { label: "Tool", cell: (t) => t.server + " / " + t.tool },
  { label: "Calls", num: true, cell: (t) => fmt.int(t.calls) },
  { label: "Failures", num: true, cell: (t) => fmt.int(t.failures) },
  { label: "p50", num: true, cell: (t) => fmt.ms(t.p50_ms) },
  { label: "p95", num: true, cell: (t) => fmt.ms(t.p95_ms) },
];

export default {
  title: "Overview",
  mount(root) {
    const cards = h("div", { class: "cards" });
    const traffic = h("div", {});
    const servers = h("div", { id: "servers-table" });
    const slow = h("div", {});
    fill(root, cards, h("h2", {}, "Traffic, last minutes"), traffic, h("h2", {}, "Servers"), servers,
      h("h2", {}, "Slowest tools (p95)"), slow);
    return {
      live: true,
      async refresh() {
        const d = await api("admin/overview");
        const open = d.servers.filter((s) => s.circuit.state === "open").length;
        const healthy = d.servers.filter((s) => s.status === "active").length;
        const pts = d.traffic.points;
        const last = pts.length ? pts[pts.length - 1] : null;
        fill(cards,
          card("Servers healthy", healthy + " / " + d.servers.length, healthy === d.servers.length ? "good" : "warn"),
          card("Circuits open", String(open), open ? "bad" : "good"),
          card("Requests/s (API)", last ? last.requests_per_s.toFixed(2) : "–"),
          card("Tool calls/s", last ? last.tool_calls_per_s.toFixed(2) : "–"),
          card("In flight", String(d.in_flight)),
          card("Uptime", d.uptime_s < 120 ? Math.round(d.uptime_s) + " s" : d.uptime_s < 7200
            ? Math.round(d.uptime_s / 60) + " min" : (d.uptime_s / 3600).toFixed(1) + " h"));
        const total = pts.reduce((a, p) => a + p.errors + p.tool_errors, 0);
        fill(traffic,
          pts.length < 2
            ? h("p", { class: "empty" }, "Collecting samples (one every " + d.traffic.interval_s + " s)…")
            : chart(pts, {
              lines: [{ key: "requests_per_s", cls: "req" }, { key: "tool_calls_per_s", cls: "calls" }],
              bars: { key: "tool_errors", cls: "err" },
              label: `Requests and tool calls per second over the last ${Math.round(pts.length * d.traffic.interval_s / 60)} min; ${total} errors`,
            }),
          h("div", { class: "legend" },
            h("span", {}, h("span", { class: "sw req" }), "API requests/s (excl. /admin)"),
            h("span", {}, h("span", { class: "sw calls" }), "tool calls/s"),
            h("span", {}, h("span", { class: "sw err" }), "failed tool calls"),
            h("span", {}, "errors in window: " + total)));
        fill(servers, table(SERVER_COLUMNS, d.servers, {
          empty: "No MCP servers for this tenant. Register one on the Servers page or under servers: in the config.",
          caption: "Servers", rowAttrs: (s) => ({ "data-server": s.name }),
        }));
        fill(slow, table(TOOL_COLUMNS, d.slowest_tools, {
          empty: "No tool calls yet. Try the Playground, or call a tool through /mcp.", caption: "Slowest tools",
        }));
      },
    };
  },
};

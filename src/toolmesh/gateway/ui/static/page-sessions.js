// Sessions: live conversations (the store's sessions) and the per-user limits in use.
import { api } from "./api.js";
import { badge, confirmDialog, fill, fmt, h, table } from "./dom.js";

// A stored message as text: its content, or the tool calls it asked for.
function messageText(m) {
  const calls = (m.tool_calls || []).map((c) => {
    const fn = c.function || c;
    const args = typeof fn.arguments === "string" ? fn.arguments : JSON.stringify(fn.arguments ?? {});
    return "→ " + (fn.name || "?") + "(" + args + ")";
  });
  const content = typeof m.content === "string" ? m.content
    : Array.isArray(m.content) ? m.content.map((p) => p.text ?? JSON.stringify(p)).join("\n")
      : m.content == null ? "" : JSON.stringify(m.content, null, 2);
  return [content, ...calls].filter(Boolean).join("\n") || JSON.stringify(m, null, 2);
}

export default {
  title: "Sessions",
  mount(root, { onError }) {
    const limits = h("div", {});
    const list = h("div", {});
    const detail = h("div", { id: "session-detail", "aria-live": "polite" });

    async function show(s) {
      try {
        const d = await api("admin/sessions/" + encodeURIComponent(s.id));
        fill(detail, h("h2", {}, "Session " + d.id + " · " + d.user + " · " + d.conversation),
          d.history.length === 0 ? h("p", { class: "empty" }, "No messages stored.") :
            h("div", { class: "transcript" }, d.history.map((m) => h("div", { class: "msg " + (m.role || "") },
              h("span", { class: "role" }, (m.role || "?") + (m.name ? " · " + m.name : "")), messageText(m)))));
      } catch (err) { onError(err); }
    }

    async function remove(s) {
      if (!await confirmDialog("Delete session?", `Delete session ${s.id} of ${s.user} (${s.messages} messages)? The history is lost.`, "Delete")) return;
      try { await api("admin/sessions/" + encodeURIComponent(s.id), { method: "DELETE" }); fill(detail); await view.refresh(); }
      catch (err) { onError(err); }
    }

    const view = {
      live: true,
      async refresh() {
        const [l, s] = await Promise.all([api("admin/limits"), api("admin/sessions?limit=100")]);
        const max = l.max_concurrent_runs;
        fill(limits,
          h("p", {}, "Per-user limits: ", h("strong", {}, max === null ? "no run limit" : max + " runs at once"), ", ",
            h("strong", {}, l.requests_per_minute === null ? "no rate limit" : l.requests_per_minute + " requests/min"),
            l.shared ? " (shared in Redis: runs in flight are not shown per worker)" : ""),
          table([
            { label: "User", cell: (u) => u.user },
            { label: "Runs in flight", num: true, cell: (u) => (u.runs_in_flight === null ? "–" : u.runs_in_flight + (max ? " / " + max : "")) },
            { label: "LLM calls, last min", num: true, cell: (u) => fmt.int(u.completions_last_minute) },
            { label: "LLM calls, last hour", num: true, cell: (u) => fmt.int(u.completions_last_hour) },
            { label: "Sessions", num: true, cell: (u) => fmt.int(u.sessions) },
            { label: "Last seen", cell: (u) => fmt.ago(u.last_seen) },
          ], l.users, { empty: "No user active in the last hour.", caption: "Users" }));
        fill(list, table([
          { label: "ID", num: true, cell: (r) => String(r.id) },
          { label: "User", cell: (r) => r.user },
          { label: "Conversation", wrap: true, cell: (r) => r.conversation },
          { label: "Messages", num: true, cell: (r) => fmt.int(r.messages) },
          { label: "Updated", cell: (r) => fmt.ago(r.updated_at) },
          { label: "State", cell: (r) => (r.expired ? badge("expired", "warn") : badge("live", "good")) },
          { label: "Actions", cell: (r) => h("span", { class: "row" },
            h("button", { type: "button", class: "secondary", onclick: () => show(r), "aria-label": "View session " + r.id }, "View"),
            h("button", { type: "button", class: "danger", onclick: () => remove(r), "aria-label": "Delete session " + r.id }, "Delete")) },
        ], s.sessions, {
          empty: "No stored conversations. Conversations are kept when a chat request carries a session id (X-Toolmesh-Session).",
          caption: "Sessions", rowAttrs: (r) => ({ "data-session": r.id }),
        }));
      },
    };
    fill(root, h("h2", {}, "Users and limits"), limits, h("h2", {}, "Conversations"), list, detail);
    return view;
  },
};

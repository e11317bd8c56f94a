// Routing: the LLM router's scenario rules, switchable at run time (with a confirmation), and deployments.
import { api } from "./api.js";
import { confirmDialog, fill, fmt, h, table } from "./dom.js";

const STRATEGIES = [["cost", "cheapest (cost)"], ["latency", "fastest (latency)"], ["quality", "strongest (quality)"],
  ["balanced", "balanced"]];

export default {
  title: "Routing",
  mount(root, { onError }) {
    const rules = h("div", { id: "rules" });
    const deps = h("div", {});
    let shown = "";  // the rules drawn now: redrawn only when they change, so a select in use stays put

    async function apply(name, rule, select) {
      const to = select.value;
      if (!to || to === (rule.strategy || "")) return;
      const ok = await confirmDialog("Switch routing rule?",
        `Route scenario "${name}" by ${to} instead of ${rule.strategy || "its model list"}? ` +
        "This applies at once to every request and every tenant of this gateway.", "Switch");
      if (!ok) { select.value = rule.strategy || ""; return; }
      try {
        await api("admin/routing/rules/" + encodeURIComponent(name), { method: "PUT",
          body: { strategy: to, ...(rule.models.length ? { models: rule.models } : {}) } });
        await view.refresh();
      } catch (err) { onError(err); }
    }

    function strategyControl(r) {
      const sel = h("select", { "aria-label": "Strategy for " + r.name, "data-rule": r.name },
        r.strategy ? null : h("option", { value: "" }, "(choose)"),
        STRATEGIES.map(([v, t]) => h("option", { value: v }, t)));
      sel.value = r.strategy || "";
      const btn = h("button", { type: "button", "data-apply": r.name }, "Apply");
      btn.addEventListener("click", () => apply(r.name, r, sel));
      return h("span", { class: "row" }, sel, btn);
    }

    function drawRules(d) {
      const rows = Object.entries(d.rules).map(([name, r]) => ({ name, ...r }));
      fill(rules, table([
        { label: "Scenario", cell: (r) => h("strong", {}, r.name) },
        { label: "Strategy", cell: (r) => h("span", { "data-strategy": r.strategy || "" }, r.strategy || "(model order)") },
        { label: "Models", wrap: true, cell: (r) => (r.models.length ? r.models.join(", ") : "any capable") },
        { label: "Switch to", cell: strategyControl },
      ], rows, {
        empty: "No scenario rules. Add some under llm.rules (e.g. daily: cost, peak: latency, complex: quality).",
        caption: "Routing rules", rowAttrs: (r) => ({ "data-scenario": r.name }),
      }),
      h("p", { class: "hint" }, "Default strategy: " + (d.strategy || "–") +
        (d.changed_at_run_time ? " · rules were changed at run time" : " · rules as configured")));
    }

    const view = {
      live: true,
      async refresh() {
        const d = await api("admin/routing");
        const sig = JSON.stringify([d.rules, d.strategy, d.changed_at_run_time]);
        if (sig !== shown) { shown = sig; drawRules(d); }
        const drows = Object.entries(d.deployments || {}).map(([name, x]) => ({ name, ...x }));
        fill(deps, table([
          { label: "Deployment", cell: (r) => r.name },
          { label: "Model", cell: (r) => r.model },
          { label: "Successes", num: true, cell: (r) => fmt.int(r.successes) },
          { label: "Failures", num: true, cell: (r) => fmt.int(r.failures) },
          { label: "Cooldown", cell: (r) => (r.cooldown_s ? Math.ceil(r.cooldown_s) + " s (" + (r.cooldown_reason || "") + ")" : "–") },
          { label: "Latency", num: true, cell: (r) => (r.measured ? fmt.ms(r.latency_ms) : "not measured") },
        ], drows, { empty: "No deployments configured (llm.deployments).", caption: "Deployments" }));
      },
    };
    fill(root, rules, h("h2", {}, "Deployments"), deps);
    return view;
  },
};

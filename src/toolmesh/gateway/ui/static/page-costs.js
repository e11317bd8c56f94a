// Costs: usage and cost by model, user, day and provider; totals; savings against a reference model.
import { api } from "./api.js";
import { card, field, fill, fmt, h, table } from "./dom.js";

const PERIODS = [["1", "Last 24 hours"], ["7", "Last 7 days"], ["30", "Last 30 days"], ["", "All time"]];

function cost(r) {
  if (r.cost_usd === null || r.cost_usd === undefined) return h("span", { class: "warn" }, "unpriced");
  return fmt.usd(r.cost_usd) + (r.unpriced_requests ? " (+" + r.unpriced_requests + " unpriced)" : "");
}

const cols = (key, label) => [
  { label, cell: (r) => String(r[key] ?? "–") },
  { label: "Requests", num: true, cell: (r) => fmt.int(r.requests) },
  { label: "Input tokens", num: true, cell: (r) => fmt.int(r.input_tokens) },
  { label: "Output tokens", num: true, cell: (r) => fmt.int(r.output_tokens) },
  { label: "Cost", num: true, cell: cost },
];

export default {
  title: "Costs",
  mount(root, { onError }) {
    const period = h("select", { name: "period" }, PERIODS.map(([v, t]) => h("option", { value: v }, t)));
    period.value = "30";
    const reference = h("select", { name: "reference" });
    let loadedRefs = false;
    const summary = h("div", { class: "cards" });
    const tables = h("div", {});
    const form = h("form", { class: "row", "aria-label": "Cost report options" },
      field("Period", period)[0], field("Savings against", reference)[0]);
    const view = {
      live: true,
      async refresh() {
        const q = new URLSearchParams();
        if (period.value) q.set("since", String(Date.now() / 1000 - Number(period.value) * 86400));
        if (reference.value) q.set("reference", reference.value);
        const d = await api("admin/costs?" + q);
        if (!loadedRefs) {
          fill(reference, h("option", { value: "" }, "(no comparison)"),
            d.reference_models.map((m) => h("option", { value: m }, m)));
          reference.value = d.reference_models[0] || "";
          loadedRefs = true;
          if (reference.value) return view.refresh();
        }
        const t = d.totals;
        const s = d.savings;
        fill(summary,
          card("Requests", fmt.int(t.requests)),
          card("Tokens (in / out)", fmt.int(t.input_tokens) + " / " + fmt.int(t.output_tokens)),
          card("Cost", t.cost_usd === null ? "unpriced" : fmt.usd(t.cost_usd)),
          card("Unpriced requests", fmt.int(t.unpriced_requests), t.unpriced_requests ? "warn" : ""),
          s ? card("Savings vs " + s.reference_model, s.savings_usd === null ? "reference unpriced" : fmt.usd(s.savings_usd),
            s.savings_usd > 0 ? "good" : "") : card("Savings", "pick a model"));
        const empty = "No LLM usage in this period. Chat on /v1 (or the Playground) records usage here.";
        fill(tables,
          h("h2", {}, "By model"), table(cols("model", "Model"), d.by_model, { empty, caption: "By model" }),
          h("h2", {}, "By user"), table(cols("user", "User"), d.by_user, { empty, caption: "By user" }),
          h("h2", {}, "By day (UTC)"), table(cols("day", "Day"), d.by_day, { empty, caption: "By day" }),
          h("h2", {}, "By provider"), table(cols("provider", "Provider"), d.by_provider, { empty, caption: "By provider" }),
          h("p", { class: "hint" }, "Tenant: " + d.tenant + ". Unpriced usage (models without a price in the registry) is counted, never priced as 0."));
      },
    };
    const again = () => view.refresh().catch(onError);
    period.addEventListener("change", again);
    reference.addEventListener("change", again);
    fill(root, form, summary, tables);
    return view;
  },
};

// DOM helpers. Every string reaches the page as text (textContent / text nodes), never as HTML:
// the page's CSP (require-trusted-types-for 'script') makes innerHTML with a string throw anyway.

/** Create an element: h("td", {class: "num"}, "12", child). Props starting with "on" add listeners. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A table: columns [{label, cell(row) -> string|Node, num?, wrap?}], with an empty state. */
export function table(columns, rows, { empty = "Nothing yet.", caption = null, rowAttrs = null } = {}) {
  if (!rows || rows.length === 0) return h("p", { class: "empty" }, empty);
  const head = h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)));
  const body = rows.map((r) => h("tr", rowAttrs ? rowAttrs(r) : {}, columns.map((c) =>
    h("td", { class: [c.num ? "num" : "", c.wrap ? "wrap" : "", c.cls || ""].join(" ").trim() || null },
      c.cell(r)))));
  return h("div", { class: "table-wrap" },
    h("table", {}, caption ? h("caption", { class: "visually-hidden" }, caption) : null,
      h("thead", {}, head), h("tbody", {}, body)));
}

export function card(label, value, cls = null) {
  return h("div", { class: "card" }, h("div", { class: "k" }, label), h("div", { class: "v " + (cls || "") }, value));
}

export function badge(text, cls) {
  return h("span", { class: "badge " + cls }, text);
}

/** A labelled form field; returns [wrapper, control]. */
export function field(label, control) {
  if (!control.id) control.id = "f-" + Math.random().toString(36).slice(2, 9);
  return [h("div", { class: "field" }, h("label", { for: control.id }, label), control), control];
}

// -- formatting -------------------------------------------------------------------------
export const fmt = {
  ms: (v) => (v === null || v === undefined ? "–" : v < 10 ? v.toFixed(2) + " ms" : Math.round(v) + " ms"),
  pct: (v) => (v === null || v === undefined ? "–" : (v * 100).toFixed(1) + " %"),
  int: (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US")),
  usd: (v) => (v === null || v === undefined ? "unpriced" : "$" + (v < 0.01 && v > 0 ? v.toFixed(6) : v.toFixed(4))),
  time: (t) => (t ? new Date(t * 1000).toLocaleString() : "–"),
  clock: (t) => (t ? new Date(t * 1000).toLocaleTimeString() : "–"),
  ago: (t) => {
    if (!t) return "–";
    const s = Math.max(0, Date.now() / 1000 - t);
    return s < 60 ? Math.round(s) + " s ago" : s < 3600 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
  },
  json: (v) => (typeof v === "string" ? v : JSON.stringify(v, null, 2)),
};

/** A modal confirmation (a <dialog>: focus trapped, Escape cancels). Resolves true when confirmed. */
export function confirmDialog(title, text, action = "Confirm") {
  return new Promise((resolve) => {
    const ok = h("button", { type: "button", class: "danger", "data-confirm": "yes" }, action);
    const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
    const dlg = h("dialog", { "aria-labelledby": "dlg-title" },
      h("h2", { id: "dlg-title" }, title), h("p", {}, text), h("div", { class: "actions" }, cancel, ok));
    const done = (value) => { dlg.close(); dlg.remove(); resolve(value); };
    ok.addEventListener("click", () => done(true));
    cancel.addEventListener("click", () => done(false));
    dlg.addEventListener("cancel", (e) => { e.preventDefault(); done(false); });
    document.body.append(dlg);
    dlg.showModal();
    cancel.focus();
  });
}

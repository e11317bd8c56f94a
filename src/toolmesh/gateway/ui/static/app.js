// The dashboard shell: sign-in, hash routing between pages, and polling (every 2 s) for live pages.
import { api, ApiError, session } from "./api.js";
import { fill, h } from "./dom.js";
import overview from "./page-overview.js";
import costs from "./page-costs.js";
import sessions from "./page-sessions.js";
import audit from "./page-audit.js";
import routing from "./page-routing.js";
import servers from "./page-servers.js";
import playground from "./page-playground.js";

const PAGES = { overview, costs, sessions, audit, routing, servers, playground };
const POLL_MS = 2000;

const $ = (id) => document.getElementById(id);
let current = null;   // {name, view}
let generation = 0;   // bumps on every page change: stale refresh loops stop
let timer = null;

function status(text) { $("status").textContent = text; }

function showLogin(message = "") {
  generation++;
  clearTimeout(timer);
  current = null;
  $("nav").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  fill($("page"));
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("key").focus();
}

async function signIn(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  $("login-error").textContent = "";
  try {
    const data = await api("admin/overview", { key });
    session.set(key);
    $("key").value = "";
    start(data.tenant);
  } catch (err) {
    $("login-error").textContent = err instanceof ApiError ? err.message : String(err);
  }
}

function start(tenant) {
  $("login").hidden = true;
  $("nav").hidden = false;
  $("logout").hidden = false;
  $("who").textContent = tenant ? "tenant: " + tenant : "";
  route();
}

function route(event) {
  if (!session.key) { showLogin(); return; }
  const name = (location.hash || "#overview").slice(1);
  const page = PAGES[name] || PAGES.overview;
  const pageName = PAGES[name] ? name : "overview";
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === "#" + pageName) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (current && current.view.unmount) current.view.unmount();
  clearTimeout(timer);
  const gen = ++generation;
  const container = $("page");
  const errors = h("p", { class: "error", role: "alert", id: "page-error" });
  const body = h("div", { id: "page-" + pageName });
  const title = h("h1", { tabindex: "-1" }, page.title);
  fill(container, title, errors, body);
  if (event) title.focus({ preventScroll: true });  // keyboard and screen-reader users land on the new page
  document.title = page.title + " · toolmesh";
  const view = page.mount(body, { onError: (err) => report(err, errors) });
  current = { name: pageName, view };
  tick(gen, errors);
}

function report(err, errors) {
  if (err instanceof ApiError && err.status === 401) {
    session.clear();
    showLogin(err.message);
    return true;
  }
  errors.textContent = err instanceof ApiError ? err.message : "Error: " + err;
  return false;
}

async function tick(gen, errors) {
  if (gen !== generation || !current) return;
  const view = current.view;
  if (view.refresh) {
    try {
      await view.refresh();
      if (gen !== generation) return;
      errors.textContent = "";
      status("Updated " + new Date().toLocaleTimeString() + (view.live ? " · refreshing every 2 s" : ""));
    } catch (err) {
      if (gen !== generation) return;
      if (report(err, errors)) return;
      status("Last refresh failed " + new Date().toLocaleTimeString() + (view.live ? "; retrying" : ""));
    }
  }
  if (view.live && gen === generation) timer = setTimeout(() => tick(gen, errors), POLL_MS);
}

$("login-form").addEventListener("submit", signIn);
$("logout").addEventListener("click", () => { session.clear(); showLogin("Signed out."); });
window.addEventListener("hashchange", route);
if (session.key) {
  // A reload keeps the tab's key: check it once (and learn the tenant) before drawing a page.
  api("admin/overview").then((d) => start(d.tenant), (err) => {
    if (err instanceof ApiError && err.status === 401) { session.clear(); showLogin(err.message); } else start("");
  });
} else showLogin();

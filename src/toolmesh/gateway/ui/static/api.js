// The admin API client: relative URLs (the dashboard works under any path prefix), Bearer key from
// sessionStorage (no cookie, so no CSRF), no caching.

const KEY = "toolmesh.adminKey";
// /ui/ is one level below the gateway's root, wherever that root is mounted.
export const root = new URL("../", document.baseURI);

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  set(key) { sessionStorage.setItem(KEY, key); },
  clear() { sessionStorage.removeItem(KEY); },
};

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** Call the gateway: api("admin/servers"), api("admin/servers", {method: "POST", body: {...}}). */
export async function api(path, { method = "GET", body = undefined, key = session.key, signal } = {}) {
  const headers = { authorization: "Bearer " + key, accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  let res;
  try {
    res = await fetch(new URL(path, root), {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store",
      credentials: "omit", signal,
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "The gateway did not answer (is it running? is the network up?)");
  }
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (!res.ok) throw new ApiError(res.status, explain(res.status, data), data);
  return data;
}

function explain(status, data) {
  const msg = data && data.error ? data.error.message || String(data.error) : "";
  if (status === 401) return "The key was not accepted (revoked or mistyped). Sign in again.";
  if (status === 403) return msg || "This key lacks the scope this page needs.";
  if (status === 429) return "Rate limited by the gateway: wait a moment and retry. " + msg;
  return (msg || "HTTP " + status) + "";
}

/** Start a streaming request (the Playground); returns the Response for its body reader. */
export async function stream(path, body, { signal } = {}) {
  const res = await fetch(new URL(path, root), {
    method: "POST", cache: "no-store", credentials: "omit", signal,
    headers: { authorization: "Bearer " + session.key, "content-type": "application/json",
               accept: "text/event-stream" },
    body: JSON.stringify(body),
  });
  if (!res.ok) {
    let data = null;
    try { data = await res.json(); } catch { data = null; }
    throw new ApiError(res.status, explain(res.status, data), data);
  }
  return res;
}

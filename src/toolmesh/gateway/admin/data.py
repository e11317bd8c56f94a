"""Admin API: the tenant's sessions, usage and cost, audit log and API keys (read from the store)."""

from __future__ import annotations

import time
from typing import Any

import orjson

from toolmesh.gateway.admin.request import Request
from toolmesh.gateway.auth import KEY_PREFIX, create_key, hash_key, parse_scopes
from toolmesh.gateway.errors import ApiError

__all__ = ["GROUPS", "audit", "create_api_key", "delete_session", "get_session", "list_keys", "list_sessions",
           "revoke_api_key", "usage"]

#: Usage report groupings offered by ``/admin/usage``.
GROUPS = ("tenant", "user", "model", "day", "provider", "session")
_AUDIT_FILTERS = ("user", "server", "tool", "status")
_AUDIT_COLS = ("at", "tenant", "user", "server", "tool", "arguments_hash", "status", "latency_ms", "request_id",
               "error")
_SESSION_COLS = ("id", "user", "conversation", "created_at", "updated_at", "messages")


# -- sessions --------------------------------------------------------------------------------
def _session_row(req: Request, row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(_SESSION_COLS, row, strict=True))
    out["expired"] = req.gw.sessions is not None and (
        time.time() - out["updated_at"] > float(getattr(req.gw.sessions, "ttl", float("inf"))))
    return out


async def list_sessions(req: Request) -> dict[str, Any]:
    limit = req.int_param("limit", 100, 1, 10_000)
    offset = req.int_param("offset", 0, 0, 10**9)
    user = req.query.get("user") or None
    rows = await req.gw.store.fetchall(
        "SELECT s.id, s.user, s.conversation, s.created_at, s.updated_at,"
        " (SELECT COUNT(*) FROM messages m WHERE m.session_id = s.id) FROM sessions s"
        " WHERE s.tenant = ? AND (? IS NULL OR s.user = ?) ORDER BY s.updated_at DESC, s.id DESC LIMIT ? OFFSET ?",
        (req.tenant, user, user, limit, offset))
    return {"tenant": req.tenant, "sessions": [_session_row(req, r) for r in rows], "limit": limit, "offset": offset}


async def _find_session(req: Request, sid: str) -> tuple[Any, ...]:
    # ASCII digits only ("²" is a digit to str.isdigit but not to int()), within SQLite's 64 bits
    if not (sid.isascii() and sid.isdigit()) or len(sid) > 18:
        raise ApiError(404, f"no session {sid!r}")
    row: tuple[Any, ...] | None = await req.gw.store.fetchone(
        "SELECT s.id, s.user, s.conversation, s.created_at, s.updated_at,"
        " (SELECT COUNT(*) FROM messages m WHERE m.session_id = s.id) FROM sessions s WHERE s.id = ? AND s.tenant = ?",
        (int(sid), req.tenant))
    if row is None:  # another tenant's session is as absent as a missing one
        raise ApiError(404, f"no session {sid!r}")
    return row


async def get_session(req: Request, sid: str) -> dict[str, Any]:
    row = await _find_session(req, sid)
    out = _session_row(req, row)
    blobs = await req.gw.store.fetchall("SELECT data FROM messages WHERE session_id = ? ORDER BY id", (row[0],))
    out["history"] = [orjson.loads(b[0]) for b in blobs]
    return out


async def delete_session(req: Request, sid: str) -> dict[str, Any]:
    row = await _find_session(req, sid)
    if req.gw.sessions is not None:
        # Through the SessionStore so this worker's cached copy goes too.
        await req.gw.sessions.delete(req.tenant, row[1], row[2])
    else:
        await req.gw.store.execute("DELETE FROM sessions WHERE id = ?", (row[0],))
    return {"deleted": row[0], "user": row[1], "conversation": row[2]}


# -- usage -----------------------------------------------------------------------------------
async def usage(req: Request) -> dict[str, Any]:
    raw = req.query.get("group_by") or "model"
    group_by = [g.strip() for g in raw.split(",") if g.strip()]
    bad = [g for g in group_by if g not in GROUPS]
    if bad or not group_by:
        raise ApiError(400, f"group_by: cannot group by {bad or raw!r}; choose from {', '.join(GROUPS)}",
                       param="group_by")
    since, until = req.time_param("since"), req.time_param("until")
    if since is not None and until is not None and until < since:
        raise ApiError(400, "until must not be before since", param="until")
    ledger = req.gw.ledger
    if ledger is None:
        raise ApiError(404, "this gateway keeps no usage ledger")
    rows = await ledger.report(group_by, tenant=req.tenant, user=req.query.get("user") or None,
                               model=req.query.get("model") or None, since=since, until=until)
    totals: dict[str, Any] = {"requests": 0, "input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0,
                              "reasoning_tokens": 0, "total_tokens": 0, "cost_usd": None, "unpriced_requests": 0}
    for r in rows:
        for k in ("requests", "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens",
                  "unpriced_requests"):
            totals[k] += r[k] or 0
        r["total_tokens"] = (r["input_tokens"] or 0) + (r["output_tokens"] or 0)
        if r["cost_usd"] is not None:
            totals["cost_usd"] = (totals["cost_usd"] or 0.0) + r["cost_usd"]
    totals["total_tokens"] = totals["input_tokens"] + totals["output_tokens"]
    return {"tenant": req.tenant, "group_by": group_by, "since": since, "until": until, "rows": rows,
            "totals": totals}


# -- audit -----------------------------------------------------------------------------------
async def audit(req: Request) -> dict[str, Any]:
    limit = req.int_param("limit", 100, 1, 10_000)
    since = req.time_param("since")
    filters = {k: req.query.get(k) or None for k in _AUDIT_FILTERS}
    if not any(filters.values()):
        rows = await req.gw.store.audit_log(tenant=req.tenant, since=since, limit=limit)
        return {"tenant": req.tenant, "entries": rows, "limit": limit, "since": since}
    # Exact matches on user, server, tool, status (the dashboard's audit filters).
    where = "".join(f" AND {k} = ?" for k, v in filters.items() if v is not None)
    values = [v for v in filters.values() if v is not None]
    found = await req.gw.store.fetchall(
        f"SELECT {', '.join(_AUDIT_COLS)} FROM audit WHERE tenant = ? AND (? IS NULL OR at >= ?){where}"
        " ORDER BY id DESC LIMIT ?", (req.tenant, since, since, *values, limit))
    entries = [dict(zip(_AUDIT_COLS, r, strict=True)) for r in found]
    return {"tenant": req.tenant, "entries": entries, "limit": limit, "since": since,
            "filters": {k: v for k, v in filters.items() if v is not None}}


# -- API keys --------------------------------------------------------------------------------
async def list_keys(req: Request) -> dict[str, Any]:
    rows = await req.gw.store.fetchall(
        "SELECT key_hash, scopes, name, created_at, revoked_at FROM api_keys WHERE tenant = ? ORDER BY created_at",
        (req.tenant,))
    keys = [{"key_id": h[:12], "scopes": orjson.loads(s), "name": n, "created_at": c, "revoked_at": r}
            for h, s, n, c, r in rows]
    return {"tenant": req.tenant, "keys": keys}


async def create_api_key(req: Request) -> tuple[int, dict[str, Any]]:
    body = await req.json()
    unknown = set(body) - {"scopes", "name"}
    if unknown:
        field = sorted(unknown)[0]
        raise ApiError(400, f"{field}: unknown field (known: scopes, name)", param=field)
    scopes = body.get("scopes")
    if scopes is not None and not isinstance(scopes, (str, list)):
        raise ApiError(400, "scopes: a list like [\"chat\", \"mcp\"] or \"chat,mcp\"", param="scopes")
    try:
        parsed = parse_scopes(scopes)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ApiError(400, f"scopes: {exc}", param="scopes") from None
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 200):
        raise ApiError(400, "name: a string of at most 200 characters", param="name")
    made = await create_key(req.gw.store, req.tenant, parsed, name)
    made["key_id"] = hash_key(made["key"])[:12]
    made["name"] = name
    return 201, made


async def revoke_api_key(req: Request, ref: str) -> dict[str, Any]:
    """Revoke by the key itself or by its ``key_id`` (the hash prefix shown in listings)."""
    token = ref if ref.startswith(KEY_PREFIX) else None
    if token is not None:
        where, param = "key_hash = ?", hash_key(token)
    elif len(ref) >= 8 and all(c in "0123456789abcdef" for c in ref):
        where, param = "substr(key_hash, 1, ?) = ?", ref
    else:
        raise ApiError(404, "no such key (give the key or its key_id)")
    params: tuple[Any, ...] = (param,) if token is not None else (len(ref), ref)
    rows = await req.gw.store.fetchall(
        f"SELECT key_hash FROM api_keys WHERE tenant = ? AND revoked_at IS NULL AND {where}", (req.tenant, *params))
    if not rows:
        raise ApiError(404, "no such live key for this tenant")
    if len(rows) > 1:
        raise ApiError(409, "key_id is ambiguous: give more characters or the key itself")
    await req.gw.store.revoke_api_key(rows[0][0])
    # This worker forgets at once; the others when Redis pushes it (state.url), else within
    # gateway.key_cache_ttl seconds.
    req.gw.keys.forget(token)
    await req.gw.key_revoked(rows[0][0])
    return {"revoked": rows[0][0][:12]}

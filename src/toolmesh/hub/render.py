"""Tool results rendered for a model's context (HUB-8).

Inputs are MCP ``CallToolResult`` wire dicts (``content``, ``structuredContent``,
``isError``) or ``mcp_types.CallToolResult`` objects. Binary content (images,
audio, blobs) becomes a short placeholder such as ``[image image/png, 12.3 KB]``
unless data URLs are asked for; Anthropic output carries real image blocks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import orjson

from toolmesh.hub.types import JsonDict, as_mapping

__all__ = [
    "anthropic_tool_result",
    "openai_image_parts",
    "render_batch",
    "result_to_anthropic_content",
    "result_to_openai_content",
    "result_to_text",
    "truncate",
]

#: Image types the OpenAI and Anthropic APIs accept inline.
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_TRUNC = "…[truncated {} chars]"


def _as_dict(result: Any) -> Mapping[str, Any]:
    return as_mapping(result, "a CallToolResult dict or model")


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def truncate(text: str, max_chars: int | None) -> str:
    """``text`` cut to ``max_chars`` plus a ``…[truncated N chars]`` marker (N = chars dropped)."""
    if max_chars is None or len(text) <= max_chars:
        return text
    return text[:max_chars] + _TRUNC.format(len(text) - max_chars)


def _b64_size(data: str) -> str:
    n = len(data) * 3 // 4 - data[-2:].count("=") if data else 0
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KB" if n < 1024 * 1024 else f"{n / 1048576:.1f} MB"


def _data_url(mime: str, data: str) -> str:
    return f"data:{mime};base64,{data}"


def _block_text(block: Mapping[str, Any], data_urls: bool) -> str | None:
    """One content block as text; ``None`` for blocks with nothing to say."""
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind in ("image", "audio"):
        mime = block.get("mimeType") or "application/octet-stream"
        data = block.get("data") or ""
        return _data_url(mime, data) if data_urls else f"[{kind} {mime}, {_b64_size(data)}]"
    if kind == "resource_link":
        label = block.get("title") or block.get("name") or ""
        mime = f" {block['mimeType']}" if block.get("mimeType") else ""
        return f"[resource link {block.get('uri', '')}{mime}{' ' + label if label else ''}]"
    if kind == "resource":
        res = block.get("resource") or {}
        uri = res.get("uri", "")
        if "text" in res:
            return f"[resource {uri}]\n{res['text']}"
        mime = res.get("mimeType") or "application/octet-stream"
        blob = res.get("blob") or ""
        return _data_url(mime, blob) if data_urls else f"[resource {uri} {mime}, {_b64_size(blob)}]"
    return f"[{kind} content]" if kind else None


def result_to_text(
    result: Any,
    *,
    structured: bool = False,
    data_urls: bool = False,
    max_chars: int | None = None,
    error_prefix: str = "Error: ",
) -> str:
    """A tool result as one string (what goes into an OpenAI ``tool`` message).

    Text blocks are joined by newlines; ``structuredContent`` is added as
    compact JSON when there is no text, or always with ``structured=True``.
    Images and audio are placeholders unless ``data_urls``. Error results get
    ``error_prefix``. ``max_chars`` truncates with a visible marker.
    """
    r = _as_dict(result)
    parts = [t for b in r.get("content") or () if (t := _block_text(b, data_urls)) is not None]
    has_text = any(b.get("type") == "text" for b in r.get("content") or ())
    sc = r.get("structuredContent")
    if sc is not None and (structured or not has_text):
        parts.append(_json(sc))
    text = "\n".join(parts)
    if r.get("isError"):
        text = error_prefix + text if text else error_prefix.rstrip(": ") or "Error"
    return truncate(text, max_chars)


def result_to_openai_content(result: Any, **options: Any) -> str:
    """Content for an OpenAI chat ``tool`` message (text only, which is all it accepts there).

    Takes the options of :func:`result_to_text`. Use :func:`openai_image_parts`
    to show the result's images in a following user message.
    """
    return result_to_text(result, **options)


def openai_image_parts(result: Any) -> list[JsonDict]:
    """The result's images as OpenAI ``image_url`` content parts (data URLs).

    Only types OpenAI accepts (png, jpeg, gif, webp); others are skipped.
    """
    out: list[JsonDict] = []
    for b in _as_dict(result).get("content") or ():
        if b.get("type") == "image" and b.get("data") and b.get("mimeType") in IMAGE_TYPES:
            url = _data_url(b.get("mimeType") or "image/png", b["data"])
            out.append({"type": "image_url", "image_url": {"url": url}})
    return out


def result_to_anthropic_content(
    result: Any, *, structured: bool = False, max_chars: int | None = None
) -> list[JsonDict]:
    """A tool result as Anthropic ``tool_result`` content blocks.

    Text stays text (each block truncated to ``max_chars``), supported images
    become ``image`` blocks, PDF blobs ``document`` blocks, anything else a
    text placeholder. ``structuredContent`` as for :func:`result_to_text`.
    """
    r = _as_dict(result)
    blocks: list[JsonDict] = []
    has_text = False
    for b in r.get("content") or ():
        kind = b.get("type")
        if kind == "text":
            has_text = True
            blocks.append({"type": "text", "text": truncate(str(b.get("text", "")), max_chars)})
            continue
        if kind == "image" and b.get("mimeType") in IMAGE_TYPES and b.get("data"):
            src = {"type": "base64", "media_type": b["mimeType"], "data": b["data"]}
            blocks.append({"type": "image", "source": src})
            continue
        res = b.get("resource") if kind == "resource" else None
        if res and res.get("mimeType") == "application/pdf" and res.get("blob"):
            src = {"type": "base64", "media_type": "application/pdf", "data": res["blob"]}
            blocks.append({"type": "document", "source": src})
            continue
        text = _block_text(b, data_urls=False)
        if text is not None:
            blocks.append({"type": "text", "text": truncate(text, max_chars)})
    sc = r.get("structuredContent")
    if sc is not None and (structured or not has_text):
        blocks.append({"type": "text", "text": truncate(_json(sc), max_chars)})
    return blocks


def anthropic_tool_result(tool_use_id: str, result: Any, **options: Any) -> JsonDict:
    """A complete Anthropic ``tool_result`` block answering ``tool_use_id``."""
    block: JsonDict = {
        "type": "tool_result",
        "tool_use_id": tool_use_id,
        "content": result_to_anthropic_content(result, **options),
    }
    if _as_dict(result).get("isError"):
        block["is_error"] = True
    return block


# --- batches -----------------------------------------------------------------------------------

BatchFormat = Literal["markdown", "json", "plain"]
_WS = re.compile(r"\s+")


def _field(item: Any, *names: str) -> Any:
    for name in names:
        if isinstance(item, Mapping):
            if name in item:
                return item[name]
        elif hasattr(item, name):
            return getattr(item, name)
    return None


def _item_view(item: Any, max_chars: int | None) -> JsonDict:
    ok = _field(item, "ok", "success")
    result = _field(item, "result")
    error = _field(item, "error")
    server = _field(item, "server")
    view: JsonDict = {"tool": _field(item, "tool", "name", "exposed")}
    if server is not None:
        view["server"] = server
    view["arguments"] = _field(item, "arguments", "args") or {}
    if ok is None:
        ok = error is None
    if result is not None:
        r = _as_dict(result)
        view["text"] = result_to_text(r, max_chars=max_chars, error_prefix="")
        if r.get("isError"):
            ok = False
        view["structured"] = r.get("structuredContent")
    if error is not None:
        msg = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        view["error"] = msg  # errors are short and the model needs all of one
    view["ok"] = bool(ok)
    latency = _field(item, "latency_ms")
    view["latency_ms"] = round(float(latency), 1) if latency is not None else None
    return view


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`{3,}", text)), default=2)
    ticks = "`" * (longest + 1)
    return f"{ticks}\n{text}\n{ticks}"


def _inline_code(text: str) -> str:
    ticks = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if "`" in text else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _label(v: JsonDict) -> str:
    return f"{v['server']}/{v['tool']}" if "server" in v else str(v["tool"])


def render_batch(items: Sequence[Any], fmt: BatchFormat = "markdown", *, max_chars: int | None = None) -> str:
    """Render the results of several tool calls as one block to paste into an LLM context.

    ``items`` are dicts or objects with ``tool`` (or ``name``), optional ``server``,
    ``arguments``, ``ok``, ``result`` (a CallToolResult) or ``error``, ``latency_ms``.
    ``markdown``: a section per call with the output fenced; ``json``: an array
    of objects; ``plain``: one compact line per call. ``max_chars`` caps each
    result's text.
    """
    if fmt not in ("markdown", "json", "plain"):
        raise ValueError(f"unknown batch format {fmt!r}; use 'markdown', 'json' or 'plain'")
    views = [_item_view(i, max_chars) for i in items]
    if fmt == "json":
        out = []
        for v in views:
            o: JsonDict = {k: v[k] for k in ("tool", "server", "arguments", "ok", "latency_ms") if k in v}
            if "error" in v:
                o["error"] = v["error"]
            if "text" in v:
                o["result"] = v["text"]
            if v.get("structured") is not None:
                o["structured"] = v["structured"]
            out.append(o)
        return orjson.dumps(out, option=orjson.OPT_NON_STR_KEYS).decode()
    lines: list[str] = []
    for n, v in enumerate(views, 1):
        status = "ok" if v["ok"] else "error"
        ms = f", {v['latency_ms']:g} ms" if v["latency_ms"] is not None else ""
        body = v.get("error") or v.get("text") or ""
        if "error" in v and v.get("text"):
            body = f"{v['error']}\n{v['text']}"
        if fmt == "plain":
            flat = _WS.sub(" ", body).strip()
            lines.append(f"{n}. {_label(v)}({_json(v['arguments'])}) -> {status}{ms}: {flat}")
        else:
            lines.append(f"### {n}. {_label(v)} ({status}{ms})")
            lines.append(f"Arguments: {_inline_code(_json(v['arguments']))}")
            lines.append(_fence(body) if body else "_(no output)_")
            lines.append("")
    return "\n".join(lines).rstrip("\n")

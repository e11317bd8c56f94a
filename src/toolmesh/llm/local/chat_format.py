"""Qwen2.5's chat template with native tool calling, rendered without Jinja.

Mirrors the ``tokenizer.chat_template`` shipped in Qwen2.5 GGUFs (checked by the tests against
the template embedded in the bundled weights): tools go into the system turn inside
``<tools></tools>``, assistant tool calls are ``<tool_call>{"name", "arguments"}</tool_call>``
blocks, and consecutive tool results are grouped into one user turn of ``<tool_response>``s.
"""

from __future__ import annotations

import json
from typing import Any

from toolmesh.llm.types import Message

DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

_TOOLS_HEAD = ("\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
               "You are provided with function signatures within <tools></tools> XML tags:\n<tools>")
_TOOLS_TAIL = ("\n</tools>\n\nFor each function call, return a json object with function name and arguments "
               "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
               '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n')


def _tojson(obj: Any) -> str:
    # Jinja's ``tojson`` as HF renders it: default separators, non-ASCII kept.
    return json.dumps(obj, ensure_ascii=False)


def render(messages: list[Message], tools: list[dict[str, Any]] | None, *, generation_prompt: bool = True) -> str:
    """The prompt text for ``messages`` (and ``tools``, in OpenAI function-tool form)."""
    parts: list[str] = []
    first_system = bool(messages) and messages[0].role == "system"
    system = (messages[0].content or "") if first_system else DEFAULT_SYSTEM
    if tools:
        parts.append("<|im_start|>system\n" + system + _TOOLS_HEAD)
        for tool in tools:
            parts.append("\n" + _tojson(tool))
        parts.append(_TOOLS_TAIL)
    else:
        parts.append("<|im_start|>system\n" + system + "<|im_end|>\n")
    n = len(messages)
    for i, m in enumerate(messages):
        if i == 0 and first_system:
            continue
        if m.role == "tool":
            if i == 0 or messages[i - 1].role != "tool":
                parts.append("<|im_start|>user")
            parts.append("\n<tool_response>\n" + (m.content or "") + "\n</tool_response>")
            if i == n - 1 or messages[i + 1].role != "tool":
                parts.append("<|im_end|>\n")
        elif m.role == "assistant" and m.tool_calls:
            parts.append("<|im_start|>assistant")
            if m.content:
                parts.append("\n" + m.content)
            for call in m.tool_calls:
                parts.append('\n<tool_call>\n{"name": "' + call.name + '", "arguments": '
                             + _tojson(call.arguments) + "}\n</tool_call>")
            parts.append("<|im_end|>\n")
        else:
            parts.append("<|im_start|>" + m.role + "\n" + (m.content or "") + "<|im_end|>\n")
    if generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)


__all__ = ["DEFAULT_SYSTEM", "TOOL_CALL_CLOSE", "TOOL_CALL_OPEN", "render"]

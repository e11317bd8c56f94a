"""Tool name mapping: valid, injective, reversible, order-independent (HUB-8)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolmesh.errors import ToolNotFoundError
from toolmesh.hub.naming import ToolNameMap, exposed_name

VALID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

# Names built from the characters that cause trouble: separators, dots, dashes,
# spaces, unicode (incl. names that sanitise to nothing), and long runs.
_tricky = st.sampled_from([*"ab_-.Z9 é中\n", "__", "___", "-_"])
names = st.one_of(
    st.text(min_size=1, max_size=80),
    st.lists(_tricky, min_size=1, max_size=40).map("".join),
    st.from_regex(r"[a-z][a-z0-9_-]{0,70}", fullmatch=True),
)
pairs = st.lists(st.tuples(names, names), min_size=1, max_size=30, unique=True)


def _readable(server: str, tool: str) -> bool:
    word = r"[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*"
    return bool(re.fullmatch(word, server) and re.fullmatch(word, tool) and len(server) + len(tool) + 2 <= 64)


@settings(max_examples=300, deadline=None)
@given(pairs)
def test_names_valid_injective_reversible(ps: list[tuple[str, str]]) -> None:
    m = ToolNameMap()
    exposed = [m.add(s, t) for s, t in ps]
    assert all(VALID.match(e) and "\n" not in e for e in exposed)
    assert len(set(exposed)) == len(ps)  # injective
    assert len(m) == len(ps)
    for (s, t), e in zip(ps, exposed, strict=True):
        assert m.resolve(e) == (s, t)
        assert m.exposed(s, t) == e
        assert m.add(s, t) == e  # stable on re-add
    assert list(m) == exposed


@settings(max_examples=200, deadline=None)
@given(pairs, st.randoms())
def test_insertion_order_does_not_change_names(ps: list[tuple[str, str]], rnd: object) -> None:
    a = ToolNameMap()
    first = {p: a.add(*p) for p in ps}
    shuffled = list(ps)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    b = ToolNameMap()
    second = {p: b.add(*p) for p in shuffled}
    # Every name is pair-local (barring a 40-bit digest clash), readable ones always.
    assert first == second
    for p, e in first.items():
        if _readable(*p):
            assert e == f"{p[0]}__{p[1]}"


@settings(deadline=None)
@given(st.lists(names, min_size=1, max_size=30, unique=True))
def test_unprefixed_view(tools: list[str]) -> None:
    m = ToolNameMap(prefixed=False)
    exposed = [m.add("only", t) for t in tools]
    assert all(VALID.match(e) for e in exposed)
    assert len(set(exposed)) == len(tools)
    assert [m.resolve(e) for e in exposed] == [("only", t) for t in tools]


def test_readable_names() -> None:
    m = ToolNameMap()
    assert m.add("catalog", "get_product_info") == "catalog__get_product_info"
    assert m.add("my-server", "search-products") == "my-server__search-products"
    assert m.add("a_b", "c_d") == "a_b__c_d"


def test_separator_ambiguity_is_resolved() -> None:
    m = ToolNameMap()
    x = m.add("a__b", "c")
    y = m.add("a", "b__c")
    assert x != y
    assert m.resolve(x) == ("a__b", "c")
    assert m.resolve(y) == ("a", "b__c")
    # Neither may claim the readable form that a third pair could own.
    assert "a__b__c" not in (x, y)


def test_trailing_and_leading_underscores_cannot_alias() -> None:
    m = ToolNameMap()
    got = {m.add("a_", "b"), m.add("a", "_b"), m.add("a", "b"), m.add("_a", "b")}
    assert len(got) == 4
    assert m.exposed("a", "b") == "a__b"


def test_names_that_sanitise_alike_stay_distinct() -> None:
    m = ToolNameMap()
    variants = [("srv.v1", "get.item"), ("srv v1", "get item"), ("srv-v1", "get.item"), ("srv_v1", "get item")]
    out = [m.add(*p) for p in variants]
    assert len(set(out)) == len(variants)
    assert all(VALID.match(e) for e in out)
    assert [m.resolve(e) for e in out] == variants


def test_hashed_name_cannot_be_claimed_by_a_readable_pair() -> None:
    # A hashed name has three `__`-separated parts; a readable pair always has two,
    # so a crafted pair reproducing the hashed text still gets its own name.
    m = ToolNameMap()
    h = m.add("srv.x", "tool")
    s_hint, rest = h.split("__", 1)
    crafted = m.add(s_hint, rest)
    assert crafted != h
    assert m.resolve(h) == ("srv.x", "tool")


def test_long_and_unicode_names() -> None:
    m = ToolNameMap()
    long_a = "s" * 40
    e1 = m.add(long_a, "t" * 40)
    e2 = m.add(long_a, "t" * 41)
    e3 = m.add("目录", "查询商品")
    e4 = m.add("目录", "查询库存")
    for e in (e1, e2, e3, e4):
        assert VALID.match(e)
    assert len({e1, e2, e3, e4}) == 4
    assert e1.startswith("s" * 16 + "__tt")
    assert m.add("café", "résumé").startswith("cafe__resume__")


def test_exposed_name_is_pure_and_digest_can_grow() -> None:
    # Pure: a fixed function of (server, tool) — the same in every process, worker and release (no salted
    # hash, no state), and what a map that already holds other names hands out for the pair.
    short = exposed_name("a.b", "c")
    assert short == "a_b__c__iohnvp5d"
    m = ToolNameMap()
    m.add("x", "y")
    assert m.add("a.b", "c") == short
    longer = exposed_name("a.b", "c", digest_len=13)
    assert longer.startswith(short)
    assert len(longer) == len(short) + 5


def test_forced_digest_clash_gets_a_longer_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    import toolmesh.hub.naming as naming

    monkeypatch.setattr(naming, "_digest", lambda s, t, n: "q" * n if n == 8 else f"{s}{t}"[:n].ljust(n, "z"))
    m = ToolNameMap()
    x, y = m.add("a.1", "t"), m.add("a 1", "t")  # same hint, forced same short digest
    assert x == "a_1__t__qqqqqqqq"
    assert x != y and len(y) == len(x) - 8 + 13
    assert m.resolve(y) == ("a 1", "t") and m.resolve(x) == ("a.1", "t")


def test_resolve_unknown_and_remove() -> None:
    m = ToolNameMap()
    m.add("a", "x")
    m.add("a", "y")
    m.add("b", "x")
    with pytest.raises(ToolNotFoundError):
        m.resolve("nope")
    with pytest.raises(ToolNotFoundError):
        m.exposed("b", "y")
    assert m.get("nope") is None
    assert m.remove_server("a") == 2
    assert len(m) == 1 and "a__x" not in m and "b__x" in m
    with pytest.raises(ToolNotFoundError):
        m.resolve("a__x")
    assert m.remove("b", "x") and not m.remove("b", "x")
    assert len(m) == 0


def test_unprefixed_rejects_second_server_until_removed() -> None:
    m = ToolNameMap(prefixed=False)
    assert m.add("s1", "get_item") == "get_item"
    with pytest.raises(ValueError, match="one server"):
        m.add("s2", "other")
    m.remove_server("s1")
    assert m.add("s2", "get_item") == "get_item"
    # a tool whose name contains `__` cannot be readable (that shape is for hashed names)
    assert m.add("s2", "a__b") != "a__b"
    assert m.resolve(m.exposed("s2", "a__b")) == ("s2", "a__b")


def test_an_unknown_name_close_to_a_known_one_names_it() -> None:
    # What a model most often gets wrong: one underscore for two, or a letter off. The hint is in
    # the error the model reads back, so it can call the right tool on its next turn.
    m = ToolNameMap()
    m.add("inventory", "check_stock")
    m.add("pricing", "calculate_discount")
    with pytest.raises(ToolNotFoundError) as ei:
        m.resolve("inventory_check_stock")
    assert str(ei.value) == "unknown tool name 'inventory_check_stock' (did you mean 'inventory__check_stock'?)"
    with pytest.raises(ToolNotFoundError) as ei:
        m.resolve("weather__forecast")
    assert str(ei.value) == "unknown tool name 'weather__forecast'"  # nothing near: no guess

"""Multi-hop questions over the bundled demo data set (``toolmesh.servers.demo``), built deterministically.

Each question needs two or three lookups chained through the data (a user's city, then that
city's province; an order's customer, then their level, then its discount ...). The facts the
chain needs are given in the prompt, shuffled among distractor facts of the same kinds, so a
model must follow the links rather than pick the only plausible line. The answers are read from
the data, never written by hand.
"""

from __future__ import annotations

import random
import re
import sqlite3
from collections.abc import Callable
from typing import Any

from toolmesh.reasoning.tasks.base import Task

Fact = str
Built = tuple[str, list[Fact], str, str, int]  # question, facts, answer, scorer, hops
Template = Callable[[random.Random, "_Data"], Built]

DISTRACTORS = 5


class _Data:
    """The few tables the templates read, loaded once."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        def rows(sql: str) -> list[dict[str, Any]]:
            cur = conn.execute(sql)
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

        self.cities = {r["id"]: r for r in rows("SELECT * FROM cities ORDER BY id")}
        self.levels = {r["level"]: r for r in rows("SELECT * FROM user_levels ORDER BY rank")}
        self.users = rows("SELECT user_id, level, city_id FROM users ORDER BY user_id")
        self.stores = rows("SELECT id, name, warehouse_id FROM stores ORDER BY id")
        self.warehouses = {r["id"]: r for r in rows("SELECT id, city_id, district FROM warehouses ORDER BY id")}
        self.orders = rows("SELECT order_id, user_id, city_id FROM orders ORDER BY order_id")
        self.user_by_id = {u["user_id"]: u for u in self.users}
        self.products = rows("SELECT sku, name FROM products ORDER BY sku")
        self.conn = conn

    def stock(self, sku: str, warehouse: str) -> int:
        row = self.conn.execute("SELECT quantity FROM stock WHERE sku = ? AND warehouse_id = ?",
                                (sku, warehouse)).fetchone()
        return int(row[0]) if row else 0


def _others(rng: random.Random, pool: list[Any], target: Any, k: int = DISTRACTORS) -> list[Any]:
    rest = [p for p in pool if p != target]
    return rng.sample(rest, min(k, len(rest)))


def _city_fact(d: _Data, city_id: str) -> Fact:
    c = d.cities[city_id]
    return f"{c['name']} is a city in {c['province']} province."


def _level_name(level: str) -> str:
    return level.upper() if level == "vip" else level.capitalize()


def _level_fact(d: _Data, level: str) -> Fact:
    return f"{_level_name(level)} members get a {d.levels[level]['discount_percent']:g}% member discount."


def _name_pattern(name: str, noun: str) -> str:
    """The answer as a strict pattern: the name alone, optionally followed by its noun ("Zhejiang province"),
    in any case, with stray quotes, emphasis or a full stop around it; nothing else."""
    return rf"(?i)^[\s*\"'`]*{re.escape(name)}(?:\s+{noun})?[\s*\"'`.]*$"


def _not_municipality(d: _Data, city_id: str) -> bool:
    c = d.cities[city_id]
    return bool(c["province"] != c["name"])  # "Beijing is in Beijing" would need no lookup at all


def user_province(rng: random.Random, d: _Data) -> Built:
    user = rng.choice([u for u in d.users if _not_municipality(d, u["city_id"])])
    facts = [f"User {u['user_id']} lives in {d.cities[u['city_id']]['name']}."
             for u in [user, *_others(rng, d.users, user)]]
    facts += [_city_fact(d, c) for c in d.cities]
    return (f"In which province does user {user['user_id']} live?", facts,
            _name_pattern(d.cities[user["city_id"]]["province"], "province"), "regex", 2)


def user_discount(rng: random.Random, d: _Data) -> Built:
    user = rng.choice(d.users)
    facts = [f"User {u['user_id']} is a {u['level']} member." for u in [user, *_others(rng, d.users, user)]]
    facts += [_level_fact(d, lv) for lv in d.levels]
    return (f"What member discount, in percent, does user {user['user_id']} get?", facts,
            f"{d.levels[user['level']]['discount_percent']:g}", "numeric", 2)


def store_district(rng: random.Random, d: _Data) -> Built:
    store = rng.choice(d.stores)
    shown = [store, *_others(rng, d.stores, store)]
    facts = [f"The store {s['name']} is supplied by warehouse {s['warehouse_id']}." for s in shown]
    whs = {s["warehouse_id"] for s in shown} | set(_others(rng, sorted(d.warehouses), store["warehouse_id"], 3))
    facts += [f"Warehouse {w} is in the {d.warehouses[w]['district']} district." for w in sorted(whs)]
    return (f"In which district is the warehouse that supplies the store {store['name']}?", facts,
            _name_pattern(d.warehouses[store["warehouse_id"]]["district"], "district"), "regex", 2)


def store_stock(rng: random.Random, d: _Data) -> Built:
    store = rng.choice(d.stores)
    product = rng.choice(d.products)
    stores = [store, *_others(rng, d.stores, store, 3)]
    products = [product, *_others(rng, d.products, product, 2)]
    facts = [f"The store {s['name']} is supplied by warehouse {s['warehouse_id']}." for s in stores]
    facts += [f"Product {p['sku']} is the {p['name']}." for p in products]
    facts += [f"Warehouse {s['warehouse_id']} holds {d.stock(p['sku'], s['warehouse_id'])} unit(s) of {p['sku']}."
              for s in stores for p in products]
    return (f"How many units of the {product['name']} are in stock at the warehouse that supplies the store "
            f"{store['name']}?", sorted(set(facts)), str(d.stock(product["sku"], store["warehouse_id"])),
            "numeric", 3)


def order_discount(rng: random.Random, d: _Data) -> Built:
    order = rng.choice(d.orders)
    shown = [order, *_others(rng, d.orders, order)]
    facts = [f"Order {o['order_id']} was placed by user {o['user_id']}." for o in shown]
    users = {o["user_id"] for o in shown} | {u["user_id"] for u in _others(rng, d.users, None, 2)}
    facts += [f"User {u} is a {d.user_by_id[u]['level']} member." for u in sorted(users)]
    facts += [_level_fact(d, lv) for lv in d.levels]
    level = d.user_by_id[order["user_id"]]["level"]
    return (f"What member discount, in percent, does the customer who placed order {order['order_id']} get?",
            facts, f"{d.levels[level]['discount_percent']:g}", "numeric", 3)


def order_province(rng: random.Random, d: _Data) -> Built:
    order = rng.choice([o for o in d.orders if _not_municipality(d, o["city_id"])])
    facts = [f"Order {o['order_id']} was delivered to {d.cities[o['city_id']]['name']}."
             for o in [order, *_others(rng, d.orders, order)]]
    facts += [_city_fact(d, c) for c in d.cities]
    return (f"To which province was order {order['order_id']} delivered?", facts,
            _name_pattern(d.cities[order["city_id"]]["province"], "province"), "regex", 2)


TEMPLATES: tuple[Template, ...] = (user_province, user_discount, store_district, store_stock, order_discount,
                                   order_province)


def generate(count: int = 60, seed: int = 0, conn: sqlite3.Connection | None = None) -> list[Task]:
    """``count`` questions for ``seed`` over the demo data (or ``conn``, a database of the same schema)."""
    if conn is None:
        from toolmesh.servers.demo.data import get_data

        conn = get_data().conn
    data = _Data(conn)
    tasks: list[Task] = []
    for i in range(count):
        rng = random.Random(f"qa:{seed}:{i}")
        template = TEMPLATES[i % len(TEMPLATES)]
        question, facts, answer, scorer, hops = template(rng, data)
        rng.shuffle(facts)
        prompt = ("Answer the question using only the facts below.\n\nFacts:\n"
                  + "\n".join(f"- {f}" for f in facts)
                  + f"\n\nQuestion: {question}")
        tasks.append(Task(id=f"qa-{i:04d}", prompt=prompt, answer=answer, scorer=scorer, source="qa",
                          meta={"template": template.__name__, "hops": hops}))
    return tasks

"""Deterministic generator of the bundled demo data set (``demo.sql``).

Run ``python -m toolmesh.servers.demo.generate`` to rewrite ``demo.sql`` next to this
file, or ``--check`` to verify that the committed file is what the generator produces.
Everything derives from ``random.Random(SEED)`` and fixed tables below: no clock, no
hash ordering, so the output is byte-for-byte reproducible. The data is described in
``docs/demo-data.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from toolmesh.servers.demo import seed_data as cd
from toolmesh.servers.demo import seed_promotions as promo

SEED = 20261121
#: The demo's "now": campaign and coupon validity are judged against this date.
DEMO_NOW = "2026-11-21T10:00:00+08:00"
SQL_PATH = Path(__file__).with_name("demo.sql")
_CHUNK = 200  # rows per INSERT statement

SCHEMA = """\
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE categories (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, name_zh TEXT NOT NULL, description TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE products (
  sku TEXT PRIMARY KEY, name TEXT NOT NULL, name_zh TEXT NOT NULL, brand TEXT NOT NULL,
  brand_zh TEXT NOT NULL, model TEXT NOT NULL, category TEXT NOT NULL REFERENCES categories(id),
  price REAL NOT NULL, rating REAL NOT NULL, reviews INTEGER NOT NULL, launch_date TEXT NOT NULL,
  specs TEXT NOT NULL, description TEXT NOT NULL, description_zh TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX products_category_price ON products(category, price);
CREATE TABLE cities (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, name_zh TEXT NOT NULL, province TEXT NOT NULL,
  province_zh TEXT NOT NULL, code TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE warehouses (
  id TEXT PRIMARY KEY, city_id TEXT NOT NULL REFERENCES cities(id), name TEXT NOT NULL,
  name_zh TEXT NOT NULL, district TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX warehouses_city ON warehouses(city_id);
CREATE TABLE stock (
  sku TEXT NOT NULL, warehouse_id TEXT NOT NULL, quantity INTEGER NOT NULL, restock_date TEXT,
  PRIMARY KEY (sku, warehouse_id)
) WITHOUT ROWID;
CREATE TABLE stores (
  id TEXT PRIMARY KEY, city_id TEXT NOT NULL REFERENCES cities(id), name TEXT NOT NULL,
  name_zh TEXT NOT NULL, address TEXT NOT NULL, hours TEXT NOT NULL, pickup INTEGER NOT NULL,
  warehouse_id TEXT NOT NULL REFERENCES warehouses(id)
) WITHOUT ROWID;
CREATE INDEX stores_city ON stores(city_id);
CREATE TABLE user_levels (
  level TEXT PRIMARY KEY, name_zh TEXT NOT NULL, rank INTEGER NOT NULL, discount_percent REAL NOT NULL,
  points_multiplier REAL NOT NULL, free_shipping INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE users (
  user_id TEXT PRIMARY KEY, name TEXT NOT NULL, level TEXT NOT NULL REFERENCES user_levels(level),
  city_id TEXT NOT NULL REFERENCES cities(id), points INTEGER NOT NULL, member_since TEXT NOT NULL,
  phone TEXT NOT NULL, email TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE coupons (
  code TEXT PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('percent', 'fixed')), value REAL NOT NULL,
  min_spend REAL NOT NULL, max_discount REAL, category TEXT, levels TEXT, valid_from TEXT NOT NULL,
  valid_to TEXT NOT NULL, description TEXT NOT NULL, description_zh TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE campaigns (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, name_zh TEXT NOT NULL, priority INTEGER NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('percent', 'fixed')), value REAL NOT NULL, min_spend REAL NOT NULL,
  max_discount REAL, category TEXT, province_zh TEXT, starts TEXT NOT NULL, ends TEXT NOT NULL,
  description TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE orders (
  order_id TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(user_id), created_at TEXT NOT NULL,
  status TEXT NOT NULL, city_id TEXT NOT NULL, subtotal REAL NOT NULL, discount REAL NOT NULL,
  paid REAL NOT NULL, tracking_number TEXT
) WITHOUT ROWID;
CREATE INDEX orders_user ON orders(user_id);
CREATE TABLE order_items (
  order_id TEXT NOT NULL, line INTEGER NOT NULL, sku TEXT NOT NULL, quantity INTEGER NOT NULL,
  unit_price REAL NOT NULL, PRIMARY KEY (order_id, line)
) WITHOUT ROWID;
CREATE TABLE shipments (
  tracking_number TEXT PRIMARY KEY, order_id TEXT NOT NULL, carrier TEXT NOT NULL, carrier_zh TEXT NOT NULL,
  status TEXT NOT NULL, origin_warehouse TEXT NOT NULL, destination_city TEXT NOT NULL,
  shipped_at TEXT NOT NULL, estimated_delivery TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE shipment_events (
  tracking_number TEXT NOT NULL, seq INTEGER NOT NULL, time TEXT NOT NULL, location TEXT NOT NULL,
  status TEXT NOT NULL, description TEXT NOT NULL, PRIMARY KEY (tracking_number, seq)
) WITHOUT ROWID;
"""


def _lit(v: object) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    return "'" + str(v).replace("'", "''") + "'"


def _inserts(table: str, cols: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    rows = list(rows)
    out: list[str] = []
    for i in range(0, len(rows), _CHUNK):
        chunk = rows[i : i + _CHUNK]
        out.append(f"INSERT INTO {table} ({', '.join(cols)}) VALUES\n")
        out.append(",\n".join("(" + ",".join(_lit(v) for v in row) + ")" for row in chunk))
        out.append(";\n")
    return "".join(out)


def _price(rng: random.Random, lo: int, hi: int) -> float:
    """A retail-looking CNY price in [lo, hi]: 5999, 2499, 349, 29.9 ..."""
    raw = rng.uniform(lo, hi)
    if raw >= 1000:
        return float(int(raw / 100) * 100 + 99 if raw % 1000 >= 100 else int(raw / 1000) * 1000 - 1)
    if raw >= 100:
        return float(int(raw / 10) * 10 + 9)
    return round(int(raw) + 0.9, 1)


def _products(rng: random.Random) -> list[tuple[object, ...]]:
    items: list[tuple[str, dict[str, object]]] = []  # (category, fields)
    seen: set[str] = set()
    for cat, spec in cd.CATEGORY_PLAN.items():
        n = 0
        while n < spec["count"]:
            p = cd.make_product(rng, cat, _price)
            if p["name"] in seen:
                continue
            seen.add(str(p["name"]))
            items.append((cat, p))
            n += 1
    rng.shuffle(items)
    flagship = dict(cd.FLAGSHIP)
    items = [it for it in items if it[1]["name"] != flagship["name"]]
    items.insert(0, ("phones", flagship))
    rows: list[tuple[object, ...]] = []
    for i, (cat, p) in enumerate(items[:300]):
        rows.append(
            (
                f"SKU-{1001 + i}",
                p["name"],
                p["name_zh"],
                p["brand"],
                p["brand_zh"],
                p["model"],
                cat,
                p["price"],
                p["rating"],
                p["reviews"],
                p["launch_date"],
                json.dumps(p["specs"], ensure_ascii=False, separators=(",", ":")),
                p["description"],
                p["description_zh"],
            )
        )
    return rows


def _stock(rng: random.Random, skus: list[str], warehouses: list[str]) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for sku in skus:
        popular = rng.random() < 0.3
        for wh in warehouses:
            pinned = cd.FLAGSHIP_STOCK.get(wh) if sku == "SKU-1001" else None
            if pinned is not None:
                qty = pinned
            else:
                r = rng.random()
                qty = 0 if r < 0.1 else rng.randint(1, 9) if r < 0.25 else rng.randint(10, 400 if popular else 120)
            restock = None
            if qty == 0:
                restock = f"2026-11-{rng.randint(23, 30):02d}"
            rows.append((sku, wh, qty, restock))
    return rows


def _users(rng: random.Random, city_ids: list[str]) -> list[tuple[object, ...]]:
    levels = ["regular"] * 10 + ["silver"] * 5 + ["gold"] * 3 + ["vip"] * 2
    rows: list[tuple[object, ...]] = []
    for i in range(300):
        uid = f"U{123456 + i}"
        if uid in cd.PINNED_USERS:
            level, city = cd.PINNED_USERS[uid]
        else:
            level, city = rng.choice(levels), rng.choice(city_ids)
        name = rng.choice(cd.SURNAMES) + "".join(rng.choice(cd.GIVEN) for _ in range(rng.choice((1, 2, 2))))
        points = {"regular": 300, "silver": 2000, "gold": 8000, "vip": 25000}[level]
        points = rng.randint(points // 3, points * 2)
        since = f"{rng.randint(2018, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        if since > "2026-11-01":
            since = "2026-11-01"
        phone = f"1{rng.choice('3578')}{rng.randint(0, 9)}****{rng.randint(0, 9999):04d}"
        rows.append((uid, name, level, city, points, since, phone, f"{uid.lower()}@example.com"))
    return rows


def _orders(
    rng: random.Random,
    users: list[tuple[object, ...]],
    products: list[tuple[object, ...]],
    wh_by_city: dict[str, list[str]],
) -> tuple[list[tuple[object, ...]], ...]:
    pct = {lv[0]: lv[3] for lv in promo.LEVELS}
    city_zh = {c[0]: c[2] for c in cd.CITIES}
    orders: list[tuple[object, ...]] = []
    items: list[tuple[object, ...]] = []
    ships: list[tuple[object, ...]] = []
    events: list[tuple[object, ...]] = []
    for n in range(240):
        oid = f"ORD-{100001 + n}"
        user = users[0] if n == 0 else rng.choice(users)
        uid, level, city = str(user[0]), str(user[2]), str(user[3])
        # 45 % of orders fall in the last three days (the peak), so some are still unpaid or in transit
        recent = rng.random() < 0.45
        age_min = rng.randint(10, 72 * 60) if recent else rng.randint(72 * 60, 32 * 24 * 60)
        created = datetime(2026, 11, 18, 21, 14) if n == 0 else cd.NOW - timedelta(minutes=age_min)
        subtotal = 0.0
        for li in range(1, rng.randint(1, 3) + 1):
            p = rng.choice(products)
            price = float(str(p[7]))
            qty = 1 if price > 500 else rng.randint(1, 3)
            items.append((oid, li, p[0], qty, price))
            subtotal += price * qty
        subtotal = round(subtotal, 2)
        discount = round(subtotal * pct[level] / 100, 2)
        status = "ship" if n == 0 else cd.order_status(rng, (cd.NOW - created).total_seconds() / 3600)
        tracking = None
        if status == "ship":
            carrier = cd.CARRIERS[0] if n == 0 else rng.choice(cd.CARRIERS)
            local = wh_by_city[city]
            origin = rng.choice(local if rng.random() < 0.7 else wh_by_city[rng.choice(list(wh_by_city))])
            shipped = min(created + timedelta(hours=rng.randint(2, 20)), cd.NOW - timedelta(minutes=30))
            evs, ship_status, eta = cd.shipment_events(rng, shipped, origin, city_zh[city])
            if n == 0:  # the demo story's parcel: held up at the Guangzhou hub by peak volume
                tracking, origin, evs, ship_status, eta = (
                    "SF1234567890",
                    "WH-SH-01",
                    cd.PINNED_EVENTS,
                    "delayed",
                    "2026-11-22",
                )
                shipped = datetime(2026, 11, 19, 9, 30)
            else:
                tracking = cd.tracking_number(rng, carrier[0])
            status = "delivered" if ship_status == "delivered" else "shipped"
            ships.append((tracking, oid, carrier[1], carrier[2], ship_status, origin, city, _iso(shipped), eta))
            events.extend((tracking, i, t, loc, st, desc) for i, (t, loc, st, desc) in enumerate(evs, 1))
        orders.append(
            (oid, uid, _iso(created), status, city, subtotal, discount, round(subtotal - discount, 2), tracking)
        )
    return orders, items, ships, events


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:00+08:00")


def generate_sql() -> str:
    """Return the full text of ``demo.sql``: schema plus data, deterministic."""
    rng = random.Random(SEED)
    products = _products(rng)
    city_ids = [c[0] for c in cd.CITIES]
    wh_by_city: dict[str, list[str]] = {c: [] for c in city_ids}
    for w in cd.WAREHOUSES:
        wh_by_city[w[1]].append(w[0])
    stock = _stock(rng, [str(p[0]) for p in products], [w[0] for w in cd.WAREHOUSES])
    users = _users(rng, city_ids)
    orders, items, ships, events = _orders(rng, users, products, wh_by_city)
    parts = [
        f"-- toolmesh demo data set. GENERATED by toolmesh.servers.demo.generate (seed {SEED}).\n"
        "-- Do not edit by hand: change generate.py / seed_data.py and re-run it.\n",
        "BEGIN;\n",
        SCHEMA,
        _inserts("meta", ("key", "value"), [("seed", str(SEED)), ("demo_now", DEMO_NOW), ("currency", "CNY")]),
        _inserts("categories", ("id", "name", "name_zh", "description"), cd.CATEGORIES),
        _inserts(
            "products",
            (
                "sku",
                "name",
                "name_zh",
                "brand",
                "brand_zh",
                "model",
                "category",
                "price",
                "rating",
                "reviews",
                "launch_date",
                "specs",
                "description",
                "description_zh",
            ),
            products,
        ),
        _inserts("cities", ("id", "name", "name_zh", "province", "province_zh", "code"), cd.CITIES),
        _inserts("warehouses", ("id", "city_id", "name", "name_zh", "district"), cd.WAREHOUSES),
        _inserts("stock", ("sku", "warehouse_id", "quantity", "restock_date"), stock),
        _inserts(
            "stores",
            ("id", "city_id", "name", "name_zh", "address", "hours", "pickup", "warehouse_id"),
            cd.stores(rng),
        ),
        _inserts(
            "user_levels",
            ("level", "name_zh", "rank", "discount_percent", "points_multiplier", "free_shipping"),
            promo.LEVELS,
        ),
        _inserts("users", ("user_id", "name", "level", "city_id", "points", "member_since", "phone", "email"), users),
        _inserts(
            "coupons",
            (
                "code",
                "kind",
                "value",
                "min_spend",
                "max_discount",
                "category",
                "levels",
                "valid_from",
                "valid_to",
                "description",
                "description_zh",
            ),
            promo.COUPONS,
        ),
        _inserts(
            "campaigns",
            (
                "id",
                "name",
                "name_zh",
                "priority",
                "kind",
                "value",
                "min_spend",
                "max_discount",
                "category",
                "province_zh",
                "starts",
                "ends",
                "description",
            ),
            promo.CAMPAIGNS,
        ),
        _inserts(
            "orders",
            (
                "order_id",
                "user_id",
                "created_at",
                "status",
                "city_id",
                "subtotal",
                "discount",
                "paid",
                "tracking_number",
            ),
            orders,
        ),
        _inserts("order_items", ("order_id", "line", "sku", "quantity", "unit_price"), items),
        _inserts(
            "shipments",
            (
                "tracking_number",
                "order_id",
                "carrier",
                "carrier_zh",
                "status",
                "origin_warehouse",
                "destination_city",
                "shipped_at",
                "estimated_delivery",
            ),
            ships,
        ),
        _inserts("shipment_events", ("tracking_number", "seq", "time", "location", "status", "description"), events),
        "COMMIT;\n",
    ]
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Write (or ``--check``) ``demo.sql``; returns a process exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--check", action="store_true", help="exit 1 if demo.sql differs from the generator's output")
    ap.add_argument("--output", type=Path, default=SQL_PATH)
    args = ap.parse_args(argv)
    text = generate_sql()
    if args.check:
        same = args.output.exists() and args.output.read_bytes() == text.encode("utf-8")
        print("demo.sql is up to date" if same else "demo.sql differs from the generator output")
        return 0 if same else 1
    args.output.write_bytes(text.encode("utf-8"))
    print(f"wrote {args.output} ({len(text.encode('utf-8'))} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

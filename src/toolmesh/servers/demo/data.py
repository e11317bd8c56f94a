"""Loading the bundled demo data set and resolving the names users type (cities, SKUs, categories).

``demo.sql`` is compiled once into a SQLite file cached under ``$TOOLMESH_HOME/demo/``
(default ``~/.toolmesh``), named after the SQL text's hash, and opened read-only: ~1 ms,
against ~25 ms to replay the SQL into ``:memory:`` on every start (measured on the 2-core
dev machine). When the cache cannot be written the SQL is replayed into memory instead.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import Any

from mcp.server.mcpserver.exceptions import ToolError

SQL_PATH = Path(__file__).with_name("demo.sql")

_lock = threading.Lock()
_db: DemoData | None = None


def toolmesh_home() -> Path:
    """``$TOOLMESH_HOME`` or ``~/.toolmesh``."""
    env = os.environ.get("TOOLMESH_HOME")
    return Path(env).expanduser() if env else Path.home() / ".toolmesh"


def norm(text: str) -> str:
    """Key for loose matching: case-folded, no spaces/quotes/dashes, no trailing 市/省."""
    key = "".join(ch for ch in text.casefold() if ch not in " '’`-_.")
    for suffix in ("市", "省", "city", "province"):
        if key.endswith(suffix) and len(key) > len(suffix):
            key = key[: -len(suffix)]
    return key


def _connect(sql: bytes) -> sqlite3.Connection:
    digest = hashlib.sha256(sql).hexdigest()[:16]
    path = toolmesh_home() / "demo" / f"demo-{digest}.db"
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            os.close(fd)
            try:
                build = sqlite3.connect(tmp)
                build.executescript(sql.decode("utf-8"))
                build.close()
                os.replace(tmp, path)  # atomic: concurrent starters never see a half-built file
                for stale in path.parent.glob("demo-*.db"):  # caches of older demo.sql versions
                    if stale != path:
                        stale.unlink(missing_ok=True)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
    except (OSError, sqlite3.Error):
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        conn.executescript(sql.decode("utf-8"))
        return conn


class DemoData:
    """The demo database plus in-memory indexes of its small reference tables."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        conn.row_factory = sqlite3.Row
        self.conn = conn
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        #: The data set's "today" (ISO date): campaigns and coupons are valid relative to it.
        self.today: str = meta["demo_now"][:10]
        self.demo_now: str = meta["demo_now"]
        self.cities: dict[str, dict[str, Any]] = {}
        self._city_keys: dict[str, str] = {}
        self._province_cities: dict[str, list[str]] = {}
        for row in conn.execute("SELECT * FROM cities ORDER BY id"):
            city = dict(row)
            self.cities[city["id"]] = city
            for name in (city["id"], city["name"], city["name_zh"], city["code"]):
                self._city_keys[norm(name)] = city["id"]
            for name in (city["province"], city["province_zh"]):
                self._province_cities.setdefault(norm(name), []).append(city["id"])
        self.categories = [dict(r) for r in conn.execute("SELECT * FROM categories")]
        self.category_by_id = {c["id"]: c for c in self.categories}
        self._category_keys = {
            norm(name): c["id"] for c in self.categories for name in (c["id"], c["name"], c["name_zh"])
        }
        self.levels = {r["level"]: dict(r) for r in conn.execute("SELECT * FROM user_levels ORDER BY rank")}
        self.coupons = {r["code"]: dict(r) for r in conn.execute("SELECT * FROM coupons")}
        self.campaigns = [dict(r) for r in conn.execute("SELECT * FROM campaigns ORDER BY priority")]
        self.warehouses = {r["id"]: dict(r) for r in conn.execute("SELECT * FROM warehouses ORDER BY id")}

    # -- name resolution -------------------------------------------------------------------------
    def city(self, name: str) -> dict[str, Any]:
        """The city row for a Chinese or English name (case-insensitive), id or code; ToolError if unknown."""
        cid = self._city_keys.get(norm(name))
        if cid is not None:
            return self.cities[cid]
        in_province = self._province_cities.get(norm(name))
        if in_province:
            names = ", ".join(f"{self.cities[c]['name_zh']} ({self.cities[c]['name']})" for c in in_province)
            raise ToolError(f"{name!r} is a province, not a city; choose one of its cities: {names}")
        raise ToolError(f"Unknown city {name!r}. Known cities: {self.city_list()}")

    def region(self, name: str) -> tuple[dict[str, Any] | None, str]:
        """(city or None, province_zh) for a city *or* province name; ToolError if neither."""
        cid = self._city_keys.get(norm(name))
        if cid is not None:
            city = self.cities[cid]
            return city, str(city["province_zh"])
        in_province = self._province_cities.get(norm(name))
        if in_province:
            return None, str(self.cities[in_province[0]]["province_zh"])
        raise ToolError(f"Unknown city or province {name!r}. Known cities: {self.city_list()}")

    def city_list(self) -> str:
        """Every known city as '广州 (Guangzhou)', comma-separated."""
        return ", ".join(f"{c['name_zh']} ({c['name']})" for c in self.cities.values())

    def find_category(self, name: str) -> str | None:
        """Category id for an id, English or Chinese name ('phones', 'Phone', '手机'), else None."""
        key = norm(name)
        return self._category_keys.get(key) or self._category_keys.get(key + "s")

    def category(self, name: str) -> str:
        """Category id for an id, English or Chinese name; ToolError if unknown."""
        cid = self.find_category(name)
        if cid is None:
            known = ", ".join(f"{c['id']} ({c['name_zh']})" for c in self.categories)
            raise ToolError(f"Unknown category {name!r}. Categories: {known}")
        return cid

    def product(self, sku: str) -> sqlite3.Row:
        """The product row for a SKU ('SKU-1001', 'sku-1001' or '1001'); ToolError if unknown."""
        key = normalize_sku(sku)
        row: sqlite3.Row | None = self.conn.execute("SELECT * FROM products WHERE sku = ?", (key,)).fetchone()
        if row is None:
            raise ToolError(f"Unknown SKU {sku!r}: no such product. SKUs run from SKU-1001 to SKU-1300.")
        return row


def normalize_sku(sku: str) -> str:
    """'sku-1001', ' SKU1001 ', '1001' -> 'SKU-1001'."""
    s = sku.strip().upper().replace(" ", "")
    if s.isdigit():
        return f"SKU-{s}"
    if s.startswith("SKU") and not s.startswith("SKU-"):
        return f"SKU-{s[3:]}"
    return s


def get_data() -> DemoData:
    """The process-wide demo data (loaded on first use, shared by every demo server in the process)."""
    global _db
    if _db is None:
        with _lock:
            if _db is None:
                _db = DemoData(_connect(SQL_PATH.read_bytes()))
    return _db

"""Demo ``pricing`` server: the discount engine (member level, campaigns, coupons) and promotions.

Rules (see docs/demo-data.md): starting from list price x quantity, discounts apply in this
order, each to the amount left after the previous ones: (1) member-level percentage,
(2) every active campaign that matches the product's category and the delivery province,
in priority order, (3) at most one coupon. Minimum-spend thresholds are checked against the
running amount; each discount is rounded half-up to 0.01 CNY. Campaign and coupon validity
is judged against the data set's fixed date (``meta.demo_now``, 2026-11-21), not the clock.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from toolmesh.servers.demo.base import READ_ONLY, new_server
from toolmesh.servers.demo.data import DemoData, get_data

Level = Literal["regular", "silver", "gold", "vip"]


def _fen(yuan: float) -> int:
    return round(yuan * 100)


def _yuan(fen: int) -> float:
    return fen / 100


def _money(fen: int) -> str:
    return f"¥{fen / 100:,.2f}"


def rule_text(rule: dict[str, Any]) -> str:
    """Human wording of a campaign/coupon rule: '5% off', '¥100 off orders of ¥1,000 or more'."""
    if rule["kind"] == "percent":
        text = f"{rule['value']:g}% off"
        if rule["max_discount"]:
            text += f" (at most {_money(_fen(rule['max_discount']))})"
    else:
        text = f"{_money(_fen(rule['value']))} off"
    if rule["min_spend"]:
        text += f" orders of {_money(_fen(rule['min_spend']))} or more"
    if rule.get("category"):
        text += f", {rule['category']} only"
    return text


def _discount(rule: dict[str, Any], amount: int) -> int:
    d: int
    if rule["kind"] == "percent":
        d = (amount * round(rule["value"] * 100) + 5000) // 10000
        if rule["max_discount"]:
            d = min(d, _fen(rule["max_discount"]))
    else:
        d = _fen(rule["value"])
    return min(d, amount)


def check_coupon(data: DemoData, code: str, level: str) -> dict[str, Any]:
    """The coupon row for ``code`` if it exists, is valid today and allowed for ``level``; else ToolError."""
    row = data.coupons.get(code.strip().upper())
    if row is None:
        valid = ", ".join(c for c, r in data.coupons.items() if r["valid_from"] <= data.today <= r["valid_to"])
        raise ToolError(f"Invalid coupon {code!r}: no such coupon. Coupons valid now: {valid}")
    if row["valid_to"] < data.today:
        raise ToolError(f"Coupon {row['code']} expired on {row['valid_to']}")
    if row["valid_from"] > data.today:
        raise ToolError(f"Coupon {row['code']} is not valid before {row['valid_from']}")
    if row["levels"] and level not in row["levels"].split(","):
        raise ToolError(
            f"Coupon {row['code']} is only for {row['levels'].replace(',', '/')} members (this user: {level})"
        )
    return row


def quote(data: DemoData, sku: str, level: str, coupon: str | None, city: str | None, quantity: int) -> dict[str, Any]:
    """Price one order line: every discount applied, the final price and a worded explanation."""
    product = data.product(sku)
    lv = data.levels[level]
    c, province = data.region(city) if city else (None, None)
    coupon_row = check_coupon(data, coupon, level) if coupon else None
    subtotal = _fen(product["price"]) * quantity
    running = subtotal
    applied: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    words = [f"List price {quantity} x {_money(_fen(product['price']))} = {_money(subtotal)}"]

    def apply(kind: str, ident: str, name: str, name_zh: str, rule: str, fen: int) -> None:
        nonlocal running
        running -= fen
        applied.append(
            {
                "type": kind,
                "id": ident,
                "name": name,
                "name_zh": name_zh,
                "rule": rule,
                "amount": _yuan(fen),
                "price_after": _yuan(running),
            }
        )
        words.append(f"{name} ({rule}): -{_money(fen)}")

    if lv["discount_percent"]:
        pct = lv["discount_percent"]
        fen = (running * round(pct * 100) + 5000) // 10000
        apply(
            "level",
            level,
            f"{level.upper() if level == 'vip' else level.capitalize()} member",
            lv["name_zh"],
            f"{pct:g}% off",
            fen,
        )
    for camp in data.campaigns:
        if not camp["starts"] <= data.today <= camp["ends"]:
            continue
        if camp["category"] and camp["category"] != product["category"]:
            continue
        if camp["province_zh"] and camp["province_zh"] != province:
            if province is None and running >= _fen(camp["min_spend"]):
                skipped.append(
                    {
                        "type": "campaign",
                        "id": camp["id"],
                        "reason": f"regional campaign for {camp['province_zh']} deliveries: give the city to apply it",
                    }
                )
            continue
        if running < _fen(camp["min_spend"]):
            skipped.append(
                {
                    "type": "campaign",
                    "id": camp["id"],
                    "reason": f"needs {_money(_fen(camp['min_spend']))} or more (order is {_money(running)})",
                }
            )
            continue
        apply("campaign", camp["id"], camp["name"], camp["name_zh"], rule_text(camp), _discount(camp, running))
    if coupon_row is not None:
        if coupon_row["category"] and coupon_row["category"] != product["category"]:
            skipped.append(
                {
                    "type": "coupon",
                    "id": coupon_row["code"],
                    "reason": f"only for {coupon_row['category']}, not {product['category']}",
                }
            )
        elif running < _fen(coupon_row["min_spend"]):
            skipped.append(
                {
                    "type": "coupon",
                    "id": coupon_row["code"],
                    "reason": f"needs {_money(_fen(coupon_row['min_spend']))} or more (order is {_money(running)})",
                }
            )
        else:
            apply(
                "coupon",
                coupon_row["code"],
                f"Coupon {coupon_row['code']}",
                coupon_row["description_zh"],
                rule_text(coupon_row),
                _discount(coupon_row, running),
            )
    saved = subtotal - running
    pct_saved = round(saved * 100 / subtotal, 2) if subtotal else 0.0
    words.append(f"Final price {_money(running)} (you save {_money(saved)}, {pct_saved:g}%)")
    for s in skipped:
        words.append(f"Not applied: {s['id']} - {s['reason']}")
    return {
        "sku": product["sku"],
        "product": product["name"],
        "product_zh": product["name_zh"],
        "category": product["category"],
        "quantity": quantity,
        "unit_price": product["price"],
        "list_price": _yuan(subtotal),
        "user_level": level,
        "city": c["name"] if c else None,
        "city_zh": c["name_zh"] if c else None,
        "province_zh": province,
        "coupon": coupon_row["code"] if coupon_row else None,
        "discounts": applied,
        "not_applied": skipped,
        "total_discount": _yuan(saved),
        "final_price": _yuan(running),
        "saving_percent": pct_saved,
        "currency": "CNY",
        "points_earned": int(running / 100 * lv["points_multiplier"]),
        "free_shipping": bool(lv["free_shipping"]),
        "explanation": "; ".join(words) + ".",
        "as_of": data.today,
    }


def promotions(data: DemoData, city: str | None, category: str | None) -> dict[str, Any]:
    """Campaigns running now (and upcoming), coupons valid now, and member-level discounts."""
    province = data.region(city)[1] if city else None
    cat = data.category(category) if category else None
    active, upcoming = [], []
    for camp in data.campaigns:
        if cat and camp["category"] and camp["category"] != cat:
            continue
        if province and camp["province_zh"] and camp["province_zh"] != province:
            continue
        item = {
            "id": camp["id"],
            "name": camp["name"],
            "name_zh": camp["name_zh"],
            "rule": rule_text(camp),
            "category": camp["category"],
            "region": camp["province_zh"] or "nationwide",
            "starts": camp["starts"],
            "ends": camp["ends"],
        }
        if camp["starts"] <= data.today <= camp["ends"]:
            active.append(item)
        elif camp["starts"] > data.today:
            upcoming.append(item)
    coupons = [
        {
            "code": r["code"],
            "rule": rule_text(r),
            "description_zh": r["description_zh"],
            "category": r["category"],
            "levels": r["levels"].split(",") if r["levels"] else None,
            "valid_to": r["valid_to"],
        }
        for r in data.coupons.values()
        if r["valid_from"] <= data.today <= r["valid_to"] and not (cat and r["category"] and r["category"] != cat)
    ]
    levels = [
        {
            "level": k,
            "name_zh": v["name_zh"],
            "discount_percent": v["discount_percent"],
            "points_multiplier": v["points_multiplier"],
            "free_shipping": bool(v["free_shipping"]),
        }
        for k, v in data.levels.items()
    ]
    return {
        "as_of": data.today,
        "province_zh": province,
        "category": cat,
        "campaigns": active,
        "upcoming_campaigns": upcoming,
        "coupons": coupons,
        "member_levels": levels,
        "stacking": "level discount, then campaigns in priority order, then one coupon; each on the "
        "amount left after the previous ones",
    }


def create_server() -> MCPServer[Any]:
    """The ``pricing`` demo server."""
    server = new_server(
        "pricing",
        "MeshMart prices and discounts: member levels, campaigns (incl. regional ones) and coupons.",
    )

    @server.tool(title="Calculate discount", annotations=READ_ONLY)
    async def calculate_discount(
        sku: Annotated[str, Field(description="Product SKU, e.g. 'SKU-1001'")],
        user_level: Annotated[Level, Field(description="Customer's member level")] = "regular",
        coupon: Annotated[str | None, Field(description="Coupon code, e.g. 'SAVE20' or 'WELCOME10'")] = None,
        city: Annotated[
            str | None,
            Field(
                description="Delivery city (or province) in Chinese or English, e.g. '广州'; enables regional campaigns"
            ),
        ] = None,
        quantity: Annotated[int, Field(description="Number of units", ge=1, le=99)] = 1,
    ) -> dict[str, Any]:
        """Calculate the price a customer pays for a product: list price, then the member-level discount,
        every active campaign (category campaigns and regional ones such as the 广东 campaign, which needs
        the city), then the coupon. Returns each discount applied (with the price after it), discounts
        that did not apply and why, the final price in CNY and a one-paragraph explanation.
        An unknown, expired or ineligible coupon is an error."""
        return quote(get_data(), sku, user_level, coupon, city, quantity)

    @server.tool(title="List promotions", annotations=READ_ONLY)
    async def list_promotions(
        city: Annotated[
            str | None, Field(description="Only campaigns valid for this city's province (Chinese or English name)")
        ] = None,
        category: Annotated[str | None, Field(description="Only promotions for this product category")] = None,
    ) -> dict[str, Any]:
        """List the promotions running now: campaigns (nationwide and regional), upcoming campaigns,
        coupons that can be used today, and member-level discounts."""
        return promotions(get_data(), city, category)

    return server

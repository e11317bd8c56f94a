"""Fixed tables and product templates that ``generate.py`` draws the demo data set from.

Only the generator imports this module; the servers read the generated ``demo.sql``.
All brands and models are fictional.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

PriceFn = Callable[[random.Random, int, int], float]

CATEGORIES = [
    ("phones", "Phones", "手机", "5G smartphones"),
    ("laptops", "Laptops", "笔记本电脑", "Notebooks and ultrabooks"),
    ("tablets", "Tablets", "平板电脑", "Tablets and e-readers"),
    ("headphones", "Headphones", "耳机", "Earbuds, headphones and neckbands"),
    ("wearables", "Wearables", "智能穿戴", "Smart watches, bands and rings"),
    ("accessories", "Accessories", "配件", "Chargers, cables, cases, keyboards and more"),
    ("smart_home", "Smart home", "智能家居", "Speakers, cameras, vacuums and other connected devices"),
]

CITIES = [  # id, name, name_zh, province, province_zh, code
    ("beijing", "Beijing", "北京", "Beijing", "北京", "BJ"),
    ("shanghai", "Shanghai", "上海", "Shanghai", "上海", "SH"),
    ("guangzhou", "Guangzhou", "广州", "Guangdong", "广东", "GZ"),
    ("shenzhen", "Shenzhen", "深圳", "Guangdong", "广东", "SZ"),
    ("foshan", "Foshan", "佛山", "Guangdong", "广东", "FS"),
    ("hangzhou", "Hangzhou", "杭州", "Zhejiang", "浙江", "HZ"),
    ("chengdu", "Chengdu", "成都", "Sichuan", "四川", "CD"),
    ("wuhan", "Wuhan", "武汉", "Hubei", "湖北", "WH"),
    ("nanjing", "Nanjing", "南京", "Jiangsu", "江苏", "NJ"),
    ("xian", "Xi'an", "西安", "Shaanxi", "陕西", "XA"),
    ("chongqing", "Chongqing", "重庆", "Chongqing", "重庆", "CQ"),
]
_CITY = {c[0]: c for c in CITIES}

_WH_DISTRICTS = {
    "beijing": [("Daxing", "大兴"), ("Shunyi", "顺义"), ("Tongzhou", "通州")],
    "shanghai": [("Jiading", "嘉定"), ("Pudong", "浦东"), ("Qingpu", "青浦")],
    "guangzhou": [("Baiyun", "白云"), ("Huangpu", "黄埔"), ("Panyu", "番禺")],
    "shenzhen": [("Bao'an", "宝安"), ("Longgang", "龙岗")],
    "foshan": [("Nanhai", "南海"), ("Shunde", "顺德")],
    "hangzhou": [("Yuhang", "余杭"), ("Xiaoshan", "萧山")],
    "chengdu": [("Shuangliu", "双流"), ("Xindu", "新都")],
    "wuhan": [("Dongxihu", "东西湖"), ("Jiangxia", "江夏")],
    "nanjing": [("Jiangning", "江宁"), ("Qixia", "栖霞")],
    "xian": [("Weiyang", "未央"), ("Chang'an", "长安")],
    "chongqing": [("Yubei", "渝北"), ("Shapingba", "沙坪坝")],
}
WAREHOUSES = [  # id, city_id, name, name_zh, district
    (f"WH-{_CITY[c][5]}-{i:02d}", c, f"{_CITY[c][1]} {en} Warehouse", f"{_CITY[c][2]}{zh}仓", en)
    for c, ds in _WH_DISTRICTS.items()
    for i, (en, zh) in enumerate(ds, 1)
]
#: SKU-1001 (the flagship phone of the demo story) has pinned stock in these warehouses.
FLAGSHIP_STOCK = {"WH-GZ-01": 236, "WH-GZ-02": 7, "WH-GZ-03": 0, "WH-SZ-01": 58, "WH-SZ-02": 3, "WH-FS-01": 0}

_STORE_AREAS = {
    "beijing": [("Sanlitun", "三里屯"), ("Xidan", "西单"), ("Zhongguancun", "中关村")],
    "shanghai": [("Nanjing Road", "南京路"), ("Xujiahui", "徐家汇"), ("Lujiazui", "陆家嘴")],
    "guangzhou": [("Tianhe", "天河"), ("Beijing Road", "北京路"), ("Panyu", "番禺")],
    "shenzhen": [("Futian", "福田"), ("Nanshan", "南山"), ("Huaqiangbei", "华强北")],
    "foshan": [("Zumiao", "祖庙")],
    "hangzhou": [("Hubin", "湖滨"), ("Binjiang", "滨江")],
    "chengdu": [("Chunxi Road", "春熙路"), ("Gaoxin", "高新")],
    "wuhan": [("Jianghan Road", "江汉路"), ("Optics Valley", "光谷")],
    "nanjing": [("Xinjiekou", "新街口"), ("Hexi", "河西")],
    "xian": [("Bell Tower", "钟楼"), ("Xiaozhai", "小寨")],
    "chongqing": [("Jiefangbei", "解放碑"), ("Guanyinqiao", "观音桥")],
}
_NO_PICKUP = {"ST-GZ-03", "ST-BJ-02", "ST-CQ-02"}


def stores(rng: random.Random) -> list[tuple[object, ...]]:
    """MeshMart stores: id, city, names, address, hours, pickup flag, supplying warehouse."""
    rows: list[tuple[object, ...]] = []
    for c, areas in _STORE_AREAS.items():
        whs = [w[0] for w in WAREHOUSES if w[1] == c]
        for i, (en, zh) in enumerate(areas, 1):
            sid = f"ST-{_CITY[c][5]}-{i:02d}"
            no = rng.randint(8, 388)
            hours = rng.choice(("10:00-22:00", "10:00-21:30", "09:30-22:00"))
            rows.append(
                (
                    sid,
                    c,
                    f"MeshMart {_CITY[c][1]} {en}",
                    f"网格商城{_CITY[c][2]}{zh}店",
                    f"{_CITY[c][2]}{zh}商圈{no}号",
                    hours,
                    sid not in _NO_PICKUP,
                    whs[(i - 1) % len(whs)],
                )
            )
    return rows


#: user_id -> (level, city): the users the docs and tests talk about.
PINNED_USERS = {
    "U123456": ("gold", "guangzhou"),
    "U123457": ("vip", "shenzhen"),
    "U123458": ("regular", "beijing"),
    "U123459": ("silver", "shanghai"),
}
SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高梁郑谢宋唐")
GIVEN = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉萍红辉鑫宇晨思远欣怡浩然子涵梓")

CARRIERS = [
    ("SF", "SF Express", "顺丰速运"),
    ("JD", "JD Logistics", "京东物流"),
    ("YT", "YTO Express", "圆通速递"),
    ("EMS", "China Post EMS", "中国邮政EMS"),
]

_COLORS = [
    ("Obsidian Black", "曜石黑"),
    ("Glacier White", "冰川白"),
    ("Ocean Blue", "海洋蓝"),
    ("Aurora Purple", "极光紫"),
    ("Sage Green", "鼠尾草绿"),
    ("Sunset Gold", "落日金"),
]

# category -> count, brands, series (name, low price, high price, tier), noun (en, zh)
CATEGORY_PLAN: dict[str, dict[str, Any]] = {
    "phones": {
        "count": 60,
        "brands": [
            ("Lumina", "流明"),
            ("Zephyr", "西风"),
            ("Pinecone", "松果"),
            ("Redpeak", "红峰"),
            ("Stellar", "星辰"),
        ],
        "series": [("X", 4000, 7999, 2), ("N", 2000, 3999, 1), ("A", 999, 1999, 0)],
    },
    "laptops": {
        "count": 45,
        "brands": [("Vertex", "峰顶"), ("Lumina", "流明"), ("Kestrel", "隼"), ("Orbit", "轨道")],
        "series": [("Book Pro", 7000, 14999, 2), ("Book Air", 4500, 7999, 1), ("Go", 3499, 4999, 0)],
    },
    "tablets": {
        "count": 30,
        "brands": [("Lumina", "流明"), ("Orbit", "轨道"), ("Pinecone", "松果")],
        "series": [("Pad Pro", 3999, 6999, 2), ("Pad", 1999, 3499, 1), ("Pad Mini", 1299, 2299, 0)],
    },
    "headphones": {
        "count": 45,
        "brands": [("Echo Lab", "回声实验室"), ("Sonora", "声纳"), ("Lumina", "流明"), ("Driftwood", "漂木")],
        "series": [("Studio", 999, 2499, 2), ("Buds Pro", 699, 1999, 2), ("Buds", 149, 599, 1), ("Sport", 99, 399, 0)],
    },
    "wearables": {
        "count": 35,
        "brands": [("Lumina", "流明"), ("Pinecone", "松果"), ("Pulse", "脉动"), ("Orbit", "轨道")],
        "series": [
            ("Watch Pro", 1999, 3999, 2),
            ("Watch", 799, 1799, 1),
            ("Ring", 1299, 1999, 1),
            ("Band", 199, 399, 0),
        ],
    },
    "accessories": {
        "count": 60,
        "brands": [("Voltix", "伏特"), ("Cableworks", "线工坊"), ("Shellguard", "护壳"), ("Lumina", "流明")],
        "series": [],
    },
    "smart_home": {
        "count": 25,
        "brands": [("Homeleaf", "家叶"), ("Pinecone", "松果"), ("Lumina", "流明")],
        "series": [],
    },
}
_ACCESSORIES = [
    ("65W GaN Charger", "65W氮化镓充电器", 99, 299),
    ("100W GaN Charger", "100W氮化镓充电器", 199, 399),
    ("USB-C Cable 1m", "USB-C数据线1米", 19, 69),
    ("USB-C Cable 2m", "USB-C数据线2米", 29, 89),
    ("Power Bank 10000mAh", "移动电源10000mAh", 99, 199),
    ("Power Bank 20000mAh", "移动电源20000mAh", 149, 299),
    ("Magnetic Wireless Charger", "磁吸无线充电器", 129, 299),
    ("Phone Case", "手机保护壳", 29, 129),
    ("Screen Protector 2-pack", "钢化膜两片装", 19, 59),
    ("Laptop Sleeve 14in", "14英寸电脑内胆包", 79, 199),
    ("Bluetooth Mouse", "蓝牙鼠标", 79, 299),
    ("Mechanical Keyboard", "机械键盘", 199, 599),
    ("USB-C Hub 7-in-1", "USB-C七合一扩展坞", 149, 399),
    ("Stylus Pen", "手写笔", 199, 499),
]
_SMART_HOME = [
    ("Smart Speaker", "智能音箱", 199, 899),
    ("Robot Vacuum", "扫地机器人", 1499, 3999),
    ("Security Camera 2K", "2K智能摄像头", 149, 399),
    ("Air Purifier", "空气净化器", 699, 2499),
    ("Smart Plug", "智能插座", 39, 99),
    ("Smart Door Lock", "智能门锁", 999, 2999),
    ("Smart Display 8in", "8英寸智能屏", 499, 1299),
]
_TIER = [("Entry-level", "入门级"), ("Mid-range", "中端"), ("Flagship", "旗舰")]

FLAGSHIP: dict[str, Any] = {
    "name": "Lumina X9 Pro 5G (12GB+256GB, Obsidian Black)",
    "name_zh": "流明 X9 Pro 5G 12GB+256GB 曜石黑",
    "brand": "Lumina",
    "brand_zh": "流明",
    "model": "X9 Pro",
    "price": 5999.0,
    "rating": 4.8,
    "reviews": 18342,
    "launch_date": "2026-09-26",
    "specs": {
        "screen": "6.78in LTPO OLED, 120Hz",
        "chip": "Lumina Dragonfly 9 (3nm)",
        "ram": "12GB",
        "storage": "256GB",
        "battery_mah": 5500,
        "charging_w": 100,
        "camera": "50MP main + 50MP ultra-wide + 64MP 3x periscope",
        "network": "5G dual SIM",
        "weight_g": 213,
        "color": "Obsidian Black",
    },
    "description": "Lumina's 2026 flagship: 3nm chip, 6.78in 120Hz LTPO display, 5500 mAh battery with "
    "100W fast charging and a 3x periscope camera.",
    "description_zh": "流明2026年度旗舰：3纳米芯片，6.78英寸120Hz LTPO屏幕，5500mAh大电池，100W快充，3倍潜望长焦。",
}


def make_product(rng: random.Random, cat: str, price: PriceFn) -> dict[str, Any]:
    """One random product of category ``cat`` (the SKU is assigned later)."""
    plan = CATEGORY_PLAN[cat]
    brand, brand_zh = rng.choice(plan["brands"])
    color, color_zh = rng.choice(_COLORS)
    if cat in ("accessories", "smart_home"):
        item, item_zh, lo, hi = rng.choice(_ACCESSORIES if cat == "accessories" else _SMART_HOME)
        gen = rng.randint(1, 4)
        model, tier = f"{item} G{gen}", 1
        name, name_zh = f"{brand} {model} ({color})", f"{brand_zh} {item_zh} G{gen} {color_zh}"
        specs: dict[str, Any] = {"type": item, "generation": gen, "color": color}
        desc = f"{brand} {item}, generation {gen}, in {color}."
        desc_zh = f"{brand_zh}{item_zh}第{gen}代，{color_zh}配色。"
        p = price(rng, lo, hi)
    else:
        series, lo, hi, tier = rng.choice(plan["series"])
        num = rng.randint(3, 12)
        suffix = rng.choice(("", " Pro", " Ultra", " Plus")) if cat == "phones" and tier == 2 else ""
        model = f"{series}{num}{suffix}" if cat == "phones" else f"{series} {num}"
        specs, variant, variant_zh = _specs(rng, cat, tier, color)
        name = f"{brand} {model} ({variant}, {color})"
        name_zh = f"{brand_zh} {model} {variant_zh} {color_zh}"
        t_en, t_zh = _TIER[tier]
        noun, noun_zh = {
            "phones": ("5G phone", "5G手机"),
            "laptops": ("laptop", "笔记本电脑"),
            "tablets": ("tablet", "平板电脑"),
            "headphones": ("headphones", "耳机"),
            "wearables": ("wearable", "智能穿戴设备"),
        }[cat]
        desc = f"{t_en} {noun} from {brand}: {variant}, {color}."
        desc_zh = f"{brand_zh}{t_zh}{noun_zh}：{variant_zh}，{color_zh}。"
        p = price(rng, lo, hi)
    rating = round(rng.uniform(3.6 + 0.3 * tier, 4.6 + 0.15 * tier), 1)
    launch = f"{rng.choice((2025, 2026))}-{rng.randint(1, 10):02d}-{rng.randint(1, 28):02d}"
    return {
        "name": name,
        "name_zh": name_zh,
        "brand": brand,
        "brand_zh": brand_zh,
        "model": model,
        "price": p,
        "rating": rating,
        "reviews": int(rng.paretovariate(1.2) * 40),
        "launch_date": launch,
        "specs": specs,
        "description": desc,
        "description_zh": desc_zh,
    }


def _specs(rng: random.Random, cat: str, tier: int, color: str) -> tuple[dict[str, Any], str, str]:
    if cat == "phones":
        ram, rom = rng.choice(
            [
                [("4GB", "128GB"), ("6GB", "128GB")],
                [("8GB", "256GB"), ("12GB", "256GB")],
                [("12GB", "512GB"), ("16GB", "1TB")],
            ][tier]
        )
        specs: dict[str, Any] = {
            "screen": f"{rng.choice(('6.1', '6.5', '6.7', '6.8'))}in OLED, {(60, 120, 120)[tier]}Hz",
            "ram": ram,
            "storage": rom,
            "battery_mah": rng.choice((4500, 5000, 5500)),
            "charging_w": (33, 67, 100)[tier],
            "camera": ("50MP dual", "50MP triple", "50MP triple + periscope")[tier],
            "network": "5G",
            "color": color,
        }
        return specs, f"{ram}+{rom}", f"{ram}+{rom}"
    if cat in ("laptops", "tablets"):
        ram, rom = rng.choice([("8GB", "256GB"), ("16GB", "512GB"), ("16GB", "1TB"), ("32GB", "1TB")][tier : tier + 2])
        sizes = ("13.3", "14", "15.6", "16") if cat == "laptops" else (("8.7",), ("11", "12.4"), ("12.4", "13"))[tier]
        size = rng.choice(sizes)
        specs = {
            "screen": f"{size}in",
            "ram": ram,
            "storage": rom,
            "color": color,
            "battery_hours": rng.randint(8, 18),
            "weight_kg": round(rng.uniform(0.3, 0.7), 2) if cat == "tablets" else round(rng.uniform(1.1, 2.1), 2),
        }
        return specs, f"{size}in {ram}/{rom}", f"{size}英寸 {ram}/{rom}"
    if cat == "headphones":
        anc = tier > 0 and rng.random() < 0.8
        specs = {"anc": anc, "battery_hours": rng.randint(6, 40), "bluetooth": "5.3", "color": color}
        return specs, "ANC" if anc else "Wireless", "主动降噪" if anc else "无线"
    size = rng.choice(("41mm", "45mm", "47mm"))
    specs = {"case": size, "battery_days": rng.randint(2, 14), "gps": tier > 0, "color": color}
    return specs, size, size


def order_status(rng: random.Random, age_hours: float) -> str:
    """Status of an order placed ``age_hours`` before the demo's now (before shipping is decided)."""
    r = rng.random()
    if age_hours < 6:
        return "pending_payment" if r < 0.4 else "paid"
    if r < 0.06:
        return "cancelled"
    if r < 0.09:
        return "refunded"
    return "paid" if age_hours < 24 and r < 0.5 else "ship"


def tracking_number(rng: random.Random, prefix: str) -> str:
    """A carrier-style tracking number: SF + 10 digits, JD/YT + 13 digits, EMS E?123456789CN."""
    if prefix == "SF":
        return f"SF{rng.randint(1_000_000_000, 9_999_999_999)}"
    if prefix == "EMS":
        return f"E{rng.choice('ABCDEFGHJK')}{rng.randint(100_000_000, 999_999_999)}CN"
    return f"{prefix}{rng.randint(10**12, 10**13 - 1)}"


NOW = datetime(2026, 11, 21, 10, 0)
_WH = {w[0]: w for w in WAREHOUSES}
PINNED_EVENTS = [
    ("2026-11-19T09:30:00+08:00", "上海嘉定仓", "picked_up", "已揽收 Picked up at Shanghai Jiading Warehouse"),
    ("2026-11-19T15:10:00+08:00", "上海转运中心", "in_transit", "已发出，下一站广州转运中心 Departed Shanghai hub"),
    ("2026-11-20T18:42:00+08:00", "广州转运中心", "in_transit", "已到达广州转运中心 Arrived at Guangzhou hub"),
    (
        "2026-11-21T08:05:00+08:00",
        "广州转运中心",
        "delayed",
        "大促期间件量激增，预计延迟1天派送 Peak-season volume: delivery delayed by about one day",
    ),
]


def shipment_events(
    rng: random.Random, shipped: datetime, origin: str, dest_city: str
) -> tuple[list[tuple[str, str, str, str]], str, str]:
    """Events up to the demo's now, the current status, and the estimated delivery date."""
    wh = _WH[origin]
    o_city = _CITY[wh[1]][2]
    plan: list[tuple[float, str, str, str]] = [
        (0, wh[3], "picked_up", f"已揽收 Picked up at {wh[2]}"),
        (rng.uniform(2, 6), f"{o_city}转运中心", "in_transit", f"已发出 Departed {o_city} hub"),
    ]
    if o_city != dest_city:
        plan.append((rng.uniform(10, 30), f"{dest_city}转运中心", "in_transit", f"已到达 Arrived at {dest_city} hub"))
    if rng.random() < 0.05:
        plan.append((rng.uniform(2, 8), f"{dest_city}转运中心", "delayed", "天气原因延误 Delayed by weather"))
    plan.append(
        (
            rng.uniform(2, 10),
            f"{dest_city}配送站",
            "out_for_delivery",
            f"派送中，快递员{rng.choice(SURNAMES)}师傅 Out for delivery",
        )
    )
    plan.append(
        (
            rng.uniform(1, 5),
            f"{dest_city}",
            "delivered",
            rng.choice(
                ("已签收，本人签收 Delivered, signed by recipient", "已签收，快递柜代收 Delivered to parcel locker")
            ),
        )
    )
    t = shipped
    events: list[tuple[str, str, str, str]] = []
    for dh, loc, st, desc in plan:
        t = t + timedelta(hours=dh)
        if t > NOW:
            break
        events.append((t.strftime("%Y-%m-%dT%H:%M:00+08:00"), loc, st, desc))
    eta = (shipped + timedelta(hours=sum(p[0] for p in plan))).strftime("%Y-%m-%d")
    return events, events[-1][2], eta

"""A seeded generator of multi-step arithmetic word problems with exact answers.

Every problem needs three to five operations (products, fractions of a quantity,
percentages, remainders, unit conversions) and has one exact answer, computed here with
:class:`fractions.Fraction` so no rounding can make the key wrong. Problem ``i`` of seed ``s``
is the same whatever ``count`` is asked for, so ``--limit`` only ever takes a prefix.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from fractions import Fraction

from toolmesh.reasoning.tasks.base import Task

NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Farah", "Goran", "Hana", "Ivo", "Jun", "Kemal", "Lena", "Mei",
         "Nico", "Olu", "Priya", "Quinn", "Rosa", "Sami", "Tomas", "Uma", "Vik", "Wen", "Yara", "Zoe")
GOODS = (("pencils", "box", "boxes"), ("apples", "crate", "crates"), ("eggs", "carton", "cartons"),
         ("bolts", "tub", "tubs"), ("cookies", "tin", "tins"), ("markers", "pack", "packs"),
         ("bottles", "case", "cases"), ("tiles", "pallet", "pallets"))

Generator = Callable[[random.Random], tuple[str, Fraction, str]]


def _fmt(value: Fraction) -> str:
    """An exact answer as text: an integer, a finite decimal, or ``a/b``."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den == 1:  # a finite decimal: print it exactly
        digits = 0
        scaled = value
        while scaled.denominator != 1:
            scaled *= 10
            digits += 1
        sign = "-" if scaled < 0 else ""
        s = str(abs(scaled.numerator)).rjust(digits + 1, "0")
        return f"{sign}{s[:-digits]}.{s[-digits:]}"
    return f"{value.numerator}/{value.denominator}"


def _money(cents: int) -> str:
    return f"${cents // 100}.{cents % 100:02d}"


def inventory(rng: random.Random) -> tuple[str, Fraction, str]:
    name = rng.choice(NAMES)
    item, unit, units = rng.choice(GOODS)
    per, boxes = rng.randrange(6, 25, 2), rng.randint(5, 30)  # per is even: 1/2 always divides the total
    total = per * boxes
    den = rng.choice([d for d in (2, 3, 4, 5, 6, 8) if total % d == 0])
    num = rng.randint(1, den - 1)
    sold = total * num // den
    bought = rng.randint(10, 90)
    left = total - sold + bought
    bag = rng.randint(4, 12)
    text = (f"{name} has {boxes} {units} of {item} with {per} {item} in each {unit}. "
            f"On Monday {name} sells {num}/{den} of all the {item}. On Tuesday {name} buys {bought} more {item}. "
            f"{name} then puts the {item} into bags of {bag}. How many {item} are left over that do not fill "
            f"a whole bag?")
    return text, Fraction(left % bag), "inventory"


def shopping(rng: random.Random) -> tuple[str, Fraction, str]:
    name = rng.choice(NAMES)
    while True:  # re-draw until the discounted bill is a whole number of cents
        a_price, b_price = rng.randint(150, 2500), rng.randint(99, 1999)
        a_n, b_n = rng.randint(2, 6), rng.randint(1, 5)
        discount = rng.choice((10, 20, 25, 50))
        subtotal = a_price * a_n + b_price * b_n
        total = Fraction(subtotal * (100 - discount), 100)  # cents
        if total.denominator == 1:
            break
    paid = (int(total) // 10000 + 1) * 10000
    text = (f"{name} buys {a_n} notebooks at {_money(a_price)} each and {b_n} pens at {_money(b_price)} each. "
            f"The shop takes {discount}% off the whole bill. {name} pays with ${paid // 100} in cash. "
            f"How much change, in dollars, does {name} get back?")
    return text, (paid - total) / 100, "shopping"


def work_rate(rng: random.Random) -> tuple[str, Fraction, str]:
    while True:  # re-draw until the good parts are a whole number
        machines, rate, hours, days = rng.randint(2, 9), rng.randint(12, 60), rng.randint(3, 10), rng.randint(2, 6)
        defect = rng.choice((2, 4, 5, 10, 20, 25))
        made = machines * rate * hours * days
        good = Fraction(made * (100 - defect), 100)
        if good.denominator == 1:
            break
    text = (f"A factory runs {machines} machines. Each machine makes {rate} parts per hour, {hours} hours a day, "
            f"for {days} days. {defect}% of all the parts are defective and thrown away. "
            f"How many good parts are left?")
    return text, good, "work_rate"


def ages(rng: random.Random) -> tuple[str, Fraction, str]:
    a, b = rng.sample(NAMES, 2)
    young = rng.randint(3, 20)
    times = rng.randint(2, 5)
    later = rng.randint(2, 15)
    total = young + later + young * times + later
    text = (f"{a} is {times} times as old as {b}. In {later} years, the sum of their ages will be {total}. "
            f"How old is {a} now?")
    return text, Fraction(young * times), "ages"


def travel(rng: random.Random) -> tuple[str, Fraction, str]:
    name = rng.choice(NAMES)
    while True:  # re-draw until the distance is a whole number of kilometres
        v1, t1 = rng.randint(30, 90), rng.choice((Fraction(1), Fraction(2), Fraction(3), Fraction(1, 2),
                                                  Fraction(3, 2)))
        v2, m2 = rng.randint(20, 80), rng.choice((15, 20, 30, 40, 45, 90))
        distance = 2 * (v1 * t1 + v2 * Fraction(m2, 60))
        if distance.denominator == 1:
            break
    back = rng.randint(40, 100)
    text = (f"{name} drives at {v1} km/h for {_fmt(t1)} hours, then at {v2} km/h for {m2} minutes. "
            f"{name} drives the whole way back at {back} km/h. How many kilometres does {name} drive in total, "
            f"there and back?")
    return text, distance, "travel"


def savings(rng: random.Random) -> tuple[str, Fraction, str]:
    name = rng.choice(NAMES)
    start, weekly, weeks = rng.randint(20, 200), rng.randint(5, 40), rng.randint(4, 20)
    spend_frac = rng.choice((Fraction(1, 2), Fraction(1, 4), Fraction(1, 5), Fraction(1, 10)))
    saved = start + weekly * weeks
    spent = saved * spend_frac
    gift = rng.randint(5, 50)
    text = (f"{name} has ${start} and saves ${weekly} every week for {weeks} weeks. Then {name} spends "
            f"{spend_frac.numerator}/{spend_frac.denominator} of the money on a bike and receives a ${gift} gift. "
            f"How many dollars does {name} have now?")
    return text, saved - spent + gift, "savings"


def recipe(rng: random.Random) -> tuple[str, Fraction, str]:
    serves, want = rng.choice((2, 4, 6, 8)), rng.choice((3, 5, 10, 12, 15))
    flour = rng.choice((150, 200, 250, 300, 360))
    sugar = rng.choice((40, 60, 75, 90, 120))
    text = (f"A recipe for {serves} people needs {flour} g of flour and {sugar} g of sugar. "
            f"How many grams of flour and sugar together are needed for {want} people?")
    return text, Fraction((flour + sugar) * want, serves), "recipe"


GENERATORS: tuple[Generator, ...] = (inventory, shopping, work_rate, ages, travel, savings, recipe)

INSTRUCTION = "Solve the problem. The answer is a single number."


def generate(count: int = 100, seed: int = 0) -> list[Task]:
    """``count`` problems for ``seed`` (problem ``i`` depends only on ``seed`` and ``i``)."""
    tasks: list[Task] = []
    for i in range(count):
        rng = random.Random(f"math:{seed}:{i}")
        gen = GENERATORS[i % len(GENERATORS)]
        text, answer, kind = gen(rng)
        tasks.append(Task(id=f"math-{i:04d}", prompt=f"{text}\n\n{INSTRUCTION}", answer=_fmt(answer),
                          scorer="numeric", source="math", meta={"template": kind}))
    return tasks

"""Metadata filters, the same on both engines: ``price<50``, ``availability=in_stock``, ``brand in (acme,zenith)``,
``colour!=red``, ``gtin exists``.

Metadata values are strings as the shop sent them; a value that reads as a decimal number (``12``, ``-0.5``,
``1e3``) is also a number. So:

* ``=``, ``!=`` and ``in`` compare text: ``price=12`` does not match ``12.00``;
* ``<``, ``<=``, ``>`` and ``>=`` compare numbers, and match only products whose value is a number;
* ``!=`` matches products that have the column with another value (a product without it is not "not red");
* ``exists`` matches products that have the column at all.

A feed declares a column numeric with ``--number price`` (``12.00 USD`` becomes ``12.00``, its unit
``price_unit``), so that its rows compare (:class:`~shopvision.catalog.feeds.FeedMapping`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from shopvision.contract import MAX_FILTER_VALUES
from shopvision.errors import ShopvisionError

COMPARISONS: Final = ("<", "<=", ">", ">=")
OPERATORS: Final = ("=", "!=", "in", "exists", *COMPARISONS)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_SYMBOL = re.compile(r"^(?P<column>[^=!<>]+?)\s*(?P<op><=|>=|!=|=|<|>)\s*(?P<value>.*)$", re.DOTALL)
_IN = re.compile(r"^(?P<column>[^=!<>]+?)\s+in\s*\((?P<values>.*)\)\s*$", re.DOTALL | re.IGNORECASE)
_EXISTS = re.compile(r"^(?P<column>[^=!<>]+?)\s+exists\s*$", re.IGNORECASE)


class FilterError(ShopvisionError, ValueError):
    """A filter that cannot be read, or compares a number with text."""


@dataclass(frozen=True)
class Condition:
    column: str
    op: str
    values: tuple[str, ...] = ()

    @property
    def number(self) -> float:
        """A comparison's number (checked when the condition was made)."""
        number = as_number(self.values[0])
        assert number is not None
        return number

    def __post_init__(self) -> None:
        if self.op not in OPERATORS:
            raise FilterError(f"{self.op!r} is not an operator: one of {', '.join(OPERATORS)}")
        if not self.column:
            raise FilterError("a filter names a column")
        wanted = 0 if self.op == "exists" else None if self.op == "in" else 1
        if wanted is not None and len(self.values) != wanted:
            raise FilterError(f"{self.column} {self.op} takes {wanted} value(s), not {len(self.values)}")
        if self.op == "in" and not 1 <= len(self.values) <= MAX_FILTER_VALUES:
            raise FilterError(f"{self.column} in (...) takes 1 to {MAX_FILTER_VALUES} values")
        if self.op in COMPARISONS and as_number(self.values[0]) is None:
            raise FilterError(f"{self.column}{self.op}{self.values[0]}: {self.op} compares numbers, and "
                              f"{self.values[0]!r} is not one")


def as_number(value: str) -> float | None:
    """The number a metadata value reads as (a decimal, optionally with an exponent), or None."""
    text = value.strip()
    if not _NUMBER.fullmatch(text):
        return None
    number = float(text)
    return number if math.isfinite(number) else None


def parse_condition(text: str) -> Condition:
    """``price<50``, ``availability=in stock``, ``brand in (a,b)``, ``gtin exists``: a column, then an operator."""
    if match := _IN.match(text):
        values = tuple(value for value in (part.strip() for part in match["values"].split(",")) if value)
        return Condition(match["column"].strip(), "in", values)
    if match := _EXISTS.match(text):
        return Condition(match["column"].strip(), "exists")
    if match := _SYMBOL.match(text):
        return Condition(match["column"].strip(), match["op"], (match["value"].strip(),))
    raise FilterError(f"{text!r} is not a filter: COLUMN=VALUE, COLUMN!=VALUE, COLUMN<NUMBER (<=, >, >=), "
                      "COLUMN in (A,B) or COLUMN exists")


Where = Mapping[str, str] | Iterable[Condition | str] | None
"""What a search's ``where`` takes: ``{column: value}`` (equality), or conditions, or their texts."""


def conditions(where: Where) -> list[Condition]:
    """``where`` as conditions, each checked."""
    if where is None:
        return []
    if isinstance(where, Mapping):
        return [Condition(column, "=", (value,)) for column, value in where.items()]
    return [item if isinstance(item, Condition) else parse_condition(item) for item in where]

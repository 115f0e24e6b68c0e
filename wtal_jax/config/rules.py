"""What a config field may hold: the rules of the schema, and :class:`F`, one field.

Methods declare their own fields with these (``F(default, rule)``), beside a comment giving the
field's meaning and unit.
"""

import dataclasses
import math
from typing import Any, NamedTuple


def _finite(value) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


@dataclasses.dataclass(frozen=True)
class Number:
    """An integer (``integer=True``; booleans are not) or a finite real number, with optional
    inclusive (``low``, ``high``) and exclusive (``above``, ``below``) bounds."""
    integer: bool = False
    low: float | None = None
    high: float | None = None
    above: float | None = None
    below: float | None = None

    def accepts(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return False
        return ((self.integer or _finite(value))
                and (self.low is None or value >= self.low)
                and (self.high is None or value <= self.high)
                and (self.above is None or value > self.above)
                and (self.below is None or value < self.below))

    def __str__(self) -> str:
        bounds = [f'{op} {bound}' for op, bound in (('>=', self.low), ('>', self.above),
                                                      ('<=', self.high), ('<', self.below))
                  if bound is not None]
        return ' '.join(['an integer' if self.integer else 'a finite number',
                         ' and '.join(bounds)]).strip()


@dataclasses.dataclass(frozen=True)
class OneOf:
    """One of a few values (compared with ==, types included)."""
    choices: tuple

    def accepts(self, value) -> bool:
        return any(type(value) is type(c) and value == c for c in self.choices)

    def __str__(self) -> str:
        return 'one of ' + ', '.join(repr(c) for c in self.choices)


@dataclasses.dataclass(frozen=True)
class Text:
    """A string; ``nonempty`` refuses ''."""
    nonempty: bool = False

    def accepts(self, value) -> bool:
        return isinstance(value, str) and (bool(value) or not self.nonempty)

    def __str__(self) -> str:
        return 'a non-empty string' if self.nonempty else 'a string'


@dataclasses.dataclass(frozen=True)
class Items:
    """A tuple (a list in JSON) whose items each follow ``item``; optionally non-empty and
    without repeats."""
    item: object
    nonempty: bool = False
    distinct: bool = False

    def accepts(self, value) -> bool:
        return (isinstance(value, (tuple, list)) and all(self.item.accepts(v) for v in value)
                and (bool(value) or not self.nonempty)
                and (not self.distinct or len(set(value)) == len(value)))

    def __str__(self) -> str:
        words = ('a', 'non-empty' if self.nonempty else '', 'list of',
                 'distinct' if self.distinct else '', 'items, each', str(self.item))
        return ' '.join(w for w in words if w)


def integer(low=None, high=None) -> Number:
    return Number(integer=True, low=low, high=high)


def real(low=None, high=None, *, above=None, below=None) -> Number:
    return Number(low=low, high=high, above=above, below=below)


FLAG = OneOf((False, True))
PROBABILITY = real(0, 1)
FRACTION_BELOW_ONE = real(0, below=1)   # a dropout rate: 1 would drop everything
POSITIVE = real(above=0)
COUNT = integer(1)


class F(NamedTuple):
    """One field of the schema: its default and the rule every value must follow."""
    default: Any
    rule: Any

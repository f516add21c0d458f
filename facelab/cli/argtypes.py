"""Argument types for flags that have no option spec of their own; each is an `Option.parse`, so
a bad value is refused with the same one line, naming the allowed range, as everywhere else."""

from __future__ import annotations

from fractions import Fraction

from facelab.options import Option, argtype


def _positive(value: float) -> float:
    if not 0 < value < float("inf"):
        raise ValueError("must be a positive number")
    return value


def _frame_rate(value: str) -> Fraction:
    try:
        rate = Fraction(value)
    except (ValueError, ZeroDivisionError):
        raise ValueError("is not a frame rate (25, 29.97 or 30000/1001)") from None
    if rate <= 0:
        raise ValueError("must be positive")
    return rate


positive_float = argtype(Option("value", float, 1.0, "", check=_positive))
frame_rate = argtype(Option("frame rate", str, "25", "", check=_frame_rate))


def int_in(lo: int, hi: int):
    return argtype(Option("value", int, lo, "", range=(lo, hi)))

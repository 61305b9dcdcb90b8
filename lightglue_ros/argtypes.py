"""argparse value types shared by the command-line tools (clear messages, no tracebacks)."""
from __future__ import annotations

import argparse
import math


def intrinsics(text: str) -> tuple[float, float, float, float]:
    try:
        values = [float(v) for v in text.replace(' ', '').split(',')]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(
            f'expected fx,fy,cx,cy (four positive numbers, pixels), got {text!r}')
    return values[0], values[1], values[2], values[3]


def _number(text: str, cast: type, accept, expected: str):
    """Parse ``text`` with ``cast`` and check it with ``accept``, or explain what was expected."""
    try:
        value = cast(text)
    except ValueError:
        value = None
    if value is None or not accept(value):
        raise argparse.ArgumentTypeError(f'expected {expected}, got {text!r}')
    return value


def positive_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, 'a positive integer')


def non_negative_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 0, 'an integer >= 0')


def positive_float(text: str) -> float:
    return _number(text, float, lambda v: math.isfinite(v) and v > 0, 'a positive number')

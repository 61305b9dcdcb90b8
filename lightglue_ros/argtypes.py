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


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {text!r}')
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f'expected an integer >= 0, got {text!r}')
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f'expected a positive number, got {text!r}')
    return value

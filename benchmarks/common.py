"""Helpers shared by the benchmark scripts: data location, timing and table printing."""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The scripts run as `python benchmarks/x.py`; devtools/ (reference models, not installed) is
# imported from the project root.
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))


def shared_dir() -> Path:
    path = Path(os.environ.get('LIGHTGLUE_ROS_SHARED') or PROJECT_ROOT.parent / 'shared')
    if not (path / 'data').is_dir():
        raise SystemExit(f'shared data not found at {path}; set LIGHTGLUE_ROS_SHARED')
    return path


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or what platform knows)."""
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'
    return (f'{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} '
            f'({torch.get_num_threads()} threads), {gpu}')


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()


def time_ms(fn: Callable[[], object], device: torch.device | str = 'cpu') -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return (time.perf_counter() - start) * 1e3


def interleaved(candidates: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 1,
                device: torch.device | str = 'cpu') -> dict[str, float]:
    """Median ms of each candidate, timed in turns so that drift hits all of them alike."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            samples[name].append(time_ms(fn, device))
    return {name: statistics.median(values) for name, values in samples.items()}


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    text = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    print('  '.join(h.rjust(w) for h, w in zip(headers, widths)))
    for row in text:
        print('  '.join(c.rjust(w) for c, w in zip(row, widths)))

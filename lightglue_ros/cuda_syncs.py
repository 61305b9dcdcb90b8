"""Counting where CUDA code makes the host wait (torch's sync debug mode): for the CUDA tests
and benchmarks/gpu_check.py."""
from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

SYNC_MESSAGE = 'called a synchronizing'  # torch's warning text in sync debug mode


@contextmanager
def host_syncs() -> Iterator[Counter]:
    """Synchronising calls made inside the block, counted by (resolved file, line) of the
    Python call; filled when the block ends. torch calls its detection a prototype (device ->
    host copies, ``.item()``, ``nonzero``, boolean indexing, copies from pageable memory, ...),
    so the counts are a lower bound. Needs CUDA."""
    sites: Counter = Counter()
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try:
            yield sites
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    for warning in caught:
        if SYNC_MESSAGE in str(warning.message):
            sites[(str(Path(warning.filename).resolve()), warning.lineno)] += 1

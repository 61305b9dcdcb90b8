"""Counting where code makes the host wait for the device: on CUDA with torch's sync debug
mode (``host_syncs``), on any device structurally (``host_reads``: the operations that would
wait on a GPU). For the tests and benchmarks/gpu_check.py."""
from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_MESSAGE = 'called a synchronizing'  # torch's warning text in sync debug mode
# aten ops whose result the host reads (a tensor -> a Python value, or a shape that depends on
# the data): on CUDA each makes the host wait for the device.
HOST_READ_OPS = frozenset({'_local_scalar_dense', 'nonzero', 'masked_select', 'equal',
                           'is_nonzero', 'unique_dim', '_unique2', 'item', 'allclose'})
# Tensor -> host conversions below the dispatcher (not aten ops): the device -> host copies.
HOST_COPY_METHODS = ('numpy', 'tolist', '__array__')


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


class _HostReadOps(TorchDispatchMode):
    def __init__(self, counts: Counter) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        name = func.overloadpacket.__name__
        if name in HOST_READ_OPS:
            self.counts[name] += 1
        elif name == 'repeat_interleave' and func._overloadname != 'self_int':
            self.counts[name] += 1  # tensor repeats: the output size is data (int: it is not)
        elif name == 'index' and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                                     for i in (args[1] if len(args) > 1 else ()) or ()):
            self.counts['boolean_index'] += 1  # x[mask]: the result's size is data
        return func(*args, **(kwargs or {}))


@contextmanager
def host_reads() -> Iterator[Counter]:
    """What the block reads back from tensors, on any device, by name: the aten ops in
    HOST_READ_OPS (``.item()``, ``bool(t)``, ``nonzero``, boolean indexing, ...) and the
    conversions in HOST_COPY_METHODS (``.numpy()``, ``.tolist()``: a device -> host copy on
    CUDA). The CPU stand-in for ``host_syncs``: a path that reads nothing here makes the host
    wait nowhere on a GPU, except for copies from pageable memory, which only CUDA sees."""
    counts: Counter = Counter()
    originals: dict[str, Any] = {name: getattr(torch.Tensor, name)
                                 for name in HOST_COPY_METHODS}

    def counting(name: str, method: Any) -> Any:
        def wrapper(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return method(self, *args, **kwargs)
        return wrapper

    for name, method in originals.items():
        setattr(torch.Tensor, name, counting(name, method))
    try:
        with _HostReadOps(counts):
            yield counts
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)

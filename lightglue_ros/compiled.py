"""``torch.compile`` of the static path's fixed-shape functions (setting ``torch_compile``),
with a persistent compile cache and the eager function as the fallback.

- ``off`` (the default): the functions run as they are;
- ``on``: the extractor's fixed-count extraction and the static matcher's two parts
  (``cuda_graphs.GraphedExtractor`` / ``GraphedMatcher``) are compiled by inductor (default
  mode, ``dynamic=False``: one program per input shapes) on their first call for a shape (the
  warm-up, or the first frame of an image size); the time is logged once per shape and kept in
  ``compile_seconds``. On CUDA the compiled function is what the CUDA graph captures: the
  combination measured on the H200 (matcher 1.12 ms, ALIKED's dense network 1.24 ms;
  gpu_reports/2026-12-04-h200, probe2). Inductor's own 'reduce-overhead' graphs are not used:
  they would be captured inside ours. On the CPU the compiled code runs without graphs.
- Compiled code is kept on disk by inductor's FX graph cache in ``compile_cache_dir()`` (an
  explicit ``$TORCHINDUCTOR_CACHE_DIR`` wins), so a restart compiles from the cache: Python
  still traces the function, but the code generation and the C++/Triton compiler are skipped
  (docs/gpu.md has the cold and warm times).
- When compiling fails (no C++ compiler, an operator inductor cannot handle, anything), one
  line with the reason is logged and the function runs eagerly from then on; the results are
  the same either way (tests/test_torch_compile.py).
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


logger = logging.getLogger(__name__)

CACHE_ENV = 'TORCHINDUCTOR_CACHE_DIR'  # inductor's own variable: a user's folder is kept


def compile_cache_dir() -> Path:
    """Where compiled code is kept: $TORCHINDUCTOR_CACHE_DIR when the user set it, else the
    user's cache ($XDG_CACHE_HOME or ~/.cache)/lightglue_ros/torch_compile."""
    explicit = _users_cache_env()
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get('XDG_CACHE_HOME')
    base = Path(xdg).expanduser() if xdg else Path.home() / '.cache'
    return base / 'lightglue_ros' / 'torch_compile'


def _users_cache_env() -> str | None:
    """$TORCHINDUCTOR_CACHE_DIR unless it is torch's default, which importing torch._dynamo
    writes there itself (a temporary folder: /tmp/torchinductor_<user>)."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    value = os.environ.get(CACHE_ENV)
    if not value or os.path.abspath(value) == os.path.abspath(default_cache_dir()):
        return None
    return value


def use_compile_cache() -> Path:
    """Point inductor at ``compile_cache_dir()`` unless the user chose a folder; inductor
    reads the variable whenever it looks for compiled code (and its compile workers inherit
    it)."""
    folder = compile_cache_dir()
    os.environ[CACHE_ENV] = str(folder)
    return folder


class CompiledFunction:
    """``fn`` compiled on first use per input shapes, timed and logged; eager ``fn`` after a
    failure. Call it as ``fn``: tensors in, the same outputs."""

    def __init__(self, fn: Callable[..., Any], what: str,
                 describe: Callable[[tuple[torch.Tensor, ...]], str]) -> None:
        self.fn = fn
        self.what = what  # the function, for the log lines
        self.describe = describe  # inputs -> their shape in words ('640x480, 1024 keypoints')
        self._compiled: Callable[..., Any] | None = None
        self._shapes: set[tuple] = set()
        self.fallback_reason: str | None = None  # why it runs eagerly
        self.compile_seconds: dict[str, float] = {}  # per shape (describe's words): seconds

    def __call__(self, *inputs: torch.Tensor) -> Any:
        if self.fallback_reason is not None:
            return self.fn(*inputs)
        key = tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)
        if key in self._shapes:
            return self._call_compiled(inputs)
        start = time.perf_counter()
        out = self._call_compiled(inputs)  # compiles for these shapes
        if self.fallback_reason is None:
            self._shapes.add(key)
            seconds = time.perf_counter() - start
            detail = self.describe(inputs)
            self.compile_seconds[detail] = seconds
            logger.info('torch_compile: compiled %s for %s in %.1f s', self.what, detail, seconds)
        return out

    def _call_compiled(self, inputs: tuple[torch.Tensor, ...]) -> Any:
        try:
            if self._compiled is None:
                use_compile_cache()
                self._compiled = torch.compile(self.fn, dynamic=False)
            return self._compiled(*inputs)
        except Exception as err:  # noqa: BLE001 - any compile failure: eager
            # Eager first: when it fails too, the input is at fault, not the compiler, and its
            # own error reaches the caller with compiling still on.
            out = self.fn(*inputs)
            # Two lines: inductor's errors say 'backend=... raised:' first, the cause next.
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            reason = ' '.join(lines[:2])[:300]
            self.fallback_reason = f'{type(err).__name__}: {reason}'
            self._compiled = None
            logger.warning('torch_compile: compiling %s failed (%s); running it eagerly',
                           self.what, self.fallback_reason)
            return out


def compile_seconds(*functions: Callable[..., Any]) -> dict[str, float]:
    """Seconds each compile took, as '<function> for <shape>': seconds, of those functions
    that are CompiledFunctions (the others add nothing)."""
    return {f'{fn.what} for {detail}': seconds for fn in functions
            if isinstance(fn, CompiledFunction) for detail, seconds in fn.compile_seconds.items()}


def maybe_compiled(fn: Callable[..., Any], enabled: bool, what: str,
                   describe: Callable[[tuple[torch.Tensor, ...]], str]
                   ) -> Callable[..., Any]:
    """``CompiledFunction`` of fn when enabled, else fn itself."""
    return CompiledFunction(fn, what, describe) if enabled else fn

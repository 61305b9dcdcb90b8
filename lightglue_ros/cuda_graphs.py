"""The matcher the tracker runs: LightGlue's dynamic path, or its static-shape path
(``models.lightglue_static``) replayed from CUDA graphs (setting ``cuda_graphs``).

- ``off``: ``LightGlue`` as it is (eager, shapes follow the keypoints, host decisions per layer);
- ``on``: ``StaticLightGlue`` at the keypoint budget. On CUDA its two fixed-shape parts (the
  per-image ``prepare_padded`` and the match) are captured as CUDA graphs on first use, once per
  budget (image size is outside the graphs), and replayed; a change of budget or descriptor
  size captures anew. Where capture is impossible (CPU) or fails, the same static path runs
  eagerly, and the reason is logged once;
- ``auto``: ``on`` for a CUDA device, ``off`` elsewhere (on the CPU the dynamic path is faster:
  early exit and pruning shrink the work there, masks do not).
The matches are the same whichever runs (tests/test_lightglue_static.py).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from lightglue_ros.defaults import CUDA_GRAPHS_MODES
from lightglue_ros.errors import ConfigError
from lightglue_ros.features import Features
from lightglue_ros.models.lightglue import LightGlue, MatchResult
from lightglue_ros.models.lightglue_static import PaddedFeatures, StaticLightGlue

logger = logging.getLogger(__name__)

WARM_UP_CALLS = 3  # eager calls on a side stream before capture (cuBLAS/cuDNN workspaces)


def uses_static_path(mode: str, device: torch.device) -> bool:
    """Whether ``cuda_graphs`` = mode selects the static path on ``device``."""
    if mode not in CUDA_GRAPHS_MODES:
        raise ConfigError(f'cuda_graphs must be one of {", ".join(CUDA_GRAPHS_MODES)}, '
                          f'got {mode!r}')
    return mode == 'on' or (mode == 'auto' and device.type == 'cuda')


def build_matcher_runner(matcher: LightGlue, mode: str, num_keypoints: int,
                         device: torch.device) -> LightGlue | GraphedMatcher:
    """The matcher object the tracker calls (both have prepare_features, match_prepared,
    match, set_thresholds and conf)."""
    if not uses_static_path(mode, device):
        return matcher
    return GraphedMatcher(matcher, num_keypoints)


class _Graph:
    """One captured callable: static input buffers, the graph, its outputs."""

    def __init__(self, fn: Callable[..., Any], inputs: tuple[torch.Tensor, ...],
                 pool: Any) -> None:
        self.inputs = tuple(t.clone() for t in inputs)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(WARM_UP_CALLS):
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.outputs = fn(*self.inputs)

    def __call__(self, *inputs: torch.Tensor) -> Any:
        for buffer, value in zip(self.inputs, inputs):
            buffer.copy_(value, non_blocking=True)
        self.graph.replay()
        return self.outputs


class GraphedMatcher:
    """The static-shape LightGlue at ``num_keypoints``, replayed from CUDA graphs where it can
    be; eager (static path) otherwise. Interface of LightGlue as the tracker uses it."""

    def __init__(self, matcher: LightGlue, num_keypoints: int) -> None:
        self.matcher = matcher
        self.static = StaticLightGlue(matcher, num_keypoints)
        self._graphs: dict[tuple, _Graph] = {}
        self._pool: Any = None
        self.fallback_reason: str | None = None  # why graphs are not used (logged once)

    # -- LightGlue's interface ---------------------------------------------------------------
    @property
    def conf(self) -> dict[str, Any]:
        return self.matcher.conf

    @property
    def num_keypoints(self) -> int:
        return self.static.num_keypoints

    def set_thresholds(self, **values: float | None) -> None:
        self.matcher.set_thresholds(**values)  # the static path copies them to the device

    def prepare_features(self, features: Features) -> PaddedFeatures:
        return self.prepare(features.keypoints, features.descriptors, features.image_size)

    @torch.inference_mode()
    def prepare(self, keypoints: torch.Tensor, descriptors: torch.Tensor,
                image_size: tuple[int, int]) -> PaddedFeatures:
        static = self.static
        if not self._graphs_usable():
            return static.prepare(keypoints, descriptors, image_size)
        if keypoints.dim() == 2:
            keypoints, descriptors = keypoints[None], descriptors[None]
        if keypoints.shape[1] > static.num_keypoints or descriptors.shape[-1] != self.conf[
                'input_dim']:
            return static.prepare(keypoints, descriptors, image_size)  # raises its error
        # Padding and normalisation run eagerly (they depend on the image size and the point
        # count); the network part replays its graph.
        points, padded, valid = static.pad(keypoints, descriptors, image_size)
        tokens, encoding = self._replayer('prepare', static.prepare_padded, clone=True)(
            points, padded, valid)
        return PaddedFeatures(tokens, encoding, valid, int(keypoints.shape[1]))

    def match(self, features0: Features, features1: Features) -> MatchResult:
        return self.match_prepared(self.prepare_features(features0),
                                   self.prepare_features(features1))

    @torch.inference_mode()
    def match_prepared(self, prepared0: PaddedFeatures, prepared1: PaddedFeatures
                       ) -> MatchResult:
        static = self.static
        static.sync_settings()
        static.stacked_heads()  # built outside any capture; reused by replays
        inputs = (prepared0.tokens, prepared0.encoding, prepared0.valid,
                  prepared1.tokens, prepared1.encoding, prepared1.valid)
        if self._graphs_usable():
            out = self._replayer('match', static, clone=False)(*inputs)
        else:
            out = static(*inputs)
        # to_result copies what it keeps: the next replay may overwrite the graph's outputs.
        return out.to_result(prepared0.num_points, prepared1.num_points)

    # -- graphs --------------------------------------------------------------------------------
    def _graphs_usable(self) -> bool:
        if self.fallback_reason is not None:
            return False
        device = self.matcher.posenc.Wr.weight.device
        if device.type != 'cuda':
            self._fall_back(f'the matcher runs on {device}, CUDA graphs need a CUDA device')
            return False
        return True

    def _fall_back(self, reason: str) -> None:
        self.fallback_reason = reason
        self._graphs.clear()
        logger.warning('cuda_graphs: %s; running the static-shape matcher eagerly', reason)

    def _replayer(self, name: str, fn: Callable[..., Any], *, clone: bool
                  ) -> Callable[..., Any]:
        def call(*inputs: torch.Tensor) -> Any:
            if self.fallback_reason is None:
                key = (name, *((tuple(t.shape), t.dtype) for t in inputs))
                graph = self._graphs.get(key)
                if graph is None:
                    try:
                        if self._pool is None:
                            self._pool = torch.cuda.graph_pool_handle()
                        graph = _Graph(fn, inputs, self._pool)
                    except Exception as err:  # noqa: BLE001 - any capture failure: eager
                        self._fall_back(f'capturing {name} failed ({type(err).__name__}: '
                                        f'{err})')
                    else:
                        self._graphs[key] = graph
                        logger.info('cuda_graphs: captured %s for %s', name, key[1:])
                if graph is not None:
                    out = graph(*inputs)
                    return tuple(t.clone() for t in out) if clone else out
            return fn(*inputs)
        return call

"""The networks the tracker runs: LightGlue's dynamic path, or its static-shape path
(``models.lightglue_static``) replayed from CUDA graphs (setting ``cuda_graphs``), and the
extractor's fixed-count path (``extract_fixed``: dense network + keypoint selection at
max_keypoints, no host read), captured once per image size (``GraphedExtractor``).

- ``off``: ``LightGlue`` as it is (eager, shapes follow the keypoints, host decisions per layer);
- ``on``: ``StaticLightGlue`` at the keypoint budget. On CUDA its two fixed-shape parts (the
  per-image ``prepare_padded`` and the match) are captured as CUDA graphs on first use, once per
  budget (image size is outside the graphs), and replayed; a change of budget or descriptor
  size captures anew. Where capture is impossible (CPU) or fails, the same static path runs
  eagerly, and the reason is logged once. Setting ``static_early_exit``: ``mask``, the match is
  one graph and the layers after an early exit run masked; ``skip``, a graph per layer and the
  host stops launching them once it reads the exit flag;
- ``auto``: ``on`` for a CUDA device, ``off`` elsewhere (on the CPU the dynamic path is faster:
  early exit and pruning shrink the work there, masks do not).
The matches are the same whichever runs (tests/test_lightglue_static.py). With the setting
``torch_compile`` on, the functions that run (or are captured) are compiled first
(``lightglue_ros.compiled``).
"""
from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from lightglue_ros.compiled import CompiledFunction, compile_seconds, maybe_compiled
from lightglue_ros.defaults import (CUDA_GRAPHS_MODES, DEFAULT_STATIC_EARLY_EXIT,
                                    STATIC_EARLY_EXIT_MODES)
from lightglue_ros.errors import ConfigError
from lightglue_ros.features import Features, FixedFeatures
from lightglue_ros.models.lightglue import LightGlue, MatchResult
from lightglue_ros.models.lightglue_static import (LayerState, PaddedFeatures, StaticLightGlue,
                                                   StaticMatch)

logger = logging.getLogger(__name__)

WARM_UP_CALLS = 3  # eager calls on a side stream before capture (cuBLAS/cuDNN workspaces)
# static_early_exit skip on CUDA: the host waits for the exit flag of the layer this many
# layers behind the one it launches next, so that the GPU always has a layer queued while the
# host waits (after an exit, this many layers run masked: a no-op on the tokens).
EXIT_FLAG_LAG = 1


def uses_static_path(mode: str, device: torch.device) -> bool:
    """Whether ``cuda_graphs`` = mode selects the static path on ``device``."""
    if mode not in CUDA_GRAPHS_MODES:
        raise ConfigError(f'cuda_graphs must be one of {", ".join(CUDA_GRAPHS_MODES)}, '
                          f'got {mode!r}')
    return mode == 'on' or (mode == 'auto' and device.type == 'cuda')


def has_fixed_path(extractor: torch.nn.Module) -> bool:
    """Whether the extractor has a fixed-count path (SuperPoint, ALIKED, XFeat; not DISK)."""
    return callable(getattr(extractor, 'extract_fixed', None))


def build_matcher_runner(matcher: LightGlue, mode: str, num_keypoints: int,
                         device: torch.device, *, compile: bool = False,
                         early_exit: str = DEFAULT_STATIC_EARLY_EXIT
                         ) -> LightGlue | GraphedMatcher:
    """The matcher object the tracker calls (both have prepare_features, match_prepared,
    match, set_thresholds and conf). compile: torch.compile the static path (setting
    torch_compile); the dynamic path is never compiled (its shapes change every layer).
    early_exit: how the static path stops after an exit (setting static_early_exit)."""
    if not uses_static_path(mode, device):
        if compile:
            logger.warning('torch_compile: on, but cuda_graphs=%s on %s selects the dynamic '
                           'matcher, which is not compiled; set cuda_graphs on to compile',
                           mode, device)
        return matcher
    return GraphedMatcher(matcher, num_keypoints, compile=compile, early_exit=early_exit)


class _Graph:
    """One captured callable: static input buffers, the graph, its outputs.

    shared: the inputs are the buffers themselves (another graph's outputs, which this one
    reads and changes in place), not copied into buffers of its own."""

    def __init__(self, fn: Callable[..., Any], inputs: tuple[torch.Tensor, ...],
                 pool: Any, *, shared: bool = False) -> None:
        self.shared = shared
        self.inputs = inputs if shared else tuple(t.clone() for t in inputs)
        # Shared inputs hold a match in progress, which fn may change in place: they are saved
        # before the warm-up calls and put back after them.
        saved = tuple(t.clone() for t in inputs) if shared else ()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(WARM_UP_CALLS):
                fn(*self.inputs)
            for buffer, value in zip(self.inputs, saved):
                buffer.copy_(value)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: the node extracts the next frame on another thread meanwhile.
        with torch.cuda.graph(self.graph, pool=pool, capture_error_mode='thread_local'):
            self.outputs = fn(*self.inputs)

    def __call__(self, *inputs: torch.Tensor) -> Any:
        if self.shared:
            if any(a is not b for a, b in zip(self.inputs, inputs)):
                raise RuntimeError('a shared-input CUDA graph was called with other tensors')
        else:
            for buffer, value in zip(self.inputs, inputs):
                buffer.copy_(value, non_blocking=True)
        self.graph.replay()
        return self.outputs


class GraphCache:
    """CUDA graphs of one model, captured on first use per input shapes and replayed; where
    capture is impossible or fails, the callables run eagerly and the reason is logged once."""

    def __init__(self, what: str) -> None:
        self.what = what  # the model, for the log lines
        self._graphs: dict[tuple, _Graph] = {}
        self._pool: Any = None
        self.fallback_reason: str | None = None  # why graphs are not used
        self.captures = 0  # graphs captured so far (a size change captures anew)

    def usable(self, device: torch.device) -> bool:
        if self.fallback_reason is not None:
            return False
        if device.type != 'cuda':
            self._fall_back(f'the {self.what} runs on {device}, CUDA graphs need a CUDA device')
            return False
        return True

    def _fall_back(self, reason: str) -> None:
        self.fallback_reason = reason
        self._graphs.clear()
        logger.warning('cuda_graphs: %s; running the static-shape %s eagerly', reason,
                       self.what)

    def call(self, name: str, fn: Callable[..., Any], inputs: tuple[torch.Tensor, ...], *,
             clone: bool, detail: str = '', shared: bool = False) -> Any:
        """fn(*inputs), replayed from its graph for these input shapes (captured now if new).
        clone: copy the outputs (the next replay overwrites the graph's). shared: the inputs
        are always these same tensors (an earlier graph's outputs), used in place."""
        graph = self.capture(name, fn, inputs, detail=detail, shared=shared)
        if graph is None:
            return fn(*inputs)
        out = graph(*inputs)
        return tuple(t.clone() for t in out) if clone else out

    def capture(self, name: str, fn: Callable[..., Any], inputs: tuple[torch.Tensor, ...], *,
                detail: str = '', shared: bool = False) -> _Graph | None:
        """The graph of fn for these input shapes, captured now if new (not replayed);
        None once capture has failed."""
        if self.fallback_reason is not None:
            return None
        key = (name, *((tuple(t.shape), t.dtype) for t in inputs))
        graph = self._graphs.get(key)
        if graph is None:
            start = time.perf_counter()
            try:
                if self._pool is None:
                    self._pool = torch.cuda.graph_pool_handle()
                graph = _Graph(fn, inputs, self._pool, shared=shared)
            except Exception as err:  # noqa: BLE001 - any capture failure: eager
                self._fall_back(f'capturing {self.what} {name} failed '
                                f'({type(err).__name__}: {err})')
                return None
            self._graphs[key] = graph
            self.captures += 1
            logger.info('cuda_graphs: captured %s %s for %s in %.0f ms', self.what, name,
                        detail or key[1:], (time.perf_counter() - start) * 1e3)
        return graph


class GraphedExtractor:
    """An extractor's fixed-count path (``extract_fixed``), replayed from a CUDA graph per
    image size (captured on first use, again on a size change; logged) or run eagerly;
    compiled first when ``compile`` (setting torch_compile)."""

    def __init__(self, extractor: torch.nn.Module, *, compile: bool = False) -> None:
        if not has_fixed_path(extractor):
            raise ConfigError(f'{getattr(extractor, "name", extractor)} has no fixed-count path')
        self.extractor = extractor
        what = f'{getattr(extractor, "name", "extractor")} extractor'
        self.graphs = GraphCache(what)
        # extract_fixed without its inference_mode decorator (dynamo cannot trace into that
        # decorator; extract_fixed below enters the mode around the call instead).
        raw = inspect.unwrap(type(extractor).extract_fixed)

        def extract(image: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = raw(extractor, image)
            return out.keypoints, out.scores, out.descriptors, out.valid

        self._extract = maybe_compiled(extract, compile, what, self._describe)

    def _describe(self, inputs: tuple[torch.Tensor, ...]) -> str:
        h, w = inputs[0].shape[-2:]
        return f'{w}x{h} / {self.extractor.conf["max_keypoints"]} keypoints'

    @property
    def fallback_reason(self) -> str | None:
        return self.graphs.fallback_reason

    def compile_seconds(self) -> dict[str, float]:
        """torch_compile: seconds per compiled image size (empty when off)."""
        return compile_seconds(self._extract)

    @torch.inference_mode()
    def extract_fixed(self, image: torch.Tensor) -> FixedFeatures:
        """image: [C x H x W] float in [0, 1] on the extractor's device."""
        if self.graphs.usable(image.device):
            outputs = self.graphs.call('extract', self._extract, (image,), clone=True,
                                       detail=self._describe((image,)))
        else:
            outputs = self._extract(image)
        h, w = image.shape[-2:]
        return FixedFeatures(*outputs, (int(w), int(h)))


class GraphedMatcher:
    """The static-shape LightGlue at ``num_keypoints``, replayed from CUDA graphs where it can
    be; eager (static path) otherwise. Interface of LightGlue as the tracker uses it.

    early_exit (setting ``static_early_exit``): ``mask``, the match is one graph and the
    layers after an exit run masked (no host read, but an exit saves no work); ``skip``, a
    graph per layer (and one to begin, one to finish) and the host launches no layer after an
    exit: it reads each layer's exit flag, on CUDA ``EXIT_FLAG_LAG`` layers late (a pinned copy
    and an event wait while the GPU runs the next layer), elsewhere at once. Same matches."""

    def __init__(self, matcher: LightGlue, num_keypoints: int, *, compile: bool = False,
                 early_exit: str = DEFAULT_STATIC_EARLY_EXIT) -> None:
        if early_exit not in STATIC_EARLY_EXIT_MODES:
            raise ConfigError(f'static_early_exit must be one of '
                              f'{", ".join(STATIC_EARLY_EXIT_MODES)}, got {early_exit!r}')
        self.matcher = matcher
        self.static = StaticLightGlue(matcher, num_keypoints)
        self.graphs = GraphCache('matcher')
        self.early_exit = early_exit
        # static_early_exit skip, the last match: layers launched, exit-flag waits.
        self.last_layers_run = 0
        self.last_exit_waits = 0
        self._exit_flags: _ExitFlags | None = None
        # static_early_exit skip: (graphed, state shapes) -> the layers and the assignment.
        self._parts: dict[tuple, tuple[list, Callable[..., StaticMatch]]] = {}

        def describe(inputs: tuple[torch.Tensor, ...]) -> str:
            return f'{inputs[0].shape[1]} keypoints'

        def describe_state(state: tuple[torch.Tensor, ...]) -> str:
            return f'{state[0].shape[1] // 2} keypoints'  # both images' tokens

        # The fixed-shape parts, compiled when ``compile`` (setting torch_compile).
        self._prepare_net = maybe_compiled(self.static.prepare_padded, compile,
                                              'matcher prepare', describe)
        self._match_net = maybe_compiled(self.static, compile, 'matcher', describe)
        n_layers = matcher.conf['n_layers']
        if compile and early_exit == 'skip':
            import torch._dynamo

            # One program per layer of the same run_layer code: dynamo's default limit (8
            # per function) would leave LightGlue's ninth layer uncompiled.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit,
                                                       n_layers + 1)
        self._begin_net = maybe_compiled(self.static.begin, compile and early_exit == 'skip',
                                         'matcher begin', describe)
        self._finish_net = maybe_compiled(self.static.finish, compile and early_exit == 'skip',
                                          'matcher finish', describe_state)
        self._layer_nets = [maybe_compiled(functools.partial(self.static.run_layer, layer),
                                           compile and early_exit == 'skip',
                                           f'matcher layer {layer}', describe_state)
                            for layer in range(n_layers)]

    # -- LightGlue's interface ---------------------------------------------------------------
    @property
    def conf(self) -> dict[str, Any]:
        return self.matcher.conf

    @property
    def num_keypoints(self) -> int:
        return self.static.num_keypoints

    @property
    def fallback_reason(self) -> str | None:
        return self.graphs.fallback_reason

    def compile_seconds(self) -> dict[str, float]:
        """torch_compile: seconds per compiled part and budget (empty when off)."""
        return compile_seconds(self._prepare_net, self._match_net, self._begin_net,
                               *self._layer_nets, self._finish_net)

    def set_thresholds(self, **values: float | None) -> None:
        self.matcher.set_thresholds(**values)  # the static path copies them to the device

    def prepare_features(self, features: Features) -> PaddedFeatures:
        return self.prepare(features.keypoints, features.descriptors, features.image_size)

    def _usable(self) -> bool:
        return self.graphs.usable(self.matcher.posenc.Wr.weight.device)

    @torch.inference_mode()
    def prepare(self, keypoints: torch.Tensor, descriptors: torch.Tensor,
                image_size: tuple[int, int]) -> PaddedFeatures:
        static = self.static
        if not self._usable():
            return static.prepare(keypoints, descriptors, image_size)
        if keypoints.dim() == 2:
            keypoints, descriptors = keypoints[None], descriptors[None]
        if keypoints.shape[1] > static.num_keypoints or descriptors.shape[-1] != self.conf[
                'input_dim']:
            return static.prepare(keypoints, descriptors, image_size)  # raises its error
        # Padding and normalisation run eagerly (they depend on the image size and the point
        # count); the network part replays its graph.
        points, padded, valid = static.pad(keypoints, descriptors, image_size)
        return self._prepare_padded(points, padded, valid, int(keypoints.shape[1]))

    @torch.inference_mode()
    def prepare_fixed(self, features: FixedFeatures) -> PaddedFeatures:
        """The matcher side of fixed-count features (valid mask from the extractor, no host
        read; ``num_points`` is unknown on the host: None)."""
        points, descriptors, valid = self.static.pad_fixed(features)
        return self._prepare_padded(points, descriptors, valid, None)

    def _prepare_padded(self, points: torch.Tensor, descriptors: torch.Tensor,
                        valid: torch.Tensor, num_points: int | None) -> PaddedFeatures:
        if self._usable():
            tokens, encoding = self.graphs.call('prepare', self._prepare_net,
                                                (points, descriptors, valid), clone=True)
        else:
            tokens, encoding = self._prepare_net(points, descriptors, valid)
        return PaddedFeatures(tokens, encoding, valid, num_points)

    def match(self, features0: Features, features1: Features) -> MatchResult:
        return self.match_prepared(self.prepare_features(features0),
                                   self.prepare_features(features1))

    @torch.inference_mode()
    def match_static(self, prepared0: PaddedFeatures, prepared1: PaddedFeatures
                     ) -> StaticMatch:
        """The match at fixed shapes, no host read; its tensors are the graph's outputs (the
        next replay overwrites them: copy what is kept)."""
        static = self.static
        static.sync_settings()
        static.stacked_heads()  # built outside any capture; reused by replays
        inputs = (prepared0.tokens, prepared0.encoding, prepared0.valid,
                  prepared1.tokens, prepared1.encoding, prepared1.valid)
        if self.early_exit == 'skip':
            return self._match_skipping(inputs)
        if self._usable():
            return self.graphs.call('match', self._match_net, inputs, clone=False)
        return self._match_net(*inputs)

    def _match_skipping(self, inputs: tuple[torch.Tensor, ...]) -> StaticMatch:
        """static_early_exit skip: begin, the layers until the host sees the exit flag, the
        assignment; on CUDA each part replays its graph, the layers in place on the begin
        graph's outputs (so any number of them may run before the assignment's graph)."""
        graphed = self._usable()
        state = (self.graphs.call('begin', self._begin_net, inputs, clone=False) if graphed
                 else self._begin_net(*inputs))
        steps, finish = self._parts_for(state, graphed)
        if self._exit_flags is None or self._exit_flags.device != state.x.device:
            self._exit_flags = _ExitFlags(len(steps), state.x.device,
                                          exit_flag_lag(state.x.device))
        flags = self._exit_flags
        flags.start()
        ran = 0
        for layer, step in enumerate(steps):
            if flags.exited_before(layer):
                break
            state = step(*state)
            ran += 1
            if layer < len(steps) - 1:
                flags.record(layer, state.done)
        self.last_layers_run, self.last_exit_waits = ran, flags.waits
        return finish(*state)

    def _parts_for(self, state: LayerState, graphed: bool
                   ) -> tuple[list[Callable[..., LayerState]], Callable[..., StaticMatch]]:
        """The layers and the assignment to call on this state. On CUDA their graphs, the
        layers writing the begin graph's buffers in place; elsewhere the functions. All are
        captured (or, with torch_compile, compiled) at the first match of these shapes, the
        node's warm-up, not at the first live frame that runs deeper than those before it (a
        compile takes seconds); the state comes out unchanged."""
        key = (graphed, *((tuple(t.shape), t.dtype, t.device) for t in state))
        parts = self._parts.get(key)
        if parts is not None:
            return parts
        steps: list[Callable[..., LayerState]] = list(self._layer_nets)
        finish: Callable[..., StaticMatch] = self._finish_net
        if graphed:
            # A part whose capture failed runs eagerly in place (the cache then runs eagerly).
            steps = [self.graphs.capture(f'layer {layer}', _InPlace(net), state, shared=True)
                     or _InPlace(net) for layer, net in enumerate(self._layer_nets)]
            finish = self.graphs.capture('finish', finish, state, shared=True) or finish
        else:
            # Eager from now on (CPU, or capture failed): graphs kept for CUDA are let go.
            self._parts = {k: v for k, v in self._parts.items() if not k[0]}
            if any(isinstance(net, CompiledFunction) for net in steps):
                scratch = state
                for net in steps:  # functional: the state itself is not changed
                    scratch = net(*scratch)
                finish(*scratch)
        self._parts[key] = (steps, finish)
        return steps, finish

    @torch.inference_mode()
    def match_prepared(self, prepared0: PaddedFeatures, prepared1: PaddedFeatures
                       ) -> MatchResult:
        # to_result copies what it keeps: the next replay may overwrite the graph's outputs.
        return self.match_static(prepared0, prepared1).to_result(prepared0.num_points,
                                                                 prepared1.num_points)


class _InPlace:
    """A layer that writes its new state into the state it was given (what a graph per layer
    needs: every layer's graph reads and writes the begin graph's output buffers)."""

    def __init__(self, layer: Callable[..., LayerState]) -> None:
        self.layer = layer

    def __call__(self, *state: torch.Tensor) -> LayerState:
        for old, new in zip(state, self.layer(*state)):
            if new is not old:
                old.copy_(new)
        return LayerState(*state)


def exit_flag_lag(device: torch.device) -> int:
    """How many layers behind the next one the host reads the exit flag: ``EXIT_FLAG_LAG`` on
    CUDA (the GPU keeps a layer queued), 0 elsewhere (a layer has run when its call returns)."""
    return EXIT_FLAG_LAG if device.type == 'cuda' else 0


class _ExitFlags:
    """Each layer's exit flag as the host sees it (static_early_exit skip). On CUDA the flag
    is copied to page-locked memory behind the layer and an event recorded, and reading it
    waits for that event; elsewhere the flag tensor itself is kept and read. Before launching
    a layer the host reads the flag ``lag`` layers further back than the previous layer."""

    def __init__(self, n_layers: int, device: torch.device, lag: int) -> None:
        self.device = device
        self.lag = lag
        self.waits = 0  # host waits for a flag in the current match (start: 0)
        self._flags: list[torch.Tensor | None] = [None] * n_layers
        if device.type == 'cuda':
            self._host = torch.zeros(n_layers, dtype=torch.bool, pin_memory=True)
            self._host_view = self._host.numpy()  # read without a tensor op
            self._events = [torch.cuda.Event() for _ in range(n_layers)]

    def start(self) -> None:
        """A new match: no flag read yet."""
        self.waits = 0

    def record(self, layer: int, done: torch.Tensor) -> None:
        if self.device.type == 'cuda':
            self._host[layer].copy_(done, non_blocking=True)
            self._events[layer].record()
        else:
            self._flags[layer] = done

    def exited_before(self, layer: int) -> bool:
        """Whether the match exited by the layer whose flag the host reads before launching
        ``layer`` (False while there is none yet)."""
        seen = layer - 1 - self.lag
        if seen < 0:
            return False
        self.waits += 1
        if self.device.type == 'cuda':
            self._events[seen].synchronize()
            return bool(self._host_view[seen])
        return bool(self._flags[seen])

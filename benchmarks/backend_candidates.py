"""The candidates of bench_backends.py: XFeat's CNN and LighterGlue's static match exported
to ONNX and run by ONNX Runtime or OpenVINO, and LighterGlue with int8 linear layers, each
plugged into a ``Tracker`` in place of today's torch modules (docs/cpu_backends.md)."""
from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import lightglue_ros.models.lightglue as lightglue_module
from lightglue_ros.image import image_to_tensor
from lightglue_ros.models.lightglue import LightGlue
from lightglue_ros.models.lightglue_static import StaticLightGlue, StaticMatch
from lightglue_ros.tracker import Models, Tracker, TrackerConfig

ONNX_OPSET = 17
# Which extractor network / matcher each candidate runs.
CANDIDATES = {
    'torch': ('torch', 'torch'),
    'torch_full_depth': ('torch', 'torch_full_depth'),
    'torch_static': ('torch', 'torch_static'),
    'torch_int8': ('torch', 'torch_int8'),
    'ort_xfeat': ('ort', 'torch'),
    'openvino_xfeat': ('openvino', 'torch'),
    'openvino_bf16_xfeat': ('openvino_bf16', 'torch'),
    'ort': ('ort', 'ort'),
    'openvino': ('openvino', 'openvino'),
    'ort_int8': ('ort', 'ort_int8'),
}
PACKAGES = {'ort': ('onnx', 'onnxruntime'), 'ort_int8': ('onnx', 'onnxruntime'),
            'openvino': ('onnx', 'openvino'), 'openvino_bf16': ('onnx', 'openvino')}


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- runtimes --------------------------------------------------------------------------------
class Runtime:
    """One exported ONNX model run by ONNX Runtime or OpenVINO: numpy arrays in and out."""

    def __init__(self, backend: str, path: Path, threads: int, precision: str = 'f32') -> None:
        self.backend = backend
        if backend == 'ort':
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # Its pool's threads would spin after each call, on the cores torch runs on next.
            options.add_session_config_entry('session.intra_op.allow_spinning', '0')
            self._session = ort.InferenceSession(str(path), options,
                                                 providers=['CPUExecutionProvider'])
            self._names = [i.name for i in self._session.get_inputs()]
        else:
            import openvino as ov

            core = ov.Core()
            # f32 unless asked: on CPUs with bf16 support OpenVINO would pick bf16 by itself.
            # No pinning: two pinned models on two threads (XFeat on the extraction stage,
            # LighterGlue on the tracking one) shared one core (pipelined 0.61x against 0.91x).
            compiled = core.compile_model(core.read_model(str(path)), 'CPU', {
                'INFERENCE_NUM_THREADS': threads, 'PERFORMANCE_HINT': 'LATENCY',
                'INFERENCE_PRECISION_HINT': precision, 'ENABLE_CPU_PINNING': False})
            self._request = compiled.create_infer_request()
            self._outputs = len(compiled.outputs)

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        if self.backend == 'ort':
            return self._session.run(None, dict(zip(self._names, arrays)))
        self._request.infer(list(arrays))
        # The request's buffers are overwritten by its next call.
        return [self._request.get_output_tensor(i).data.copy() for i in range(self._outputs)]


class BackendBackbone(nn.Module):
    """XFeat's dense network through a Runtime at its exported input shape; torch otherwise."""

    def __init__(self, net: nn.Module, runtime: Runtime, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.net, self.runtime, self.shape = net, runtime, shape

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if tuple(x.shape) != self.shape:
            return self.net(x)
        return tuple(torch.from_numpy(a) for a in self.runtime(x.contiguous().numpy()))


class BackendStatic(StaticLightGlue):
    """The static LighterGlue whose match (``forward``) runs through a Runtime; ``prepare``
    stays in torch. The rotary encodings travel as real (cos, sin) pairs."""

    def __init__(self, matcher: LightGlue, num_keypoints: int, runtime: Runtime) -> None:
        super().__init__(matcher, num_keypoints)
        self.runtime = runtime

    def forward(self, tokens0: torch.Tensor, encoding0: torch.Tensor, valid0: torch.Tensor,
                tokens1: torch.Tensor, encoding1: torch.Tensor, valid1: torch.Tensor
                ) -> StaticMatch:
        arrays = [t.numpy() for t in (tokens0, torch.view_as_real(encoding0), valid0, tokens1,
                                      torch.view_as_real(encoding1), valid1)]
        return StaticMatch(*(torch.from_numpy(a) for a in self.runtime(*arrays)))


# -- export ----------------------------------------------------------------------------------
def _rotary_real(frequencies: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """lightglue.apply_rotary with the encoding as real [.. x d/2 x 2] (cos, sin) pairs: ONNX
    has no complex tensors."""
    pairs = x.unflatten(-1, (-1, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    cos, sin = frequencies[..., 0], frequencies[..., 1]
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], -1).flatten(-2)


@contextlib.contextmanager
def exportable_matcher() -> Iterator[None]:
    """Trace the static match with real-valued rotary encodings, and give the TorchScript
    exporter the in-place ``|=`` it lacks (ONNX Or)."""
    torch.onnx.register_custom_op_symbolic('aten::__ior_', lambda g, a, b: g.op('Or', a, b),
                                           ONNX_OPSET)
    original = lightglue_module.apply_rotary
    lightglue_module.apply_rotary = _rotary_real
    try:
        yield
    finally:
        lightglue_module.apply_rotary = original


class _StaticOutputs(nn.Module):
    def __init__(self, static: StaticLightGlue) -> None:
        super().__init__()
        self.static = static

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.static(*inputs)
        return out.matches0, out.scores0, out.stop, out.layers


def export_onnx(module: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path,
                outputs: list[str]) -> None:
    with torch.no_grad(), warnings_off():
        torch.onnx.export(module, inputs, str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=[f'input{i}' for i in range(len(inputs))],
                          output_names=outputs)


@contextlib.contextmanager
def warnings_off() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        yield


def export_models(models: Models, static: StaticLightGlue, image: np.ndarray, folder: Path,
                  backends: set[str]) -> tuple[dict[str, Path], tuple[int, ...], dict[str, float]]:
    """XFeat's dense network at the image's network input shape and the static match at the
    budget, as ONNX (plus ORT's dynamic int8 of the match). Returns paths, input shape and
    seconds spent."""
    seconds: dict[str, float] = {}
    extractor = models.extractor
    with torch.inference_mode():
        x = extractor._network_input(image_to_tensor(image))[0]
        features = extractor.extract(image_to_tensor(image))
        padded = static.prepare_features(features)
    start = time.perf_counter()
    paths = {'xfeat': folder / 'xfeat.onnx', 'match': folder / 'lighterglue_static.onnx'}
    export_onnx(extractor.net, (x.clone(),), paths['xfeat'], ['feats', 'keypoints', 'heatmap'])
    static.sync_settings()
    inputs = tuple(t.clone() for t in (padded.tokens, torch.view_as_real(padded.encoding),
                                       padded.valid) * 2)
    with exportable_matcher():
        export_onnx(_StaticOutputs(static), inputs, paths['match'],
                    ['matches0', 'scores0', 'stop', 'layers'])
    seconds['onnx_export'] = time.perf_counter() - start
    if 'ort_int8' in backends:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        start = time.perf_counter()
        paths['match_int8'] = folder / 'lighterglue_static_int8.onnx'
        quantize_dynamic(paths['match'], paths['match_int8'], weight_type=QuantType.QInt8)
        seconds['ort_int8_quantise'] = time.perf_counter() - start
    return paths, tuple(x.shape), seconds


# -- torch int8 ------------------------------------------------------------------------------
def _quantised_linear(weight: torch.Tensor) -> nn.Module:
    """torch's dynamic int8 Linear (quantize_dynamic) of a bias-free [out x in] weight."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        linear.weight.copy_(weight)
    with warnings_off():
        return torch.ao.quantization.quantize_dynamic(nn.Sequential(linear), {nn.Linear},
                                                      dtype=torch.qint8)[0]


class Int8Weight(torch.Tensor):
    """A fused fp32 weight [out x in] whose ``F.linear(x, w, b)`` and
    ``torch.addmm(c, a, w.t())`` run as torch's dynamic int8 Linear: LightGlue's blocks use
    their fused weights through these two calls only (``lightglue._AttentionBlock``)."""

    qlinear: nn.Module

    @staticmethod
    def __new__(cls, weight: torch.Tensor) -> Int8Weight:
        out = torch.Tensor._make_subclass(cls, weight.detach(), False)
        out.qlinear = _quantised_linear(weight)
        return out

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.Tensor.t and isinstance(args[0], cls):
            return args[0]  # read as "this weight, transposed" by addmm below
        if func is F.linear and isinstance(args[1], cls):
            bias = args[2] if len(args) > 2 else kwargs.get('bias')
            out = args[1].qlinear(args[0])
            return out if bias is None else out.add_(bias)
        if func is torch.addmm and isinstance(args[2], cls):
            return args[2].qlinear(args[1]).add_(args[0])
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)


class _Int8Out(nn.Module):
    """The feed-forward output layer with an Int8Weight (``_update`` reads weight and bias)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.register_buffer('weight', Int8Weight(linear.weight))
        self.register_buffer('bias', linear.bias.detach().clone())


def int8_matcher(matcher: LightGlue) -> LightGlue:
    """A copy of ``matcher`` with every linear layer in int8 except the positional encoding
    (keypoint positions quantised to 256 levels would move the rotary angles)."""
    quantised = copy.deepcopy(matcher)
    for layer in quantised.transformers:
        for block in (layer.self_attn, layer.cross_attn):
            block.fused_in_weight = Int8Weight(block.fused_in_weight)
            block.fused_message_weight = Int8Weight(block.fused_message_weight)
            block.ffn[3] = _Int8Out(block.ffn[3])
    heads = {name for name, module in quantised.named_modules()
             if isinstance(module, nn.Linear) and not name.startswith(('posenc', 'transformers'))}
    with warnings_off():
        torch.ao.quantization.quantize_dynamic(quantised, heads, dtype=torch.qint8,
                                               inplace=True)
    return quantised


# -- the candidates --------------------------------------------------------------------------
def build_candidates(names: list[str], models: Models, config: TrackerConfig,
                     runtimes: dict[str, Runtime], shape: tuple[int, ...]) -> dict[str, Tracker]:
    logging.getLogger('lightglue_ros.cuda_graphs').setLevel(logging.ERROR)  # static on CPU
    trackers = {}
    for name in names:
        extractor_kind, matcher_kind = CANDIDATES[name]
        extractor = copy.deepcopy(models.extractor)
        if extractor_kind != 'torch':
            extractor.net = BackendBackbone(extractor.net, runtimes[f'xfeat_{extractor_kind}'],
                                            shape)
        matcher, settings = models.matcher, {}
        if matcher_kind == 'torch_full_depth':
            matcher = copy.deepcopy(matcher)
            settings = {'depth_confidence': -1.0, 'width_confidence': -1.0}
            matcher.set_thresholds(**settings)
        elif matcher_kind == 'torch_int8':
            matcher = int8_matcher(matcher)
        elif matcher_kind != 'torch':
            settings = {'cuda_graphs': 'on'}  # the static path (eager on the CPU)
        tracker = Tracker(replace(config, **settings), extractor=extractor, matcher=matcher)
        # The static path would also switch XFeat to its fixed-count extraction (every pixel
        # scored, for CUDA graphs); the sparse one, as today, keeps the matcher the only change.
        tracker.fixed_extractor = None
        if matcher_kind in ('ort', 'openvino', 'ort_int8'):
            tracker.runner.static = BackendStatic(matcher, config.max_keypoints,
                                                  runtimes[f'match_{matcher_kind}'])
        trackers[name] = tracker
    return trackers


TORCH_KINDS = ('torch', 'torch_full_depth', 'torch_static', 'torch_int8')


def build_runtimes(names: list[str], models: Models, config: TrackerConfig, image: np.ndarray,
                   folder: Path, threads: int
                   ) -> tuple[dict[str, Runtime], tuple[int, ...], dict[str, float]]:
    """The exports and runtime sessions the candidates ``names`` need (files in ``folder``):
    runtimes by name, XFeat's exported input shape and the seconds spent."""
    kinds = {kind for n in names for kind in CANDIDATES[n]} - set(TORCH_KINDS)
    if not kinds:
        return {}, (), {}
    static = StaticLightGlue(models.matcher, config.max_keypoints)
    paths, shape, seconds = export_models(models, static, image, folder, kinds)
    runtimes: dict[str, Runtime] = {}
    for kind in kinds & {'ort', 'openvino'}:
        start = time.perf_counter()
        runtimes[f'xfeat_{kind}'] = Runtime(kind, paths['xfeat'], threads)
        runtimes[f'match_{kind}'] = Runtime(kind, paths['match'], threads)
        seconds[f'{kind}_compile'] = time.perf_counter() - start
    if 'openvino_bf16' in kinds:
        runtimes['xfeat_openvino_bf16'] = Runtime('openvino', paths['xfeat'], threads, 'bf16')
    if 'ort_int8' in kinds:
        runtimes['match_ort_int8'] = Runtime('ort', paths['match_int8'], threads)
    return runtimes, shape, seconds

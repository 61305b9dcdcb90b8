"""LightGlue (Lindenberger, Sarlin, Pollefeys, ICCV 2023): matcher with adaptive depth and width.

Our own implementation of the published architecture, numerically equal to the cvg reference
(and to kornia's and transformers' ports) and organised for speed:
- all attention goes through ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels on
  CPU and CUDA); the reference CPU cross-attention materialises two softmaxes and costs ~4x more;
- both images travel as one token sequence, so each layer's projections and feed-forward
  updates run once over all points, and the feed-forward additions ride on the GEMMs;
- the keyframe side of a match (input projection, rotary positional encoding and layer 0's
  self-attention, none of which sees the other image) is prepared once by ``prepare`` and reused
  for every frame matched against it.

One concept, over 500 lines: the network (its checkpoint converters are in
``lightglue_checkpoints.py``).

Weights (Apache-2.0, cvg/LightGlue): every released key layout (cvg's two, verlab's LighterGlue
bundle, Hugging Face's ``ETH-CVG/lightglue_*``) is converted to ours by
``models.lightglue_checkpoints.convert_state_dict``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightglue_ros.errors import CheckpointError, ConfigError, InvalidFeaturesError
from lightglue_ros.features import Features
from lightglue_ros.image import constant_like
from lightglue_ros.models.checkpoints import StateDict, load_into, load_state_dict_file
from lightglue_ros.models.lightglue_checkpoints import architecture_of, convert_state_dict

# Feature configurations: the descriptor size each extractor produces and the architecture of
# the LightGlue released for it. A checkpoint's own sizes (``architecture_of``) win, so a
# LightGlue trained with other sizes loads as long as its input size fits the descriptors.
FEATURE_CONFIGS: dict[str, dict[str, Any]] = {
    'superpoint': {'input_dim': 256},
    'disk': {'input_dim': 128},
    'aliked': {'input_dim': 128},
    # LighterGlue (verlab/accelerated_features): 6 layers, 1 head, 96-d tokens on 64-d XFeat.
    'xfeat': {'input_dim': 64, 'descriptor_dim': 96, 'n_layers': 6, 'num_heads': 1},
}
ARCHITECTURE_KEYS = ('input_dim', 'descriptor_dim', 'n_layers', 'num_heads')

# Point pruning gathers tensors, which costs more than it saves for few points: prune only images
# holding more points than this (the reference's thresholds; the CUDA path uses fused attention).
PRUNING_MIN_POINTS = {'cpu': -1, 'mps': -1, 'cuda': 1536}

_PRECISIONS = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}
PRECISIONS = tuple(_PRECISIONS)  # the ``precision`` option's values


@dataclass(frozen=True)
class PreparedFeatures:
    """One image's matcher inputs, computed once (the keyframe cache).

    tokens:   [1 x N x C] float, the descriptors after the input projection and after layer 0's
              self-attention block (which, like the encoding, does not see the other image).
    encoding: [1 x 1 x N x C/H/2] complex, the rotary positional encoding exp(i * angle).
    """

    tokens: torch.Tensor
    encoding: torch.Tensor

    @property
    def num_points(self) -> int:
        return int(self.tokens.shape[1])


@dataclass(frozen=True)
class MatchResult:
    """Matches between image 0 and image 1.

    matches:    [K x 2] long, (index in image 0, index in image 1).
    scores:     [K] float, match confidence in (filter_threshold, 1].
    stop_layer: number of transformer layers that ran (adaptive depth); 0 when none ran.
    layers0/1:  [M] / [N] long, for each point the number of layers it took part in
                (smaller than stop_layer for points removed by width pruning).
    """

    matches: torch.Tensor
    scores: torch.Tensor
    stop_layer: int
    layers0: torch.Tensor
    layers1: torch.Tensor

    @property
    def num_pruned0(self) -> int:
        return int((self.layers0 < self.stop_layer).sum())

    @property
    def num_pruned1(self) -> int:
        return int((self.layers1 < self.stop_layer).sum())

    def __len__(self) -> int:
        return int(self.matches.shape[0])


def check_features(keypoints: torch.Tensor, descriptors: torch.Tensor) -> None:
    """Raise InvalidFeaturesError unless keypoints [1 x N x 2] are finite and descriptors are
    [1 x N x D] for the same N (a NaN keypoint would silently give no matches). The NaN check
    runs for CPU tensors: on CUDA it would make the host wait for the GPU on every frame."""
    if keypoints.dim() != 3 or keypoints.shape[0] != 1 or keypoints.shape[-1] != 2:
        raise InvalidFeaturesError(f'keypoints must be [N x 2] (one image), got '
                                   f'{tuple(keypoints.shape)}')
    if descriptors.dim() != 3 or descriptors.shape[:2] != keypoints.shape[:2]:
        raise InvalidFeaturesError(f'{keypoints.shape[1]} keypoints but descriptors of shape '
                                   f'{tuple(descriptors.shape)}; need one descriptor per keypoint')
    if keypoints.device.type == 'cpu' and not bool(torch.isfinite(keypoints).all()):
        raise InvalidFeaturesError('keypoints contain NaN or infinite coordinates')


def normalize_keypoints(keypoints: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Map pixels to about [-1, 1] along the longer image side.

    keypoints: [... x N x 2] pixels (x, y); image_size: (width, height).
    """
    size = constant_like(image_size, keypoints)
    return (keypoints - size / 2) / (max(image_size) / 2)


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 -> fp32 (complex maths has no half types on CPU); fp32/fp64 unchanged."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def weight_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype of LightGlue's weights for ``precision`` on ``device``: half precision on
    CUDA only (CPU kernels for fp16/bf16 are slower than fp32 and round more)."""
    dtype = _PRECISIONS[precision]
    return dtype if dtype is not None and device.type == 'cuda' else torch.float32


def apply_rotary(frequencies: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of x by the keypoints' angles.

    x: [B x H x N x d] float; frequencies: [B x 1 x N x d/2] complex, exp(i * angle).
    The reference writes this as x * cos + rotate_half(x) * sin with rotate_half(x0, x1) =
    (-x1, x0): exactly a complex product per pair, which runs as one fused pass instead of five.
    """
    pairs = torch.view_as_complex(_at_least_fp32(x).unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * frequencies).flatten(-2).to(x.dtype)


class LearnableFourierPositionalEncoding(nn.Module):
    def __init__(self, dim_in: int, head_dim: int) -> None:
        super().__init__()
        self.Wr = nn.Linear(dim_in, head_dim // 2, bias=False)

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        """keypoints: [B x N x 2] normalised -> [B x 1 x N x head_dim/2] complex exp(i * angle)."""
        angles = _at_least_fp32(self.Wr(keypoints))
        return torch.polar(torch.ones_like(angles), angles).unsqueeze(1)


def _feed_forward(dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(2 * dim, 2 * dim), nn.LayerNorm(2 * dim, elementwise_affine=True), nn.GELU(),
        nn.Linear(2 * dim, dim))


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B x N x C] -> [B x H x N x C/H] (a view)."""
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)


class _AttentionBlock(nn.Module):
    """What self- and cross-attention blocks share: the feed-forward update on [x, message].

    The reference computes ``x + ffn([x, out_proj(context)])``. The first FFN layer is linear
    in both halves of its input, so we fold ``out_proj`` into it (one GEMM less per block) and
    compute its ``x`` half in the same GEMM as the block's input projections. ``fuse()``
    derives these weights from the reference parameters, which stay the module's state.
    """

    num_heads: int
    ffn: nn.Sequential

    def _fuse(self, in_weight: torch.Tensor, in_bias: torch.Tensor, out: nn.Linear) -> None:
        dim = out.out_features
        ffn_in = self.ffn[0]
        w_x, w_message = ffn_in.weight[:, :dim], ffn_in.weight[:, dim:]
        with torch.no_grad():
            weight = torch.cat([in_weight, w_x])
            bias = torch.cat([in_bias, ffn_in.bias + w_message @ out.bias])
            message_weight = w_message @ out.weight
        self.register_buffer('fused_in_weight', weight.detach(), persistent=False)
        self.register_buffer('fused_in_bias', bias.detach(), persistent=False)
        self.register_buffer('fused_message_weight', message_weight.detach(), persistent=False)

    def _update(self, x: torch.Tensor, context: torch.Tensor, ffn_x: torch.Tensor
                ) -> torch.Tensor:
        """x, context: [B x N x C]; ffn_x: [B x N x 2C] (the x half of FFN layer 1).

        The x half joins through addmm's accumulate, GELU (aten's in-place op, which the
        functional API does not expose) and the residual add reuse their input buffers: at
        1024 points the update runs ~15 % faster than with a fresh tensor for every step.
        """
        dim = x.shape[-1]
        norm, out = self.ffn[1], self.ffn[3]
        hidden = torch.addmm(ffn_x.reshape(-1, 2 * dim), context.reshape(-1, dim),
                             self.fused_message_weight.t())
        hidden = F.layer_norm(hidden, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        update = torch.addmm(out.bias, torch.ops.aten.gelu_(hidden), out.weight.t())
        return update.view(x.shape).add_(x)


def _attend_both(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, split: int, *,
                 cross: bool, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Attention inside each image (self) or from each image to the other (cross).

    q, k, v: [1 x H x M+N x d], the tokens of image 0 then image 1; split = M.
    bias: None, or [1 x 1 x 1 x M+N] added to every query's scores of that key: 0 for a key
    that takes part, a large negative number for padding or a pruned point (the static-shape
    path, ``lightglue_static``).
    Returns the context [1 x M+N x H*d]. Two fused calls on views: gathering the tokens
    into a batch costs more than it saves.
    """
    q0, q1 = q[:, :, :split], q[:, :, split:]
    k0, k1 = k[:, :, :split], k[:, :, split:]
    v0, v1 = v[:, :, :split], v[:, :, split:]
    b0 = b1 = None
    if bias is not None:
        b0, b1 = bias[..., :split], bias[..., split:]
    if cross:
        k0, k1, v0, v1, b0, b1 = k1, k0, v1, v0, b1, b0
    context0 = F.scaled_dot_product_attention(q0, k0, v0, attn_mask=b0)
    context1 = F.scaled_dot_product_attention(q1, k1, v1, attn_mask=b1)
    # Concatenating the token-major views writes [1 x M+N x H x d] in one copy.
    return torch.cat([context0.transpose(1, 2), context1.transpose(1, 2)], 1).flatten(-2)


class SelfBlock(_AttentionBlock):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        # Rows are interleaved per head as (head, channel, q|k|v), the reference layout.
        self.Wqkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.ffn = _feed_forward(dim)
        self.fuse()

    def fuse(self) -> None:
        dim, h = self.out_proj.in_features, self.num_heads
        # (head, channel, q|k|v) -> (q|k|v, head, channel): q, k and v become contiguous blocks
        # whose heads have unit stride, as the fused attention kernel wants.
        order = torch.arange(3 * dim, device=self.Wqkv.weight.device)
        order = order.view(h, dim // h, 3).permute(2, 0, 1).reshape(-1)
        self._fuse(self.Wqkv.weight[order], self.Wqkv.bias[order], self.out_proj)

    def forward(self, x: torch.Tensor, encoding: torch.Tensor, split: int | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """x: [1 x M+N x C] (image 0 then image 1, split = M) or one image [1 x N x C] with
        split None; encoding: [1 x 1 x tokens x C/H/2] complex; bias: None or the keys'
        [1 x 1 x 1 x tokens] additive mask (``_attend_both``)."""
        c = x.shape[-1]
        projected = F.linear(x, self.fused_in_weight, self.fused_in_bias)
        q, k, v = projected[..., :3 * c].unflatten(-1, (3, self.num_heads, -1)).permute(
            2, 0, 3, 1, 4)  # [1 x H x tokens x d] each
        q, k = apply_rotary(encoding, q), apply_rotary(encoding, k)
        if split is None:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(
                1, 2).flatten(-2)
        else:
            context = _attend_both(q, k, v, split, cross=False, bias=bias)
        return self._update(x, context, projected[..., 3 * c:])


class CrossBlock(_AttentionBlock):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        # Queries and keys share one projection: attention 0->1 is the transpose of 1->0.
        self.to_qk = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)
        self.ffn = _feed_forward(dim)
        self.fuse()

    def fuse(self) -> None:
        self._fuse(torch.cat([self.to_qk.weight, self.to_v.weight]),
                   torch.cat([self.to_qk.bias, self.to_v.bias]), self.to_out)

    def forward(self, x: torch.Tensor, split: int, bias: torch.Tensor | None = None
                ) -> torch.Tensor:
        """x: [1 x M+N x C] (image 0 then image 1); image i attends to image 1 - i; bias: None
        or the keys' [1 x 1 x 1 x M+N] additive mask (``_attend_both``)."""
        c = x.shape[-1]
        projected = F.linear(x, self.fused_in_weight, self.fused_in_bias)
        qk = _heads(projected[..., :c], self.num_heads)
        context = _attend_both(qk, qk, _heads(projected[..., c:2 * c], self.num_heads), split,
                               cross=True, bias=bias)
        return self._update(x, context, projected[..., 2 * c:])


class TransformerLayer(nn.Module):
    """One self- and one cross-attention block (run by ``LightGlue._match``)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.self_attn = SelfBlock(dim, num_heads)
        self.cross_attn = CrossBlock(dim, num_heads)


class MatchAssignment(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.matchability = nn.Linear(dim, 1)
        self.final_proj = nn.Linear(dim, dim)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """x0: [B x M x C], x1: [B x N x C] -> log assignment of point pairs [B x M x N].

        The reference pads this with a row and a column of log-probabilities of being
        unmatched; picking matches never reads them, so they are not built. The scores are
        fp32 whatever the weights' precision: half-precision log-probabilities would round
        the match scores by up to 1 % (autocast runs these ops in fp32 for the same reason).
        """
        scale = x0.shape[-1] ** -0.25
        m0, m1 = self.final_proj(x0) * scale, self.final_proj(x1) * scale
        sim = _at_least_fp32(m0 @ m1.transpose(-1, -2))
        scores = F.log_softmax(sim, 2)
        scores += F.log_softmax(sim, 1)
        scores += F.logsigmoid(_at_least_fp32(self.matchability(x0)))
        scores += F.logsigmoid(_at_least_fp32(self.matchability(x1))).transpose(1, 2)
        return scores

    def matchability_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.matchability(x)).squeeze(-1)


class TokenConfidence(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.token = nn.Sequential(nn.Linear(dim, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.token(x).squeeze(-1)


def filter_matches(scores: torch.Tensor, threshold: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mutual nearest neighbours above ``threshold`` from a log assignment [B x M x N].

    Returns matches0 [B x M] (index in image 1, or -1 = unmatched) and their scores [B x M].
    """
    max0, max1 = scores.max(2), scores.max(1)
    m0, m1 = max0.indices, max1.indices
    mutual0 = torch.arange(m0.shape[1], device=m0.device)[None] == m1.gather(1, m0)
    mscores0 = torch.where(mutual0, max0.values.exp(), max0.values.new_zeros(()))
    valid0 = mutual0 & (mscores0 > threshold)
    return torch.where(valid0, m0, -1), mscores0


class LightGlue(nn.Module):
    default_conf: dict[str, Any] = {
        'input_dim': 256,  # descriptor size of the extractor (set by `features`)
        'descriptor_dim': 256,  # width of the transformer
        'n_layers': 9,  # transformer layers (self + cross attention each)
        'num_heads': 4,  # attention heads
        'depth_confidence': 0.95,  # early stop when this share of points is confident; -1 = off
        'width_confidence': 0.99,  # prune points whose matchability is below 1 - this; -1 = off
        'filter_threshold': 0.1,  # minimum match score
        'precision': 'fp32',  # fp32 | fp16 | bf16: weights cast once on CUDA; CPU is always fp32
    }

    def __init__(self, features: str = 'superpoint', *, weights: str | Path | None = None,
                 **conf: Any) -> None:
        """features: one of FEATURE_CONFIGS; weights: a checkpoint in any released layout, whose
        sizes (depth, heads, token and input size) set the architecture."""
        super().__init__()
        if features not in FEATURE_CONFIGS:
            raise ConfigError(f'unknown features {features!r}; choose one of '
                              f'{", ".join(FEATURE_CONFIGS)}')
        unknown = set(conf) - set(self.default_conf)
        if unknown:
            raise ConfigError(f'unknown LightGlue option(s): {", ".join(sorted(unknown))}')
        self.features = features
        state_dict, source = None, None
        if weights is not None:
            state_dict, source = self._read_weights(weights)
        self.conf = {**self.default_conf, **FEATURE_CONFIGS[features],
                     **self._checked_architecture(features, state_dict, source, conf), **conf}
        if self.conf['precision'] not in _PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(_PRECISIONS)}, "
                              f"got {self.conf['precision']!r}")
        d, h, n = self.conf['descriptor_dim'], self.conf['num_heads'], self.conf['n_layers']
        if self.conf['input_dim'] != d:
            self.input_proj: nn.Module = nn.Linear(self.conf['input_dim'], d)
        else:
            self.input_proj = nn.Identity()
        self.posenc = LearnableFourierPositionalEncoding(2, d // h)
        self.transformers = nn.ModuleList([TransformerLayer(d, h) for _ in range(n)])
        self.log_assignment = nn.ModuleList([MatchAssignment(d) for _ in range(n)])
        self.token_confidence = nn.ModuleList([TokenConfidence(d) for _ in range(n - 1)])
        self.confidence_thresholds = [
            min(max(0.8 + 0.1 * math.exp(-4.0 * i / n), 0.0), 1.0) for i in range(n)]
        if state_dict is not None:
            self._load_converted(state_dict, source)
        self.eval()

    # -- weights ---------------------------------------------------------------------------
    @staticmethod
    def _read_weights(source: str | Path | Mapping[str, torch.Tensor]
                      ) -> tuple[StateDict, str]:
        """A checkpoint file or state dict in any released layout -> (our layout, its name)."""
        if isinstance(source, Mapping):
            return convert_state_dict(source), 'state dict'
        return convert_state_dict(load_state_dict_file(source)), str(source)

    @staticmethod
    def _checked_architecture(features: str, state_dict: StateDict | None, source: str | None,
                              conf: Mapping[str, Any]) -> dict[str, int]:
        """The checkpoint's sizes, after checking them against the descriptors and ``conf``."""
        if state_dict is None:
            return {}
        found = architecture_of(state_dict)
        dim = FEATURE_CONFIGS[features]['input_dim']
        if found.get('input_dim', dim) != dim:
            raise CheckpointError(
                f"{source} is a LightGlue for {found['input_dim']}-d descriptors (input_proj "
                f"weights), {features} features are {dim}-d")
        clashes = [f'{k} {found[k]} (asked for {conf[k]})' for k in ARCHITECTURE_KEYS
                   if k in conf and k in found and found[k] != conf[k]]
        if clashes:
            raise CheckpointError(f'{source} is a LightGlue with {", ".join(clashes)}')
        return found

    def load_weights(self, source: str | Path | Mapping[str, torch.Tensor]) -> None:
        """Load a checkpoint file or state dict in any supported layout (strict)."""
        self._load_converted(*self._read_weights(source))

    def _load_converted(self, state_dict: StateDict, source: str) -> None:
        load_into(self, state_dict, source=source, ignore=('confidence_thresholds',))
        self.fuse()

    def fuse(self) -> None:
        """Derive the fused inference weights from the parameters (after changing them)."""
        for layer in self.transformers:
            layer.self_attn.fuse()
            layer.cross_attn.fuse()

    # -- precision -------------------------------------------------------------------------
    def _apply(self, fn: Any, recurse: bool = True) -> LightGlue:
        """After ``to``/``cuda``/``cpu``: weights in ``weight_dtype`` of their device, cast
        here once. Under autocast every call re-cast every weight (~220 copy kernels a frame
        on CUDA, slower than fp32). A model in fp32 or fp64 off CUDA keeps its dtype
        (``.double()`` for the fp64 parity tests); half weights leaving CUDA become fp32."""
        super()._apply(fn, recurse)
        weight = self.posenc.Wr.weight
        target = weight_dtype(self.conf['precision'], weight.device)
        half = (torch.float16, torch.bfloat16)
        if weight.dtype != target and (target in half or weight.dtype in half):
            super()._apply(lambda t: t.to(target) if t.is_floating_point() else t, recurse)
        return self

    # -- thresholds that may change at run time --------------------------------------------
    def set_thresholds(self, *, depth_confidence: float | None = None,
                       width_confidence: float | None = None,
                       filter_threshold: float | None = None) -> None:
        for key, value in (('depth_confidence', depth_confidence),
                           ('width_confidence', width_confidence),
                           ('filter_threshold', filter_threshold)):
            if value is not None:
                self.conf[key] = float(value)

    # -- inference -------------------------------------------------------------------------
    @torch.inference_mode()
    def prepare(self, keypoints: torch.Tensor, descriptors: torch.Tensor,
                image_size: tuple[int, int]) -> PreparedFeatures:
        """The per-image work that does not depend on the other image (the keyframe cache):
        input projection, positional encoding and layer 0's self-attention block.

        keypoints: [N x 2] or [1 x N x 2] pixels (x, y); descriptors: [N x D] or [1 x N x D];
        image_size: (width, height).
        """
        if keypoints.dim() == 2:
            keypoints, descriptors = keypoints[None], descriptors[None]
        if descriptors.shape[-1] != self.conf['input_dim']:
            raise ConfigError(f"descriptors have {descriptors.shape[-1]} channels, LightGlue for "
                              f"{self.features} expects {self.conf['input_dim']}")
        check_features(keypoints, descriptors)
        weight = self.posenc.Wr.weight
        # Pixels are normalised in at least fp32 (fp16 would round them by up to 0.25 px).
        exact = weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32
        keypoints = normalize_keypoints(keypoints.to(weight.device, exact), image_size).to(
            weight.dtype)
        encoding = self.posenc(keypoints)
        tokens = self.transformers[0].self_attn(self.input_proj(descriptors.to(weight)),
                                                encoding)
        return PreparedFeatures(tokens, encoding)

    def prepare_features(self, features: Features) -> PreparedFeatures:
        return self.prepare(features.keypoints, features.descriptors, features.image_size)

    def match(self, features0: Features, features1: Features) -> MatchResult:
        return self.match_prepared(self.prepare_features(features0),
                                   self.prepare_features(features1))

    @torch.inference_mode()
    def match_prepared(self, prepared0: PreparedFeatures, prepared1: PreparedFeatures
                       ) -> MatchResult:
        """Match two prepared images (adaptive depth and width per ``conf``)."""
        return self._match(prepared0, prepared1)

    def _match(self, prepared0: PreparedFeatures, prepared1: PreparedFeatures) -> MatchResult:
        m0, n0 = prepared0.num_points, prepared1.num_points
        device = prepared0.tokens.device
        # Layers each point took part in (image 0's points, then image 1's); pruned points keep
        # the count they reached.
        layers = torch.zeros(m0 + n0, dtype=torch.long, device=device)
        if m0 == 0 or n0 == 0:
            return self._empty(layers, m0, stop_layer=0)
        # Both images travel as one token sequence, image 0's m points first: projections,
        # feed-forward updates and the per-layer heads run once over all tokens.
        x = torch.cat([prepared0.tokens, prepared1.tokens], 1)
        encoding = torch.cat([prepared0.encoding, prepared1.encoding], 2)
        index = torch.arange(m0 + n0, device=device)  # token -> position in `layers`
        m = m0
        n_layers = self.conf['n_layers']
        do_early_stop = self.conf['depth_confidence'] > 0
        do_pruning = self.conf['width_confidence'] > 0
        pruning_min = PRUNING_MIN_POINTS.get(device.type, -1)
        layer = 0
        for layer in range(n_layers):
            block = self.transformers[layer]
            if layer > 0:  # layer 0's self-attention ran in prepare()
                x = block.self_attn(x, encoding, m)
            x = block.cross_attn(x, m)
            if layer == n_layers - 1:
                break  # no early stop or pruning after the last layer
            token = None
            if do_early_stop:
                token = self.token_confidence[layer](x)
                if self._confident(token, layer, m0 + n0):
                    break
            prune0, prune1 = m > pruning_min, x.shape[1] - m > pruning_min
            if do_pruning and (prune0 or prune1):
                keep = self._keep(token, x, layer)
                keep[:m] |= not prune0
                keep[m:] |= not prune1
                layers[index[~keep]] = layer + 1
                m = int(keep[:m].sum())
                index, x, encoding = index[keep], x[:, keep], encoding[:, :, keep]
                if m == 0 or m == x.shape[1]:
                    return self._empty(layers, m0, stop_layer=layer + 1)
        layers[index] = layer + 1
        scores = self.log_assignment[layer](x[:, :m], x[:, m:])
        matches0, mscores0 = filter_matches(scores, self.conf['filter_threshold'])
        valid = matches0[0] > -1
        matches = torch.stack([index[:m][valid], index[m:][matches0[0][valid]] - m0], -1)
        return MatchResult(matches, mscores0[0][valid].float(), layer + 1, layers[:m0],
                           layers[m0:])

    def _confident(self, token: torch.Tensor, layer: int, num_points: int) -> bool:
        unconfident = (token < self.confidence_thresholds[layer]).sum()
        return bool(1.0 - unconfident.float() / num_points > self.conf['depth_confidence'])

    def _keep(self, token: torch.Tensor | None, x: torch.Tensor, layer: int) -> torch.Tensor:
        """[T] bool: the tokens [1 x T x C] that stay after this layer."""
        keep = self.log_assignment[layer].matchability_prob(x) > 1 - self.conf['width_confidence']
        if token is not None:  # low-confidence points are never pruned
            keep |= token <= self.confidence_thresholds[layer]
        return keep[0]

    @staticmethod
    def _empty(layers: torch.Tensor, split: int, *, stop_layer: int) -> MatchResult:
        device = layers.device
        return MatchResult(torch.zeros(0, 2, dtype=torch.long, device=device),
                           torch.zeros(0, device=device), stop_layer, layers[:split],
                           layers[split:])

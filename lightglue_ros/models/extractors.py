"""Feature extractors behind one interface: SuperPoint, XFeat (ours), kornia's DISK, ALIKED."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from lightglue_ros.defaults import (DEFAULT_MAX_KEYPOINTS, DEFAULT_RESIZE, EXTRACTORS,
                                    check_max_keypoints)
from lightglue_ros.errors import ConfigError, InvalidImageError
from lightglue_ros.features import Features
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

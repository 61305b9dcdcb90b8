"""``lightglue-ros demo --bag``: a bag through ``lightglue_ros.ros.replay.replay_bag`` (tracker
only, no ROS graph), its topics picked when there is one candidate, its frames printed as the
demo's table (``report.FrameTable``)."""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rosbags.highlevel import AnyReader

from lightglue_ros.cli.errors import EXIT_INTERRUPTED, EXIT_OK
from lightglue_ros.cli.options import describe_models, resolve_model_weights, tracker_config
from lightglue_ros.cli.report import FrameTable
from lightglue_ros.defaults import PLOTS_NAME, SUMMARY_NAME
from lightglue_ros.errors import BagError, CalibrationError
from lightglue_ros.ros import bag_io, replay
from lightglue_ros.tracker import resolve_device

REPLAY_BAG_NAME = 'replay_bag'  # the node's output topics as a rosbag2


def _bag_topics(path: Path) -> dict[str, str]:
    """topic -> message type of a bag (rosbags), for picking the demo's topics."""
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


def bag_demo(args: argparse.Namespace) -> int:
    """``lightglue-ros demo --bag PATH``: replay it into ``--output`` and print the frames."""
    path = Path(args.bag)
    device = resolve_device(args.device)
    if not path.exists():
        raise BagError(f'--bag: no such file or folder: {path}')
    weights = resolve_model_weights(args)
    image_topic, info_topic = args.image_topic, args.camera_info_topic
    if image_topic is None or (info_topic is None and not args.intrinsics):
        topics = _bag_topics(path)
        image_topic = image_topic or _pick_topic(topics, bag_io.IMAGE_TYPES, 'image', True)
        if info_topic is None and not args.intrinsics:
            info_topic = _pick_topic(topics, (bag_io.CAMERA_INFO_TYPE,), 'camera_info', False)
    if args.camera_info:
        raise CalibrationError('--camera-info applies to --images / --video; for a bag use its '
                               'camera_info topic or --intrinsics')
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = tracker_config(args, weights)
    intrinsics = f', fallback intrinsics {args.intrinsics}' if args.intrinsics else ''
    print(f'input: bag {path}, image topic {image_topic}, camera_info topic '
          f'{info_topic or "(none)"}{intrinsics}')
    print(f'{describe_models(args, device)}; '
          'running the replay library (tracker only, no ROS graph) ...', flush=True)
    summary = replay.replay_bag(
        path, out_dir / REPLAY_BAG_NAME, image_topic=image_topic, camera_info_topic=info_topic,
        config=config, overwrite=True, debug_images=False, progress=False,
        max_frames=args.frames, fallback_camera=args.intrinsics,
        summary_path=out_dir / SUMMARY_NAME, plots_dir=out_dir / PLOTS_NAME)
    print(FrameTable.HEADER)
    for i in range(summary.processed):
        event = summary.keyframe_event[i]
        FrameTable.print_row(summary.frame_index[i], summary.keyframe_index[i],
                             summary.matches[i], summary.inliers[i], summary.latency[i],
                             [f'keyframe change ({event})'] if event else [])
    print(f'summary: {summary.processed}/{summary.frames} frames processed at '
          f'{summary.fps:.2f} fps, {summary.keyframes} keyframe(s) '
          f'({summary.keyframe_switches} switch(es))')
    print(f"wrote {out_dir / REPLAY_BAG_NAME} (the node's output topics as a rosbag2)")
    print(f'wrote {out_dir / SUMMARY_NAME}')
    for plot in sorted((out_dir / PLOTS_NAME).glob('*.png')):
        print(f'wrote {plot}')
    return EXIT_OK if not summary.interrupted else EXIT_INTERRUPTED

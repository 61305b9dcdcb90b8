"""``lightglue-ros demo``: its parser and command, which picks the input and runs it through the
real node over ROS 2 (``demo_node``) or, for ``--bag``, the replay library (``demo_bag``).

The parser imports nothing heavy (``lightglue-ros --help``); the command imports the inputs,
the report and ROS 2 when it runs.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightglue_ros import argtypes
from lightglue_ros.cli.errors import EXIT_OK, DemoError
from lightglue_ros.cli.options import (add_calibration_options, add_model_options,
                                       describe_models, resolve_model_weights)
from lightglue_ros.errors import ConfigError, InvalidImageError
from lightglue_ros.profiles import REALTIME_TARGET

if TYPE_CHECKING:
    import numpy as np

    from lightglue_ros.cli.demo_inputs import DemoInput

DEFAULT_DEMO_OUTPUT = 'lightglue_demo_out'
# Seconds to wait for results: in lossless mode for each frame (the first one includes the
# models' warm-up), in latest mode for the node to finish after the last frame.
DEMO_FRAME_TIMEOUT_S = 300.0
DEFAULT_DEMO_FRAMES = 150  # of the synthetic room: 5 s of a 30 Hz camera
# Views of the synthetic room rendered (~80 ms each on a 2-core CPU), played forward and back
# for more frames: 2 s of the camera path at 30 fps.
SYNTHETIC_VIEWS = 60
IMAGE_MEMORY = 50  # recent input frames kept for the picture (a keyframe is a recent frame)


def add_demo_parser(commands: Any) -> None:
    """Register ``demo`` on the sub-parsers ``commands``."""
    parser = commands.add_parser(
        'demo', help='run the matcher node over ROS 2 on a built-in sequence (or your data)',
        description='Runs the real matcher node over ROS 2 inside this process (a camera '
                    'publisher, the node and a subscriber, on an isolated domain, localhost '
                    'only). The camera plays at --rate whatever the node keeps up with, the '
                    'node in latest mode (frames that arrive while it is busy are superseded, '
                    'counted); the end prints the rate and latency achieved beside the '
                    f'real-time target ({REALTIME_TARGET.describe()}). --lossless sends each '
                    "frame after the previous one's result instead. Without input options it "
                    'renders a synthetic textured room seen by a moving camera and compares the '
                    'estimated poses with the known camera path.')
    source = parser.add_argument_group('input (default: the synthetic room)')
    choice = source.add_mutually_exclusive_group()
    choice.add_argument('--images', metavar='DIR', help='a folder of image files (sorted by '
                                                        'name; numeric names are stamps in s)')
    choice.add_argument('--video', metavar='FILE', help='a video file (OpenCV)')
    choice.add_argument('--bag', metavar='PATH',
                        help='a rosbag2 folder/.mcap/.db3 or ROS 1 .bag, run through the replay '
                             'library (tracker only, no ROS graph)')
    source.add_argument('--frames', type=argtypes.positive_int, metavar='N',
                        help=f'frames to run (default: {DEFAULT_DEMO_FRAMES} synthetic frames, '
                             'all of your data)')
    source.add_argument('--fps', type=argtypes.positive_float, default=None,
                        help='frame rate of the stamps where the input has none, and of the '
                             "synthetic room's camera path (default: --rate; a video's own)")
    source.add_argument('--seed', type=int, default=0, help='synthetic scene seed (default: 0)')
    source.add_argument('--image-topic', help='--bag: image topic (default: the only one)')
    source.add_argument('--camera-info-topic',
                        help='--bag: camera_info topic (default: the only one, if any)')
    play = parser.add_argument_group('camera (not with --bag)')
    play.add_argument('--rate', type=argtypes.positive_float, default=REALTIME_TARGET.camera_hz,
                      metavar='HZ',
                      help='publish a frame every 1/HZ s on a timer, independent of the '
                           'results, to the node in latest mode (default: '
                           f"{REALTIME_TARGET.camera_hz:g}, the real-time target's camera)")
    play.add_argument('--lossless', action='store_true',
                      help="lossless mode instead: each frame is sent once the previous one's "
                           'result arrived (lock-step); none is dropped, --rate is not used')
    add_calibration_options(parser)
    parser.add_argument('--output', '-o', default=DEFAULT_DEMO_OUTPUT, metavar='DIR',
                        help=f'folder for the summary and pictures (default: '
                             f'./{DEFAULT_DEMO_OUTPUT})')
    parser.add_argument('--domain-id', type=int, default=None, metavar='ID',
                        help='ROS_DOMAIN_ID of the demo graph (default: a free-looking id in '
                             '[1, 100] derived from the process id)')
    parser.add_argument('--timeout', type=argtypes.positive_float, default=DEMO_FRAME_TIMEOUT_S,
                        metavar='S', help="seconds to wait for each frame's result with "
                                          '--lossless, else for the node to finish after the '
                                          f'last frame (default: {DEMO_FRAME_TIMEOUT_S:g})')
    add_model_options(parser)
    parser.set_defaults(handler=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    """``lightglue-ros demo``: see the sub-command's help."""
    from lightglue_ros.cli.report import (DEMO_SUMMARY_NAME, PICTURE_NOTES, FrameTable,
                                          play_summary, print_summary, write_pictures)
    from lightglue_ros.tracker import resolve_device

    # demo_bag and demo_node are imported when their path runs: both need rclpy (the [ros]
    # extra), demo_bag through lightglue_ros.ros.replay, an optional command of the CLI.
    if args.bag:
        try:
            from lightglue_ros.cli.demo_bag import bag_demo
        except ImportError as err:
            raise _needs_ros(err) from err
        return bag_demo(args)
    try:
        from lightglue_ros.cli import demo_node
    except ImportError as err:
        raise _needs_ros(err) from err
    if args.domain_id is None:
        args.domain_id = demo_node.default_domain_id()
    if not 0 <= args.domain_id <= 232:
        raise ConfigError(f'--domain-id must be in [0, 232], got {args.domain_id}')
    device = resolve_device(args.device)  # a clear ConfigError before anything starts
    weights = resolve_model_weights(args)
    source = _demo_input(args)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)

    print(f'input: {source.description}')
    print(f'{describe_models(args, device)}; weights {weights[0]}, {weights[1]}')
    camera = ("lossless mode: each frame is sent after the previous one's result"
              if args.lossless else f'latest mode, the camera publishing at {args.rate:g} Hz')
    print(f'ROS 2: starting the matcher node {demo_node.NODE_FQN} ({camera}) with a listener '
          f'on ROS_DOMAIN_ID {args.domain_id} (localhost only) ...', flush=True)
    table = FrameTable(source.ground_truth)
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
    load_average = os.getloadavg()
    start = time.monotonic()
    run = demo_node.run_node_demo(args, source, weights, table.add)
    wall_s = time.monotonic() - start
    table.finish()
    if not run.records:
        raise InvalidImageError('the input has no frames')
    play = play_summary(run.records, run.node, lossless=args.lossless, rate_hz=args.rate,
                        load_average=load_average)
    summary = table.summary(source, run.setup, args, wall_s, play)
    pictures = write_pictures(run.records, table, images, out_dir)
    summary['pictures'] = {name: str(path) for name, path in pictures.items()}
    summary_path = out_dir / DEMO_SUMMARY_NAME
    summary_path.write_text(json.dumps(summary, indent=1, allow_nan=False) + '\n',
                            encoding='utf-8')
    if not summary['frames_processed']:
        node = run.node
        raise DemoError(
            f'the node processed none of the {summary["frames_published"]} frames (it received '
            f'{node.received}, superseded {node.superseded}, skipped {node.skipped}; '
            f'{summary_path})')
    print_summary(summary)
    print(f'wrote {summary_path}')
    for name, path in pictures.items():
        print(f'wrote {path} ({PICTURE_NOTES[name]})')
    return EXIT_OK


def _needs_ros(err: ImportError) -> ConfigError:
    return ConfigError(f'the demo needs ROS 2 for Python ({err}): source a ROS 2 install or '
                       'pip install "lightglue_ros[ros]"')


def _demo_input(args: argparse.Namespace) -> DemoInput:
    """The input the options name: --images, --video, else the synthetic room."""
    from lightglue_ros.cli.demo_inputs import images_input, synthetic_input, video_input

    if args.images:
        return images_input(args)
    if args.video:
        return video_input(args)
    return synthetic_input(args)

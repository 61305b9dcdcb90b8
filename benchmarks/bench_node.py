"""End-to-end latency of the matcher node and its overhead over the core tracker.

Usage:
    python benchmarks/bench_node.py [--json] [--frames 17] [--max-keypoints 1024]
                                    [--extractor aliked] [--device cpu] [--shared-dir ../shared]

In one process: (1) the core, ``Tracker.process`` on the freiburg frames (640x480, no resize),
per-frame time; (2) the node, a ``MatcherNode`` (lossless mode, reliable QoS) sharing the same
models, and a client node that publishes each frame as a sensor_msgs/Image (rgb8) and waits
for its ~/matches before publishing the next (so nothing queues). End-to-end = publish ->
matches received by the client. Overhead = end-to-end minus the core time of the same frame
inside the node (``FrameResult.timings.total_ms``): DDS transport both ways, message
conversion, output messages, thread hand-over. The target is overhead <= 5 % of the core time
at 640x480 with 1024 keypoints. A breakdown times the conversion and the output messages
alone. A warm-up frame runs first in each part. The run is on a random ROS domain, localhost
only. Weights: the shared ALIKED + LightGlue files (SuperPoint weights are not shipped there).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name  # noqa: E402

from devtools.ros_spin import BackgroundSpinner  # noqa: E402
from lightglue_ros.defaults import DEFAULT_MAX_KEYPOINTS  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TARGET_PCT = 5.0
WEIGHT_FILES = {'aliked': ('aliked-n16.pth', 'aliked_lightglue.pth'),
                'disk': ('disk-depth-save.pth', 'disk_lightglue.pth')}


def machine() -> dict[str, Any]:
    cpu = cpu_name()
    return {'cpu': cpu, 'cores': os.cpu_count(), 'system': platform.system(),
            'python': platform.python_version(), 'load_average': list(os.getloadavg())}


def summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {'median': float(np.median(a)), 'mean': float(a.mean()),
            'p90': float(np.percentile(a, 90)), 'min': float(a.min()), 'max': float(a.max())}


def stamp_ns(path: Path) -> int:
    seconds, fraction = path.stem.split('.')
    return int(seconds) * 1_000_000_000 + int(fraction.ljust(9, '0')[:9])


def run_core(config: Any, models: tuple[Any, Any], images: list[np.ndarray],
             stamps: list[int], camera: Any) -> list[float]:
    from lightglue_ros.tracker import Tracker

    warm = Tracker(config, extractor=models[0], matcher=models[1])
    warm.process(images[0], 1, camera)
    warm.process(images[1], 2, camera)
    tracker = Tracker(config, extractor=models[0], matcher=models[1])
    return [tracker.process(image, stamp, camera).timings.total_ms
            for image, stamp in zip(images, stamps)]


def run_node(config_values: dict[str, Any], models: tuple[Any, Any], images: list[np.ndarray],
             stamps: list[int], camera: Any, timeout_s: float) -> dict[str, list[float]]:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_msgs.msg import Header

    from lightglue_ros.ros.camera_info import camera_model_to_camera_info
    from lightglue_ros.ros.images import array_to_image_msg
    from lightglue_ros.ros.messages import ns_to_stamp, stamp_to_ns
    from lightglue_ros.ros.node import MatcherNode

    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=random.SystemRandom().randint(1, 200))
    params = {**config_values, 'processing_mode': 'lossless', 'qos_reliability': 'reliable',
              'qos_depth': 10}
    node = MatcherNode(context=context, namespace='/bench', models=models,
                       parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    client = Node('bench_client', context=context)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    image_pub = client.create_publisher(Image, '/bench/image', qos)
    info_pub = client.create_publisher(CameraInfo, '/bench/camera_info', qos)
    arrived: dict[int, float] = {}
    event = threading.Event()

    def on_matches(msg: PointCloud2) -> None:
        arrived[stamp_to_ns(msg.header.stamp)] = time.perf_counter()
        event.set()

    sub = client.create_subscription(PointCloud2, '/bench/lightglue_matcher/matches',
                                     on_matches, qos)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(client)
    spinner = BackgroundSpinner(executor).start()
    out: dict[str, list[float]] = {'end_to_end_ms': [], 'core_ms': [], 'node_latency_ms': []}
    try:
        deadline = time.monotonic() + 30.0
        while (image_pub.get_subscription_count() < 1 or info_pub.get_subscription_count() < 1
               or sub.get_publisher_count() < 1):
            if time.monotonic() > deadline:
                raise RuntimeError('the node did not connect within 30 s')
            time.sleep(0.01)
        info_pub.publish(camera_model_to_camera_info(camera, header=Header(frame_id='camera')))
        while node.stats.camera_info_received < 1:
            if time.monotonic() > deadline:
                raise RuntimeError('camera_info did not arrive within 30 s')
            time.sleep(0.01)
        # Messages are built beforehand: the driver's cost is not the node's.
        warm = [(images[0], stamps[0] - 2_000_000_000), (images[1], stamps[0] - 1_000_000_000)]
        sequence = [(image, stamp, False) for image, stamp in warm]
        sequence += [(image, stamp, True) for image, stamp in zip(images, stamps)]
        for image, stamp, measured in sequence:
            msg = array_to_image_msg(image)
            msg.header.stamp = ns_to_stamp(stamp)
            msg.header.frame_id = 'camera'
            event.clear()
            t0 = time.perf_counter()
            image_pub.publish(msg)
            while stamp not in arrived:
                if not event.wait(timeout_s):
                    raise RuntimeError(f'no matches for frame {stamp} within {timeout_s} s')
                event.clear()
            if not node.wait_idle(timeout_s):
                raise RuntimeError('the node did not finish the frame')
            if measured:
                out['end_to_end_ms'].append((arrived[stamp] - t0) * 1e3)
                out['core_ms'].append(float(node.stats.last['core_ms']))
                out['node_latency_ms'].append(float(node.stats.last['latency_ms']))
    finally:
        spinner.stop()
        node.stop()
        executor.shutdown()
        client.destroy_node()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    return out


def breakdown(config: Any, models: tuple[Any, Any], images: list[np.ndarray],
              stamps: list[int], camera: Any) -> dict[str, float]:
    """Median ms of the node's own per-frame steps, timed alone."""
    from std_msgs.msg import Header

    from lightglue_ros.ros.images import array_to_image_msg, image_msg_to_array
    from lightglue_ros.ros.messages import frame_outputs, ns_to_stamp
    from lightglue_ros.tracker import Tracker
    from lightglue_ros.tracks import PublishedTracks

    tracker = Tracker(config, extractor=models[0], matcher=models[1])
    results = [tracker.process(image, stamp, camera)
               for image, stamp in zip(images[:3], stamps[:3])]
    msg = array_to_image_msg(images[0])
    header = Header(stamp=ns_to_stamp(stamps[0]), frame_id='camera')
    convert, outputs = [], []
    for _ in range(20):
        t0 = time.perf_counter()
        image_msg_to_array(msg)
        convert.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        frame_outputs(results[-1], header, odom_frame_id='odom', tracks=PublishedTracks())
        outputs.append((time.perf_counter() - t0) * 1e3)
    return {'image_conversion_ms': float(np.median(convert)),
            'output_messages_ms': float(np.median(outputs)),
            'matches_in_output_frame': results[-1].num_matches}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    parser.add_argument('--frames', type=int, default=17, help='freiburg frames (max 17)')
    parser.add_argument('--max-keypoints', type=int, default=DEFAULT_MAX_KEYPOINTS)
    parser.add_argument('--extractor', choices=sorted(WEIGHT_FILES), default='aliked')
    parser.add_argument('--device', default='cpu', help='cpu | cuda | auto')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    parser.add_argument('--timeout', type=float, default=300.0, help='seconds per frame')
    parser.add_argument('--shared-dir', type=Path, default=Path(os.environ.get(
        'LIGHTGLUE_ROS_SHARED', PROJECT_ROOT.parent / 'shared')))
    args = parser.parse_args(argv)
    shared = args.shared_dir.resolve()
    frames_dir = shared / 'data' / 'freiburg_sequence'
    if not frames_dir.is_dir():
        print(f'shared data not found under {shared} (use --shared-dir)', file=sys.stderr)
        return 2

    import torch

    from lightglue_ros.camera import CameraModel
    from lightglue_ros.image import read_image
    from lightglue_ros.ros.params import DEFAULTS, tracker_config
    from lightglue_ros.tracker import Tracker

    torch.set_num_threads(args.threads)
    extractor_file, matcher_file = WEIGHT_FILES[args.extractor]
    values = {**DEFAULTS, 'extractor': args.extractor, 'device': args.device,
              'extractor_weights': str(shared / 'weights' / extractor_file),
              'matcher_weights': str(shared / 'weights' / matcher_file),
              'max_keypoints': args.max_keypoints, 'resize': 0}
    config = tracker_config(values)
    paths = sorted(frames_dir.glob('*.png'))[:args.frames]
    images = [read_image(p) for p in paths]
    stamps = [stamp_ns(p) for p in paths]
    camera = CameraModel.from_yaml(frames_dir / 'camera_info.yaml')
    built = Tracker(config)
    models = (built.extractor, built.matcher)
    start = time.perf_counter()
    load_before = os.getloadavg()
    core = run_core(config, models, images, stamps, camera)
    node = run_node(values, models, images, stamps, camera, args.timeout)
    overhead = [e - c for e, c in zip(node['end_to_end_ms'], node['core_ms'])]
    core_median = float(np.median(node['core_ms']))
    report = {
        'command': ' '.join(['python', 'benchmarks/bench_node.py',
                             *(sys.argv[1:] if argv is None else argv)]),
        'machine': machine(),
        'load_average_before': list(load_before),
        'settings': {'frames': len(images), 'image_size': list(images[0].shape[1::-1]),
                     'extractor': args.extractor, 'max_keypoints': args.max_keypoints,
                     'device': str(built.device), 'torch_threads': args.threads,
                     'mode': 'lossless, reliable, one frame in flight'},
        'core_alone_ms': summary(core),
        'core_in_node_ms': summary(node['core_ms']),
        'end_to_end_ms': summary(node['end_to_end_ms']),
        'node_receive_to_publish_ms': summary(node['node_latency_ms']),
        'overhead_ms': summary(overhead),
        'overhead_pct_of_core': 100.0 * float(np.median(overhead)) / core_median,
        'target_pct': TARGET_PCT,
        'breakdown': breakdown(config, models, images, stamps, camera),
        'per_frame': [{'stamp_ns': s, 'core_ms': c, 'end_to_end_ms': e, 'overhead_ms': o}
                      for s, c, e, o in zip(stamps, node['core_ms'], node['end_to_end_ms'],
                                            overhead)],
        'wall_s': time.perf_counter() - start,
    }
    report['meets_target'] = report['overhead_pct_of_core'] <= TARGET_PCT
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    s = report['settings']
    print(f"{report['command']}\n{report['machine']}")
    print(f"{s['frames']} frames {s['image_size'][0]}x{s['image_size'][1]}, {s['extractor']} "
          f"{s['max_keypoints']} keypoints on {s['device']}")
    for key in ('core_alone_ms', 'core_in_node_ms', 'end_to_end_ms', 'overhead_ms'):
        v = report[key]
        print(f"  {key:18s} median {v['median']:8.1f}  mean {v['mean']:8.1f}  "
              f"p90 {v['p90']:8.1f}  max {v['max']:8.1f}")
    print(f"  overhead = {report['overhead_pct_of_core']:.2f} % of the core time "
          f"(target <= {TARGET_PCT:g} %: {'met' if report['meets_target'] else 'NOT met'})")
    b = report['breakdown']
    print(f"  of which image conversion {b['image_conversion_ms']:.2f} ms, output messages "
          f"{b['output_messages_ms']:.2f} ms ({b['matches_in_output_frame']} matches)")
    return 0


if __name__ == '__main__':
    sys.exit(main())

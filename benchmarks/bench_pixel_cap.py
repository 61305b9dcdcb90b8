"""Memory of the matcher node under a storm of decompression bombs, with the pixel cap.

Usage:
    python benchmarks/bench_pixel_cap.py [--json] [--storm 100] [--max-image-pixels N]
                                         [--jpeg-side 20000] [--png-side 16000]

Starts ``matcher_node`` (compressed input, lossless, reliable QoS, ALIKED on the CPU with the
shared weights) on a random ROS domain, localhost only, and sends it one good 640x480 JPEG,
then ``--storm`` compressed images alternating between a few-hundred-byte JPEG whose frame
header claims ``--jpeg-side``^2 pixels and a real ``--png-side``^2 black PNG, then one more
good JPEG. Records the node's resident memory (VmRSS) and its peak so far (VmHWM) after the
first good frame and after the last one, and the skip counters of its /diagnostics. Run it with the
default cap and with ``--max-image-pixels`` raised to see what the cap prevents (smaller
sides then: an uncapped 20000^2 frame needs several GB).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, shared_dir  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, kB."""
    values = {}
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        key, _, rest = line.partition(':')
        if key in ('VmRSS', 'VmHWM'):
            values[key] = int(rest.split()[0])
    return values


def jpeg_claiming(side: int) -> bytes:
    ok, data = cv2.imencode('.jpg', np.full((8, 8, 3), 128, np.uint8))
    assert ok
    jpeg = data.tobytes()
    i = jpeg.find(b'\xff\xc0') + 5
    return jpeg[:i] + side.to_bytes(2, 'big') * 2 + jpeg[i + 4:]


def black_png(side: int) -> bytes:
    ok, data = cv2.imencode('.png', np.zeros((side, side), np.uint8),
                            [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return data.tobytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--storm', type=int, default=100)
    parser.add_argument('--max-image-pixels', type=int, default=None,
                        help='the node parameter (default: its default)')
    parser.add_argument('--jpeg-side', type=int, default=20000)
    parser.add_argument('--png-side', type=int, default=16000)
    parser.add_argument('--timeout', type=float, default=600.0)
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args()

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, PointCloud2

    from lightglue_ros.ros.messages import ns_to_stamp, stamp_to_ns

    weights = shared_dir() / 'weights'
    domain = random.SystemRandom().randint(1, 200)
    env = {**os.environ, 'ROS_DOMAIN_ID': str(domain), 'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp',
           'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST'}
    env.pop('ROS_LOCALHOST_ONLY', None)
    os.environ.update({k: env[k] for k in ('ROS_DOMAIN_ID', 'RMW_IMPLEMENTATION',
                                           'ROS_AUTOMATIC_DISCOVERY_RANGE')})
    os.environ.pop('ROS_LOCALHOST_ONLY', None)
    params = {'compressed_input': 'true', 'processing_mode': 'lossless',
              'qos_reliability': 'reliable', 'qos_depth': '200', 'queue_size': '200',
              'extractor': 'aliked', 'extractor_weights': str(weights / 'aliked-n16.pth'),
              'matcher_weights': str(weights / 'aliked_lightglue.pth'), 'device': 'cpu',
              'max_keypoints': '256', 'diagnostics_period_s': '0.2', 'log_throttle_s': '5.0'}
    if args.max_image_pixels is not None:
        params['max_image_pixels'] = str(args.max_image_pixels)
    node = subprocess.Popen(
        [str(Path(sys.executable).with_name('matcher_node')), '--ros-args',
         *(a for k, v in params.items() for a in ('-p', f'{k}:={v}'))],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(node.stdout), daemon=True).start()

    rclpy.init()
    client = rclpy.create_node(f'bench_pixel_cap_{os.getpid()}')
    qos = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
    pub = client.create_publisher(CompressedImage, '/image/compressed', qos)
    matches: set[int] = set()
    diagnostics: list[dict[str, str]] = []
    client.create_subscription(PointCloud2, '/lightglue_matcher/matches',
                               lambda m: matches.add(stamp_to_ns(m.header.stamp)), qos)
    client.create_subscription(
        DiagnosticArray, '/diagnostics',
        lambda m: diagnostics.extend({kv.key: kv.value for kv in s.values} for s in m.status
                                     if s.name.startswith('lightglue_matcher:')), 10)
    executor = SingleThreadedExecutor()
    executor.add_node(client)

    def spin_until(predicate: Any, what: str) -> None:
        deadline = time.monotonic() + args.timeout
        while not predicate():
            if node.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f'gave up waiting for {what}:\n{"".join(log)}')
            executor.spin_once(timeout_sec=0.05)

    rgb = cv2.resize(cv2.imread(str(sorted((shared_dir() / 'data' / 'freiburg_sequence')
                                           .rglob('*.png'))[0])), (640, 480))
    good = cv2.imencode('.jpg', rgb)[1].tobytes()
    bombs = [jpeg_claiming(args.jpeg_side), black_png(args.png_side)]
    spin_until(lambda: pub.get_subscription_count() > 0, 'the node to subscribe')
    pub.publish(CompressedImage(format='jpeg', data=good, header=_header(ns_to_stamp(1))))
    spin_until(lambda: 1 in matches, 'the first good frame')
    before = memory_kb(node.pid)
    for i in range(args.storm):
        bomb = bombs[i % 2]
        pub.publish(CompressedImage(format='jpeg' if i % 2 == 0 else 'png', data=bomb,
                                    header=_header(ns_to_stamp(2 + i))))
    last = 3 + args.storm
    pub.publish(CompressedImage(format='jpeg', data=good, header=_header(ns_to_stamp(last))))
    spin_until(lambda: last in matches, 'the good frame after the storm')
    time.sleep(0.5)
    total = str(args.storm + 2)
    spin_until(lambda: diagnostics and diagnostics[-1].get('frames_received') == total and str(
        int(diagnostics[-1]['frames_processed']) + int(diagnostics[-1]['frames_skipped']))
        == total, 'the diagnostics of every frame')
    after = memory_kb(node.pid)
    status = diagnostics[-1]
    node.send_signal(signal.SIGINT)
    code = node.wait(60)
    executor.shutdown()
    client.destroy_node()
    rclpy.try_shutdown()
    result = {
        'date': time.strftime('%Y-%m-%d'), 'cpu': cpu_name(), 'cores': os.cpu_count(),
        'system': platform.platform(), 'storm': args.storm,
        'bombs_bytes': [len(b) for b in bombs],
        'bombs_pixels': [args.jpeg_side ** 2, args.png_side ** 2],
        'max_image_pixels': args.max_image_pixels, 'rss_before_mb': before['VmRSS'] / 1024,
        'rss_after_mb': after['VmRSS'] / 1024, 'peak_before_mb': before['VmHWM'] / 1024,
        'peak_after_mb': after['VmHWM'] / 1024,
        'frames_processed': status.get('frames_processed'),
        'skipped': {k: v for k, v in status.items() if k.startswith('skipped.')},
        'node_exit_code': code,
        'warnings_logged': sum('WARN' in line for line in log)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f'{key:18s} {value}')
    return 0


def _header(stamp: Any) -> Any:
    from std_msgs.msg import Header

    return Header(stamp=stamp, frame_id='camera')


if __name__ == '__main__':
    sys.exit(main())

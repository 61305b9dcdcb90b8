"""Image frames sent vs received over DDS between two processes, per QoS and transport setting.

Usage:
    python benchmarks/bench_transport.py [--json] [--frames 300] [--rate 30] [--width 640]
                                         [--height 480] [--only NAME ...]

For each configuration a subscriber process (the matcher node's input QoS: keep last 5,
best effort or reliable) and a publisher process (a camera driver: rgb8 sensor_msgs/Image at
``--rate`` Hz, stamps exactly one period apart) run on a random ROS domain, localhost only.
The subscriber counts what arrives and runs the node's own detectors (``stats.NodeStats``:
gaps in the stamps, a stream that stalls while its publisher is matched), so the table also
shows whether and when the node would warn about transport loss. Configurations: best effort
and reliable on Fast DDS defaults, with the shipped ``config/fastdds_large_data.xml`` profile
(FASTDDS_DEFAULT_PROFILES_FILE, both processes), and Fast DDS's own
``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROFILE = PROJECT_ROOT / 'config' / 'fastdds_large_data.xml'
TOPIC = '/bench_transport/image'
SETTLE_S = 2.0  # after the last frame: what is still in flight arrives (the publisher waits)

# name -> (publisher reliability, subscriber reliability, extra environment of both processes)
CONFIGS: dict[str, tuple[str, str, dict[str, str]]] = {
    'best_effort (defaults)': ('reliable', 'best_effort', {}),
    'best_effort pub + sub (defaults)': ('best_effort', 'best_effort', {}),
    'reliable (defaults)': ('reliable', 'reliable', {}),
    'best_effort + fastdds_large_data.xml': (
        'reliable', 'best_effort', {'FASTDDS_DEFAULT_PROFILES_FILE': str(PROFILE)}),
    'reliable + fastdds_large_data.xml': (
        'reliable', 'reliable', {'FASTDDS_DEFAULT_PROFILES_FILE': str(PROFILE)}),
    'best_effort + LARGE_DATA builtin': (
        'reliable', 'best_effort', {'FASTDDS_BUILTIN_TRANSPORTS': 'LARGE_DATA'}),
}


def _qos(reliability: str, depth: int) -> Any:
    from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      durability=DurabilityPolicy.VOLATILE,
                      reliability=ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                      else ReliabilityPolicy.BEST_EFFORT)


def subscriber(reliability: str, rate: float, stop_file: str, timeout_s: float
               ) -> dict[str, Any]:
    """Count the frames that arrive until ``stop_file`` exists (or timeout_s); look for a
    stall only while ``stop_file + '.sending'`` exists (the publisher is sending)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from lightglue_ros.ros.messages import stamp_to_ns
    from lightglue_ros.ros.stats import NodeStats

    rclpy.init()
    node = rclpy.create_node(f'bench_transport_sub_{os.getpid()}')
    stamps: list[int] = []
    stats = NodeStats()  # the node's own detectors: gaps in the stamps, a stalled stream
    warned: list[str] = []

    def on_image(msg: Image) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        stamps.append(stamp)
        if stats.on_input(stamp):
            warned.append(f'gaps after {len(stamps)} frames')

    node.create_subscription(Image, TOPIC, on_image, _qos(reliability, 5))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    print('ready', flush=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not os.path.exists(stop_file):
        executor.spin_once(timeout_sec=0.05)
        if not os.path.exists(stop_file + '.sending'):
            continue
        silent = stats.check_stall(node.count_publishers(TOPIC))
        if silent is not None:
            warned.append(f'stall after {len(stamps)} frames')
    node.destroy_node()
    rclpy.try_shutdown()
    period_ns = 1e9 / rate
    return {'received': len(set(stamps)), 'gaps': stats.gap_monitor.gaps,
            'received_indices': sorted({round(s / period_ns) for s in stamps}),
            'missing_estimate': stats.gap_monitor.missing_frames, 'stalls': stats.stalls,
            'node_would_warn': warned[0] if warned else None}


def publisher(reliability: str, frames: int, rate: float, width: int, height: int,
              sending_file: str) -> None:
    """Wait for the subscriber, then publish ``frames`` images at ``rate`` Hz, frame i
    stamped i periods after 0."""
    import numpy as np
    import rclpy
    from sensor_msgs.msg import Image

    from lightglue_ros.ros.images import array_to_image_msg
    from lightglue_ros.ros.messages import ns_to_stamp

    rclpy.init()
    node = rclpy.create_node(f'bench_transport_pub_{os.getpid()}')
    pub = node.create_publisher(Image, TOPIC, _qos(reliability, 10))
    deadline = time.monotonic() + 30.0
    while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # both directions discovered (reliable needs the reader's locators)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    msg = array_to_image_msg(image)
    period_ns = int(round(1e9 / rate))
    Path(sending_file).touch()
    start = time.monotonic()
    for i in range(frames):
        msg.header.stamp = ns_to_stamp(i * period_ns)  # the subscriber reads i from the stamp
        pub.publish(msg)
        delay = start + (i + 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    os.remove(sending_file)
    time.sleep(SETTLE_S)  # reliable: retransmissions of the last frames
    node.destroy_node()
    rclpy.try_shutdown()


def run_config(name: str, args: argparse.Namespace) -> dict[str, Any]:
    pub_rel, sub_rel, extra = CONFIGS[name]
    domain = random.SystemRandom().randint(1, 200)
    env = {**os.environ, 'ROS_DOMAIN_ID': str(domain), 'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp',
           'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST', **extra}
    env.pop('ROS_LOCALHOST_ONLY', None)
    script = str(Path(__file__).resolve())
    common = ['--frames', str(args.frames), '--rate', str(args.rate)]
    timeout = args.frames / args.rate + 60.0
    with tempfile.TemporaryDirectory() as tmp:
        stop_file = os.path.join(tmp, 'stop')
        sub = subprocess.Popen([sys.executable, script, '--role', 'sub', '--reliability',
                                sub_rel, '--rate', str(args.rate), '--stop-file', stop_file,
                                '--timeout', str(timeout)],
                               env=env, stdout=subprocess.PIPE, text=True)
        assert sub.stdout is not None
        sub.stdout.readline()  # 'ready'
        subprocess.run([sys.executable, script, '--role', 'pub', '--reliability', pub_rel,
                        *common, '--width', str(args.width), '--height', str(args.height),
                        '--stop-file', stop_file + '.sending'], env=env, timeout=timeout,
                       check=True)
        Path(stop_file).touch()
        out, _ = sub.communicate(timeout=60.0)
    result = json.loads(out.strip().splitlines()[-1])
    return {'config': name, 'publisher': pub_rel, 'subscriber': sub_rel, 'env': extra,
            'sent': args.frames, **result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--frames', type=int, default=300)
    parser.add_argument('--rate', type=float, default=30.0)
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--only', nargs='*', default=None, help='configuration names to run')
    parser.add_argument('--json', action='store_true')
    parser.add_argument('--role', choices=('sub', 'pub'), help=argparse.SUPPRESS)
    parser.add_argument('--reliability', default='best_effort', help=argparse.SUPPRESS)
    parser.add_argument('--timeout', type=float, default=120.0, help=argparse.SUPPRESS)
    parser.add_argument('--stop-file', default='', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == 'sub':
        print(json.dumps(subscriber(args.reliability, args.rate, args.stop_file,
                                    args.timeout)))
        return 0
    if args.role == 'pub':
        publisher(args.reliability, args.frames, args.rate, args.width, args.height,
                  args.stop_file)
        return 0
    names = args.only or list(CONFIGS)
    results = [run_config(name, args) for name in names]
    info = {'date': time.strftime('%Y-%m-%d'), 'cpu': cpu_name(), 'cores': os.cpu_count(),
            'system': platform.platform(), 'load_average': list(os.getloadavg()),
            'frames': args.frames, 'rate_hz': args.rate, 'size': f'{args.width}x{args.height}'}
    if args.json:
        print(json.dumps({'machine': info, 'results': results}, indent=2))
        return 0
    print(f"{info['date']}, {info['cpu']}, {info['cores']} cores, load {info['load_average']}")
    print(f'{args.frames} frames {info["size"]} rgb8 at {args.rate:g} Hz')
    print(f'{"configuration":40s} {"received":>9s} {"gaps":>5s} {"stalls":>6s}  node warns')
    for r in results:
        print(f'{r["config"]:40s} {r["received"]:>5d}/{r["sent"]:<3d} {r["gaps"]:>5d} '
              f'{r["stalls"]:>6d}  {r["node_would_warn"] or "-"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Bag replay throughput against the core tracker alone, on the same frames, in one process.

Usage:
    python benchmarks/bench_replay.py [--json] [--rounds 3] [--frames 17] [--max-keypoints 1024]
                                      [--extractor aliked] [--device cpu] [--storage mcap]
                                      [--debug-images] [--compressed]

The freiburg frames (<shared>/data/freiburg_sequence) are written once into a temporary MCAP
bag (sensor_msgs/Image rgb8, or CompressedImage PNG with --compressed, plus camera_info). Each
round then times, in turns so that load drift on a shared machine hits both alike:

  core:   Tracker.process over the frames, already decoded to arrays (what the tracker costs);
  replay: replay_bag over the bag into a fresh output bag (read, deserialise, decode, track,
          build the node's messages, serialise, write, summary JSON; plots off).

Both use the same Tracker (same models, reset before each pass). Reported: frames/s of each
(median and best round) and the replay overhead = replay time / core time - 1 (target <= 10 %).
Because wall time on a loaded, shared machine swings by a factor of two between passes, two
steadier measures are reported as well: the overhead in CPU seconds of this process
(replay CPU / core CPU - 1; other jobs hardly change it), and the overhead per frame from the
replay's own clocks, (per-frame latency - Tracker.process time) / Tracker.process time, which
does not depend on how two separate passes were scheduled.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, shared_dir  # noqa: E402

from lightglue_ros.camera import CameraModel  # noqa: E402
from lightglue_ros.defaults import DEFAULT_MAX_KEYPOINTS  # noqa: E402
from lightglue_ros.image import read_image  # noqa: E402
from lightglue_ros.ros.replay import replay_bag  # noqa: E402
from lightglue_ros.tracker import Tracker, TrackerConfig  # noqa: E402

TARGET_OVERHEAD = 0.10
WEIGHTS = {'aliked': ('aliked-n16.pth', 'aliked_lightglue.pth'),
           'disk': ('disk-depth-save.pth', 'disk_lightglue.pth')}
IMAGE_TOPIC, INFO_TOPIC = '/cam/image_raw', '/cam/camera_info'


def write_input_bag(path: Path, frames: list[tuple[int, np.ndarray]], camera: CameraModel, *,
                    compressed: bool) -> str:
    """An MCAP bag with camera_info + image per frame; returns the image topic."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    t = ts.types
    topic = IMAGE_TOPIC + ('/compressed' if compressed else '')
    kind = 'sensor_msgs/msg/CompressedImage' if compressed else 'sensor_msgs/msg/Image'
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        info_conn = writer.add_connection(INFO_TOPIC, 'sensor_msgs/msg/CameraInfo', typestore=ts)
        image_conn = writer.add_connection(topic, kind, typestore=ts)
        for stamp, rgb in frames:
            header = t['std_msgs/msg/Header'](
                stamp=t['builtin_interfaces/msg/Time'](sec=stamp // 10**9, nanosec=stamp % 10**9),
                frame_id='camera')
            roi = t['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0,
                                                        width=0, do_rectify=False)
            info = t['sensor_msgs/msg/CameraInfo'](
                header=header, height=camera.height, width=camera.width,
                distortion_model=camera.distortion_model if camera.D.size else 'plumb_bob',
                d=camera.D.copy() if camera.D.size else np.zeros(5), k=camera.K.reshape(-1),
                r=np.eye(3).reshape(-1), p=np.hstack([camera.K, np.zeros((3, 1))]).reshape(-1),
                binning_x=0, binning_y=0, roi=roi)
            writer.write(info_conn, stamp, ts.serialize_cdr(info, 'sensor_msgs/msg/CameraInfo'))
            if compressed:
                png = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1]
                msg = t[kind](header=header, format='rgb8; png compressed bgr8',
                              data=png.reshape(-1))
            else:
                h, w = rgb.shape[:2]
                msg = t[kind](header=header, height=h, width=w, encoding='rgb8', is_bigendian=0,
                              step=w * 3, data=np.ascontiguousarray(rgb).reshape(-1))
            writer.write(image_conn, stamp, ts.serialize_cdr(msg, kind))
    return topic


def sync(tracker: Tracker) -> None:
    if tracker.device.type == 'cuda':
        torch.cuda.synchronize()


def run_core(tracker: Tracker, frames: list[tuple[int, np.ndarray]], camera: CameraModel
             ) -> tuple[float, float]:
    """(wall s, process CPU s) of Tracker.process over the frames."""
    tracker.reset()
    sync(tracker)
    start, cpu = time.perf_counter(), time.process_time()
    for stamp, image in frames:
        tracker.process(image, stamp, camera)
    sync(tracker)
    return time.perf_counter() - start, time.process_time() - cpu


def run_replay(tracker: Tracker, bag: Path, topic: str, out: Path, args: argparse.Namespace
               ) -> tuple[float, dict]:
    if out.exists():
        shutil.rmtree(out)
    sync(tracker)
    start, cpu = time.perf_counter(), time.process_time()
    summary = replay_bag(bag, out, image_topic=topic, camera_info_topic=INFO_TOPIC,
                         storage=args.storage, tracker=tracker, progress=False,
                         debug_images=args.debug_images, plots_dir=False)
    sync(tracker)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert summary.processed == summary.frames, summary.skipped_by_reason
    latency = np.asarray(summary.latency)
    core = np.asarray(summary.tracker_latency)
    return elapsed, {'replay_cpu_s': cpu, 'loop_s': summary.wall_s, 'processed': summary.processed,
                     'per_frame_overhead_ms': float(np.mean(latency - core)),
                     'tracker_ms_mean': float(np.mean(core)),
                     'bag_mb': round(sum(p.stat().st_size for p in out.iterdir()) / 2**20, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    parser.add_argument('--rounds', type=int, default=3, help='timed rounds (default 3)')
    parser.add_argument('--frames', type=int, default=17, help='freiburg frames (max 17)')
    parser.add_argument('--extractor', choices=sorted(WEIGHTS), default='aliked')
    parser.add_argument('--max-keypoints', type=int, default=DEFAULT_MAX_KEYPOINTS)
    parser.add_argument('--device', default='auto')
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0: default)')
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
    parser.add_argument('--debug-images', action='store_true', help='also write debug images')
    parser.add_argument('--compressed', action='store_true',
                        help='PNG CompressedImage input instead of raw Image')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shared = shared_dir()
    extractor_file, matcher_file = WEIGHTS[args.extractor]
    config = TrackerConfig(extractor=args.extractor,
                           extractor_weights=str(shared / 'weights' / extractor_file),
                           matcher_weights=str(shared / 'weights' / matcher_file),
                           max_keypoints=args.max_keypoints, device=args.device)
    data = shared / 'data' / 'freiburg_sequence'
    paths = sorted(data.glob('*.png'))[:args.frames]
    frames = [(int(round(float(p.stem) * 1e9)), read_image(p)) for p in paths]
    camera = CameraModel.from_yaml(data / 'camera_info.yaml')
    tracker = Tracker(config)
    rounds = []
    with tempfile.TemporaryDirectory(prefix='bench_replay_') as tmp:
        bag = Path(tmp) / 'input'
        topic = write_input_bag(bag, frames, camera, compressed=args.compressed)
        run_core(tracker, frames[:3], camera)  # warm-up (allocator, caches, lazy imports)
        run_replay(tracker, bag, topic, Path(tmp) / 'warmup', args)
        for k in range(args.rounds):
            # Alternate the order so that a load change penalises neither side systematically.
            order = ('core', 'replay') if k % 2 == 0 else ('replay', 'core')
            entry: dict = {}
            for which in order:
                if which == 'core':
                    entry['core_s'], entry['core_cpu_s'] = run_core(tracker, frames, camera)
                else:
                    entry['replay_s'], details = run_replay(tracker, bag, topic,
                                                            Path(tmp) / 'out', args)
                    entry.update(details)
            entry['overhead'] = entry['replay_s'] / entry['core_s'] - 1.0
            entry['overhead_cpu'] = entry['replay_cpu_s'] / entry['core_cpu_s'] - 1.0
            rounds.append(entry)
    n = len(frames)
    core_med = statistics.median(r['core_s'] for r in rounds)
    replay_med = statistics.median(r['replay_s'] for r in rounds)
    core_best = min(r['core_s'] for r in rounds)
    replay_best = min(r['replay_s'] for r in rounds)
    per_frame = statistics.median(r['per_frame_overhead_ms'] for r in rounds)
    tracker_ms = statistics.median(r['tracker_ms_mean'] for r in rounds)
    report = {
        'command': ' '.join(['python', 'benchmarks/bench_replay.py',
                             *(sys.argv[1:] if argv is None else argv)]),
        'machine': machine(),
        'device': str(tracker.device),
        'frames': n, 'image_size': list(frames[0][1].shape), 'extractor': args.extractor,
        'max_keypoints': args.max_keypoints, 'storage': args.storage,
        'input': 'CompressedImage (PNG)' if args.compressed else 'Image (rgb8)',
        'debug_images': args.debug_images, 'rounds': rounds,
        'core_fps_median': n / core_med, 'replay_fps_median': n / replay_med,
        'core_fps_best': n / core_best, 'replay_fps_best': n / replay_best,
        'overhead_median': replay_med / core_med - 1.0,
        'overhead_best': replay_best / core_best - 1.0,
        # CPU seconds of this process: hardly affected by other jobs on a shared machine.
        'overhead_cpu_median': statistics.median(r['overhead_cpu'] for r in rounds),
        'per_frame_overhead_ms': per_frame,
        'tracker_ms_per_frame': tracker_ms,
        'per_frame_overhead': per_frame / tracker_ms,
        'target_overhead': TARGET_OVERHEAD,
    }
    # Judged on the two measures that other jobs on the machine do not swing (see above); the
    # wall-clock ratios are reported for reading next to them.
    report['meets_target'] = bool(report['per_frame_overhead'] <= TARGET_OVERHEAD
                                  and report['overhead_cpu_median'] <= TARGET_OVERHEAD)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{report['command']}\n{report['machine']} ({report['device']})")
    print(f"{n} frames {frames[0][1].shape[1]}x{frames[0][1].shape[0]}, {args.extractor} "
          f"{args.max_keypoints} kp, {report['input']} -> {args.storage}"
          f"{' + debug images' if args.debug_images else ''}")
    for k, r in enumerate(rounds):
        print(f"  round {k}: core {r['core_s']:.2f} s, replay {r['replay_s']:.2f} s "
              f"({r['overhead'] * 100:+.1f} %; CPU {r['overhead_cpu'] * 100:+.1f} %), "
              f"per-frame overhead "
              f"{r['per_frame_overhead_ms']:.1f} ms of {r['tracker_ms_mean']:.0f} ms")
    print(f"core {report['core_fps_median']:.2f} fps, replay {report['replay_fps_median']:.2f} "
          f"fps (median); overhead median {report['overhead_median'] * 100:+.1f} %, best "
          f"{report['overhead_best'] * 100:+.1f} %, CPU time "
          f"{report['overhead_cpu_median'] * 100:+.1f} %, per frame "
          f"{report['per_frame_overhead'] * 100:.1f} % (target <= {TARGET_OVERHEAD:.0%})")
    return 0


if __name__ == '__main__':
    sys.exit(main())

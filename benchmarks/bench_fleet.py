"""Fleet replay throughput: one sequential process against --jobs 2 and Ray local, in one process.

Usage:
    python benchmarks/bench_fleet.py [--json] [--bags 8] [--frames 17] [--rounds 1]
                                     [--max-keypoints 512] [--resize 480] [--plots]

The freiburg frames (<shared>/data/freiburg_sequence) are written into ``--bags`` MCAP bags
(``--frames`` images + camera_info each). Each round replays the whole fleet with
``lightglue_ros.ros.fleet.run_fleet`` three ways, in turns so that load drift on a shared
machine hits all of them alike, each into a fresh output root:

  sequential: one worker in this process (torch's default threads: every core);
  jobs2:      two spawned worker processes (--jobs 2; one torch thread each on 2 cores);
  ray:        two Ray actors on a local Ray instance started once before the rounds (a cluster
              is normally up before a fleet is sent to it; its start is reported as ray_init_s);
  one_thread: the sequential run with a --jobs 2 worker's settings (one torch thread, stages
              not pipelined), to show what 2 cores allow: two such workers side by side can at
              best double it, so ceiling_jobs2_vs_sequential = 2 x fps_one_thread /
              fps_sequential bounds ratio_jobs2_vs_sequential on this machine (it is low where
              torch's threads already scale well inside one process). --no-one-thread skips it.

Throughput = frames processed / wall time of the run_fleet call (worker start and model loads
included). Reported: frames/s of each (median of the rounds), ratio_jobs2_vs_sequential (target
>= 1.7 on 2 cores), ratio_ray_vs_jobs2 (target >= 0.9), and the model loads of each mode (one
per worker, not per bag). Targets are measured, not asserted. Ray is optional: without it the
ray numbers are null.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_replay import WEIGHTS, write_input_bag  # noqa: E402
from common import machine, shared_dir  # noqa: E402

from lightglue_ros.camera import CameraModel  # noqa: E402
from lightglue_ros.image import read_image  # noqa: E402
from lightglue_ros.ros import fleet  # noqa: E402
from lightglue_ros.tracker import TrackerConfig  # noqa: E402

INFO_TOPIC = '/cam/camera_info'
TARGET_JOBS2 = 1.7  # --jobs 2 against one sequential process, on 2 cores
TARGET_RAY = 0.9  # Ray local against --jobs 2 (within 10 %)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch threads (None: as it is), then restore the count."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    parser.add_argument('--bags', type=int, default=8, help='bags in the fleet (default 8)')
    parser.add_argument('--frames', type=int, default=17, help='freiburg frames a bag (max 17)')
    parser.add_argument('--rounds', type=int, default=1, help='timed rounds (default 1)')
    parser.add_argument('--extractor', choices=sorted(WEIGHTS), default='aliked')
    parser.add_argument('--max-keypoints', type=int, default=512)
    parser.add_argument('--resize', type=int, default=480, help='0: native size')
    parser.add_argument('--plots', action='store_true', help="write each bag's plots too")
    parser.add_argument('--no-one-thread', action='store_true',
                        help='skip the one-thread run (and the ceiling it gives)')
    args = parser.parse_args(argv)

    shared = shared_dir()
    data = shared / 'data' / 'freiburg_sequence'
    weights = shared / 'weights'
    camera = CameraModel.from_yaml(data / 'camera_info.yaml')
    paths = sorted(data.glob('*.png'))[:args.frames]
    frames = [(int(round(float(p.stem) * 1e9)), read_image(p)) for p in paths]
    extractor_file, matcher_file = WEIGHTS[args.extractor]
    config = TrackerConfig(extractor=args.extractor,
                           extractor_weights=str(weights / extractor_file),
                           matcher_weights=str(weights / matcher_file),
                           max_keypoints=args.max_keypoints, resize=args.resize or None,
                           device='cpu')
    work = Path(tempfile.mkdtemp(prefix='bench_fleet_'))
    try:
        topic = ''
        for i in range(args.bags):
            topic = write_input_bag(work / 'bags' / f'bag{i:02d}', frames, camera,
                                    compressed=False)
        options = {'image_topic': topic, 'camera_info_topic': INFO_TOPIC,
                   'plots_dir': None if args.plots else False}
        try:
            import ray
        except ImportError:
            ray = None
        ray_init_s = None
        if ray is not None:
            start = time.perf_counter()
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            ray_init_s = round(time.perf_counter() - start, 2)
        modes: dict[str, dict] = {'sequential': {'workers': 1}, 'jobs2': {'workers': 2}}
        if ray is not None:
            modes['ray'] = {'workers': 2, 'ray_address': ''}
        if not args.no_one_thread:
            modes['one_thread'] = {'workers': 1}
        # What fleet_workers.Worker(threads=1) sets in a pool process, here in this one.
        one_thread_options = {**options, 'pipelined': False, 'threads_per_stage': 1}
        fps: dict[str, list[float]] = {name: [] for name in modes}
        loads: dict[str, int] = {}
        load_avg = [round(v, 2) for v in os.getloadavg()]
        for round_index in range(args.rounds):
            for name, kwargs in modes.items():
                root = work / f'out_{name}_{round_index}'
                jobs = fleet.discover_bags([work / 'bags'], root)
                start = time.perf_counter()
                one_thread = name == 'one_thread'
                with torch_threads(1 if one_thread else None):
                    summary = fleet.run_fleet(
                        jobs, root, config=config,
                        options=one_thread_options if one_thread else options,
                        progress=False, **kwargs)
                elapsed = time.perf_counter() - start
                assert summary.outcome == 'all', [b.reason for b in summary.bags]
                fps[name].append(summary.frames_processed / elapsed)
                loads[name] = summary.model_loads
                print(f'round {round_index + 1} {name}: {summary.frames_processed} frames in '
                      f'{elapsed:.1f} s = {fps[name][-1]:.2f} frames/s, {summary.model_loads} '
                      f'model loads, load average {os.getloadavg()[0]:.1f}', file=sys.stderr)
                shutil.rmtree(root)
        load_after = [round(v, 2) for v in os.getloadavg()]
        if ray is not None:
            ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    median = {name: round(statistics.median(values), 3) for name, values in fps.items()}
    report = {
        'machine': machine(), 'bags': args.bags, 'frames_per_bag': len(frames),
        'extractor': args.extractor, 'max_keypoints': args.max_keypoints,
        'resize': args.resize, 'plots': args.plots, 'rounds': args.rounds,
        'fps_sequential': median['sequential'], 'fps_jobs2': median['jobs2'],
        'fps_ray': median.get('ray'),
        'ratio_jobs2_vs_sequential': round(median['jobs2'] / median['sequential'], 3),
        'ratio_ray_vs_jobs2': (round(median['ray'] / median['jobs2'], 3)
                               if 'ray' in median else None),
        'fps_one_thread': median.get('one_thread'),
        'thread_scaling': (round(median['sequential'] / median['one_thread'], 3)
                           if 'one_thread' in median else None),
        'ceiling_jobs2_vs_sequential': (round(2 * median['one_thread'] / median['sequential'], 3)
                                        if 'one_thread' in median else None),
        'fps_rounds': {name: [round(v, 3) for v in values] for name, values in fps.items()},
        'model_loads': loads, 'ray_init_s': ray_init_s,
        'target_ratio_jobs2_vs_sequential': TARGET_JOBS2, 'target_ratio_ray_vs_jobs2': TARGET_RAY,
        'load_average_before': load_avg, 'load_average_after': load_after,
    }
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for key, value in report.items():
            print(f'{key}: {value}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

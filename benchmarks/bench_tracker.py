"""Keyframe tracker vs a naive pairwise pipeline on the freiburg sequence, same process.

    python benchmarks/bench_tracker.py [--json] [--threads 2] [--extractor aliked]

The tracker extracts each frame once and matches it against the cached keyframe. The naive
pipeline does what a plain pair matcher does per frame: extract the keyframe image and the
current image, match them, estimate the pose. Both see the same frames, keyframes and models;
the two are timed frame by frame in turns. Reports steady-state per-frame medians (the first
frame, which only extracts, is excluded), the ratio, and the pose estimation share.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, shared_dir  # noqa: E402

from lightglue_ros.camera import CameraModel  # noqa: E402
from lightglue_ros.geometry import estimate_relative_pose  # noqa: E402
from lightglue_ros.image import image_to_tensor, read_image  # noqa: E402
from lightglue_ros.defaults import DEFAULT_MAX_KEYPOINTS  # noqa: E402
from lightglue_ros.tracker import Tracker, TrackerConfig, build_models  # noqa: E402

EXTRACTOR_FILES = {'aliked': 'aliked-n16.pth', 'disk': 'disk-depth-save.pth'}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--json', action='store_true')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--extractor', default='aliked', choices=list(EXTRACTOR_FILES))
    parser.add_argument('--max-keypoints', type=int, default=DEFAULT_MAX_KEYPOINTS)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shared = shared_dir()
    folder = shared / 'data' / 'freiburg_sequence'
    frames = sorted(folder.glob('*.png'))
    camera = CameraModel.from_yaml(folder / 'camera_info.yaml')
    images = [read_image(p) for p in frames]
    stamps = [int(round(float(p.stem) * 1e9)) for p in frames]
    weights = shared / 'weights'
    config = TrackerConfig(extractor=args.extractor, device=args.device,
                           max_keypoints=args.max_keypoints,
                           extractor_weights=str(weights / EXTRACTOR_FILES[args.extractor]),
                           matcher_weights=str(weights / f'{args.extractor}_lightglue.pth'))
    models = build_models(config)
    extractor, matcher = models.extractor, models.matcher
    tracker = Tracker(config, extractor=extractor, matcher=matcher)

    def naive(keyframe_index: int, index: int) -> None:
        f0, f1 = (extractor.extract(image_to_tensor(images[i], device=args.device))
                  for i in (keyframe_index, index))
        m = matcher.match(f0, f1).matches.cpu().numpy()
        estimate_relative_pose(f0.keypoints.cpu().numpy()[m[:, 0]],
                               f1.keypoints.cpu().numpy()[m[:, 1]], camera, camera,
                               method=config.pose_method)

    tracker_ms, naive_ms, pose_ms, extract_ms, match_ms = [], [], [], [], []
    for i, (image, stamp) in enumerate(zip(images, stamps)):
        start = time.perf_counter()
        result = tracker.process(image, stamp, camera)
        elapsed = (time.perf_counter() - start) * 1e3
        if i == 0:
            continue
        tracker_ms.append(elapsed)
        pose_ms.append(result.timings.pose_ms)
        extract_ms.append(result.timings.extract_ms)
        match_ms.append(result.timings.match_ms)
        start = time.perf_counter()
        naive(result.keyframe_index, i)
        naive_ms.append((time.perf_counter() - start) * 1e3)

    med = statistics.median
    record = {
        'machine': machine(), 'extractor': args.extractor, 'max_keypoints': args.max_keypoints,
        'frames': len(tracker_ms), 'tracker_ms': med(tracker_ms), 'naive_ms': med(naive_ms),
        'ratio': med(tracker_ms) / med(naive_ms), 'extract_ms': med(extract_ms),
        'match_ms': med(match_ms), 'pose_ms': med(pose_ms),
        'pose_share': med(pose_ms) / med(tracker_ms),
        'mean_tracker_ms': statistics.fmean(tracker_ms),
        'mean_naive_ms': statistics.fmean(naive_ms)}
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(f"Tracker vs naive pairwise pipeline, {record['machine']}, {args.extractor} "
              f"{args.max_keypoints} keypoints, {record['frames']} frames (median per frame)")
        print_table(['tracker ms', 'naive ms', 'ratio', 'extract ms', 'match ms', 'pose ms',
                     'pose share'],
                    [[f"{record['tracker_ms']:.1f}", f"{record['naive_ms']:.1f}",
                      f"{record['ratio']:.2f}x", f"{record['extract_ms']:.1f}",
                      f"{record['match_ms']:.1f}", f"{record['pose_ms']:.1f}",
                      f"{100 * record['pose_share']:.1f}%"]])
    return 0


if __name__ == '__main__':
    sys.exit(main())

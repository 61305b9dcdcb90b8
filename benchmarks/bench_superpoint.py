"""Time our SuperPoint against transformers' SuperPointForKeypointDetection on one CPU image.

Both models get the same random weights (He-normal, seeded) and the same 640x480 gray frame
of the freiburg sequence; calls alternate (ours, theirs, ours, ...) after a warm-up so that
load from other processes hits both alike. Prints the median wall-clock milliseconds of each, their
ratio and whether the two keypoint sets are identical. On a shared machine also look at the
minimum and at the process CPU time (all threads), which other processes disturb less.

    python benchmarks/bench_superpoint.py --threads 2 --repeats 15 [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightglue_ros.defaults import DEFAULT_MAX_KEYPOINTS  # noqa: E402
from lightglue_ros.models.superpoint import SuperPoint  # noqa: E402

IMAGE = 'data/freiburg_sequence/1341847980.722988.png'


def random_hf_model(max_keypoints: int, threshold: float, nms_radius: int,
                    seed: int = 0) -> torch.nn.Module:
    """transformers' SuperPoint with seeded He-normal weights (a peaked, realistic heatmap)."""
    from transformers import SuperPointConfig, SuperPointForKeypointDetection

    # border_removal_distance=0: transformers checks the bottom/right borders against 8x the
    # heatmap size, so it never removes keypoints there; with 0 both sides agree exactly.
    config = SuperPointConfig(keypoint_threshold=threshold, max_keypoints=max_keypoints,
                              nms_radius=nms_radius, border_removal_distance=0)
    torch.manual_seed(seed)
    model = SuperPointForKeypointDetection(config).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity='relu')
            torch.nn.init.normal_(module.bias, std=0.1)
    return model


def sorted_yx(keypoints: torch.Tensor) -> torch.Tensor:
    """[N x 2] (x, y) -> the same points sorted by (y, x)."""
    order = torch.argsort(keypoints[:, 1] * 1e5 + keypoints[:, 0])
    return keypoints[order]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    parser.add_argument('--repeats', type=int, default=10, help='timed calls per model')
    parser.add_argument('--warmup', type=int, default=2, help='untimed calls per model')
    parser.add_argument('--max-keypoints', type=int, default=DEFAULT_MAX_KEYPOINTS)
    parser.add_argument('--shared-dir', type=Path, help='folder holding data/', default=Path(
        os.environ.get('LIGHTGLUE_ROS_SHARED') or ROOT.parent / 'shared'))
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    path = args.shared_dir / IMAGE
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        parser.error(f'cannot read {path}')
    image = torch.from_numpy(gray).float().div(255)[None]  # [1 x 480 x 640]
    threshold, nms_radius = 0.0005, 4
    theirs = random_hf_model(args.max_keypoints, threshold, nms_radius)
    ours = SuperPoint(max_keypoints=args.max_keypoints, detection_threshold=threshold,
                      nms_radius=nms_radius, remove_borders=0)
    ours.load_weights(theirs.state_dict())

    def run_ours() -> torch.Tensor:
        return ours.extract(image).keypoints

    def run_theirs() -> torch.Tensor:
        with torch.inference_mode():
            out = theirs(image[None])
        n = int(out.mask[0].sum())
        return (out.keypoints[0, :n] * torch.tensor([gray.shape[1], gray.shape[0]])).round()

    for _ in range(args.warmup):
        run_ours()
        run_theirs()
    wall: dict[str, list[float]] = {'ours': [], 'transformers': []}
    cpu: dict[str, list[float]] = {'ours': [], 'transformers': []}
    for _ in range(args.repeats):
        for name, fn in (('ours', run_ours), ('transformers', run_theirs)):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append((time.perf_counter() - start) * 1e3)
            cpu[name].append((time.process_time() - start_cpu) * 1e3)
    kp_ours, kp_theirs = sorted_yx(run_ours()), sorted_yx(run_theirs())
    result = {
        'image': str(path), 'size': [gray.shape[1], gray.shape[0]], 'threads': args.threads,
        'repeats': args.repeats, 'max_keypoints': args.max_keypoints,
        'keypoints': [len(kp_ours), len(kp_theirs)],
        'keypoints_identical': bool(torch.equal(kp_ours, kp_theirs)),
    }
    for name in ('ours', 'transformers'):
        result[f'{name}_ms'] = statistics.median(wall[name])
        result[f'{name}_min_ms'] = min(wall[name])
        result[f'{name}_cpu_ms'] = statistics.median(cpu[name])
    for stat in ('', 'min_', 'cpu_'):
        result[f'{stat}ratio'] = result[f'ours_{stat}ms'] / result[f'transformers_{stat}ms']
    if args.json:
        print(json.dumps(result))
    else:
        print(f'{args.threads} threads, {args.repeats} repeats; '
              '            median ms     min ms   CPU ms (median)')
        for name, n in (('ours', len(kp_ours)), ('transformers', len(kp_theirs))):
            print(f'{name:12s} ({n} keypoints) {result[f"{name}_ms"]:10.1f} '
                  f'{result[f"{name}_min_ms"]:10.1f} {result[f"{name}_cpu_ms"]:10.1f}')
        print(f'ratio ours/transformers  {result["ratio"]:10.3f} {result["min_ratio"]:10.3f} '
              f'{result["cpu_ratio"]:10.3f}')
        print(f'keypoints identical: {result["keypoints_identical"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Our LightGlue vs kornia's and transformers' on the same real pair and weights, interleaved.

    python benchmarks/bench_matcher.py [--json] [--threads 2] [--device cpu|cuda]
                                       [--precision fp32|fp16] [--sizes 512 1024 2048]

Prints, for each keypoint count and mode (adaptive = early exit + pruning, full = 9 layers),
the median time of each implementation, our ratio to transformers' (the fastest peer) and
whether our matches are identical to each peer's.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, machine, print_table, shared_dir  # noqa: E402

from lightglue_ros.image import image_to_tensor, read_image  # noqa: E402
from lightglue_ros.models import interop  # noqa: E402
from lightglue_ros.models.extractors import build_extractor  # noqa: E402
from lightglue_ros.models.lightglue import LightGlue  # noqa: E402

MODES = {'adaptive': {'depth_confidence': 0.95, 'width_confidence': 0.99},
         'full': {'depth_confidence': -1.0, 'width_confidence': -1.0}}
EXTRACTOR_FILES = {'aliked': 'aliked-n16.pth', 'disk': 'disk-depth-save.pth'}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--sizes', type=int, nargs='+', default=[512, 1024, 2048])
    parser.add_argument('--modes', nargs='+', default=list(MODES), choices=list(MODES))
    parser.add_argument('--extractor', default='aliked', choices=list(EXTRACTOR_FILES))
    parser.add_argument('--frames', type=int, nargs=2, default=[0, 4],
                        help='indices of the freiburg frames to match')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--precision', default='fp32', choices=['fp32', 'fp16', 'bf16'])
    parser.add_argument('--peers', nargs='+', default=['transformers', 'kornia'],
                        choices=['transformers', 'kornia'])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shared = shared_dir()
    weights = shared / 'weights'
    frames = sorted((shared / 'data' / 'freiburg_sequence').glob('*.png'))
    images = [image_to_tensor(read_image(frames[i]), device=device) for i in args.frames]
    matcher_weights = weights / f'{args.extractor}_lightglue.pth'
    autocast_dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(args.precision)

    def peer_call(fn):
        if autocast_dtype is None or device.type != 'cuda':
            return fn
        return lambda: _autocast(fn, autocast_dtype)

    rows, records = [], []
    for size in args.sizes:
        extractor = build_extractor(args.extractor,
                                    weights=weights / EXTRACTOR_FILES[args.extractor],
                                    max_keypoints=size, device=device)
        f0, f1 = (extractor.extract(image) for image in images)
        for mode in args.modes:
            ours = LightGlue(args.extractor, weights=matcher_weights, precision=args.precision,
                             **MODES[mode]).to(device)
            candidates = {'ours': lambda: ours.match(f0, f1)}
            reference = ours.match(f0, f1)
            identical = {}
            if 'transformers' in args.peers:
                hf = interop.build_transformers_lightglue(
                    ours.conf['input_dim'], ours.state_dict(), **MODES[mode]).to(device)
                candidates['transformers'] = peer_call(
                    lambda: interop.transformers_match(hf, f0, f1))
                identical['transformers'] = torch.equal(
                    candidates['transformers']()[0].cpu(), reference.matches.cpu())
            if 'kornia' in args.peers:
                kornia = interop.build_kornia_lightglue(args.extractor, matcher_weights,
                                                        **MODES[mode]).to(device)
                candidates['kornia'] = peer_call(lambda: interop.kornia_match(kornia, f0, f1))
                identical['kornia'] = torch.equal(candidates['kornia']()[0].cpu(),
                                                  reference.matches.cpu())
            medians = interleaved(candidates, repeats=args.repeats, device=device)
            record = {'keypoints': [len(f0), len(f1)], 'mode': mode, 'ms': medians,
                      'matches': len(reference), 'stop_layer': reference.stop_layer,
                      'identical': identical}
            for peer in identical:
                record[f'ratio_vs_{peer}'] = medians['ours'] / medians[peer]
            records.append(record)
            rows.append([size, mode, f"{medians['ours']:.1f}"]
                        + [f'{medians[p]:.1f}' for p in identical]
                        + [f"{record[f'ratio_vs_{p}']:.2f}x" for p in identical]
                        + [' '.join(f'{p}={identical[p]}' for p in identical),
                           len(reference), reference.stop_layer])
    info = {'machine': machine(), 'device': str(device), 'precision': args.precision,
            'extractor': args.extractor, 'frames': args.frames, 'repeats': args.repeats}
    if args.json:
        print(json.dumps({**info, 'results': records}, indent=2))
    else:
        print(f"LightGlue matching, {info['machine']}, device {device}, {args.precision}, "
              f'{args.extractor} features, freiburg frames {args.frames}, median of '
              f'{args.repeats}')
        peers = [p for p in args.peers]
        print_table(['kpts', 'mode', 'ours ms'] + [f'{p} ms' for p in peers]
                    + [f'ours/{p}' for p in peers] + ['identical matches', 'matches', 'layers'],
                    rows)
    return 0


def _autocast(fn, dtype):
    with torch.autocast('cuda', dtype=dtype):
        return fn()


if __name__ == '__main__':
    sys.exit(main())

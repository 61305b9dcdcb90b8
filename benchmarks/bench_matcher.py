"""Our LightGlue vs kornia's and transformers' on the same real pair and weights, interleaved.

    python benchmarks/bench_matcher.py [--json] [--threads 2] [--device cpu|cuda]
                                       [--precision fp32|fp16] [--sizes 512 1024 2048]

Prints, for each keypoint count and mode (adaptive = early exit + pruning, full = 9 layers),
the median time of each implementation, our ratio to transformers' (the fastest peer) and
whether our matches are identical to each peer's.

--floor also times, for full depth, only the kernels an exact pass cannot avoid at those shapes:
the fused-attention calls and the GEMMs of our fused weights, with nothing in between. Every
implementation compared here runs the same attention kernel, so this bounds how far below the
peers' time an eager implementation can go on this machine.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, machine, print_table, shared_dir  # noqa: E402

from devtools import reference_models  # noqa: E402
from lightglue_ros.image import image_to_tensor, read_image  # noqa: E402
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
    parser.add_argument('--floor', action='store_true',
                        help='also time the unavoidable attention + GEMM kernels (full depth)')
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

    rows, records, floor_rows = [], [], []
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
                hf = reference_models.build_transformers_lightglue(
                    ours.conf['input_dim'], ours.state_dict(), **MODES[mode]).to(device)
                candidates['transformers'] = peer_call(
                    lambda: reference_models.transformers_match(hf, f0, f1))
                identical['transformers'] = torch.equal(
                    candidates['transformers']()[0].cpu(), reference.matches.cpu())
            if 'kornia' in args.peers:
                # kornia turns an outer autocast off inside its forward unless mp=True.
                kornia = reference_models.build_kornia_lightglue(
                    args.extractor, matcher_weights, mp=args.precision != 'fp32',
                    **MODES[mode]).to(device)
                candidates['kornia'] = peer_call(
                    lambda: reference_models.kornia_match(kornia, f0, f1))
                identical['kornia'] = torch.equal(candidates['kornia']()[0].cpu(),
                                                  reference.matches.cpu())
            if args.floor and mode == 'full':
                candidates['floor'] = kernel_floor(ours.conf, len(f0), len(f1), device)
            medians = interleaved(candidates, repeats=args.repeats, device=device)
            record = {'keypoints': [len(f0), len(f1)], 'mode': mode, 'ms': medians,
                      'matches': len(reference), 'stop_layer': reference.stop_layer,
                      'identical': identical}
            for peer in identical:
                record[f'ratio_vs_{peer}'] = medians['ours'] / medians[peer]
            if 'floor' in medians:
                floor_rows.append([size, f"{medians['ours']:.1f}", f"{medians['floor']:.1f}"]
                                  + [f"{medians['floor'] / medians[p]:.2f}x" for p in identical])
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
        if floor_rows:
            print('\nKernel floor at full depth (attention + GEMM kernels only)')
            print_table(['kpts', 'ours ms', 'floor ms'] + [f'floor/{p}' for p in peers],
                        floor_rows)
    return 0


def kernel_floor(conf: dict, m: int, n: int, device: torch.device) -> Callable[[], None]:
    """The kernels of one exact full-depth pass with our fused weights, nothing else.

    Per layer and point: self-attention in-projection C -> 5C (q, k, v and the FFN's x half),
    message C -> 2C, FFN out 2C -> C; cross-attention C -> 4C, 2C, C (17 C^2 multiply-adds);
    four fused-attention calls (self and cross for each image).
    """
    c, heads, layers = conf['descriptor_dim'], conf['num_heads'], conf['n_layers']
    tokens, hidden = (torch.randn(m + n, k, device=device) for k in (c, 2 * c))
    gemms = [(tokens, torch.randn(c, k * c, device=device)) for k in (5, 2, 4, 2)]
    gemms += [(hidden, torch.randn(2 * c, c, device=device))] * 2
    q0, q1 = (torch.randn(1, heads, k, c // heads, device=device) for k in (m, n))

    def run() -> None:
        for _ in range(layers):
            for a, b in gemms:
                a @ b
            for q, kv in ((q0, q0), (q1, q1), (q0, q1), (q1, q0)):
                F.scaled_dot_product_attention(q, kv, kv)

    return run


def _autocast(fn, dtype):
    with torch.autocast('cuda', dtype=dtype):
        return fn()


if __name__ == '__main__':
    sys.exit(main())

"""torch.compile of the static path (setting ``torch_compile``): compile time from an empty
cache and again from the cache in a fresh process, and the per-call time compiled vs eager.

Each run is a new Python process (``--child``) that compiles ALIKED's fixed-count extraction
(640x480 freiburg frame, --keypoints) and the static ALIKED-LightGlue (prepare + match) into
one cache folder: the first run finds it empty (cold), the second finds the first's code
(warm). The warm run then times eager and compiled calls in turns, on the same inputs.

    python benchmarks/bench_compile.py [--device cpu|cuda] [--keypoints 1024] [--threads 2]
        [--repeats 5] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))


def child(args: argparse.Namespace) -> dict:
    import torch
    from common import interleaved, machine, shared_dir
    from torch._dynamo.utils import counters

    from lightglue_ros.cuda_graphs import GraphedExtractor, GraphedMatcher
    from lightglue_ros.image import image_to_tensor, read_image
    from lightglue_ros.models.extractors import build_extractor
    from lightglue_ros.models.lightglue import LightGlue

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shared = shared_dir()
    frames = sorted((shared / 'data' / 'freiburg_sequence').glob('*.png'))[:2]
    images = [image_to_tensor(read_image(p), device=device) for p in frames]
    weights = shared / 'weights'
    extractor = build_extractor('aliked', weights=weights / 'aliked-n16.pth',
                                max_keypoints=args.keypoints, device=device)
    matcher = LightGlue('aliked', weights=weights / 'aliked_lightglue.pth').to(device).eval()
    # cuda_graphs off in both: the compiled code itself, without a CUDA graph around it.
    runners = {'eager': (GraphedExtractor(extractor), GraphedMatcher(matcher, args.keypoints)),
               'compiled': (GraphedExtractor(extractor, compile=True),
                            GraphedMatcher(matcher, args.keypoints, compile=True))}
    for fixed, runner in runners.values():
        fixed.graphs.fallback_reason = runner.graphs.fallback_reason = 'timing without graphs'
    fixed, runner = runners['compiled']
    features = [fixed.extract_fixed(i) for i in images]
    prepared = [runner.prepare_fixed(f) for f in features]
    runner.match_static(*prepared)
    out = {'machine': machine(), 'device': str(device), 'keypoints': args.keypoints,
           'cache_dir': os.environ.get('TORCHINDUCTOR_CACHE_DIR'),
           'compile_s': {k: round(v, 2) for k, v in {**fixed.compile_seconds(),
                                                      **runner.compile_seconds()}.items()},
           'fx_graph_cache_hit': counters['inductor']['fxgraph_cache_hit'],
           'fx_graph_cache_miss': counters['inductor']['fxgraph_cache_miss'],
           'fallback': runner._match_net.fallback_reason or fixed._extract.fallback_reason}
    out['compile_total_s'] = round(sum(out['compile_s'].values()), 2)
    if args.time:
        calls = {}
        for name, (fixed, runner) in runners.items():
            kf = runner.prepare_fixed(fixed.extract_fixed(images[0]))
            calls[f'{name}_extract_ms'] = lambda f=fixed: f.extract_fixed(images[1])
            calls[f'{name}_match_ms'] = (lambda r=runner, k=kf, p=prepared[1]:
                                         r.match_static(k, p))
        medians = interleaved(calls, repeats=args.repeats, device=device)
        out['per_call_ms'] = {k: round(v, 1) for k, v in medians.items()}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--keypoints', type=int, default=1024)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--time', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    runs = {}
    with tempfile.TemporaryDirectory(prefix='lightglue_ros_compile_') as cache:
        env = {**os.environ, 'TORCHINDUCTOR_CACHE_DIR': cache}
        for run in ('cold', 'warm'):
            command = [sys.executable, __file__, '--child', '--device', args.device,
                       '--keypoints', str(args.keypoints), '--threads', str(args.threads),
                       '--repeats', str(args.repeats)] + (['--time'] if run == 'warm' else [])
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if done.returncode:
                sys.stderr.write(done.stderr[-3000:])
                return done.returncode
            runs[run] = json.loads(done.stdout.strip().splitlines()[-1])
    if args.json:
        print(json.dumps(runs, indent=1))
        return 0
    print(runs['cold']['machine'])
    for run, result in runs.items():
        print(f"{run}: compile {result['compile_total_s']} s {result['compile_s']} "
              f"(FX graph cache: {result['fx_graph_cache_hit']} hits, "
              f"{result['fx_graph_cache_miss']} misses)")
    print('per call (median ms):', runs['warm']['per_call_ms'])
    return 0


if __name__ == '__main__':
    sys.exit(main())

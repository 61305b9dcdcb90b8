"""Compare the relative-pose estimators on real ALIKED + LightGlue matches (ScanNet, Freiburg).

Usage:
    python benchmarks/bench_pose.py [--json] [--runs 10] [--shared-dir ../shared]
                                    [--cache-dir /tmp/lightglue_ros_bench_pose]

(a) The 15 ScanNet pairs of <shared>/data/scannet_pairs, resized to 640x480 with K scaled:
    AUC of max(rotation error, translation direction error) at 5/10/20 deg, averaged over
    --runs shuffles of the correspondences (RANSAC depends on the order), and the median time
    of one estimate. (b) The 16 consecutive pairs of <shared>/data/freiburg_sequence, which
    have no ground truth: inliers, time, failures, and two rotation checks: repeatability
    over the shuffles and agreement with the mean of the three methods. (c) Synthetic scenes
    with exact ground truth (as tests/test_geometry.py), the time on 500 random matches (the
    worst case: RANSAC runs to max_iterations), and a sweep of the translation error against
    the measured parallax that sets min_parallax_deg.

Matches come from kornia's ALIKED (aliked-n16, 1024 keypoints, top-k) and kornia's LightGlue
on the real weights in <shared>/weights; they are computed once and cached in --cache-dir
(.npz files), so later runs only time the estimators. Nothing is copied into the project.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name  # noqa: E402

from lightglue_ros import geometry  # noqa: E402
from lightglue_ros.camera import CameraModel  # noqa: E402
from lightglue_ros.geometry import (estimate_relative_pose, pose_auc,  # noqa: E402
                                    pose_error_deg, rotation_angle_deg)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCANNET_SIZE = (640, 480)  # (width, height) the ScanNet images are resized to, as in SuperGlue
NUM_KEYPOINTS = 1024
# kornia's LightGlue looks for this file name in <TORCH_HOME>/hub/checkpoints
# (f'{weights}_{version}.pth' with dots replaced, see kornia/feature/lightglue.py).
KORNIA_LIGHTGLUE_FILE = 'aliked_lightglue_v0-1_arxiv-pth'
METHODS = ('opencv_ransac', 'opencv_magsac', 'poselib')


# ---------------------------------------------------------------- matching (cached)

class Matcher:
    """ALIKED + LightGlue from kornia on the shared weights, CPU, 2 threads."""

    def __init__(self, weights_dir: Path, torch_home: Path) -> None:
        import torch
        from kornia.feature import ALIKED, LightGlue

        torch.set_num_threads(2)
        ckpt_dir = torch_home / 'hub' / 'checkpoints'
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        link = ckpt_dir / KORNIA_LIGHTGLUE_FILE
        if not link.exists():
            link.symlink_to((weights_dir / 'aliked_lightglue.pth').resolve())
        os.environ['TORCH_HOME'] = str(torch_home)
        self.torch = torch
        self.extractor = ALIKED('aliked-n16', max_num_keypoints=NUM_KEYPOINTS,
                                detection_threshold=-1.0)
        state = torch.load(weights_dir / 'aliked-n16.pth', map_location='cpu', weights_only=True)
        # The checkpoint lacks only derived buffers (dkd.hw_grid); refuse anything else.
        incompatible = self.extractor.load_state_dict(state, strict=False)
        params = dict(self.extractor.named_parameters())
        if incompatible.unexpected_keys or any(k in params for k in incompatible.missing_keys):
            raise RuntimeError(f'aliked-n16.pth does not fit kornia ALIKED: {incompatible}')
        self.extractor.eval()
        self.matcher = LightGlue('aliked').eval()

    def features(self, image_bgr: np.ndarray) -> tuple:
        torch = self.torch
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        img = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
        with torch.inference_mode():
            f = self.extractor(img)[0]
        size = torch.tensor([[image_bgr.shape[1], image_bgr.shape[0]]], dtype=torch.float32)
        return f.keypoints[None], f.descriptors[None], size

    def match(self, image0: np.ndarray, image1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k0, d0, s0 = self.features(image0)
        k1, d1, s1 = self.features(image1)
        with self.torch.inference_mode():
            out = self.matcher({'image0': {'keypoints': k0, 'descriptors': d0, 'image_size': s0},
                                'image1': {'keypoints': k1, 'descriptors': d1, 'image_size': s1}})
        m = out['matches'][0].numpy()
        return k0[0].numpy()[m[:, 0]].astype(np.float64), k1[0].numpy()[m[:, 1]].astype(np.float64)


def cached_matches(cache: Path, key: str, matcher_factory, image0: np.ndarray,
                   image1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    path = cache / f'{key}.npz'
    if path.exists():
        data = np.load(path)
        return data['points0'], data['points1']
    p0, p1 = matcher_factory().match(image0, image1)
    np.savez(path, points0=p0, points1=p1)
    return p0, p1


# ---------------------------------------------------------------- data sets

def scannet_pairs(shared: Path) -> list[dict]:
    root = shared / 'data' / 'scannet_pairs'
    pairs = []
    for line in (root / 'pairs_with_gt.txt').read_text().splitlines():
        f = line.split()
        if len(f) < 38:
            continue
        K0 = np.array(f[4:13], float).reshape(3, 3)
        K1 = np.array(f[13:22], float).reshape(3, 3)
        T = np.array(f[22:38], float).reshape(4, 4)
        pairs.append({'name0': f[0], 'name1': f[1], 'K0': K0, 'K1': K1,
                      'R': T[:3, :3], 't': T[:3, 3], 'root': root})
    return pairs


def load_resized(path: Path, size: tuple[int, int]) -> tuple[np.ndarray, float, float]:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(path)
    h, w = image.shape[:2]
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return resized, size[0] / w, size[1] / h


# ---------------------------------------------------------------- evaluation

Variants = dict[str, tuple[str, dict, int]]  # name -> (method, options, PoseLib min iterations)


def timed(points0: np.ndarray, points1: np.ndarray, cam0: CameraModel, cam1: CameraModel,
          method: str, options: dict, times: list, cpu_times: list):
    """One estimate; appends its wall time (elapsed_ms) and process CPU time in ms. CPU time
    is reported too because other jobs may share the 2 cores: it varies less."""
    cpu = time.process_time()
    r = estimate_relative_pose(points0, points1, cam0, cam1, method=method, **options)
    cpu_times.append((time.process_time() - cpu) * 1e3)
    times.append(r.elapsed_ms)
    return r


def each_variant(variants: Variants):
    for name, (method, options, min_iter) in variants.items():
        geometry.POSELIB_MIN_ITERATIONS = min_iter
        yield name, method, options


def timing(times: list, cpu_times: list) -> dict:
    return {'median_ms': float(np.median(times)), 'median_cpu_ms': float(np.median(cpu_times))}


def run_scannet(shared: Path, cache: Path, matcher_factory, runs: int,
                variants: Variants) -> dict:
    data = []
    for p in scannet_pairs(shared):
        im0, sx0, sy0 = load_resized(p['root'] / p['name0'], SCANNET_SIZE)
        im1, sx1, sy1 = load_resized(p['root'] / p['name1'], SCANNET_SIZE)
        h0, w0 = round(SCANNET_SIZE[1] / sy0), round(SCANNET_SIZE[0] / sx0)
        h1, w1 = round(SCANNET_SIZE[1] / sy1), round(SCANNET_SIZE[0] / sx1)
        cam0 = CameraModel(w0, h0, p['K0']).scaled(sx0, sy0)
        cam1 = CameraModel(w1, h1, p['K1']).scaled(sx1, sy1)
        key = f"scannet_{Path(p['name0']).stem}_{Path(p['name1']).stem}"
        p0, p1 = cached_matches(cache, key, matcher_factory, im0, im1)
        data.append((p, cam0, cam1, p0, p1))
    results = {}
    for name, method, options in each_variant(variants):
        aucs, times, cpu_times, fails = [], [], [], 0
        per_pair: list[list[float]] = [[] for _ in data]
        for run in range(runs):
            rng = np.random.default_rng(run)
            per_run: list[float] = []
            for i, (p, cam0, cam1, p0, p1) in enumerate(data):
                perm = rng.permutation(len(p0))
                r = timed(p0[perm], p1[perm], cam0, cam1, method, options, times, cpu_times)
                if not r.success:
                    fails += 1
                    per_run.append(np.inf)
                else:
                    e_R, e_t = pose_error_deg(r.R_kf_to_cur, r.t_kf_to_cur, p['R'], p['t'])
                    per_run.append(max(e_R, e_t))
                per_pair[i].append(per_run[-1])
            aucs.append(pose_auc(per_run))
        a = np.mean(aucs, axis=0) * 100.0
        results[name] = {'auc5': a[0], 'auc10': a[1], 'auc20': a[2],
                         'auc_std': (np.std(aucs, axis=0) * 100.0).tolist(),
                         'failures': fails, 'estimates': len(times),
                         **timing(times, cpu_times),
                         'median_err_per_pair_deg': [float(np.median(e)) for e in per_pair]}
    results['_pairs'] = [Path(d[0]['name0']).stem[:12] for d in data]
    results['_matches_per_pair'] = [len(d[3]) for d in data]
    return results


def run_freiburg(shared: Path, cache: Path, matcher_factory, runs: int,
                 variants: Variants) -> dict:
    root = shared / 'data' / 'freiburg_sequence'
    cam = CameraModel.from_yaml(root / 'camera_info.yaml')
    frames = sorted(root.glob('*.png'))
    data = []
    for f0, f1 in zip(frames[:-1], frames[1:]):
        key = f'freiburg_{f0.stem}_{f1.stem}'
        p0, p1 = cached_matches(cache, key, matcher_factory, cv2.imread(str(f0)),
                                cv2.imread(str(f1)))
        data.append((p0, p1))
    rots: dict[str, list] = {name: [[] for _ in data] for name in variants}
    results = {}
    for name, method, options in each_variant(variants):
        times, cpu_times, inl, ratios, parallax, fails, rot_only = [], [], [], [], [], 0, 0
        for run in range(runs):
            rng = np.random.default_rng(run)
            for i, (p0, p1) in enumerate(data):
                perm = rng.permutation(len(p0))
                r = timed(p0[perm], p1[perm], cam, cam, method, options, times, cpu_times)
                if not r.success:
                    fails += 1
                    continue
                rot_only += r.rotation_only
                inl.append(r.num_inliers)
                ratios.append(r.inlier_ratio)
                parallax.append(r.median_parallax_deg)
                rots[name][i].append(r.R_kf_to_cur)
        results[name] = {'median_inliers': float(np.median(inl)),
                         'median_inlier_ratio': float(np.median(ratios)),
                         'failures': fails, 'rotation_only': rot_only,
                         'estimates': len(times),
                         'median_parallax_deg': float(np.median(parallax)),
                         **timing(times, cpu_times)}
    # No ground truth, so two rotation checks per pair: repeatability = angle from each
    # estimate to the mean of the same method over the shuffles; agreement = angle from each
    # estimate to the mean of the three base methods' means (one vote per method).
    def mean_rotation(Rs: list) -> np.ndarray:  # chordal L2 mean, projected onto SO(3)
        U, _, Vt = np.linalg.svd(np.mean(Rs, axis=0))
        return U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt

    for name in variants:
        repeat, agree = [], []
        for i in range(len(data)):
            base = [mean_rotation(rots[m][i]) for m in METHODS if rots[m][i]]
            if not rots[name][i] or not base:
                continue
            own, ref = mean_rotation(rots[name][i]), mean_rotation(base)
            repeat += [rotation_angle_deg(R @ own.T) for R in rots[name][i]]
            agree += [rotation_angle_deg(R @ ref.T) for R in rots[name][i]]
        results[name]['median_rot_repeat_deg'] = float(np.median(repeat))
        results[name]['p90_rot_repeat_deg'] = float(np.percentile(repeat, 90))
        results[name]['median_rot_agree_deg'] = float(np.median(agree))
        results[name]['p90_rot_agree_deg'] = float(np.percentile(agree, 90))
    results['_matches_per_pair'] = [len(d[0]) for d in data]
    return results


def synthetic_scene(rng: np.random.Generator, cam: CameraModel, n: int = 500,
                    noise_px: float = 0.5, outlier_ratio: float = 0.2,
                    translation: tuple[float, float] = (0.2, 0.6),
                    depth: tuple[float, float] = (2.0, 8.0)):
    """Points 2-8 m in front of the keyframe, random 2-10 deg rotation and 0.2-0.6 m
    translation, noise on both views, outliers replaced by random pixels (as the tests)."""
    axis = rng.normal(size=3)
    R = cv2.Rodrigues(axis / np.linalg.norm(axis) * np.radians(rng.uniform(2, 10)))[0]
    t = rng.normal(size=3)
    t *= rng.uniform(*translation) / np.linalg.norm(t)
    size = [cam.width - 1.0, cam.height - 1.0]
    p0, p1 = np.zeros((0, 2)), np.zeros((0, 2))
    while len(p0) < n:
        px = rng.uniform([0, 0], size, (n, 2))
        X = np.c_[cam.undistort_points(px), np.ones(n)] * rng.uniform(*depth, (n, 1))
        uv = cam.project(X @ R.T + t)
        ok = np.all(np.isfinite(uv), axis=1) & np.all((uv >= 0) & (uv <= size), axis=1)
        p0, p1 = np.r_[p0, px[ok]], np.r_[p1, uv[ok]]
    p0 = p0[:n] + rng.normal(0, noise_px, (n, 2))
    p1 = p1[:n] + rng.normal(0, noise_px, (n, 2))
    k = round(outlier_ratio * n)
    p1[:k] = rng.uniform([0, 0], size, (k, 2))
    return p0, p1, R, t


def run_synthetic(variants: Variants, scenes: int = 50) -> dict:
    cam = CameraModel.from_intrinsics(535.4, 539.2, 320.1, 247.6, 640, 480)
    data = [synthetic_scene(np.random.default_rng(seed), cam) for seed in range(scenes)]
    rng = np.random.default_rng(12345)
    random = [(rng.uniform([0, 0], [639, 479], (500, 2)), rng.uniform([0, 0], [639, 479],
                                                                      (500, 2)))
              for _ in range(5)]
    results = {}
    for name, method, options in each_variant(variants):
        errs, times, cpu_times = [], [], []
        for p0, p1, R, t in data:
            r = timed(p0, p1, cam, cam, method, options, times, cpu_times)
            errs.append(pose_error_deg(r.R_kf_to_cur, r.t_kf_to_cur, R, t) if r.success
                        else (np.inf, np.inf))
        errs = np.array(errs)
        r_times, r_cpu, r_success = [], [], 0
        for p0, p1 in random:
            r_success += timed(p0, p1, cam, cam, method, options, r_times, r_cpu).success
        results[name] = {'median_rot_err_deg': float(np.median(errs[:, 0])),
                         'max_rot_err_deg': float(np.max(errs[:, 0])),
                         'median_trans_err_deg': float(np.median(errs[:, 1])),
                         'max_trans_err_deg': float(np.max(errs[:, 1])),
                         **timing(times, cpu_times),
                         'random_median_ms': float(np.median(r_times)),
                         'random_median_cpu_ms': float(np.median(r_cpu)),
                         'random_accepted': r_success}
    return results


def run_parallax_sweep(scenes: int = 30) -> list[dict]:
    """Translation direction error of the default method against the measured parallax, for
    choosing min_parallax_deg: small translations in front of a 1-4 m scene."""
    cam = CameraModel.from_intrinsics(535.4, 539.2, 320.1, 247.6, 640, 480)
    rows = []
    for t_norm in (0.0, 0.005, 0.01, 0.02, 0.03, 0.04, 0.08):
        parallax, t_err = [], []
        for seed in range(scenes):
            p0, p1, R, t = synthetic_scene(np.random.default_rng(seed), cam,
                                           translation=(t_norm, t_norm), depth=(1.0, 4.0))
            r = estimate_relative_pose(p0, p1, cam, cam, min_parallax_deg=0.0)
            parallax.append(r.median_parallax_deg)
            if t_norm > 0 and r.success:
                t_err.append(pose_error_deg(r.R_kf_to_cur, r.t_kf_to_cur, R, t)[1])
        rows.append({'t_norm_m': t_norm, 'median_parallax_deg': float(np.median(parallax)),
                     'median_t_err_deg': float(np.median(t_err)) if t_err else None,
                     'p90_t_err_deg': float(np.percentile(t_err, 90)) if t_err else None})
    return rows


def machine() -> str:
    cpu = cpu_name()
    return f'{os.cpu_count()}-core {cpu}, {platform.system()}, OpenCV {cv2.__version__}'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    parser.add_argument('--runs', type=int, default=10, help='shuffles per pair (default 10)')
    parser.add_argument('--shared-dir', type=Path, default=Path(os.environ.get(
        'LIGHTGLUE_ROS_SHARED', PROJECT_ROOT.parent / 'shared')))
    parser.add_argument('--cache-dir', type=Path,
                        default=Path(tempfile.gettempdir()) / 'lightglue_ros_bench_pose')
    parser.add_argument('--threshold-px', type=float, default=1.0)
    parser.add_argument('--max-iterations', type=int, default=None,
                        help='RANSAC iteration cap (default: the library default)')
    parser.add_argument('--poselib-min-iterations', type=int, nargs='*', default=[],
                        help='extra PoseLib variants with these minimum RANSAC iterations')
    args = parser.parse_args(argv)
    shared = args.shared_dir.resolve()
    if not (shared / 'data').is_dir():
        print(f'shared data not found under {shared} (use --shared-dir)', file=sys.stderr)
        return 2
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    cv2.setNumThreads(2)

    matcher: list[Matcher] = []

    def matcher_factory() -> Matcher:
        if not matcher:
            matcher.append(Matcher(shared / 'weights', args.cache_dir / 'torch_home'))
        return matcher[0]

    common = {'threshold_px': args.threshold_px, 'confidence': 0.99999}
    if args.max_iterations is not None:
        common['max_iterations'] = args.max_iterations
    default_min_iter = geometry.POSELIB_MIN_ITERATIONS
    variants: Variants = {m: (m, common, default_min_iter) for m in METHODS}
    for n in args.poselib_min_iterations:
        if n != default_min_iter:
            variants[f'poselib_min{n}'] = ('poselib', common, n)
    start = time.perf_counter()
    report = {
        'command': ' '.join(['python', 'benchmarks/bench_pose.py',
                             *(sys.argv[1:] if argv is None else argv)]),
        'machine': machine(),
        'runs': args.runs,
        'threshold_px': args.threshold_px,
        'max_iterations': common.get('max_iterations', 'default'),
        'poselib_min_iterations': default_min_iter,
        'scannet': run_scannet(shared, args.cache_dir, matcher_factory, args.runs, variants),
        'freiburg': run_freiburg(shared, args.cache_dir, matcher_factory, args.runs, variants),
        'synthetic': run_synthetic(variants),
    }
    geometry.POSELIB_MIN_ITERATIONS = default_min_iter
    report['parallax_sweep'] = run_parallax_sweep()
    geometry.POSELIB_MIN_ITERATIONS = default_min_iter
    report['wall_s'] = time.perf_counter() - start
    if args.json:
        print(json.dumps(report, indent=1, default=float))
        return 0
    print(f"{report['command']}\n{report['machine']}, {args.runs} runs")
    print('ScanNet (15 pairs, 640x480): AUC@5/10/20 (%), median wall/CPU ms, failures')
    for m in variants:
        s = report['scannet'][m]
        print(f"  {m:18s} {s['auc5']:6.2f} {s['auc10']:6.2f} {s['auc20']:6.2f}  "
              f"{s['median_ms']:7.2f} {s['median_cpu_ms']:7.2f}  {s['failures']}/{s['estimates']}")
    print('ScanNet median error per pair (deg): ' + ' '.join(report['scannet']['_pairs']))
    for m in variants:
        print(f'  {m:18s} ' + ' '.join(f'{e:5.1f}' for e in
                                      report['scannet'][m]['median_err_per_pair_deg']))
    print('Freiburg (16 consecutive pairs): inliers, ratio, median wall/CPU ms, rotation '
          'repeatability and agreement median/p90 deg, failures, rotation_only')
    for m in variants:
        s = report['freiburg'][m]
        print(f"  {m:18s} {s['median_inliers']:5.0f} {s['median_inlier_ratio']:6.3f}  "
              f"{s['median_ms']:7.2f} {s['median_cpu_ms']:7.2f}  "
              f"{s['median_rot_repeat_deg']:.3f}/{s['p90_rot_repeat_deg']:.3f}  "
              f"{s['median_rot_agree_deg']:.3f}/{s['p90_rot_agree_deg']:.3f}  "
              f"{s['failures']}/{s['estimates']}  {s['rotation_only']}")
    print('Synthetic (50 scenes, 500 matches, 0.5 px, 20 % outliers): rot err median/max, '
          'trans err median/max (deg), median wall/CPU ms; 500 random matches: wall/CPU ms')
    for m in variants:
        s = report['synthetic'][m]
        print(f"  {m:18s} {s['median_rot_err_deg']:.3f}/{s['max_rot_err_deg']:.3f}  "
              f"{s['median_trans_err_deg']:.3f}/{s['max_trans_err_deg']:.3f}  "
              f"{s['median_ms']:7.2f} {s['median_cpu_ms']:7.2f}  "
              f"{s['random_median_ms']:7.1f} {s['random_median_cpu_ms']:7.1f}")
    print(f'Parallax sweep ({geometry.DEFAULT_METHOD}, 500 matches, 0.5 px, 20 % outliers, '
          'depth 1-4 m): |t| m, median parallax deg, translation error median/p90 deg')
    for row in report['parallax_sweep']:
        err = ('-' if row['median_t_err_deg'] is None else
               f"{row['median_t_err_deg']:.2f}/{row['p90_t_err_deg']:.2f}")
        print(f"  {row['t_norm_m']:.3f}  {row['median_parallax_deg']:.3f}  {err}")
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Compare the relative-pose estimators on real ALIKED + LightGlue matches (ScanNet, Freiburg).

One concept, over 500 lines: the relative-pose benchmark (its data sets, runs and report).

Usage:
    python benchmarks/bench_pose.py [--json] [--runs 10] [--shared-dir ../shared]
                                    [--cache-dir /tmp/lightglue_ros_bench_pose]
                                    [--methods poselib ...] [--before bfffafd]
                                    [--poselib-variants 20:1 ...]
                                    [--pose-timing [--profile]]

--before REF adds, for every method, the estimator as it was at git revision REF
(lightglue_ros/geometry.py of that commit, imported under another name in this process) and
runs it alternately with today's on the same shuffles, so load from other jobs hits both
alike; the report gives both side by side and their time ratio. For the one-core p50 run it
pinned: `OPENBLAS_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_pose.py ...` (the
report records the CPUs it was allowed to use and the thread variables).
--poselib-variants MIN:MULT adds PoseLib runs with other stopping settings (minimum RANSAC
iterations, multiplier of its stopping bound). --pose-timing only times the default
estimator on the freiburg pairs (``pose_ms_p50``, issue #19; bench_realtime.py runs it on one
pinned core); with --before, the revision's estimator alternately beside it, and with --profile
where the time of each goes.

(a) The 15 ScanNet pairs of <shared>/data/scannet_pairs, resized to 640x480 with K scaled:
    AUC of max(rotation error, translation direction error) at 5/10/20 deg, averaged over
    --runs shuffles of the correspondences (RANSAC depends on the order), and the median time
    of one estimate. (b) The 16 consecutive pairs of <shared>/data/freiburg_sequence, which
    have no ground truth: inliers, time, failures, and two rotation checks: repeatability
    over the shuffles and agreement with the mean of the three methods. (c) Synthetic scenes
    with exact ground truth (as tests/test_geometry.py), the time on 500 random matches (the
    worst case: RANSAC runs to max_iterations), and a sweep of the translation error against
    the measured parallax that sets min_parallax_deg. (d) Errors and time against the
    outlier ratio on synthetic scenes of 700 matches.

Matches come from kornia's ALIKED (aliked-n16, 1024 keypoints, top-k) and kornia's LightGlue
on the real weights in <shared>/weights; they are computed once and cached in --cache-dir
(.npz files), so later runs only time the estimators. Nothing is copied into the project.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name  # noqa: E402

from lightglue_ros import geometry  # noqa: E402
from lightglue_ros.camera import CameraModel  # noqa: E402
from lightglue_ros.defaults import DEFAULT_MAX_KEYPOINTS  # noqa: E402
from lightglue_ros.geometry import (pose_auc, pose_error_deg,  # noqa: E402
                                    rotation_angle_deg)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCANNET_SIZE = (640, 480)  # (width, height) the ScanNet images are resized to, as in SuperGlue
NUM_KEYPOINTS = DEFAULT_MAX_KEYPOINTS
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

@dataclass(frozen=True)
class Variant:
    """One estimator configuration: the geometry module that runs it (today's or a --before
    revision's), the method, extra options and PoseLib's minimum RANSAC iterations."""

    module: types.ModuleType
    method: str
    options: dict
    poselib_min_iterations: int
    poselib_trials_mult: float | None = None  # None: the module's own POSELIB_TRIALS_MULT

    def estimate(self, points0: np.ndarray, points1: np.ndarray, cam0: CameraModel,
                 cam1: CameraModel, times: list, cpu_times: list):
        """One estimate; appends its wall time (elapsed_ms) and process CPU time in ms. CPU
        time is reported too because other jobs may share the cores: it varies less."""
        self.module.POSELIB_MIN_ITERATIONS = self.poselib_min_iterations
        if self.poselib_trials_mult is not None:
            self.module.POSELIB_TRIALS_MULT = self.poselib_trials_mult
        cpu = time.process_time()
        r = self.module.estimate_relative_pose(points0, points1, cam0, cam1,
                                               method=self.method, **self.options)
        cpu_times.append((time.process_time() - cpu) * 1e3)
        times.append(r.elapsed_ms)
        return r


Variants = dict[str, Variant]


def geometry_at(revision: str) -> types.ModuleType:
    """lightglue_ros/geometry.py as it was at a git revision, as a module of its own
    (geometry_at_<revision>); it imports the rest of lightglue_ros from today's tree."""
    source = subprocess.run(['git', '-C', str(PROJECT_ROOT), 'show',
                             f'{revision}:lightglue_ros/geometry.py'],
                            capture_output=True, text=True, check=True).stdout
    name = f'geometry_at_{revision}'
    module = types.ModuleType(name)
    module.__file__ = f'{revision}:lightglue_ros/geometry.py'
    sys.modules[name] = module  # dataclasses look their module up while building classes
    exec(compile(source, module.__file__, 'exec'), module.__dict__)
    return module


def timing(times: list, cpu_times: list) -> dict:
    return {'median_ms': float(np.median(times)), 'median_cpu_ms': float(np.median(cpu_times)),
            'p90_ms': float(np.percentile(times, 90)),
            'p90_cpu_ms': float(np.percentile(cpu_times, 90))}


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
    aucs: dict[str, list] = {name: [] for name in variants}
    times: dict[str, list] = {name: [] for name in variants}
    cpu_times: dict[str, list] = {name: [] for name in variants}
    fails = dict.fromkeys(variants, 0)
    per_pair: dict[str, list[list[float]]] = {name: [[] for _ in data] for name in variants}
    for run in range(runs):
        rng = np.random.default_rng(run)
        per_run: dict[str, list[float]] = {name: [] for name in variants}
        for i, (p, cam0, cam1, p0, p1) in enumerate(data):
            perm = rng.permutation(len(p0))
            for name, variant in variants.items():  # alternately: load hits all alike
                r = variant.estimate(p0[perm], p1[perm], cam0, cam1, times[name],
                                     cpu_times[name])
                if not r.success:
                    fails[name] += 1
                    per_run[name].append(np.inf)
                else:
                    e_R, e_t = pose_error_deg(r.R_kf_to_cur, r.t_kf_to_cur, p['R'], p['t'])
                    per_run[name].append(max(e_R, e_t))
                per_pair[name][i].append(per_run[name][-1])
        for name in variants:
            aucs[name].append(pose_auc(per_run[name]))
    results = {}
    for name in variants:
        a = np.mean(aucs[name], axis=0) * 100.0
        results[name] = {'auc5': a[0], 'auc10': a[1], 'auc20': a[2],
                         'auc_std': (np.std(aucs[name], axis=0) * 100.0).tolist(),
                         'failures': fails[name], 'estimates': len(times[name]),
                         **timing(times[name], cpu_times[name]),
                         'median_err_per_pair_deg': [float(np.median(e))
                                                     for e in per_pair[name]]}
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
    stats = {name: {'times': [], 'cpu_times': [], 'inliers': [], 'ratios': [],
                    'parallax': [], 'failures': 0, 'rotation_only': 0} for name in variants}
    for run in range(runs):
        rng = np.random.default_rng(run)
        for i, (p0, p1) in enumerate(data):
            perm = rng.permutation(len(p0))
            for name, variant in variants.items():  # alternately: load hits all alike
                st = stats[name]
                r = variant.estimate(p0[perm], p1[perm], cam, cam, st['times'],
                                     st['cpu_times'])
                if not r.success:
                    st['failures'] += 1
                    continue
                st['rotation_only'] += r.rotation_only
                st['inliers'].append(r.num_inliers)
                st['ratios'].append(r.inlier_ratio)
                st['parallax'].append(r.median_parallax_deg)
                rots[name][i].append(r.R_kf_to_cur)
    results = {}
    for name, st in stats.items():
        results[name] = {'median_inliers': float(np.median(st['inliers'])),
                         'median_inlier_ratio': float(np.median(st['ratios'])),
                         'failures': st['failures'], 'rotation_only': st['rotation_only'],
                         'estimates': len(st['times']),
                         'median_parallax_deg': float(np.median(st['parallax'])),
                         **timing(st['times'], st['cpu_times'])}
    # No ground truth, so two rotation checks per pair: repeatability = angle from each
    # estimate to the mean of the same method over the shuffles; agreement = angle from each
    # estimate to the mean of the base methods' means (one vote per method; today's
    # estimators, so a --before variant is compared against the same reference).
    def mean_rotation(Rs: list) -> np.ndarray:  # chordal L2 mean, projected onto SO(3)
        U, _, Vt = np.linalg.svd(np.mean(Rs, axis=0))
        return U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt

    for name in variants:
        repeat, agree = [], []
        for i in range(len(data)):
            base = [mean_rotation(rots[m][i]) for m in METHODS
                    if m in rots and rots[m][i]]
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


def synthetic_errors(variants: Variants, data: list, cam: CameraModel
                     ) -> tuple[dict[str, list], dict[str, list], dict[str, list]]:
    """Per variant: (rotation, translation) errors in degrees (inf when it failed), wall
    and CPU ms of each synthetic scene of ``data``, the variants run alternately."""
    errs: dict[str, list] = {name: [] for name in variants}
    times: dict[str, list] = {name: [] for name in variants}
    cpu_times: dict[str, list] = {name: [] for name in variants}
    for p0, p1, R, t in data:
        for name, variant in variants.items():  # alternately: load hits all alike
            r = variant.estimate(p0, p1, cam, cam, times[name], cpu_times[name])
            errs[name].append(pose_error_deg(r.R_kf_to_cur, r.t_kf_to_cur, R, t)
                              if r.success else (np.inf, np.inf))
    return errs, times, cpu_times


def run_synthetic(variants: Variants, scenes: int = 50) -> dict:
    cam = CameraModel.from_intrinsics(535.4, 539.2, 320.1, 247.6, 640, 480)
    data = [synthetic_scene(np.random.default_rng(seed), cam) for seed in range(scenes)]
    rng = np.random.default_rng(12345)
    random = [(rng.uniform([0, 0], [639, 479], (500, 2)), rng.uniform([0, 0], [639, 479],
                                                                      (500, 2)))
              for _ in range(5)]
    errs, times, cpu_times = synthetic_errors(variants, data, cam)
    r_times: dict[str, list] = {name: [] for name in variants}
    r_cpu: dict[str, list] = {name: [] for name in variants}
    r_success = dict.fromkeys(variants, 0)
    for p0, p1 in random:
        for name, variant in variants.items():
            r_success[name] += variant.estimate(p0, p1, cam, cam, r_times[name],
                                                r_cpu[name]).success
    results = {}
    for name in variants:
        e = np.array(errs[name])
        results[name] = {'median_rot_err_deg': float(np.median(e[:, 0])),
                         'max_rot_err_deg': float(np.max(e[:, 0])),
                         'median_trans_err_deg': float(np.median(e[:, 1])),
                         'max_trans_err_deg': float(np.max(e[:, 1])),
                         **timing(times[name], cpu_times[name]),
                         'random_median_ms': float(np.median(r_times[name])),
                         'random_median_cpu_ms': float(np.median(r_cpu[name])),
                         'random_accepted': r_success[name]}
    return results


OUTLIER_RATIOS = (0.2, 0.4, 0.5, 0.6, 0.7)


def run_outlier_sweep(variants: Variants, scenes: int = 40, n: int = 700) -> dict:
    """Errors and CPU time against the outlier ratio, on synthetic scenes of ``n`` matches
    (as many as the freiburg pairs have): where PoseLib's first stage on a subset (#19) is
    used (most inliers) and where it is not."""
    cam = CameraModel.from_intrinsics(535.4, 539.2, 320.1, 247.6, 640, 480)
    results: dict[str, list] = {name: [] for name in variants}
    for ratio in OUTLIER_RATIOS:
        data = [synthetic_scene(np.random.default_rng(seed), cam, n=n, outlier_ratio=ratio)
                for seed in range(scenes)]
        errs, _, cpu_times = synthetic_errors(variants, data, cam)
        for name in variants:
            e = np.array(errs[name])
            results[name].append({
                'outlier_ratio': ratio, 'failures': int(np.sum(~np.isfinite(e[:, 0]))),
                'median_rot_err_deg': float(np.median(e[:, 0])),
                'p90_rot_err_deg': float(np.percentile(e[:, 0], 90)),
                'median_trans_err_deg': float(np.median(e[:, 1])),
                'p90_trans_err_deg': float(np.percentile(e[:, 1], 90)),
                'median_cpu_ms': float(np.median(cpu_times[name]))})
    return results


def run_parallax_sweep(scenes: int = 30, module: types.ModuleType = geometry) -> list[dict]:
    """Translation direction error of the default method against the measured parallax, for
    choosing min_parallax_deg: small translations in front of a 1-4 m scene. ``module``: the
    geometry that runs it (today's or a --before revision's)."""
    cam = CameraModel.from_intrinsics(535.4, 539.2, 320.1, 247.6, 640, 480)
    rows = []
    for t_norm in (0.0, 0.005, 0.01, 0.02, 0.03, 0.04, 0.08):
        parallax, t_err = [], []
        for seed in range(scenes):
            p0, p1, R, t = synthetic_scene(np.random.default_rng(seed), cam,
                                           translation=(t_norm, t_norm), depth=(1.0, 4.0))
            r = module.estimate_relative_pose(p0, p1, cam, cam, min_parallax_deg=0.0)
            parallax.append(r.median_parallax_deg)
            if t_norm > 0 and r.success:
                t_err.append(pose_error_deg(r.R_kf_to_cur, r.t_kf_to_cur, R, t)[1])
        rows.append({'t_norm_m': t_norm, 'median_parallax_deg': float(np.median(parallax)),
                     'median_t_err_deg': float(np.median(t_err)) if t_err else None,
                     'p90_t_err_deg': float(np.percentile(t_err, 90)) if t_err else None})
    return rows


def run_pose_timing(shared: Path, cache: Path, matcher_factory, repeats: int, *,
                    before: types.ModuleType | None = None, profile: bool = False) -> dict:
    """Time of the default estimate_relative_pose on the 16 consecutive freiburg pairs
    (ALIKED 1024 keypoints + LightGlue: 540-750 matches), `repeats` shuffles each: the
    ``pose_ms_p50`` that issue #19 targets (<= 1.5 ms on one core for ~700 matches). Run it
    pinned (bench_realtime.py does: one CPU, BLAS/OpenMP threads 1). ``before``: the
    geometry module of another revision, timed alternately on the same shuffles
    (``pose_before``). ``profile``: then the same estimates once more under cProfile, the
    functions that take time per estimate (``pose_profile``; the profiler adds ~10 %)."""
    root = shared / 'data' / 'freiburg_sequence'
    cam = CameraModel.from_yaml(root / 'camera_info.yaml')
    frames = sorted(root.glob('*.png'))
    pairs = [cached_matches(cache, f'freiburg_{f0.stem}_{f1.stem}', matcher_factory,
                            cv2.imread(str(f0)), cv2.imread(str(f1)))
             for f0, f1 in zip(frames[:-1], frames[1:])]
    modules = {'': geometry, **({} if before is None else {'before': before})}
    for module in modules.values():  # warm-up: imports, first-call costs
        module.estimate_relative_pose(*pairs[0], cam, cam)
    inputs = []
    for run in range(repeats):
        rng = np.random.default_rng(run)
        for p0, p1 in pairs:
            perm = rng.permutation(len(p0))
            inputs.append((p0[perm], p1[perm]))
    times: dict[str, list] = {key: [] for key in modules}
    cpu_times: dict[str, list] = {key: [] for key in modules}
    for p0, p1 in inputs:
        for key, module in modules.items():  # alternately: load hits all alike
            cpu = time.process_time()
            times[key].append(module.estimate_relative_pose(p0, p1, cam, cam).elapsed_ms)
            cpu_times[key].append((time.process_time() - cpu) * 1e3)

    def summary(key: str) -> dict:
        return {'pose_ms_p50': float(np.median(times[key])),
                'pose_ms_p90': float(np.percentile(times[key], 90)),
                'pose_cpu_ms_p50': float(np.median(cpu_times[key]))}

    matches = [len(p0) for p0, _ in pairs]
    report = {**summary(''), 'pose_estimates': len(inputs),
              'pose_matches_median': float(np.median(matches)),
              'pose_matches_range': [min(matches), max(matches)],
              'pose_cpus': sorted(os.sched_getaffinity(0)),
              'pose_threads_env': {k: os.environ.get(k) for k in ('OPENBLAS_NUM_THREADS',
                                                                  'OMP_NUM_THREADS')},
              'pose_load_average': list(os.getloadavg())}
    if before is not None:
        report['pose_before'] = summary('before')
    if profile:
        report['pose_profile'] = {key or 'after': profile_estimates(module, inputs, cam)
                                  for key, module in modules.items()}
    return report


def profile_estimates(module: types.ModuleType, inputs: list, cam: CameraModel,
                      min_ms: float = 0.02) -> list[dict]:
    """cProfile of module.estimate_relative_pose over ``inputs``: per function that takes at
    least ``min_ms`` per estimate, its calls, own time and time with callees per estimate."""
    profiler = cProfile.Profile()
    profiler.enable()
    for p0, p1 in inputs:
        module.estimate_relative_pose(p0, p1, cam, cam)
    profiler.disable()
    rows = []
    for (path, line, name), (_, calls, own, total, _) in pstats.Stats(profiler).stats.items():
        if total * 1e3 / len(inputs) >= min_ms and 'cProfile' not in name:
            rows.append({'function': f'{Path(path).name}:{line}({name})',
                         'calls': calls / len(inputs), 'own_ms': own * 1e3 / len(inputs),
                         'total_ms': total * 1e3 / len(inputs)})
    return sorted(rows, key=lambda row: -row['total_ms'])


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
    parser.add_argument('--poselib-variants', nargs='*', default=[], metavar='MIN:MULT',
                        help='extra PoseLib variants: minimum RANSAC iterations and the '
                             'multiplier of the iterations its stopping criterion asks for')
    parser.add_argument('--pose-timing', action='store_true',
                        help='only time the default estimator on the freiburg pairs '
                             '(pose_ms_p50; bench_realtime.py runs this pinned to one core)')
    parser.add_argument('--sweep-scenes', type=int, default=30,
                        help='synthetic scenes per translation of the parallax sweep')
    parser.add_argument('--profile', action='store_true',
                        help='with --pose-timing: also where the time goes (cProfile)')
    parser.add_argument('--methods', nargs='+', choices=METHODS, default=list(METHODS),
                        help='estimators to run (default: all three)')
    parser.add_argument('--before', metavar='REV', default=None,
                        help='also run each method as it was at this git revision, alternately '
                             "with today's, and report both side by side")
    args = parser.parse_args(argv)
    shared = args.shared_dir.resolve()
    if not (shared / 'data').is_dir():
        print(f'shared data not found under {shared} (use --shared-dir)', file=sys.stderr)
        return 2
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    cpus = sorted(os.sched_getaffinity(0))
    cv2.setNumThreads(min(2, len(cpus)))

    matcher: list[Matcher] = []

    def matcher_factory() -> Matcher:
        if not matcher:
            matcher.append(Matcher(shared / 'weights', args.cache_dir / 'torch_home'))
        return matcher[0]

    if args.pose_timing:
        timing_report = run_pose_timing(
            shared, args.cache_dir, matcher_factory, args.runs, profile=args.profile,
            before=None if args.before is None else geometry_at(args.before))
        if args.json:
            print(json.dumps(timing_report))
            return 0
        print(f"estimate_relative_pose on {timing_report['pose_estimates']} freiburg "
              f"estimates ({timing_report['pose_matches_median']:.0f} matches median), "
              f"CPUs {timing_report['pose_cpus']}, load {timing_report['pose_load_average']}")
        for label, row in (('today', timing_report),
                           (args.before, timing_report.get('pose_before'))):
            if row is not None:
                print(f"  {label:10s} p50 {row['pose_ms_p50']:.2f} ms, p90 "
                      f"{row['pose_ms_p90']:.2f} ms, CPU p50 {row['pose_cpu_ms_p50']:.2f} ms")
        for label, rows in timing_report.get('pose_profile', {}).items():
            print(f'cProfile ({label}), ms per estimate: with callees, own, calls')
            for row in rows:
                print(f"  {row['total_ms']:7.3f} {row['own_ms']:7.3f} {row['calls']:6.1f}  "
                      f"{row['function']}")
        return 0
    common = {'threshold_px': args.threshold_px, 'confidence': 0.99999}
    if args.max_iterations is not None:
        common['max_iterations'] = args.max_iterations
    default_min_iter = geometry.POSELIB_MIN_ITERATIONS
    default_mult = geometry.POSELIB_TRIALS_MULT
    variants: Variants = {}
    before = None if args.before is None else geometry_at(args.before)
    for m in args.methods:
        variants[m] = Variant(geometry, m, common, default_min_iter, default_mult)
        if before is not None:
            variants[f'{m}@{args.before}'] = Variant(before, m, common,
                                                     before.POSELIB_MIN_ITERATIONS)
    if 'poselib' in args.methods:
        for n in args.poselib_min_iterations:
            if n != default_min_iter:
                variants[f'poselib_min{n}'] = Variant(geometry, 'poselib', common, n,
                                                      default_mult)
        for spec in args.poselib_variants:
            n, mult = spec.split(':')
            variants[f'poselib_{n}:{mult}'] = Variant(geometry, 'poselib', common, int(n),
                                                      float(mult))
    start = time.perf_counter()
    report = {
        'command': ' '.join(['python', 'benchmarks/bench_pose.py',
                             *(sys.argv[1:] if argv is None else argv)]),
        'machine': machine(),
        'cpus': cpus,
        'threads_env': {k: os.environ.get(k) for k in ('OPENBLAS_NUM_THREADS',
                                                       'OMP_NUM_THREADS')},
        'runs': args.runs,
        'threshold_px': args.threshold_px,
        'max_iterations': common.get('max_iterations', 'default'),
        'poselib_min_iterations': default_min_iter,
        'scannet': run_scannet(shared, args.cache_dir, matcher_factory, args.runs, variants),
        'freiburg': run_freiburg(shared, args.cache_dir, matcher_factory, args.runs, variants),
        'synthetic': run_synthetic(variants),
        'outlier_sweep': run_outlier_sweep(variants),
    }
    geometry.POSELIB_MIN_ITERATIONS = default_min_iter
    geometry.POSELIB_TRIALS_MULT = default_mult
    report['parallax_sweep'] = run_parallax_sweep(args.sweep_scenes)
    if before is not None:
        report['parallax_sweep_before'] = run_parallax_sweep(args.sweep_scenes, before)
    if before is not None:
        report['before_after'] = before_after(report, args.methods, args.before)
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
    print('Outlier sweep (40 synthetic scenes of 700 matches per ratio, 0.5 px): outlier '
          'ratio, rot err median/p90, trans err median/p90 (deg), failures, median CPU ms')
    for m in variants:
        for row in report['outlier_sweep'][m]:
            print(f"  {m:18s} {row['outlier_ratio']:.1f}  {row['median_rot_err_deg']:.3f}/"
                  f"{row['p90_rot_err_deg']:.3f}  {row['median_trans_err_deg']:.3f}/"
                  f"{row['p90_trans_err_deg']:.3f}  {row['failures']}  "
                  f"{row['median_cpu_ms']:7.2f}")
    print(f'Parallax sweep ({geometry.DEFAULT_METHOD}, {args.sweep_scenes} scenes of 500 '
          'matches, 0.5 px, 20 % outliers, depth 1-4 m): |t| m, median parallax deg, '
          'translation error median/p90 deg')
    for key, label in (('parallax_sweep', ''), ('parallax_sweep_before', args.before)):
        for row in report.get(key, []):
            err = ('-' if row['median_t_err_deg'] is None else
                   f"{row['median_t_err_deg']:.2f}/{row['p90_t_err_deg']:.2f}")
            print(f"  {label or 'today':8s} {row['t_norm_m']:.3f}  "
                  f"{row['median_parallax_deg']:.3f}  {err}")
    if before is not None:
        print(f'Before ({args.before}) / after, run alternately: ScanNet AUC@5/10/20 (%), '
              'Freiburg and synthetic median CPU ms and rotation repeatability p90 (deg); '
              'ratio = before / after CPU time')
        for m, row in report['before_after'].items():
            for when in ('before', 'after'):
                r = row[when]
                print(f"  {m:14s} {when:6s} {r['scannet_auc'][0]:6.2f} {r['scannet_auc'][1]:6.2f} "
                      f"{r['scannet_auc'][2]:6.2f}  scannet {r['scannet_cpu_ms']:6.2f}  "
                      f"freiburg {r['freiburg_cpu_ms']:6.2f} (p90 {r['freiburg_p90_cpu_ms']:6.2f})"
                      f"  synthetic {r['synthetic_cpu_ms']:6.2f}  "
                      f"repeat p90 {r['freiburg_p90_rot_repeat_deg']:.3f}")
            print(f"  {m:14s} ratio  scannet {row['ratio']['scannet']:.2f}  freiburg "
                  f"{row['ratio']['freiburg']:.2f}  synthetic {row['ratio']['synthetic']:.2f}")
    return 0


def before_after(report: dict, methods: list[str], revision: str) -> dict:
    """Per method: today's and the --before revision's accuracy and CPU time, and the ratio
    of their median CPU times (> 1: today's is faster)."""
    rows = {}
    for m in methods:
        row = {}
        for when, name in (('before', f'{m}@{revision}'), ('after', m)):
            sc, fr, sy = (report[k][name] for k in ('scannet', 'freiburg', 'synthetic'))
            row[when] = {'scannet_auc': [sc['auc5'], sc['auc10'], sc['auc20']],
                         'scannet_auc_std': sc['auc_std'],
                         'scannet_cpu_ms': sc['median_cpu_ms'],
                         'freiburg_cpu_ms': fr['median_cpu_ms'],
                         'freiburg_p90_cpu_ms': fr['p90_cpu_ms'],
                         'freiburg_median_rot_agree_deg': fr['median_rot_agree_deg'],
                         'freiburg_p90_rot_repeat_deg': fr['p90_rot_repeat_deg'],
                         'freiburg_median_inliers': fr['median_inliers'],
                         'synthetic_cpu_ms': sy['median_cpu_ms'],
                         'synthetic_median_rot_err_deg': sy['median_rot_err_deg'],
                         'synthetic_median_trans_err_deg': sy['median_trans_err_deg']}
        row['ratio'] = {k: row['before'][f'{k}_cpu_ms'] / row['after'][f'{k}_cpu_ms']
                        for k in ('scannet', 'freiburg', 'synthetic')}
        rows[m] = row
    return rows


if __name__ == '__main__':
    sys.exit(main())

"""Tests of lightglue_ros.geometry on synthetic scenes with exact ground truth."""
from __future__ import annotations

import logging
import math
import sys

import numpy as np
import pytest

from lightglue_ros import geometry
from lightglue_ros.camera import CameraModel
from lightglue_ros.errors import ConfigError
from lightglue_ros.geometry import (angle_between_deg, compose, estimate_relative_pose, invert,
                                    pose_auc, pose_error_deg, rotation_angle_deg)

METHODS = ('poselib', 'opencv_ransac', 'opencv_magsac')
CAMERA = CameraModel.from_intrinsics(500.0, 500.0, 319.5, 239.5, 640, 480)
DISTORTED = {
    'plumb_bob': CameraModel.from_intrinsics(
        450.0, 452.0, 320.5, 239.5, 640, 480, distortion_model='plumb_bob',
        D=(-0.3, 0.1, 2e-4, -1e-4, -0.02)),
    'rational_polynomial': CameraModel.from_intrinsics(
        450.0, 452.0, 320.5, 239.5, 640, 480, distortion_model='rational_polynomial',
        D=(2.0, 0.5, 1e-4, -2e-4, 0.01, 2.3, 1.0, 0.1)),
    'equidistant': CameraModel.from_intrinsics(
        280.0, 281.0, 320.5, 239.5, 640, 480, distortion_model='equidistant',
        D=(-0.01, 0.05, -0.08, 0.04)),
}
SEEDS = range(10)

# Pose error bounds (rotation, translation direction) in degrees. Measured on these seeds
# (max over scenes, pinhole / distorted / two cameras): poselib 0.25 / 1.32, opencv_ransac
# 0.95 / 5.2, opencv_magsac 0.59 / 2.9; medians 0.06 / 0.54, 0.26 / 1.97, 0.17 / 1.51.
# OpenCV's RANSAC/MAGSAC return the best minimal-sample model without non-linear refinement,
# so single scenes are several times less accurate than PoseLib's.
MAX_ERR = {'poselib': (0.5, 2.0), 'opencv_ransac': (2.0, 10.0), 'opencv_magsac': (1.5, 6.0)}
MEDIAN_ERR = {'poselib': (0.15, 1.0), 'opencv_ransac': (0.6, 3.0), 'opencv_magsac': (0.4, 3.0)}
# Share of true inliers in inlier_mask. The pixel threshold becomes one normalised-plane
# threshold, exact at the image centre; at field angle theta the same pixel noise is 1/cos^2
# larger there, so a wide fisheye (65 deg at its edges) loses peripheral inliers.
MIN_RECALL = {'equidistant': 0.6}
MIN_RECALL_PINHOLE = 0.75


def _rotation(axis: np.ndarray, deg: float) -> np.ndarray:
    """Rodrigues' formula."""
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    a = math.radians(deg)
    return np.eye(3) + math.sin(a) * Kx + (1 - math.cos(a)) * Kx @ Kx


def _motion(rng: np.random.Generator, *, translation: bool = True
            ) -> tuple[np.ndarray, np.ndarray]:
    R = _rotation(rng.normal(size=3), rng.uniform(2.0, 10.0))
    t = rng.normal(size=3)
    t = t / np.linalg.norm(t) * rng.uniform(0.2, 0.6) if translation else np.zeros(3)
    return R, t


def _scene(rng: np.random.Generator, camera_kf: CameraModel, camera_cur: CameraModel,
           R: np.ndarray, t: np.ndarray, *, n: int = 300, noise_px: float = 0.5,
           outlier_ratio: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Matches of random 3D points 2-8 m in front of the keyframe that the current camera
    (x_cur = R x_kf + t) also sees; noise on both, outliers replaced by random pixels."""
    kf, cur = np.zeros((0, 2)), np.zeros((0, 2))
    size_kf = [camera_kf.width - 1.0, camera_kf.height - 1.0]
    size_cur = [camera_cur.width - 1.0, camera_cur.height - 1.0]
    while len(kf) < n:
        px = rng.uniform([0.0, 0.0], size_kf, (n, 2))
        X = np.c_[camera_kf.undistort_points(px), np.ones(n)] * rng.uniform(2.0, 8.0, (n, 1))
        uv = camera_cur.project(X @ R.T + t)
        seen = np.all(np.isfinite(uv), axis=1) & np.all((uv >= 0) & (uv <= size_cur), axis=1)
        kf, cur = np.r_[kf, px[seen]], np.r_[cur, uv[seen]]
    kf = kf[:n] + rng.normal(0.0, noise_px, (n, 2))
    cur = cur[:n] + rng.normal(0.0, noise_px, (n, 2))
    outlier = np.zeros(n, bool)
    outlier[:round(outlier_ratio * n)] = True
    cur[outlier] = rng.uniform([0.0, 0.0], size_cur, (int(outlier.sum()), 2))
    order = rng.permutation(n)
    return kf[order], cur[order], outlier[order]


def _check_masks(pose: geometry.RelativePose, outlier: np.ndarray, *, recall: float,
                 rejection: float) -> None:
    assert pose.inlier_mask.shape == outlier.shape and pose.inlier_mask.dtype == bool
    assert pose.num_inliers == pose.inlier_mask.sum()
    assert pose.inlier_mask[~outlier].mean() >= recall
    assert 1.0 - pose.inlier_mask[outlier].mean() >= rejection


# ---------------------------------------------------------------- accuracy

@pytest.mark.parametrize('method', METHODS)
def test_accuracy_with_noise_and_outliers(method):
    errors = []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        R, t = _motion(rng)
        kf, cur, outlier = _scene(rng, CAMERA, CAMERA, R, t)
        pose = estimate_relative_pose(kf, cur, CAMERA, CAMERA, method=method)
        assert pose.success and pose.reason == '' and not pose.rotation_only, pose
        assert pose.method == method and pose.num_matches == len(kf)
        assert np.linalg.norm(pose.t_kf_to_cur) == pytest.approx(1.0)
        assert pose.median_parallax_deg > 0.5 and pose.elapsed_ms > 0.0
        _check_masks(pose, outlier, recall=MIN_RECALL_PINHOLE, rejection=0.95)
        errors.append(pose_error_deg(pose.R_kf_to_cur, pose.t_kf_to_cur, R, t))
    errors = np.array(errors)
    max_rot, max_trans = MAX_ERR[method]
    med_rot, med_trans = MEDIAN_ERR[method]
    assert errors[:, 0].max() < max_rot and errors[:, 1].max() < max_trans, errors
    assert np.median(errors[:, 0]) < med_rot and np.median(errors[:, 1]) < med_trans, errors


def test_poselib_recovers_inliers_best():
    recalls = {m: [] for m in METHODS}
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        R, t = _motion(rng)
        kf, cur, outlier = _scene(rng, CAMERA, CAMERA, R, t)
        for m in METHODS:
            pose = estimate_relative_pose(kf, cur, CAMERA, CAMERA, method=m)
            recalls[m].append(pose.inlier_mask[~outlier].mean())
    assert np.mean(recalls['poselib']) > 0.93
    assert np.mean(recalls['poselib']) > max(np.mean(recalls['opencv_ransac']),
                                             np.mean(recalls['opencv_magsac']))


def test_poselib_stops_where_the_confidence_says(monkeypatch):
    """#19: PoseLib gets our confidence and iteration cap, no minimum of its own and no 3x
    multiplier of its stopping bound, so at 20 % outliers it runs about the textbook
    log(1 - 0.99999) / log(1 - 0.8^5) = 29 samples, not the 100 it used to (the former 100
    and 3 cost 1.8x the time on freiburg for the same accuracy: docs/pose_estimators.md).
    With 300 matches it samples only on POSELIB_SUBSET of them, without the final bundle;
    the second call on all matches starts from that pose and draws no samples."""
    poselib = pytest.importorskip('poselib')
    calls = []
    real = poselib.estimate_relative_pose

    def spy(x0, x1, camera0, camera1, ransac, bundle, initial=None):
        pose, info = real(x0, x1, camera0, camera1, ransac, bundle, initial)
        calls.append((len(x0), dict(ransac), info['iterations'], dict(bundle), initial))
        return pose, info

    monkeypatch.setattr(poselib, 'estimate_relative_pose', spy)
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        R, t = _motion(rng)
        kf, cur, _ = _scene(rng, CAMERA, CAMERA, R, t)
        pose = estimate_relative_pose(kf, cur, CAMERA, CAMERA, confidence=0.99999,
                                      max_iterations=500)
        assert pose.success
    assert len(calls) == 2 * len(SEEDS)  # the subset's pose held every time: no third call
    sampling, refining = calls[0::2], calls[1::2]
    # The subset's sampling stops where an inlier ratio of POSELIB_SUBSET_MIN_RATIO (0.5)
    # would: log(1 - 0.99999) / log(1 - 0.5^5) = 362.6, 363 samples (below, one stage on all).
    for n, ransac, iterations, bundle, initial in sampling:
        assert n == geometry.POSELIB_SUBSET and initial is None
        assert ransac['success_prob'] == 0.99999 and ransac['max_iterations'] == 363
        assert ransac['min_iterations'] == 0 and ransac['dyn_num_trials_mult'] == 1.0
        assert iterations < 100 and bundle == {'max_iterations': 0}
    for n, ransac, iterations, bundle, initial in refining:
        assert n == 300 and initial is not None
        assert ransac['max_iterations'] == 0 and iterations == 0
        assert bundle == {'step_tol': geometry.POSELIB_BUNDLE_STEP_TOL}


def test_poselib_final_refinement_tolerance_does_not_move_the_pose(monkeypatch):
    """#19: the final refinement stops at steps below POSELIB_BUNDLE_STEP_TOL (1e-5), not
    PoseLib's 1e-8: at most 0.0014 deg on freiburg; here within 0.005 deg of the converged
    answer, with the same inliers."""
    pytest.importorskip('poselib')
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        R, t = _motion(rng)
        kf, cur, _ = _scene(rng, CAMERA, CAMERA, R, t)
        fast = estimate_relative_pose(kf, cur, CAMERA, CAMERA)
        with monkeypatch.context() as m:
            m.setattr(geometry, 'POSELIB_BUNDLE_STEP_TOL', 1e-8)
            converged = estimate_relative_pose(kf, cur, CAMERA, CAMERA)
        np.testing.assert_array_equal(fast.inlier_mask, converged.inlier_mask)
        assert rotation_angle_deg(fast.R_kf_to_cur @ converged.R_kf_to_cur.T) < 0.005
        assert angle_between_deg(fast.t_kf_to_cur, converged.t_kf_to_cur) < 0.005


def test_poselib_two_stages_agree_with_one(monkeypatch):
    """#19: from 2 x POSELIB_SUBSET matches on, PoseLib samples on an evenly spaced subset
    and refines on all matches from that pose. Same accuracy as one stage on all matches:
    measured on these scenes, within 0.05 deg (rotation) and 0.4 deg (translation direction)
    of the one-stage answer, at most 7 of 600 inlier flags different."""
    pytest.importorskip('poselib')
    errors = {'two': [], 'one': []}
    for seed in range(10):
        rng = np.random.default_rng(1000 + seed)
        R, t = _motion(rng)
        kf, cur, outlier = _scene(rng, CAMERA, CAMERA, R, t, n=600)
        two = estimate_relative_pose(kf, cur, CAMERA, CAMERA)
        with monkeypatch.context() as m:
            m.setattr(geometry, 'POSELIB_SUBSET', 0)
            one = estimate_relative_pose(kf, cur, CAMERA, CAMERA)
        assert two.success and one.success
        assert rotation_angle_deg(two.R_kf_to_cur @ one.R_kf_to_cur.T) < 0.1
        assert angle_between_deg(two.t_kf_to_cur, one.t_kf_to_cur) < 0.6
        assert np.sum(two.inlier_mask != one.inlier_mask) <= 12
        _check_masks(two, outlier, recall=MIN_RECALL_PINHOLE, rejection=0.95)
        for key, pose in (('two', two), ('one', one)):
            errors[key].append(pose_error_deg(pose.R_kf_to_cur, pose.t_kf_to_cur, R, t))
    two, one = np.array(errors['two']), np.array(errors['one'])
    assert np.all(two.max(axis=0) < MAX_ERR['poselib']), two
    assert np.all(np.median(two, axis=0) < 1.2 * np.median(one, axis=0) + 0.01), (two, one)


def test_poselib_one_stage_below_half_inliers(monkeypatch):
    """#19: where fewer than POSELIB_SUBSET_MIN_RATIO of the subset are inliers, its pose is
    not used (on synthetic scenes with 60-70 % outliers it was up to 2x less accurate at
    the 90th percentile): the answer is the one-stage answer, bit for bit."""
    pytest.importorskip('poselib')
    for seed in range(3):
        rng = np.random.default_rng(1050 + seed)
        R, t = _motion(rng)
        kf, cur, _ = _scene(rng, CAMERA, CAMERA, R, t, n=600, outlier_ratio=0.65)
        two = estimate_relative_pose(kf, cur, CAMERA, CAMERA)
        with monkeypatch.context() as m:
            m.setattr(geometry, 'POSELIB_SUBSET', 0)
            one = estimate_relative_pose(kf, cur, CAMERA, CAMERA)
        assert two.success and max(pose_error_deg(two.R_kf_to_cur, two.t_kf_to_cur, R, t)) < 2
        np.testing.assert_array_equal(two.R_kf_to_cur, one.R_kf_to_cur)
        np.testing.assert_array_equal(two.inlier_mask, one.inlier_mask)


def test_poselib_misleading_subset_is_redone_on_all_matches(monkeypatch):
    """#19: when the evenly spaced subset holds another motion than most matches (input
    ordered so that it picks one group), the subset's pose explains few of all matches and
    the estimate is redone on all of them, which finds the dominant motion."""
    pytest.importorskip('poselib')
    rng = np.random.default_rng(1100)
    n = 600
    R_a, t_a = _motion(rng)
    R_b, t_b = _rotation([0.0, 1.0, 0.0], 15.0), np.array([0.0, 0.0, 0.5])
    kf, cur, _ = _scene(rng, CAMERA, CAMERA, R_a, t_a, n=n, outlier_ratio=0.0)
    kf_b, cur_b, _ = _scene(rng, CAMERA, CAMERA, R_b, t_b, n=n, outlier_ratio=0.0)
    subset = geometry._evenly_spaced(n, geometry.POSELIB_SUBSET)
    kf[subset], cur[subset] = kf_b[subset], cur_b[subset]
    pose = estimate_relative_pose(kf, cur, CAMERA, CAMERA)
    assert pose.success
    assert max(pose_error_deg(pose.R_kf_to_cur, pose.t_kf_to_cur, R_a, t_a)) < 1.0
    assert not pose.inlier_mask[subset].any() and pose.num_inliers > 0.9 * (n - len(subset))
    # The scene does mislead the subset: trusting it returns the other motion.
    monkeypatch.setattr(geometry, '_subset_holds', lambda *args: True)
    trusted = estimate_relative_pose(kf, cur, CAMERA, CAMERA)
    assert max(pose_error_deg(trusted.R_kf_to_cur, trusted.t_kf_to_cur, R_b, t_b)) < 1.0


def test_convention_is_kf_to_cur():
    rng = np.random.default_rng(42)
    R, t = _motion(rng)
    kf, cur, _ = _scene(rng, CAMERA, CAMERA, R, t, noise_px=0.0, outlier_ratio=0.0)
    pose = estimate_relative_pose(kf, cur, CAMERA, CAMERA)
    np.testing.assert_allclose(pose.R_kf_to_cur, R, atol=1e-6)
    np.testing.assert_allclose(pose.t_kf_to_cur, t / np.linalg.norm(t), atol=1e-6)
    swapped = estimate_relative_pose(cur, kf, CAMERA, CAMERA)  # the inverse motion
    R_inv, t_inv = invert(R, t)
    np.testing.assert_allclose(swapped.R_kf_to_cur, R_inv, atol=1e-6)
    np.testing.assert_allclose(swapped.t_kf_to_cur, t_inv / np.linalg.norm(t_inv), atol=1e-6)


@pytest.mark.parametrize('model', sorted(DISTORTED))
@pytest.mark.parametrize('method', METHODS)
def test_accuracy_with_distortion(model, method):
    camera = DISTORTED[model]
    max_rot, max_trans = MAX_ERR[method]
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        R, t = _motion(rng)
        kf, cur, outlier = _scene(rng, camera, camera, R, t)
        pose = estimate_relative_pose(kf, cur, camera, camera, method=method)
        assert pose.success, pose
        e_rot, e_trans = pose_error_deg(pose.R_kf_to_cur, pose.t_kf_to_cur, R, t)
        assert e_rot < max_rot and e_trans < max_trans, (e_rot, e_trans)
        _check_masks(pose, outlier, recall=MIN_RECALL.get(model, MIN_RECALL_PINHOLE),
                     rejection=0.95)
        if method == 'poselib' and seed == 0:
            # The same matches read as an ideal pinhole: the distortion must matter.
            naive = CameraModel(camera.width, camera.height, camera.K)
            wrong = estimate_relative_pose(kf, cur, naive, naive, method=method)
            assert (not wrong.success or wrong.num_inliers < 0.8 * pose.num_inliers
                    or max(pose_error_deg(wrong.R_kf_to_cur, wrong.t_kf_to_cur, R, t))
                    > 4 * max(e_rot, e_trans))


@pytest.mark.parametrize('method', METHODS)
def test_two_different_cameras(method):
    camera_kf = DISTORTED['plumb_bob']
    camera_cur = DISTORTED['equidistant']
    max_rot, max_trans = MAX_ERR[method]
    for seed in range(3):
        rng = np.random.default_rng(200 + seed)
        R, t = _motion(rng)
        kf, cur, outlier = _scene(rng, camera_kf, camera_cur, R, t)
        pose = estimate_relative_pose(kf, cur, camera_kf, camera_cur, method=method)
        assert pose.success, pose
        e_rot, e_trans = pose_error_deg(pose.R_kf_to_cur, pose.t_kf_to_cur, R, t)
        assert e_rot < max_rot and e_trans < max_trans, (e_rot, e_trans)
        _check_masks(pose, outlier, recall=MIN_RECALL['equidistant'], rejection=0.95)


def test_deterministic():
    rng = np.random.default_rng(7)
    R, t = _motion(rng)
    kf, cur, _ = _scene(rng, CAMERA, CAMERA, R, t)
    for method in METHODS:
        a = estimate_relative_pose(kf, cur, CAMERA, CAMERA, method=method)
        b = estimate_relative_pose(kf, cur, CAMERA, CAMERA, method=method)
        np.testing.assert_array_equal(a.R_kf_to_cur, b.R_kf_to_cur)
        np.testing.assert_array_equal(a.inlier_mask, b.inlier_mask)
        assert not a.R_kf_to_cur.flags.writeable and not a.inlier_mask.flags.writeable


# ---------------------------------------------------------------- degenerate cases

@pytest.mark.parametrize('method', METHODS)
def test_pure_rotation_is_rotation_only(method):
    for seed in range(5):
        rng = np.random.default_rng(300 + seed)
        R, t = _motion(rng, translation=False)
        kf, cur, outlier = _scene(rng, CAMERA, CAMERA, R, t)
        pose = estimate_relative_pose(kf, cur, CAMERA, CAMERA, method=method)
        assert pose.success and pose.reason == '' and pose.rotation_only, pose
        np.testing.assert_array_equal(pose.t_kf_to_cur, np.zeros(3))
        assert pose.median_parallax_deg < 0.15  # noise floor: 0.5 px at f = 500 is ~0.08 deg
        assert rotation_angle_deg(pose.R_kf_to_cur @ R.T) < 0.1
        _check_masks(pose, outlier, recall=0.9, rejection=0.95)


def test_min_parallax_threshold_decides():
    rng = np.random.default_rng(400)
    R, t = _motion(rng)
    kf, cur, _ = _scene(rng, CAMERA, CAMERA, R, t)
    full = estimate_relative_pose(kf, cur, CAMERA, CAMERA)
    assert not full.rotation_only
    forced = estimate_relative_pose(kf, cur, CAMERA, CAMERA,
                                    min_parallax_deg=full.median_parallax_deg + 0.01)
    assert forced.success and forced.rotation_only
    assert forced.median_parallax_deg == pytest.approx(full.median_parallax_deg)


@pytest.mark.parametrize('method', METHODS)
def test_too_few_matches(method):
    rng = np.random.default_rng(500)
    R, t = _motion(rng)
    kf, cur, _ = _scene(rng, CAMERA, CAMERA, R, t, n=20, outlier_ratio=0.0)
    for n, min_matches in [(0, 8), (4, 5), (4, 8), (7, 8), (11, 12)]:
        pose = estimate_relative_pose(kf[:n], cur[:n], CAMERA, CAMERA, method=method,
                                      min_matches=min_matches)
        assert not pose.success and pose.reason == 'too_few_matches'
        assert pose.inlier_mask.shape == (n,) and not pose.inlier_mask.any()
        assert pose.num_matches == n and pose.num_inliers == 0
        np.testing.assert_array_equal(pose.R_kf_to_cur, np.eye(3))
        np.testing.assert_array_equal(pose.t_kf_to_cur, np.zeros(3))


def test_given_normalised_points_equal_the_undistorted_pixels():
    """The tracker passes the normalised points it already has: the same answer as from
    the pixels; rows whose pixels or normalised points are not finite are dropped."""
    rng = np.random.default_rng(610)
    R, t = _motion(rng)
    camera = DISTORTED['plumb_bob']
    kf, cur, _ = _scene(rng, camera, camera, R, t, n=400)
    x_kf, x_cur = camera.undistort_points(kf), camera.undistort_points(cur)
    from_px = estimate_relative_pose(kf, cur, camera, camera)
    given = estimate_relative_pose(kf, cur, camera, camera, points_kf_norm=x_kf,
                                   points_cur_norm=x_cur)
    np.testing.assert_array_equal(given.R_kf_to_cur, from_px.R_kf_to_cur)
    np.testing.assert_array_equal(given.inlier_mask, from_px.inlier_mask)
    x_kf[3] = np.nan
    kf[5] = np.inf
    dropped = estimate_relative_pose(kf, cur, camera, camera, points_kf_norm=x_kf,
                                     points_cur_norm=x_cur)
    assert dropped.success and dropped.num_matches == 398
    assert not dropped.inlier_mask[[3, 5]].any()
    with pytest.raises(ValueError, match='normalised points must match'):
        estimate_relative_pose(kf, cur, camera, camera, points_kf_norm=x_kf[:-1],
                               points_cur_norm=x_cur)


def test_nan_rows_are_dropped():
    rng = np.random.default_rng(600)
    R, t = _motion(rng)
    kf, cur, outlier = _scene(rng, CAMERA, CAMERA, R, t)
    bad = np.zeros(len(kf), bool)
    bad[::25] = True
    kf[bad[:], 0] = np.nan
    cur[np.flatnonzero(bad)[:3], 1] = np.inf
    pose = estimate_relative_pose(kf, cur, CAMERA, CAMERA)
    assert pose.success, pose
    assert pose.num_matches == len(kf) - bad.sum()
    assert not pose.inlier_mask[bad].any()
    assert max(pose_error_deg(pose.R_kf_to_cur, pose.t_kf_to_cur, R, t)) < 2.0
    # Too few finite rows left is reported, not raised.
    kf[8:] = np.nan
    pose = estimate_relative_pose(kf, cur, CAMERA, CAMERA)
    assert pose.reason == 'too_few_matches' and pose.num_matches == 8 - bad[:8].sum()


@pytest.mark.parametrize('n', [12, 100, 1000])
@pytest.mark.parametrize('method', METHODS)
def test_random_matches_fail(method, n):
    for seed in range(3):
        rng = np.random.default_rng(700 + seed)
        kf = rng.uniform([0.0, 0.0], [639.0, 479.0], (n, 2))
        cur = rng.uniform([0.0, 0.0], [639.0, 479.0], (n, 2))
        pose = estimate_relative_pose(kf, cur, CAMERA, CAMERA, method=method)
        assert not pose.success, pose
        assert pose.reason in ('ransac_failed', 'cheirality_failed', 'low_parallax')
        assert not pose.inlier_mask.any() and pose.num_inliers == 0


# ---------------------------------------------------------------- options

@pytest.mark.parametrize('kwargs,match', [
    ({'min_matches': 4}, 'min_matches'), ({'min_matches': 0}, 'min_matches'),
    ({'min_matches': 8.0}, 'min_matches'), ({'min_matches': True}, 'min_matches'),
    ({'threshold_px': 0.0}, 'threshold_px'), ({'threshold_px': math.nan}, 'threshold_px'),
    ({'confidence': 1.0}, 'confidence'), ({'max_iterations': 0}, 'max_iterations'),
    ({'min_parallax_deg': -1.0}, 'min_parallax_deg'), ({'method': 'lmeds'}, "'lmeds'"),
])
def test_invalid_options_raise(kwargs, match):
    points = np.zeros((20, 2))
    with pytest.raises(ConfigError, match=match):
        estimate_relative_pose(points, points, CAMERA, CAMERA, **kwargs)


def test_mis_shaped_points_raise():
    with pytest.raises(ValueError, match='N x 2'):
        estimate_relative_pose(np.zeros((10, 2)), np.zeros((9, 2)), CAMERA, CAMERA)
    with pytest.raises(ValueError, match='N x 2'):
        estimate_relative_pose(np.zeros((10, 3)), np.zeros((10, 3)), CAMERA, CAMERA)


def test_falls_back_to_opencv_without_poselib(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, 'poselib', None)  # makes `import poselib` fail
    monkeypatch.setattr(geometry, '_poselib_missing_warned', False)
    rng = np.random.default_rng(800)
    R, t = _motion(rng)
    kf, cur, _ = _scene(rng, CAMERA, CAMERA, R, t)
    with caplog.at_level(logging.WARNING, logger='lightglue_ros.geometry'):
        pose = estimate_relative_pose(kf, cur, CAMERA, CAMERA, method='poselib')
    assert pose.success and pose.method == geometry.FALLBACK_METHOD
    assert 'poselib is not installed' in caplog.text


# ---------------------------------------------------------------- helpers

def test_rotation_angle_and_angle_between():
    rng = np.random.default_rng(900)
    for deg in (0.0, 1e-4, 0.5, 30.0, 179.0, 180.0):
        assert rotation_angle_deg(_rotation(rng.normal(size=3), deg)) == pytest.approx(
            deg, abs=1e-9)
    assert angle_between_deg([1, 0, 0], [0, 2, 0]) == pytest.approx(90.0)
    assert angle_between_deg([1, 0, 0], [-3, 0, 0]) == pytest.approx(180.0)
    assert angle_between_deg([1, 1e-5, 0], [1, 0, 0]) == pytest.approx(math.degrees(1e-5))
    assert math.isnan(angle_between_deg([0, 0, 0], [1, 0, 0]))


def test_pose_error_is_sign_free():
    R = _rotation([0, 1, 0], 10.0)
    t = np.array([1.0, 0.0, 0.0])
    assert pose_error_deg(R, -t, R, t) == pytest.approx((0.0, 0.0), abs=1e-6)
    rot_err, trans_err = pose_error_deg(_rotation([0, 1, 0], 13.0), [1, 0.1, 0], R, 2 * t)
    assert rot_err == pytest.approx(3.0) and trans_err == pytest.approx(
        math.degrees(math.atan(0.1)))
    assert pose_error_deg(R, np.zeros(3), R, t)[1] == 90.0  # rotation-only / failure
    assert pose_error_deg(R, t, R, np.zeros(3), ignore_gt_t_norm=1e-9)[1] == 0.0


def test_pose_auc_definition():
    # Recall rises to 1/3 at 1 deg and 2/3 at 3 deg (trapezoids, the SuperGlue definition):
    # area up to 5 deg = 1/6 + 1 + 4/3 = 2.5, normalised by 5.
    assert pose_auc([1.0, 3.0, 7.0], (5,)) == pytest.approx([0.5])
    # Past the last error the recall stays flat: 1/6 + 1 + (2/3 + 1) / 2 * 4 + 3 = 7.5 at 10.
    assert pose_auc([7.0, 3.0, 1.0], (5, 10)) == pytest.approx([0.5, 0.75])
    assert pose_auc([0.0, 0.0]) == pytest.approx([1.0, 1.0, 1.0])
    assert pose_auc([math.inf, math.nan, 25.0]) == [0.0, 0.0, 0.0]
    assert pose_auc([]) == [0.0, 0.0, 0.0]


def test_compose_and_invert():
    rng = np.random.default_rng(1000)
    R_ab, t_ab = _rotation(rng.normal(size=3), 20.0), rng.normal(size=3)
    R_bc, t_bc = _rotation(rng.normal(size=3), 50.0), rng.normal(size=3)
    x_a = rng.normal(size=(5, 3))
    x_c = (x_a @ R_ab.T + t_ab) @ R_bc.T + t_bc
    R_ac, t_ac = compose(R_ab, t_ab, R_bc, t_bc)
    np.testing.assert_allclose(x_a @ R_ac.T + t_ac, x_c, atol=1e-12)
    R_ca, t_ca = invert(R_ac, t_ac)
    np.testing.assert_allclose(x_c @ R_ca.T + t_ca, x_a, atol=1e-12)
    R_id, t_id = compose(R_ac, t_ac, R_ca, t_ca)
    np.testing.assert_allclose(R_id, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(t_id, np.zeros(3), atol=1e-12)


# ---------------------------------------------------------------- rotation-only fit

def _rotation_ransac_reference(f0, f1, thr_rad, confidence, max_iterations):
    """The rotation-only RANSAC as it was before #19: an SVD (geometry._kabsch) per
    hypothesis and one batch of 32 samples at a time. Same seed, same draws."""
    n, cos_thr = len(f0), math.cos(thr_rad)
    rng = np.random.default_rng(0)
    best_R, best_mask, best_count = np.eye(3), np.zeros(n, bool), -1
    max_iterations = min(max_iterations, 256)
    needed, done = max_iterations, 0
    while done < min(needed, max_iterations):
        k = min(32, max_iterations - done)
        i = rng.integers(0, n, size=k)
        j = (i + rng.integers(1, n, size=k)) % n
        R = geometry._kabsch(np.stack([f0[i], f0[j]], 1), np.stack([f1[i], f1[j]], 1))
        masks = np.einsum('kab,nb,na->kn', R, f0, f1) > cos_thr
        counts = masks.sum(1)
        b = int(np.argmax(counts))
        if counts[b] > best_count:
            best_R, best_mask, best_count = R[b], masks[b], int(counts[b])
            w2 = (best_count / n) ** 2
            needed = (0 if w2 >= 1.0 else max_iterations if w2 < 1e-12 else
                      math.ceil(math.log1p(-confidence) / math.log1p(-w2)))
        done += k
    for _ in range(3):
        if best_count < 2:
            break
        R = geometry._kabsch(f0[best_mask], f1[best_mask])
        mask = np.sum((f0 @ R.T) * f1, axis=1) > cos_thr
        if mask.sum() < best_count:
            break
        changed = bool(np.any(mask != best_mask))
        best_R, best_mask, best_count = R, mask, int(mask.sum())
        if not changed:
            break
    return best_R, best_mask


def _unit_rows(rng: np.random.Generator, k: int) -> np.ndarray:
    v = rng.normal(size=(k, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_two_point_rotations_equal_kabsch_per_hypothesis():
    rng = np.random.default_rng(900)
    k = 2000
    a0, a1 = _unit_rows(rng, k), _unit_rows(rng, k)
    R_true = np.stack([_rotation(rng.normal(size=3), rng.uniform(0.0, 180.0))
                       for _ in range(k)])
    noise = 0.05 * rng.normal(size=(2, k, 3))
    b0 = np.einsum('kab,kb->ka', R_true, a0) + noise[0]
    b1 = np.einsum('kab,kb->ka', R_true, a1) + noise[1]
    b0 /= np.linalg.norm(b0, axis=1, keepdims=True)
    b1 /= np.linalg.norm(b1, axis=1, keepdims=True)
    # Two coincident bearings (a duplicated keypoint): the rotation about them is free, the
    # closed form cannot say which, so these rows must come from the SVD fallback.
    a1[:5], b1[:5] = a0[:5], b0[:5]
    R = geometry._two_point_rotations(a0, a1, b0, b1)
    reference = geometry._kabsch(np.stack([a0, a1], 1), np.stack([b0, b1], 1))
    np.testing.assert_allclose(R, reference, rtol=0.0, atol=1e-9)
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape),
                               rtol=0.0, atol=1e-12)
    assert np.all(np.linalg.det(R) > 0.0)


@pytest.mark.parametrize('translation,outlier_ratio,max_iterations', [
    (False, 0.2, 2000),  # pure rotation: stops after the first batch
    (False, 0.7, 2000),  # many outliers: several batches before the stopping criterion
    (True, 0.2, 2000),   # real translation: no rotation fits, all 256 hypotheses
    (True, 0.2, 50),     # a cap that is not a multiple of the batch size
    (True, 0.2, 7),      # a cap below one batch
])
def test_rotation_ransac_equals_the_per_hypothesis_svd_fit(translation, outlier_ratio,
                                                          max_iterations):
    for seed in range(3):
        rng = np.random.default_rng(950 + seed)
        R, t = _motion(rng, translation=translation)
        kf, cur, _ = _scene(rng, CAMERA, CAMERA, R, t, n=400, outlier_ratio=outlier_ratio)
        f0 = geometry._bearings(CAMERA.undistort_points(kf))
        f1 = geometry._bearings(CAMERA.undistort_points(cur))
        thr = math.sqrt(3.0) / CAMERA.mean_focal
        R_new, mask_new = geometry._rotation_ransac(f0, f1, thr, 0.99999, max_iterations)
        R_ref, mask_ref = _rotation_ransac_reference(f0, f1, thr, 0.99999, max_iterations)
        np.testing.assert_allclose(R_new, R_ref, rtol=0.0, atol=1e-9)
        np.testing.assert_array_equal(mask_new, mask_ref)


def test_angles_and_bearings_equal_the_numpy_reference_bit_for_bit():
    """#19: _angles writes the cross product out and _bearings fills an array instead of
    np.c_ (numpy overheads); both must give exactly the reference's numbers, so every check
    built on them (parallax, cheirality) answers as before."""
    rng = np.random.default_rng(960)
    x0, x1 = rng.uniform(-1.0, 1.0, (2, 700, 2))
    f0 = np.c_[x0, np.ones(len(x0))]
    f0 /= np.linalg.norm(f0, axis=1, keepdims=True)
    f1 = np.c_[x1, np.ones(len(x1))]
    f1 /= np.linalg.norm(f1, axis=1, keepdims=True)
    np.testing.assert_array_equal(geometry._bearings(x0), f0)
    np.testing.assert_array_equal(geometry._bearings(x1), f1)
    R = _rotation(rng.normal(size=3), 7.0)
    a = f0 @ R.T
    reference = np.arctan2(np.linalg.norm(np.cross(a, f1), axis=-1), np.sum(a * f1, axis=-1))
    np.testing.assert_array_equal(geometry._angles(R, f0, f1), reference)


def test_dot_rows_and_single_kabsch_equal_the_reference_bit_for_bit():
    """#19: the cheirality count's dot products and the one-rotation Kabsch fit (the
    rotation fit's refinement) do fewer numpy calls; their numbers are the reference's bit
    for bit, so every decision built on them is the same."""
    rng = np.random.default_rng(970)
    a, b = rng.normal(size=(2, 700, 3))
    np.testing.assert_array_equal(geometry._dot_rows(a, b), np.sum(a * b, axis=-1))
    for seed in range(5):
        R, t = _motion(np.random.default_rng(seed))
        kf, cur, _ = _scene(rng, CAMERA, CAMERA, R, t, n=500)
        f0 = geometry._bearings(CAMERA.undistort_points(kf))
        f1 = geometry._bearings(CAMERA.undistort_points(cur))
        np.testing.assert_array_equal(geometry._kabsch(f0, f1),
                                      geometry._kabsch(f0[None], f1[None])[0])
        # A fit whose SVD needs the reflection correction (det(V U^T) < 0) as well.
        np.testing.assert_array_equal(geometry._kabsch(f0, -f1),
                                      geometry._kabsch(f0[None], -f1[None])[0])


@pytest.mark.parametrize('p', [1e-3, 5.6e-3, 0.05, 0.3, 0.5])
def test_binomial_tail_bound_decides_as_the_sum(p):
    """#19: the significance check settles most calls from the tail's first term and a
    geometric bound; wherever that decides, it is the truncated sum's answer."""
    limit = math.log(1e-7)
    decided = 0
    for n in (1, 3, 10, 50, 300, 700, 2000):
        for m in sorted({0, 1, 2, 3, *range(0, n + 2, max(1, n // 40)), n, n + 1}):
            bound = geometry._binomial_tail_bound_decides(n, p, m, limit)
            if bound is not None:
                decided += 1
                assert bound == (geometry._log_binomial_tail(n, p, m) < limit), (n, p, m)
    assert decided > 100
    # The freiburg case (700 matches, 650 inliers, p of a 640x480 image) is settled.
    assert geometry._binomial_tail_bound_decides(695, 5.2e-3, 645, limit) is True

"""Robust relative pose between two calibrated views, and small rotation/translation helpers.

One concept, over 500 lines: the relative pose estimate with every check it makes (the
options, significance, the rotation-only parallax fit, cheirality) and the helpers only it uses.
"""
from __future__ import annotations

import functools
import importlib
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import cv2
import numpy as np

from lightglue_ros.camera import CameraModel
from lightglue_ros.errors import ConfigError

logger = logging.getLogger(__name__)

PoseMethod = Literal['poselib', 'opencv_ransac', 'opencv_magsac']
POSE_METHODS: tuple[str, ...] = get_args(PoseMethod)
FailureReason = Literal['', 'too_few_matches', 'low_parallax', 'ransac_failed',
                        'cheirality_failed']

# Chosen by benchmarks/bench_pose.py (docs/pose_estimators.md): PoseLib's LO-RANSAC with
# non-linear refinement is 5-6x more accurate than OpenCV on synthetic scenes with exact
# ground truth and the most consistent on the Freiburg pairs, at MAGSAC's CPU time. (MAGSAC
# scores higher on the 15 wide-baseline ScanNet pairs, mostly through one pair.)
DEFAULT_METHOD: PoseMethod = 'poselib'
# Used when poselib is not installed: the more accurate of the two OpenCV estimators.
FALLBACK_METHOD: PoseMethod = 'opencv_magsac'

MIN_SOLVER_MATCHES = 5  # the five-point solver's minimal sample
DEFAULT_MIN_MATCHES = 8  # fewer finite matches: no pose (too_few_matches)
DEFAULT_THRESHOLD_PX = 1.0  # inlier threshold on the Sampson error, pixels
DEFAULT_CONFIDENCE = 0.99999  # RANSAC stops once it is this sure to have seen an all-inlier sample
DEFAULT_MAX_ITERATIONS = 2000
# Below this median rotation-free parallax the translation direction is not observable:
# pure rotation measures ~0.08 deg (0.5 px noise, f = 535 px), and from 0.24 deg on the
# translation direction error is < 2 deg at the 90th percentile (docs/pose_estimators.md).
DEFAULT_MIN_PARALLAX_DEG = 0.25
# Cheirality: at least this fraction of the inliers that have measurable parallax must
# triangulate in front of both cameras, or the pose is rejected.
_MIN_FRONT_FRACTION = 0.5
# PoseLib's stopping: it ends RANSAC once it has run more than POSELIB_MIN_ITERATIONS and
# more than POSELIB_TRIALS_MULT times the iterations that `confidence` asks for at the inlier
# ratio found (PoseLib's own defaults: 1000 and 3). With 100 and 3 (until #19) it ran ~100
# iterations on 700 freiburg matches with 93 % inliers, where the textbook bound
# log(1 - confidence) / log(1 - w^5) is ~10. Its time goes into the local optimisation
# (25 Levenberg-Marquardt steps over all inliers, ~0.7 ms on 700 matches) that runs at every
# sample that improves on the best, and extra samples keep finding marginal improvements.
# Measured (bench_pose.py, 10 shuffles, one core, docs/pose_estimators.md): 100 / x3 8.2 ms,
# 20 / x3 5.5 ms, 0 / x1 4.5 ms per freiburg pair; ScanNet AUC@5/10/20 12.2/18.9/26.3 and
# 11.9/19.2/26.6 (spread over the shuffles +-1); synthetic errors unchanged. So: the textbook
# bound at our confidence, no floor.
POSELIB_MIN_ITERATIONS = 0
POSELIB_TRIALS_MULT = 1.0
# PoseLib's final refinement (Cauchy loss over the inliers) stops when a Levenberg-Marquardt
# step is shorter than this (PoseLib's default 1e-8). It took 14 steps, 1.0 ms, on the freiburg
# pairs (one core); with 1e-5 it takes 5, 0.45 ms, and the pose moves by at most 0.0012 deg
# (rotation) and 0.0014 deg (translation direction) over all 16 pairs: 1/30 of how much the
# rotation varies with the order of the matches (p90 0.043 deg, docs/pose_estimators.md).
POSELIB_BUNDLE_STEP_TOL = 1e-5
# Two stages for many matches (#19): PoseLib first runs its LO-RANSAC on POSELIB_SUBSET
# evenly spaced matches (no final bundle), then on all matches from that pose with no
# sampling of its own: one local optimisation, its final one and the Cauchy bundle. PoseLib
# starts a local optimisation (Levenberg-Marquardt over all inliers, ~60 us a step at 700
# matches) at every sample that beats the best *minimal* sample so far, ~4 a call on the
# freiburg pairs and most of its time; on the subset they cost a fifth, and the one on all
# matches starts next to its optimum. Used from 2 x POSELIB_SUBSET matches on (the ScanNet
# pairs, at most 165 matches, stay on one stage) and only when at least
# POSELIB_SUBSET_MIN_RATIO of the subset are inliers: with 60-70 % outliers (700 synthetic
# matches) the subset's ~40 inliers gave up to 1.6x larger errors at the 90th percentile, so
# below it the estimate runs on all matches as one stage (same answer; the subset's capped
# sampling costs ~2 ms more there). Measured (docs/pose_estimators.md, one core): freiburg
# PoseLib 2.2 -> 1.4 ms, rotation repeatability and synthetic errors within the shuffle
# spread; subsets of 64 and 96 cost 0.1-0.15 ms less but moved more (64, forced onto the
# ScanNet pairs: AUC@20 27.0 -> 24.6). 0 disables the first stage.
POSELIB_SUBSET = 128
POSELIB_SUBSET_MIN_RATIO = 0.5
# A-contrario check of the essential-matrix support: random matches agree with some model
# among the many that RANSAC tries (up to ~1e5: 10 000 samples with up to 10 solutions each),
# so the inliers beyond the 5-point sample must be less likely than this under chance alone
# (expected false alarms <= 0.01). Random input then fails instead of returning a pose.
_CHANCE_PROBABILITY = 1e-7

_ROTATION_MAX_HYPOTHESES = 256  # see _rotation_ransac
_ROTATION_BATCH = 32  # hypotheses between two checks of the stopping criterion

_poselib_missing_warned = False


@dataclass(frozen=True, eq=False)
class RelativePose:
    """Relative pose of the current view with respect to the keyframe, from 2D matches.

    success:        True when R_kf_to_cur (and t_kf_to_cur unless rotation_only) is usable.
    reason:         '' on success, else a stable machine-readable code (FailureReason):
                    'too_few_matches'   fewer than min_matches finite correspondences;
                    'ransac_failed'     no essential matrix, or one whose inliers do not
                                        beat chance (random matches give ~2% inliers);
                    'low_parallax'      parallax is negligible and no rotation fits either;
                    'cheirality_failed' most inliers triangulate behind a camera.
    R_kf_to_cur:    [3 x 3] float64 rotation, x_cur = R_kf_to_cur @ x_kf + t_kf_to_cur (OpenCV
                    recoverPose with points1 = keyframe, points2 = current). Identity on failure.
    t_kf_to_cur:    [3] float64 translation direction, unit norm (monocular scale is unknown);
                    zeros when rotation_only or on failure.
    inlier_mask:    [N] bool over the *input* rows; rows with NaN/inf are never inliers.
                    Full pose: the estimator's epipolar inliers (Sampson error < threshold).
                    rotation_only: matches that the rotation alone maps to within
                    sqrt(3) * threshold (the 2-DOF equivalent of the 1-DOF Sampson test).
    num_matches:    finite correspondences used (input rows minus NaN/inf rows).
    num_inliers:    inlier_mask.sum(); inlier_ratio = num_inliers / num_matches (0 if none).
    median_parallax_deg: median over the epipolar inliers of the angle between matched
                    bearing vectors after removing the robustly fitted pure rotation (the
                    rotation-only fit below): the part of the motion that only a translation
                    explains. About 0.08 deg for pure rotation with 0.5 px noise at f = 500 px.
                    NaN when the estimate failed before it could be measured.
    rotation_only:  True when median_parallax_deg < min_parallax_deg: the translation is not
                    observable, so instead of the (degenerate) essential-matrix decomposition
                    R comes from a robust rotation-only fit (2-point RANSAC + Kabsch on the
                    bearing vectors, inlier angle sqrt(3) * threshold) and t is zeros.
                    success stays True and reason '': the rotation is valid.
    threshold_rad:  the inlier threshold in normalised image units (threshold_px over the
                    mean focal length of the two cameras): the angular noise of one match.
    method:         the estimator that ran (after any fallback).
    elapsed_ms:     wall time of the whole call, undistortion included.
    """

    success: bool
    reason: str
    R_kf_to_cur: np.ndarray
    t_kf_to_cur: np.ndarray
    inlier_mask: np.ndarray
    num_matches: int
    num_inliers: int
    inlier_ratio: float
    median_parallax_deg: float
    rotation_only: bool
    threshold_rad: float
    method: str
    elapsed_ms: float


# ==================================================================== small helpers


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle of the rotation R in degrees, in [0, 180]."""
    R = np.asarray(R, dtype=np.float64)
    # arctan2 of (sine, cosine) stays accurate near 0 deg where arccos loses half the digits.
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    sin = 0.5 * float(np.linalg.norm(axis))
    cos = 0.5 * (float(np.trace(R)) - 1.0)
    return math.degrees(math.atan2(sin, cos))


def angle_between_deg(t0: np.ndarray, t1: np.ndarray) -> float:
    """Angle between two 3-vectors in degrees, in [0, 180]; NaN if either is zero."""
    a = np.asarray(t0, dtype=np.float64).reshape(3)
    b = np.asarray(t1, dtype=np.float64).reshape(3)
    if not (np.any(a != 0.0) and np.any(b != 0.0)):
        return math.nan
    return math.degrees(math.atan2(float(np.linalg.norm(np.cross(a, b))), float(a @ b)))


def pose_error_deg(R_est: np.ndarray, t_est: np.ndarray, R_gt: np.ndarray, t_gt: np.ndarray,
                   *, ignore_gt_t_norm: float = 0.0) -> tuple[float, float]:
    """(rotation error, translation direction error) in degrees, as SuperGlue evaluates.

    The translation error is min(e, 180 - e) for the angle e between the directions, because
    an essential matrix fixes t only up to sign. A zero t_est (rotation-only or failed
    estimate) counts as 90 deg, the worst sign-free error; when |t_gt| <= ignore_gt_t_norm the
    direction is undefined and the error is 0 (SuperGlue's ignore_gt_t_thr).
    """
    rot_err = rotation_angle_deg(np.asarray(R_est) @ np.asarray(R_gt).T)
    if float(np.linalg.norm(t_gt)) <= ignore_gt_t_norm:
        return rot_err, 0.0
    e = angle_between_deg(t_est, t_gt)
    if math.isnan(e):
        return rot_err, 90.0
    return rot_err, min(e, 180.0 - e)


def pose_auc(errors: Iterable[float], thresholds: Sequence[float] = (5, 10, 20)) -> list[float]:
    """Area under the recall-vs-error curve up to each threshold, normalised to [0, 1].

    The SuperGlue/LightGlue definition: errors are usually max(rot_err, trans_err) per pair;
    failures count as inf (NaN is treated as inf). Multiply by 100 for the papers' percent.
    """
    err = np.asarray(list(errors), dtype=np.float64)
    if err.size == 0:
        return [0.0 for _ in thresholds]
    err = np.sort(np.where(np.isnan(err), np.inf, err))
    recall = np.arange(1, len(err) + 1) / len(err)
    err = np.r_[0.0, err]
    recall = np.r_[0.0, recall]
    aucs = []
    for thr in thresholds:
        last = int(np.searchsorted(err, thr))
        r = np.r_[recall[:last], recall[last - 1]]
        e = np.r_[err[:last], thr]
        aucs.append(float(np.sum((r[1:] + r[:-1]) * np.diff(e)) / 2.0 / thr))
    return aucs


def compose(R_ab: np.ndarray, t_ab: np.ndarray, R_bc: np.ndarray,
            t_bc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R_ac, t_ac) with x_c = R_ac x_a + t_ac, given x_b = R_ab x_a + t_ab and
    x_c = R_bc x_b + t_bc."""
    R_ab, R_bc = np.asarray(R_ab, np.float64), np.asarray(R_bc, np.float64)
    t_ab, t_bc = np.asarray(t_ab, np.float64).reshape(3), np.asarray(t_bc, np.float64).reshape(3)
    return R_bc @ R_ab, R_bc @ t_ab + t_bc


def invert(R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R_ba, t_ba) of the inverse transform of x_b = R x_a + t."""
    R = np.asarray(R, np.float64)
    t = np.asarray(t, np.float64).reshape(3)
    return R.T, -R.T @ t


# ==================================================================== internals


def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Quaternion (x, y, z, w), w >= 0, of a 3x3 rotation matrix.

    Uses Bar-Itzhack's method (the eigenvector of the largest eigenvalue of a symmetric 4x4
    matrix), which has no division by a small trace term near 180 degrees and returns the
    closest rotation's quaternion when R is slightly non-orthonormal. Raises ValueError for a
    non-3x3, non-finite or reflecting (det <= 0) matrix.
    """
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3) or not np.all(np.isfinite(R)):
        raise ValueError(f'R must be a finite 3x3 matrix, got shape {R.shape}')
    if np.linalg.det(R) <= 0:
        raise ValueError('R is not a rotation (determinant <= 0)')
    (r00, r01, r02), (r10, r11, r12), (r20, r21, r22) = R
    K = np.array([
        [r00 - r11 - r22, r01 + r10, r02 + r20, r21 - r12],
        [r01 + r10, r11 - r00 - r22, r12 + r21, r02 - r20],
        [r02 + r20, r12 + r21, r22 - r00 - r11, r10 - r01],
        [r21 - r12, r02 - r20, r10 - r01, r00 + r11 + r22],
    ]) / 3.0
    eigenvalues, eigenvectors = np.linalg.eigh(K)
    q = eigenvectors[:, int(np.argmax(eigenvalues))]
    if q[3] < 0:
        q = -q
    return q / np.linalg.norm(q)


def quaternion_to_rotation(q: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix of a quaternion (x, y, z, w); the quaternion is normalised first.

    Raises ValueError for a zero-length or non-finite quaternion.
    """
    q = np.asarray(q, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(q)) if q.shape == (4,) else 0.0
    if not math.isfinite(norm) or norm < 1e-12:
        raise ValueError(f'q must be a non-zero finite 4-vector (x, y, z, w), got {q.tolist()}')
    x, y, z, w = q / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _bearings(x: np.ndarray) -> np.ndarray:
    """[N x 2] normalised image coordinates -> [N x 3] unit bearing vectors."""
    f = np.empty((len(x), 3))  # not np.c_: its index machinery costs ~20 us a call
    f[:, :2] = x
    f[:, 2] = 1.0
    x0, x1 = f[:, 0], f[:, 1]
    # np.linalg.norm's sum of squares written out: the same numbers, a quarter of the time.
    return f / np.sqrt(x0 * x0 + x1 * x1 + 1.0)[:, None]


def _kabsch(f0: np.ndarray, f1: np.ndarray) -> np.ndarray:
    """Rotation(s) R minimising sum |f1 - R f0|^2; f0, f1: [..., N, 3] -> [..., 3, 3]."""
    H = np.swapaxes(f0, -1, -2) @ f1
    U, _, Vt = np.linalg.svd(H)
    V = np.swapaxes(Vt, -1, -2)
    if H.ndim == 2:
        # One rotation (the rotation fit's refinement, 2-3 a call): the same numbers with a
        # third of the numpy calls (#19). det(V U^T) has the sign of det V det U; scaling
        # V's last column by it is V @ diag(1, 1, d).
        (u00, u01, u02), (u10, u11, u12), (u20, u21, u22) = U.tolist()
        (v00, v01, v02), (v10, v11, v12), (v20, v21, v22) = V.tolist()
        det_u = (u00 * (u11 * u22 - u12 * u21) - u01 * (u10 * u22 - u12 * u20)
                 + u02 * (u10 * u21 - u11 * u20))
        det_v = (v00 * (v11 * v22 - v12 * v21) - v01 * (v10 * v22 - v12 * v20)
                 + v02 * (v10 * v21 - v11 * v20))
        return (V * [1.0, 1.0, 1.0 if det_u * det_v > 0.0 else -1.0]) @ U.T
    d = np.sign(np.linalg.det(V @ np.swapaxes(U, -1, -2)))
    S = np.broadcast_to(np.eye(3), H.shape).copy()
    S[..., 2, 2] = d
    return V @ S @ np.swapaxes(U, -1, -2)


def _angles(R: np.ndarray, f0: np.ndarray, f1: np.ndarray) -> np.ndarray:
    """Angle in radians between R f0 and f1 for each row."""
    return _angles_between(f0 @ np.swapaxes(R, -1, -2), f1)


def _angles_between(a: np.ndarray, f1: np.ndarray) -> np.ndarray:
    """Angle in radians between the rows of a and f1 (a: already rotated bearings)."""
    # The cross product, its norm and the dot product written out per component: the same
    # products and sums in the same order as np.cross, np.linalg.norm and np.sum (bit for
    # bit, tested), at a quarter of their argument handling and strided reductions.
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = f1[..., 0], f1[..., 1], f1[..., 2]
    c0, c1, c2 = a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0
    return np.arctan2(np.sqrt(c0 * c0 + c1 * c1 + c2 * c2), _dot_rows(a, f1))


def _dot_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product of [..., 3] arrays: np.sum(a * b, axis=-1), bit for bit."""
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def _two_point_rotations(a0: np.ndarray, a1: np.ndarray, b0: np.ndarray,
                         b1: np.ndarray) -> np.ndarray:
    """Rotations R [K x 3 x 3] minimising |b0 - R a0|^2 + |b1 - R a1|^2, closed form.

    a0, a1, b0, b1: [K x 3] unit bearing vectors (K samples of two matches each). For unit
    vectors a0 + a1 is orthogonal to a0 - a1, and R a0 . b0 + R a1 . b1 equals
    (R s_a . s_b + R d_a . d_b) / 2 with s = sum, d = difference; a rotation that maps the
    orthonormal frame (s_a, d_a, s_a x d_a) onto (s_b, d_b, s_b x d_b) maximises both terms at
    once, so it is the Kabsch solution (to rounding), without an SVD per sample. Samples with
    a (near) zero sum or difference, where two bearings coincide, fall back to _kabsch.
    """
    k = len(a0)
    # The frames of the a and the b sides in one pass over [a; b]: half the numpy calls.
    u, v = np.concatenate([a0, b0]), np.concatenate([a1, b1])
    s, d = u + v, u - v
    s_norm = np.sqrt(np.einsum('ij,ij->i', s, s))[:, None]
    d_norm = np.sqrt(np.einsum('ij,ij->i', d, d))[:, None]
    ok = (s_norm[:, 0] > 1e-12) & (d_norm[:, 0] > 1e-12)
    with np.errstate(divide='ignore', invalid='ignore'):
        s, d = s / s_norm, d / d_norm
    w = np.stack([s[:, 1] * d[:, 2] - s[:, 2] * d[:, 1],
                  s[:, 2] * d[:, 0] - s[:, 0] * d[:, 2],
                  s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]], axis=1)
    # R = [s_b d_b w_b] @ [s_a d_a w_a]^T, a sum of three outer products per sample.
    R = sum(axis[k:, :, None] * axis[:k, None, :] for axis in (s, d, w))
    degenerate = np.flatnonzero(~(ok[:k] & ok[k:]))
    if degenerate.size:
        R[degenerate] = _kabsch(np.stack([a0[degenerate], a1[degenerate]], 1),
                                np.stack([b0[degenerate], b1[degenerate]], 1))
    return R


@functools.lru_cache(maxsize=64)
def _rotation_samples(n: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The index pairs (i, j), i != j, of _rotation_ransac's `count` two-point samples among
    n matches: seeded, so they depend on (n, count) only and are cached (drawing them cost
    ~0.12 ms a call, a fifth of the fit; #19). Read-only arrays."""
    rng = np.random.default_rng(0)
    # All samples are drawn and fitted up front (one vectorised call is cheaper than eight
    # small ones); the draws do not depend on the scores, so the stream is batch by batch.
    first, second = [], []
    for start in range(0, count, _ROTATION_BATCH):
        i = rng.integers(0, n, size=min(_ROTATION_BATCH, count - start))
        first.append(i)
        second.append((i + rng.integers(1, n, size=len(i))) % n)  # a second, different index
    i, j = np.concatenate(first), np.concatenate(second)
    i.flags.writeable = False
    j.flags.writeable = False
    return i, j


def _rotation_ransac(f0: np.ndarray, f1: np.ndarray, thr_rad: float, confidence: float,
                     max_iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Robust pure-rotation fit f1 ~ R f0: 2-point RANSAC + Kabsch refinement on the inliers.

    f0, f1: [N x 3] unit bearing vectors, N >= 2. A match is an inlier when the angle between
    R f0 and f1 is below thr_rad. Returns (R [3 x 3], inlier mask [N]); seeded, so results
    are reproducible.
    """
    n = len(f0)
    cos_thr = math.cos(thr_rad)  # score with dot products: cheaper than angles, same order
    # (R f0_m) . f1_m = sum_ab R_ab f1_m,a f0_m,b, so one [k x 9] @ [9 x N] product scores a
    # whole batch of hypotheses. A batch of 32 keeps that product below OpenBLAS's threading
    # threshold (m n k < 262 144) up to 900 matches: threads cost more than they save here.
    # Built in [9 x N] order: contiguous, so the product runs ~30 % faster (same numbers).
    outer = (f1.T[:, None, :] * f0.T[None, :, :]).reshape(9, n)
    # Inliers counted as bytes into a small integer type: a third of count_nonzero's time.
    count_type = np.uint16 if n < np.iinfo(np.uint16).max else np.int64
    best_R, best_mask, best_count = np.eye(3), np.zeros(n, bool), -1
    # Capped: with 2-point samples 256 hypotheses find a rotation even among 75 % outliers
    # (miss probability < 1e-5); under real translation no rotation fits well and it would
    # otherwise spin until max_iterations for nothing.
    max_iterations = min(max_iterations, _ROTATION_MAX_HYPOTHESES)
    i, j = _rotation_samples(n, max_iterations)
    hypotheses = _two_point_rotations(f0[i], f0[j], f1[i], f1[j])
    needed, done = max_iterations, 0
    while done < min(needed, max_iterations):
        R = hypotheses[done:done + _ROTATION_BATCH]
        masks = R.reshape(-1, 9) @ outer > cos_thr
        counts = masks.view(np.uint8).sum(axis=1, dtype=count_type)
        b = int(np.argmax(counts))
        if int(counts[b]) > best_count:
            best_R, best_mask, best_count = R[b], masks[b], int(counts[b])
            w2 = (best_count / n) ** 2  # probability that a 2-point sample is all inliers
            needed = (0 if w2 >= 1.0 else max_iterations if w2 < 1e-12 else
                      math.ceil(math.log1p(-confidence) / math.log1p(-w2)))
        done += len(R)
    for _ in range(3):  # local optimisation: refit on the inliers until the set is stable
        if best_count < 2:
            break
        R = _kabsch(f0[best_mask], f1[best_mask])
        mask = R.reshape(9) @ outer > cos_thr  # scored as the hypotheses are
        count = int(np.count_nonzero(mask))
        if count < best_count:
            break
        changed = not np.array_equal(mask, best_mask)
        best_R, best_mask, best_count = R, mask, count
        if not changed:
            break
    return best_R, best_mask


def _front_fraction(R: np.ndarray, t: np.ndarray, f0: np.ndarray, f1: np.ndarray,
                    min_angle_rad: float) -> tuple[int, int]:
    """(points in front of both cameras, points with measurable parallax) for x1 = R x0 + t.

    Points whose rays are closer than min_angle_rad to parallel are left out: their depth sign
    is decided by noise (points near infinity), not by the pose.
    """
    a = f0 @ R.T
    c = _dot_rows(a, f1)
    measurable = _angles_between(a, f1) > min_angle_rad  # a computed once (#19)
    denom = 1.0 - c * c
    at, bt = a @ t, f1 @ t
    with np.errstate(divide='ignore', invalid='ignore'):
        d0 = (c * bt - at) / denom
        d1 = (bt - c * at) / denom
    front = measurable & (d0 > 0.0) & (d1 > 0.0)
    return int(front.sum()), int(measurable.sum())


def _log_binomial_tail(n: int, p: float, m: int) -> float:
    """log P(X >= m) for X ~ Binomial(n, p)."""
    if m <= 0:
        return 0.0
    if m > n:
        return -math.inf
    logs = [math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1)
            + j * math.log(p) + (n - j) * math.log1p(-p) for j in range(m, min(n, m + 200) + 1)]
    top = max(logs)
    return top + math.log(sum(math.exp(v - top) for v in logs))


def _binomial_tail_bound_decides(n: int, p: float, m: int, limit: float) -> bool | None:
    """Whether log P(X >= m) < limit for X ~ Binomial(n, p), from the tail's first term
    alone where that settles it, else None. The first term t_m bounds the tail from below;
    above the mean the terms fall at least geometrically (t_j+1 / t_j <= r with r the ratio at
    j = m), so t_m / (1 - r) bounds it from above. Both bounds hold for _log_binomial_tail's
    truncated sum too, so the answer is the same as its; ~2 us instead of ~40 (#19)."""
    if not 0 < m <= n:
        return None
    first = (math.lgamma(n + 1) - math.lgamma(m + 1) - math.lgamma(n - m + 1)
             + m * math.log(p) + (n - m) * math.log1p(-p))
    if first >= limit:
        return False
    ratio = (n - m) / (m + 1) * p / (1.0 - p)
    if ratio < 1.0 and first - math.log1p(-ratio) < limit - 1e-9:  # margin: rounding
        return True
    return None


def _beats_chance(num_inliers: int, num_matches: int, camera: CameraModel,
                  threshold_px: float) -> bool:
    """True when num_inliers epipolar inliers are unlikely to be random agreement.

    A random match is an inlier of a given model with probability about the area of a band
    of +-threshold_px around an epipolar line over the image area (upper bound: the line is
    as long as the image diagonal).
    """
    w, h = camera.width, camera.height
    p = min(0.5, 2.0 * threshold_px * math.hypot(w, h) / (w * h))
    n, extra = num_matches - MIN_SOLVER_MATCHES, num_inliers - MIN_SOLVER_MATCHES
    limit = math.log(_CHANCE_PROBABILITY)
    decided = _binomial_tail_bound_decides(n, p, extra, limit)
    return _log_binomial_tail(n, p, extra) < limit if decided is None else decided


def _resolve_method(method: str) -> tuple[str, object | None]:
    global _poselib_missing_warned
    if method not in POSE_METHODS:
        raise ConfigError(f'unknown pose method {method!r}; '
                          f'choose one of {", ".join(POSE_METHODS)}')
    if method != 'poselib':
        return method, None
    try:
        return method, importlib.import_module('poselib')
    except ImportError:
        if not _poselib_missing_warned:
            logger.warning("poselib is not installed (pip install 'lightglue_ros[pose]'); "
                           'falling back to %s for relative pose', FALLBACK_METHOD)
            _poselib_missing_warned = True
        return FALLBACK_METHOD, None


def _essential_poselib(poselib: object, x0: np.ndarray, x1: np.ndarray, thr: float,
                       confidence: float, max_iterations: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    # Normalised coordinates with an identity camera: the threshold is already in normalised
    # units, exactly as for OpenCV, so all methods share one inlier definition. PoseLib's final
    # refinement then uses a Cauchy scale of 0.5 x thr (0.5 px), as it would with pixels and
    # real cameras: checked, same inliers and rotations (docs/pose_estimators.md, #19).
    identity = {'model': 'PINHOLE', 'width': 2, 'height': 2, 'params': [1.0, 1.0, 0.0, 0.0]}
    ransac = {'max_epipolar_error': thr, 'success_prob': confidence,
              'max_iterations': max_iterations,
              'min_iterations': min(max_iterations, POSELIB_MIN_ITERATIONS),
              'dyn_num_trials_mult': POSELIB_TRIALS_MULT}
    bundle = {'step_tol': POSELIB_BUNDLE_STEP_TOL}
    n = len(x0)
    if POSELIB_SUBSET and n >= 2 * POSELIB_SUBSET:
        sub = _evenly_spaced(n, POSELIB_SUBSET)
        # Capped at the samples that POSELIB_SUBSET_MIN_RATIO asks for: with a ratio above it
        # PoseLib (multiplier POSELIB_TRIALS_MULT = 1) stops before the cap anyway; below it
        # the subset is not used.
        all_inliers = POSELIB_SUBSET_MIN_RATIO ** MIN_SOLVER_MATCHES
        cap = (math.ceil(math.log1p(-confidence) / math.log1p(-all_inliers))
               if 0.0 < all_inliers < 1.0 else max_iterations)
        initial, info = poselib.estimate_relative_pose(
            x0[sub], x1[sub], identity, identity,
            {**ransac, 'max_iterations': min(max_iterations, cap)}, {'max_iterations': 0})
        if info['num_inliers'] >= POSELIB_SUBSET_MIN_RATIO * POSELIB_SUBSET:
            # max_iterations 0: no samples of its own, the initial pose's local
            # optimisation, PoseLib's final one, then the bundle.
            pose, full = poselib.estimate_relative_pose(
                x0, x1, identity, identity, {**ransac, 'max_iterations': 0}, bundle, initial)
            if _subset_holds(full['num_inliers'], n, info['num_inliers'], POSELIB_SUBSET):
                return _poselib_result(pose, full, n)
    pose, info = poselib.estimate_relative_pose(x0, x1, identity, identity, ransac, bundle)
    return _poselib_result(pose, info, n)


@functools.lru_cache(maxsize=64)
def _evenly_spaced(n: int, count: int) -> np.ndarray:
    """`count` indices spread evenly over range(n), first and last included; read-only."""
    idx = np.linspace(0, n - 1, count).round().astype(np.intp)
    idx.flags.writeable = False
    return idx


def _subset_holds(inliers: int, n: int, subset_inliers: int, subset: int) -> bool:
    """False when the subset's pose explains clearly fewer of all n matches than of the
    subset: a subset that misled RANSAC (input whose order groups the matches), so the
    estimate is redone on all of them. "Clearly": below the subset's inlier ratio by more
    than Hoeffding's margin sqrt(ln(1000) / (2 subset)), 0.16 for 128, which a subset drawn
    from the same matches falls short of with probability < 0.1 %. On the benchmark's data
    the full ratio was at most 0.05 below the subset's (310 estimates, none redone)."""
    margin = math.sqrt(math.log(1000.0) / (2.0 * subset))
    return inliers / n >= subset_inliers / subset - margin


def _poselib_result(pose: object, info: dict, n: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    mask = np.asarray(info.get('inliers', []), dtype=bool)
    if mask.shape != (n,) or mask.sum() < MIN_SOLVER_MATCHES:
        return None
    return np.asarray(pose.R, np.float64), np.asarray(pose.t, np.float64).reshape(3), mask


def _essential_opencv(flag: int, x0: np.ndarray, x1: np.ndarray, thr: float,
                      confidence: float, max_iterations: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    E, mask = cv2.findEssentialMat(x0, x1, np.eye(3), method=flag, prob=confidence,
                                   threshold=thr, maxIters=max_iterations)
    if E is None or mask is None or E.shape[0] < 3 or E.shape[0] % 3 or E.shape[1] != 3:
        return None
    # With a minimal sample OpenCV may stack several solutions; the first one is its best.
    E = np.ascontiguousarray(E[:3])
    mask = mask.reshape(-1).astype(bool)
    if mask.sum() < MIN_SOLVER_MATCHES:
        return None
    # recoverPose only picks the decomposition (cheirality on the inliers); its output mask
    # also drops points farther than 50 baselines, which are valid matches, so it is unused.
    _, R, t, _ = cv2.recoverPose(E, x0, x1, np.eye(3), mask=mask.astype(np.uint8).copy())
    return np.asarray(R, np.float64), np.asarray(t, np.float64).reshape(3), mask


def _normalised(points_px: np.ndarray, given: np.ndarray | None,
                camera: CameraModel) -> np.ndarray:
    """[N x 2] C-contiguous normalised coordinates of points_px: ``given`` (checked) or the
    camera's undistortion (NaN rows where that fails or the pixels are not finite)."""
    if given is None:
        return camera.undistort_points(points_px)
    given = np.ascontiguousarray(given, dtype=np.float64)
    if given.shape != points_px.shape:
        raise ValueError(f'normalised points must match the pixels, got shape '
                         f'{given.shape} for {points_px.shape}')
    return given


# ==================================================================== main entry point


def check_pose_options(*, method: str = DEFAULT_METHOD,
                       threshold_px: float = DEFAULT_THRESHOLD_PX,
                       confidence: float = DEFAULT_CONFIDENCE,
                       max_iterations: int = DEFAULT_MAX_ITERATIONS,
                       min_matches: int = DEFAULT_MIN_MATCHES,
                       min_parallax_deg: float = DEFAULT_MIN_PARALLAX_DEG,
                       names: Mapping[str, str] | None = None) -> None:
    """Raise ConfigError for an invalid option of ``estimate_relative_pose``: the one check,
    which the tracker's configuration runs too (a bad value fails before the first frame).
    ``names``: how the caller calls the options in its messages (e.g. min_pose_matches)."""
    name = {**{key: key for key in ('method', 'threshold_px', 'confidence', 'max_iterations',
                                    'min_matches', 'min_parallax_deg')}, **(names or {})}
    if method not in POSE_METHODS:
        raise ConfigError(f'{name["method"]} must be one of {", ".join(POSE_METHODS)}, '
                          f'got {method!r}')
    if isinstance(min_matches, bool) or not isinstance(min_matches, (int, np.integer)) \
            or min_matches < MIN_SOLVER_MATCHES:
        raise ConfigError(f'{name["min_matches"]} must be an integer >= {MIN_SOLVER_MATCHES} '
                          f'(the five-point solver), got {min_matches!r}')
    if not (math.isfinite(threshold_px) and threshold_px > 0.0):
        raise ConfigError(f'{name["threshold_px"]} must be > 0, got {threshold_px!r}')
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f'{name["confidence"]} must be in (0, 1), got {confidence!r}')
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, (int, np.integer)) \
            or max_iterations < 1:
        raise ConfigError(f'{name["max_iterations"]} must be a positive integer, '
                          f'got {max_iterations!r}')
    if not (math.isfinite(min_parallax_deg) and min_parallax_deg >= 0.0):
        raise ConfigError(f'{name["min_parallax_deg"]} must be >= 0, got {min_parallax_deg!r}')


def estimate_relative_pose(points_kf_px: np.ndarray, points_cur_px: np.ndarray,
                           camera_kf: CameraModel, camera_cur: CameraModel, *,
                           method: str = DEFAULT_METHOD,
                           threshold_px: float = DEFAULT_THRESHOLD_PX,
                           confidence: float = DEFAULT_CONFIDENCE,
                           max_iterations: int = DEFAULT_MAX_ITERATIONS,
                           min_matches: int = DEFAULT_MIN_MATCHES,
                           min_parallax_deg: float = DEFAULT_MIN_PARALLAX_DEG,
                           points_kf_norm: np.ndarray | None = None,
                           points_cur_norm: np.ndarray | None = None) -> RelativePose:
    """Relative pose (R, t) with x_cur = R x_kf + t from matched pixels of two views.

    points_kf_px, points_cur_px: [N x 2] pixels (u, v) of the raw (distorted) images; row i
        of one matches row i of the other. Rows with NaN/inf are dropped (never inliers).
    camera_kf, camera_cur: the two views' cameras (they may differ).
    points_kf_norm, points_cur_norm: the same rows already undistorted to normalised
        coordinates (``camera.undistort_points``), for a caller that needs them anyway
        (the tracker); None: undistorted here.
    method: 'poselib' (LO-RANSAC + non-linear refinement; OpenCV MAGSAC is used with a logged
        warning if poselib is missing), 'opencv_ransac' (findEssentialMat RANSAC +
        recoverPose) or 'opencv_magsac' (USAC_MAGSAC + recoverPose).
    threshold_px: inlier threshold on the Sampson epipolar error in pixels; divided by the
        mean focal length of the two cameras to get normalised image units.
    confidence, max_iterations: RANSAC stopping criteria.
    min_matches: fewer finite matches than this gives reason 'too_few_matches' (>= 5).
    min_parallax_deg: median rotation-free parallax below which the result is rotation_only.

    Degenerate input is reported in the result (success False and a reason), never raised;
    ConfigError is raised for invalid options and ValueError for mis-shaped arrays.
    """
    start = time.perf_counter()
    check_pose_options(method=method, threshold_px=threshold_px, confidence=confidence,
                       max_iterations=max_iterations, min_matches=min_matches,
                       min_parallax_deg=min_parallax_deg)
    method, poselib = _resolve_method(method)

    p0 = np.asarray(points_kf_px, dtype=np.float64)
    p1 = np.asarray(points_cur_px, dtype=np.float64)
    if p0.ndim != 2 or p0.shape[1] != 2 or p0.shape != p1.shape:
        raise ValueError(f'points must be two [N x 2] arrays of equal length, got shapes '
                         f'{p0.shape} and {p1.shape}')
    n_in = len(p0)
    thr = threshold_px / (0.5 * (camera_kf.mean_focal + camera_cur.mean_focal))

    def result(reason: str, *, mask: np.ndarray | None = None, R: np.ndarray | None = None,
               t: np.ndarray | None = None, parallax: float = math.nan,
               rotation_only: bool = False, used: int = 0) -> RelativePose:
        full = np.zeros(n_in, bool) if mask is None else mask
        R_out = np.eye(3) if R is None else np.array(R, np.float64)
        t_out = np.zeros(3) if t is None else np.array(t, np.float64)
        for a in (full, R_out, t_out):
            a.flags.writeable = False
        n_inl = int(full.sum())
        return RelativePose(
            success=reason == '', reason=reason, R_kf_to_cur=R_out, t_kf_to_cur=t_out,
            inlier_mask=full, num_matches=used, num_inliers=n_inl,
            inlier_ratio=n_inl / used if used else 0.0, median_parallax_deg=float(parallax),
            rotation_only=rotation_only, threshold_rad=thr, method=method,
            elapsed_ms=(time.perf_counter() - start) * 1e3)

    finite = np.isfinite(p0).all(axis=1) & np.isfinite(p1).all(axis=1)
    x0 = _normalised(p0, points_kf_norm, camera_kf)
    x1 = _normalised(p1, points_cur_norm, camera_cur)
    valid = finite & np.isfinite(x0).all(axis=1) & np.isfinite(x1).all(axis=1)
    idx = np.flatnonzero(valid)
    used = len(idx)
    if used < min_matches:
        return result('too_few_matches', used=used)
    if used < n_in:
        x0, x1 = x0[idx], x1[idx]

    def full_mask(sub: np.ndarray) -> np.ndarray:
        if used == n_in:  # the common case: every row valid, the mask is already in input rows
            return sub
        m = np.zeros(n_in, bool)
        m[idx[sub]] = True
        return m

    if method == 'poselib':
        est = _essential_poselib(poselib, x0, x1, thr, confidence, max_iterations)
    else:
        flag = cv2.RANSAC if method == 'opencv_ransac' else cv2.USAC_MAGSAC
        est = _essential_opencv(flag, x0, x1, thr, confidence, max_iterations)
    if est is None:
        return result('ransac_failed', used=used)
    R, t, inl = est
    t_norm = float(np.linalg.norm(t))
    if not (t_norm > 0.0 and _beats_chance(int(inl.sum()), used, camera_cur, threshold_px)):
        return result('ransac_failed', used=used)
    t = t / t_norm

    f0, f1 = _bearings(x0), _bearings(x1)
    # Parallax without trusting R: for (near) pure rotation every t fits the epipolar
    # constraint, so the essential matrix also collects outliers and its decomposition may be
    # the wrong one of the twisted pair. A robust rotation-only fit is immune to both.
    # Its inlier angle: the residual in one image carries the noise of both (x sqrt 2) and
    # has two degrees of freedom where the Sampson error has one (x 1.22 at equal
    # confidence), so sqrt(3) times the epipolar threshold.
    R_rot, rot_inl = _rotation_ransac(f0, f1, math.sqrt(3.0) * thr, confidence, max_iterations)
    f0_inl, f1_inl = f0[inl], f1[inl]
    parallax = math.degrees(float(np.median(_angles(R_rot, f0_inl, f1_inl))))
    if parallax < min_parallax_deg:
        if rot_inl.sum() < min_matches:
            return result('low_parallax', parallax=parallax, used=used)
        return result('', mask=full_mask(rot_inl), R=_kabsch(f0[rot_inl], f1[rot_inl]),
                      parallax=parallax, rotation_only=True, used=used)

    front, measurable = _front_fraction(R, t, f0_inl, f1_inl, math.atan(thr))
    if front < max(MIN_SOLVER_MATCHES, _MIN_FRONT_FRACTION * measurable):
        return result('cheirality_failed', parallax=parallax, used=used)
    return result('', mask=full_mask(inl), R=R, t=t, parallax=parallax, used=used)

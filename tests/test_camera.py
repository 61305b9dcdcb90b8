"""Tests of lightglue_ros.camera: validation, YAML loading, undistortion and resizing."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lightglue_ros.camera import CameraModel
from lightglue_ros.errors import CalibrationError

# Realistic lenses: a wide-angle plumb_bob, a rational_polynomial with strong barrel distortion
# and a ~150 deg fisheye; each is invertible over the whole 640x480 image.
CAMERAS = {
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


def _grid(camera: CameraModel, n: int = 25) -> np.ndarray:
    u, v = np.meshgrid(np.linspace(0.0, camera.width - 1.0, n),
                       np.linspace(0.0, camera.height - 1.0, n))
    return np.stack([u.ravel(), v.ravel()], axis=1)


def _distort_reference(model: str, D: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The distortion formulas written out, independent of OpenCV, on normalised coords."""
    u, v = x[:, 0], x[:, 1]
    r2 = u * u + v * v
    if model == 'equidistant':
        r = np.sqrt(r2)
        th = np.arctan(r)
        th_d = th * (1 + D[0] * th**2 + D[1] * th**4 + D[2] * th**6 + D[3] * th**8)
        return x * (th_d / r)[:, None]
    k = np.zeros(8)
    k[:len(D)] = D
    k1, k2, p1, p2, k3, k4, k5, k6 = k
    radial = (1 + k1 * r2 + k2 * r2**2 + k3 * r2**3) / (1 + k4 * r2 + k5 * r2**2 + k6 * r2**3)
    ud = u * radial + 2 * p1 * u * v + p2 * (r2 + 2 * u * u)
    vd = v * radial + p1 * (r2 + 2 * v * v) + 2 * p2 * u * v
    return np.stack([ud, vd], axis=1)


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize('fx,fy,cx,cy', [
    (0.0, 500.0, 320.0, 240.0), (500.0, 0.0, 320.0, 240.0), (-500.0, 500.0, 320.0, 240.0),
    (math.nan, 500.0, 320.0, 240.0), (500.0, math.inf, 320.0, 240.0),
    (500.0, 500.0, 0.0, 240.0), (500.0, 500.0, 320.0, -1.0), (500.0, 500.0, math.nan, 240.0),
    (0.0, 0.0, 0.0, 0.0),
])
def test_invalid_intrinsics_rejected(fx, fy, cx, cy):
    with pytest.raises(CalibrationError, match='focal|principal|non-finite'):
        CameraModel.from_intrinsics(fx, fy, cx, cy, 640, 480)


@pytest.mark.parametrize('fx,fy,cx,cy,match', [
    (1e-300, 500.0, 320.0, 240.0, 'focal length'), (500.0, 1e-300, 320.0, 240.0, 'focal'),
    (1e300, 500.0, 320.0, 240.0, 'focal length'), (500.0, 1e300, 320.0, 240.0, 'focal'),
    (0.63, 500.0, 320.0, 240.0, 'focal length'),  # below 1e-3 * 640
    (640001.0, 500.0, 320.0, 240.0, 'focal length'),  # above 1e3 * 640
    (500.0, 500.0, 1e9, 240.0, 'principal point'), (500.0, 500.0, 320.0, 1e9, 'principal'),
    (500.0, 500.0, 1280.0, 240.0, 'principal point'),  # 2 * width
    (500.0, 500.0, 320.0, 960.0, 'principal point'),  # 2 * height
])
def test_finite_but_implausible_intrinsics_rejected(fx, fy, cx, cy, match):
    with pytest.raises(CalibrationError, match=f'{match} .*implausible for a 640x480 image'):
        CameraModel.from_intrinsics(fx, fy, cx, cy, 640, 480)


def test_plausibility_bounds_are_inclusive_of_real_cameras():
    # The limits themselves, an equidistant fisheye seeing 180 deg across the image (f = 190
    # px at 1280 px) and a small telephoto crop.
    for fx, cx in ((0.64, 320.0), (640000.0, 320.0), (500.0, 1279.9)):
        CameraModel.from_intrinsics(fx, fx, cx, 240.0, 640, 480)
    fisheye = CameraModel.from_intrinsics(190.0, 190.0, 639.5, 479.5, 1280, 960,
                                          distortion_model='equidistant', D=[0.0] * 4)
    assert np.all(np.isfinite(fisheye.undistort_points(np.array([[0.0, 0.0]]))))
    CameraModel.from_intrinsics(50000.0, 50000.0, 32.0, 24.0, 64, 48)  # 0.07 deg field


@pytest.mark.parametrize('K,match', [
    (np.eye(2), '3x3'),
    (np.array([[500.0, 1.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]]), 'skew'),
    (np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 2.0]]), 'skew'),
])
def test_malformed_K_rejected(K, match):
    with pytest.raises(CalibrationError, match=match):
        CameraModel(640, 480, K)


@pytest.mark.parametrize('model,n', [
    ('none', 5), ('plumb_bob', 3), ('plumb_bob', 8), ('rational_polynomial', 5),
    ('equidistant', 5), ('equidistant', 0),
])
def test_wrong_number_of_coefficients(model, n):
    with pytest.raises(CalibrationError, match=f'{model}.*got {n}'):
        CameraModel.from_intrinsics(500, 500, 320, 240, 640, 480, distortion_model=model,
                                    D=[0.01] * n)


def test_unknown_model_and_bad_coefficients_rejected():
    with pytest.raises(CalibrationError, match="'double_sphere'"):
        CameraModel.from_intrinsics(500, 500, 320, 240, 640, 480,
                                    distortion_model='double_sphere', D=[0.1] * 4)
    with pytest.raises(CalibrationError, match='finite'):
        CameraModel.from_intrinsics(500, 500, 320, 240, 640, 480, distortion_model='plumb_bob',
                                    D=[0.1, math.nan, 0, 0])


@pytest.mark.parametrize('width,height', [(0, 480), (640, -1), (640.5, 480), (True, 480)])
def test_bad_image_size_rejected(width, height):
    with pytest.raises(CalibrationError, match='width|height'):
        CameraModel.from_intrinsics(500, 500, 320, 240, width, height)


def test_immutable_copies_and_equality():
    K = np.array([[500.0, 0.0, 320.0], [0.0, 510.0, 240.0], [0.0, 0.0, 1.0]])
    cam = CameraModel(640, 480, K, 'plumb_bob', [0.1, -0.05, 0.0, 0.0])
    K[0, 0] = 1.0  # the caller's array is copied, not shared
    assert cam.fx == 500.0 and cam.fy == 510.0 and cam.cx == 320.0 and cam.cy == 240.0
    assert cam.mean_focal == 505.0
    with pytest.raises(ValueError):
        cam.K[0, 0] = 2.0
    assert cam.K.dtype == np.float64 and cam.D.dtype == np.float64
    same = CameraModel.from_intrinsics(500, 510, 320, 240, 640, 480, distortion_model='plumb_bob',
                                       D=(0.1, -0.05, 0.0, 0.0))
    assert cam == same
    assert cam != CameraModel.from_intrinsics(500, 510, 320, 240, 640, 480)


# ---------------------------------------------------------------- YAML

def test_from_yaml_freiburg(freiburg_dir: Path):
    cam = CameraModel.from_yaml(freiburg_dir / 'camera_info.yaml')
    assert (cam.width, cam.height) == (640, 480)
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (535.4, 539.2, 320.1, 247.6)
    assert cam.distortion_model == 'plumb_bob'
    np.testing.assert_array_equal(cam.D, np.zeros(5))
    assert not cam.is_distorted
    x = cam.undistort_points(np.array([[320.1, 247.6], [855.5, 786.8]]))
    np.testing.assert_allclose(x, [[0.0, 0.0], [1.0, 1.0]], atol=1e-12)


def test_from_yaml_errors(tmp_path: Path):
    with pytest.raises(CalibrationError, match='cannot read'):
        CameraModel.from_yaml(tmp_path / 'missing.yaml')
    path = tmp_path / 'no_matrix.yaml'
    path.write_text('image_width: 640\nimage_height: 480\ndistortion_model: plumb_bob\n')
    with pytest.raises(CalibrationError, match='camera_matrix'):
        CameraModel.from_yaml(path)
    path.write_text('image_width: 640\nimage_height: 480\n'
                    'camera_matrix: {rows: 3, cols: 3, data: [0, 0, 0, 0, 0, 0, 0, 0, 0]}\n')
    with pytest.raises(CalibrationError, match='focal'):
        CameraModel.from_yaml(path)


def test_from_yaml_distorted(tmp_path: Path):
    path = tmp_path / 'fisheye.yaml'
    path.write_text('image_width: 640\nimage_height: 480\ncamera_name: f\n'
                    'camera_matrix: {rows: 3, cols: 3, data: [280, 0, 320.5, 0, 281, 239.5, '
                    '0, 0, 1]}\ndistortion_model: equidistant\n'
                    'distortion_coefficients: {rows: 1, cols: 4, data: [-0.01, 0.05, -0.08, '
                    '0.04]}\n')
    assert CameraModel.from_yaml(path) == CAMERAS['equidistant']


# ---------------------------------------------------------------- undistortion / projection

@pytest.mark.parametrize('model', sorted(CAMERAS))
def test_project_matches_reference_formula(model):
    cam = CAMERAS[model]
    rng = np.random.default_rng(0)
    X = np.c_[rng.uniform(-1.0, 1.0, (200, 2)), rng.uniform(1.0, 3.0, 200)]
    x = X[:, :2] / X[:, 2:]
    expected = _distort_reference(model, cam.D, x) * [cam.fx, cam.fy] + [cam.cx, cam.cy]
    np.testing.assert_allclose(cam.project(X), expected, atol=1e-9)


@pytest.mark.parametrize('model', sorted(CAMERAS))
def test_undistort_round_trips_project_over_image(model):
    cam = CAMERAS[model]
    px = _grid(cam)
    x = cam.undistort_points(px)
    assert np.all(np.isfinite(x))
    # Pixels -> normalised -> pixels: within 1e-6 px over the whole image, corners included.
    back = cam.project(np.c_[x, np.ones(len(x))] * 2.5)
    assert np.abs(back - px).max() < 1e-6
    # The distortion is strong enough that ignoring it would fail by many pixels.
    naive = (px - [cam.cx, cam.cy]) / [cam.fx, cam.fy]
    assert np.abs(x - naive).max() * cam.fx > 20.0
    # Normalised -> pixels -> normalised.
    np.testing.assert_allclose(cam.undistort_points(cam.project(np.c_[x, np.ones(len(x))])), x,
                               atol=1e-9)


def test_undistort_none_and_zero_coefficients_are_pinhole():
    px = np.array([[0.0, 0.0], [320.0, 240.0], [639.0, 479.0]])
    pinhole = CameraModel.from_intrinsics(500, 510, 320, 240, 640, 480)
    zeros = CameraModel.from_intrinsics(500, 510, 320, 240, 640, 480,
                                        distortion_model='plumb_bob', D=(0,) * 5)
    expected = (px - [320, 240]) / [500, 510]
    np.testing.assert_allclose(pinhole.undistort_points(px), expected, atol=1e-15)
    np.testing.assert_allclose(zeros.undistort_points(px), expected, atol=1e-15)
    assert pinhole.undistort_points(np.zeros((0, 2))).shape == (0, 2)


@pytest.mark.parametrize('model', ['none', *sorted(CAMERAS)])
def test_nan_rows_and_points_behind(model):
    cam = CAMERAS.get(model, CameraModel.from_intrinsics(500, 500, 320, 240, 640, 480))
    x = cam.undistort_points(np.array([[100.0, 100.0], [math.nan, 5.0], [300.0, 200.0]]))
    assert np.all(np.isfinite(x[[0, 2]])) and np.all(np.isnan(x[1]))
    px = cam.project(np.array([[0.1, 0.1, 1.0], [0.0, 0.0, -1.0], [0.0, 0.0, 0.0]]))
    assert np.all(np.isfinite(px[0])) and np.all(np.isnan(px[1:]))


def test_undistort_flags_points_where_the_lens_model_folds_over():
    # k1 and k4 make r * radial(r) decrease beyond r ~ 1.4: the image corners have no unique
    # undistorted point, and the result must say so instead of returning a wrong one.
    cam = CameraModel.from_intrinsics(450, 452, 320.5, 239.5, 640, 480,
                                      distortion_model='rational_polynomial',
                                      D=(0.5, -0.1, 1e-4, -2e-4, 0.01, 0.8, 0.0, 0.02))
    x = cam.undistort_points(np.array([[0.0, 0.0], [320.0, 240.0]]))
    assert np.all(np.isnan(x[0])) and np.all(np.isfinite(x[1]))


def test_undistort_rejects_bad_shape():
    with pytest.raises(ValueError, match='N x 2'):
        CAMERAS['plumb_bob'].undistort_points(np.zeros((4, 3)))


# ---------------------------------------------------------------- scaling

@pytest.mark.parametrize('model', ['none', *sorted(CAMERAS)])
def test_scaled_follows_resize_pixel_centres(model):
    cam = CAMERAS.get(model, CameraModel.from_intrinsics(500, 510, 319.5, 239.5, 640, 480))
    s = 0.5
    half = cam.scaled(s, s)
    assert (half.width, half.height) == (320, 240)
    assert half.distortion_model == cam.distortion_model
    np.testing.assert_array_equal(half.D, cam.D)
    # cv2.resize maps continuous coordinate u to (u + 0.5) * s - 0.5: a 3D point must land there.
    rng = np.random.default_rng(1)
    X = np.c_[rng.uniform(-0.5, 0.5, (50, 2)), rng.uniform(1.0, 2.0, 50)]
    np.testing.assert_allclose(half.project(X), (cam.project(X) + 0.5) * s - 0.5, atol=1e-9)
    # The same pixel, seen at both resolutions, undistorts to the same ray.
    px = _grid(cam, 7)
    np.testing.assert_allclose(half.undistort_points((px + 0.5) * s - 0.5),
                               cam.undistort_points(px), atol=1e-9)
    # Scaling back restores the original camera.
    back = half.scaled(1 / s, 1 / s)
    np.testing.assert_allclose(back.K, cam.K, atol=1e-12)
    assert (back.width, back.height) == (cam.width, cam.height)


def test_scaled_anisotropic_and_invalid():
    cam = CameraModel.from_intrinsics(1160.0, 1164.0, 648.0, 484.0, 1296, 968)
    small = cam.scaled(640 / 1296, 480 / 968)
    assert (small.width, small.height) == (640, 480)
    assert small.fx == pytest.approx(1160.0 * 640 / 1296)
    assert small.cy == pytest.approx((484.0 + 0.5) * 480 / 968 - 0.5)
    for sx, sy in [(0.0, 1.0), (1.0, -1.0), (math.nan, 1.0), (math.inf, 1.0)]:
        with pytest.raises(CalibrationError, match='scale'):
            cam.scaled(sx, sy)

"""Pinhole camera with ROS distortion models: validation, undistortion, projection, resizing."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import cv2
import numpy as np
import yaml

from lightglue_ros.errors import CalibrationError

DistortionModel = Literal['none', 'plumb_bob', 'rational_polynomial', 'equidistant']

# Coefficient counts per model, in ROS CameraInfo order (which is also OpenCV's order):
# plumb_bob k1 k2 p1 p2 [k3]; rational_polynomial k1 k2 p1 p2 k3 k4 k5 k6; equidistant k1..k4.
_NUM_COEFFS: dict[str, tuple[int, ...]] = {
    'none': (0,),
    'plumb_bob': (4, 5),
    'rational_polynomial': (8,),
    'equidistant': (4,),
}

# OpenCV's iterative undistortion stops after 5 iterations by default, which leaves errors of
# 1e-3 px and more near the corners of a wide lens; iterate to convergence instead.
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-14)
# Round-trip tolerance in pixels above which an undistorted point is declared invalid (NaN).
_UNDISTORT_CHECK_PX = 1e-3
# Plausible focal lengths, as multiples of the longer image side: 1e-3 is a field of view of
# 179.9 deg across it, 1e3 one of 0.06 deg. Values outside (a CameraInfo with fx = 1e-300 or
# 1e300) are corrupt, and would turn every normalised coordinate into inf or 0.
FOCAL_RANGE = (1e-3, 1e3)
# The principal point may lie off the image (a crop of a larger sensor), but within one image
# size of it: 0 < cx < 2 * width, 0 < cy < 2 * height.
PRINCIPAL_POINT_RANGE = 2.0


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.flags.writeable = False
    return a


def _as_size(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise CalibrationError(f'{name} must be a positive integer, got {value!r}')
    if value <= 0:
        raise CalibrationError(f'{name} must be a positive integer, got {value!r}')
    return int(value)


@dataclass(frozen=True, eq=False)
class CameraModel:
    """Intrinsics and lens distortion of one camera, as in a ROS CameraInfo message.

    Pixel convention (OpenCV and ROS): pixel (u, v) = (0, 0) is the *centre* of the top-left
    pixel, u to the right, v down. Camera frame: x right, y down, z forward (optical frame).

    width, height:    image size in pixels.
    K:                [3 x 3] float64 intrinsic matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]];
                      skew is not supported. fx and fy must lie within FOCAL_RANGE times the
                      longer image side, 0 < cx < 2 * width and 0 < cy < 2 * height.
    distortion_model: one of DistortionModel ('none' means an ideal pinhole).
    D:                distortion coefficients in ROS CameraInfo order (= OpenCV order):
                      plumb_bob k1 k2 p1 p2 [k3] (4 or 5), rational_polynomial k1 k2 p1 p2 k3 k4 k5
                      k6 (8), equidistant k1 k2 k3 k4 (4, OpenCV's fisheye model), none (0).
    Arrays are stored as read-only float64 copies; instances are immutable and unhashable.
    """

    width: int
    height: int
    K: np.ndarray
    distortion_model: str = 'none'
    D: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        object.__setattr__(self, 'width', _as_size(self.width, 'width'))
        object.__setattr__(self, 'height', _as_size(self.height, 'height'))
        try:
            K = np.array(self.K, dtype=np.float64)
            D = np.array(self.D, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as err:
            raise CalibrationError(f'K and D must be numeric arrays: {err}') from err
        if K.shape != (3, 3):
            raise CalibrationError(f'K must be 3x3, got shape {K.shape}')
        if not np.all(np.isfinite(K)):
            raise CalibrationError(f'K has non-finite entries: {K.tolist()}')
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        if fx <= 0.0 or fy <= 0.0:
            raise CalibrationError(f'focal length must be positive, got fx={fx}, fy={fy} '
                                   '(an all-zero K means the camera is not calibrated)')
        if cx <= 0.0 or cy <= 0.0:
            raise CalibrationError(f'principal point must be positive, got cx={cx}, cy={cy}')
        size = max(self.width, self.height)
        low, high = FOCAL_RANGE[0] * size, FOCAL_RANGE[1] * size
        if not (low <= fx <= high and low <= fy <= high):
            raise CalibrationError(
                f'focal length fx={fx:g}, fy={fy:g} is implausible for a {self.width}x'
                f'{self.height} image (expected {low:g} to {high:g} pixels)')
        bound = PRINCIPAL_POINT_RANGE
        if not (cx < bound * self.width and cy < bound * self.height):
            raise CalibrationError(
                f'principal point cx={cx:g}, cy={cy:g} is implausible for a {self.width}x'
                f'{self.height} image (expected 0 < cx < {bound * self.width:g}, '
                f'0 < cy < {bound * self.height:g})')
        if K[0, 1] != 0.0 or K[1, 0] != 0.0 or not np.array_equal(K[2], [0.0, 0.0, 1.0]):
            raise CalibrationError(
                f'K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (no skew), got {K.tolist()}')
        if self.distortion_model not in _NUM_COEFFS:
            raise CalibrationError(f'unknown distortion model {self.distortion_model!r}; '
                                   f'supported: {", ".join(get_args(DistortionModel))}')
        if D.size not in _NUM_COEFFS[self.distortion_model]:
            expected = ' or '.join(str(n) for n in _NUM_COEFFS[self.distortion_model])
            raise CalibrationError(f'distortion model {self.distortion_model!r} takes {expected} '
                                   f'coefficients, got {D.size}')
        if not np.all(np.isfinite(D)):
            raise CalibrationError(f'distortion coefficients must be finite, got {D.tolist()}')
        object.__setattr__(self, 'K', _readonly(K))
        object.__setattr__(self, 'D', _readonly(D))

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_intrinsics(cls, fx: float, fy: float, cx: float, cy: float, width: int, height: int,
                        *, distortion_model: str = 'none', D: Any = ()) -> CameraModel:
        """Build a camera from focal lengths and principal point in pixels."""
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)
        return cls(width, height, K, distortion_model, np.asarray(D, dtype=np.float64))

    @classmethod
    def from_yaml(cls, path: str | Path) -> CameraModel:
        """Read a ROS camera_calibration YAML file (image_width, camera_matrix, ...).

        The rectification and projection matrices are ignored: this is a monocular model of
        the raw image. A missing or empty distortion_model means 'none' when D is empty or
        all zero (plumb_bob with an all-zero D is kept as written; it undistorts as 'none').
        """
        path = Path(path)
        try:
            doc = yaml.safe_load(path.read_text(encoding='utf-8'))
        except OSError as err:
            raise CalibrationError(f'cannot read camera calibration {path}: {err}') from err
        except yaml.YAMLError as err:
            raise CalibrationError(f'{path} is not valid YAML: {err}') from err
        if not isinstance(doc, dict):
            raise CalibrationError(f'{path} is not a ROS camera_calibration YAML mapping')
        try:
            width = doc['image_width']
            height = doc['image_height']
            K = np.asarray(doc['camera_matrix']['data'], dtype=np.float64)
            D = np.asarray((doc.get('distortion_coefficients') or {}).get('data') or [],
                           dtype=np.float64)
        except (KeyError, TypeError, ValueError) as err:
            raise CalibrationError(f'{path} lacks or garbles a camera_calibration key: '
                                   f'{err!r}') from err
        if K.size != 9:
            raise CalibrationError(f'{path}: camera_matrix must have 9 values, got {K.size}')
        model = doc.get('distortion_model') or ''
        if not model:
            if np.any(D != 0.0):
                raise CalibrationError(f'{path}: distortion coefficients without a model')
            model, D = 'none', np.zeros(0)
        return cls(width, height, K.reshape(3, 3), model, D)

    # ---------------------------------------------------------------- properties

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def mean_focal(self) -> float:
        """(fx + fy) / 2 in pixels: converts pixel thresholds to normalised image units."""
        return 0.5 * (self.fx + self.fy)

    @property
    def is_distorted(self) -> bool:
        """False for 'none' and for any model whose coefficients are all zero."""
        return self.distortion_model != 'none' and bool(np.any(self.D != 0.0))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CameraModel):
            return NotImplemented
        return (self.width == other.width and self.height == other.height
                and self.distortion_model == other.distortion_model
                and np.array_equal(self.K, other.K) and np.array_equal(self.D, other.D))

    __hash__ = None  # type: ignore[assignment]  # arrays inside: equality, not identity

    def __repr__(self) -> str:
        return (f'CameraModel({self.width}x{self.height}, fx={self.fx:.6g}, fy={self.fy:.6g}, '
                f'cx={self.cx:.6g}, cy={self.cy:.6g}, {self.distortion_model}, '
                f'D={self.D.tolist()})')

    # ---------------------------------------------------------------- resizing

    def scaled(self, sx: float, sy: float) -> CameraModel:
        """The camera of this image resized by (sx, sy), e.g. sx = new_width / width.

        Uses the pixel-centre convention of cv2.resize: a continuous coordinate u maps to
        (u + 0.5) * sx - 0.5, so cx' = (cx + 0.5) * sx - 0.5 and fx' = fx * sx (not the
        corner convention cx' = cx * sx, which is off by (sx - 1) / 2 pixels). The new size
        is round(width * sx) x round(height * sy). Distortion coefficients act on normalised
        coordinates and do not change.
        """
        if not (math.isfinite(sx) and math.isfinite(sy) and sx > 0.0 and sy > 0.0):
            raise CalibrationError(f'scale factors must be positive and finite, got {sx}, {sy}')
        K = self.K.copy()
        K[0, 0] *= sx
        K[1, 1] *= sy
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        width = max(1, round(self.width * sx))
        height = max(1, round(self.height * sy))
        return CameraModel(width, height, K, self.distortion_model, self.D)

    # ---------------------------------------------------------------- point mapping

    def undistort_points(self, points_px: np.ndarray) -> np.ndarray:
        """Map [N x 2] pixels (u, v) of the raw image to [N x 2] float64 normalised image
        coordinates (x/z, y/z) of the ideal pinhole, distortion removed.

        Rows with NaN/inf come out as NaN. The inverse of the distortion is iterative
        (converged to about 1e-14) for every model but 'none' / all-zero D, which is K^-1;
        points where it fails to reproject within 1e-3 px (outside the region where the lens
        model is invertible) come out as NaN too.
        """
        pts = np.asarray(points_px, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f'points_px must be [N x 2], got shape {pts.shape}')
        if len(pts) == 0:
            return np.zeros((0, 2))
        finite = np.all(np.isfinite(pts), axis=1)
        if not self.is_distorted:
            x = (pts - [self.cx, self.cy]) / [self.fx, self.fy]
            x[~finite] = np.nan  # a row is valid or not as a whole
            return x
        out = np.full_like(pts, np.nan)
        src = np.ascontiguousarray(pts[finite]).reshape(-1, 1, 2)
        if len(src) == 0:
            return out
        if self.distortion_model == 'equidistant':
            dst = cv2.fisheye.undistortPoints(src, self.K, self.D, criteria=_UNDISTORT_CRITERIA)
        else:
            dst = cv2.undistortPoints(src, self.K, self.D, criteria=_UNDISTORT_CRITERIA)
        x = dst.reshape(-1, 2)
        # Where the lens model folds over (beyond the calibrated field of view) the iteration
        # converges to a wrong point or not at all; report NaN rather than a silent error.
        back = self.project(np.c_[x, np.ones(len(x))])
        bad = ~(np.linalg.norm(back - pts[finite], axis=1) <= _UNDISTORT_CHECK_PX)
        x[bad] = np.nan
        out[finite] = x
        return out

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Project [N x 3] points in the camera frame to [N x 2] float64 pixels, distortion
        applied. Points with z <= 0 (behind the camera) and non-finite rows give NaN."""
        X = np.asarray(points_cam, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != 3:
            raise ValueError(f'points_cam must be [N x 3], got shape {X.shape}')
        out = np.full((len(X), 2), np.nan)
        ok = np.all(np.isfinite(X), axis=1) & (X[:, 2] > 0.0)
        if not np.any(ok):
            return out
        Xo = np.ascontiguousarray(X[ok])
        if not self.is_distorted:
            out[ok] = Xo[:, :2] / Xo[:, 2:] * [self.fx, self.fy] + [self.cx, self.cy]
            return out
        zero = np.zeros(3)
        if self.distortion_model == 'equidistant':
            px, _ = cv2.fisheye.projectPoints(Xo.reshape(-1, 1, 3), zero, zero, self.K, self.D)
        else:
            px, _ = cv2.projectPoints(Xo, zero, zero, self.K, self.D)
        out[ok] = px.reshape(-1, 2)
        return out

"""sensor_msgs/CameraInfo <-> CameraModel, with the checks a calibration must pass."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from lightglue_ros.errors import CalibrationError

if TYPE_CHECKING:
    from lightglue_ros.camera import CameraModel


_DISTORTION_MODELS: dict[str, str] = {
    'plumb_bob': 'plumb_bob',
    'rational_polynomial': 'rational_polynomial',
    'equidistant': 'equidistant',
    # OpenCV's name for the same Kannala-Brandt model, used by some drivers.
    'fisheye': 'equidistant',
    'none': 'none',
    '': 'none',
}
# Most coefficients each model takes (CameraModel checks the exact count).
_MAX_COEFFS: dict[str, int] = {
    'none': 0, 'plumb_bob': 5, 'rational_polynomial': 8, 'equidistant': 4}


def camera_info_to_camera_model(msg: CameraInfo) -> CameraModel:
    """Build a CameraModel for the images that come with a sensor_msgs/CameraInfo.

    Uses K and D (P and R describe rectified images and are not needed). Distortion models:
    'plumb_bob', 'rational_polynomial', 'equidistant' (alias 'fisheye') are kept as written,
    as CameraModel.from_yaml does, so both routes give equal models; '' / 'none' need an empty
    or all-zero D and give 'none'. An empty D with plumb_bob / rational_polynomial means no
    distortion ('none'); with equidistant, four zeros. Trailing zeros beyond the model's
    coefficient count (drivers that always send 8 values) are dropped.
    A region of interest (in unbinned pixels) shifts the principal point and sets the size;
    binning then scales K with the pixel-centre convention of CameraModel.scaled, i.e.
    cx' = (cx + 0.5) / binning_x - 0.5 (image_geometry uses cx / binning_x, (b - 1) / 2b px off).
    Raises CalibrationError for an unknown distortion model, a wrong-sized K, or intrinsics
    CameraModel rejects (an uncalibrated camera publishes K = 0).
    """
    from lightglue_ros.camera import CameraModel  # here: keeps this module importable alone

    name = msg.distortion_model
    model = _DISTORTION_MODELS.get(name.strip().lower())
    if model is None:
        raise CalibrationError(
            f'unknown distortion model {name!r}; supported: plumb_bob, rational_polynomial, '
            'equidistant (or empty/none for no distortion)')
    K = np.asarray(msg.k, dtype=np.float64)
    if K.size != 9:
        raise CalibrationError(f'CameraInfo.k must have 9 elements, got {K.size}')
    K = K.reshape(3, 3).copy()
    D = np.asarray(msg.d, dtype=np.float64).reshape(-1).copy()
    if model == 'none' and np.any(D != 0.0):
        raise CalibrationError(
            f'distortion model {name!r} given with non-zero coefficients {D.tolist()}')
    max_coeffs = _MAX_COEFFS[model]
    if D.size > max_coeffs and not np.any(D[max_coeffs:] != 0.0):
        D = D[:max_coeffs]
    if D.size == 0 and model in ('plumb_bob', 'rational_polynomial'):
        model = 'none'
    elif D.size == 0 and model == 'equidistant':
        D = np.zeros(4)
    width, height = int(msg.width), int(msg.height)
    roi = msg.roi
    if roi.width > 0 and roi.height > 0:
        K[0, 2] -= roi.x_offset
        K[1, 2] -= roi.y_offset
        width, height = int(roi.width), int(roi.height)
    binning_x, binning_y = max(int(msg.binning_x), 1), max(int(msg.binning_y), 1)
    K[0, 0] /= binning_x
    K[1, 1] /= binning_y
    K[0, 2] = (K[0, 2] + 0.5) / binning_x - 0.5
    K[1, 2] = (K[1, 2] + 0.5) / binning_y - 0.5
    width, height = width // binning_x, height // binning_y
    try:
        return CameraModel(width=width, height=height, K=K, distortion_model=model, D=D)
    except CalibrationError as err:
        raise CalibrationError(
            f'invalid CameraInfo (frame {msg.header.frame_id!r}): {err}') from err


def camera_model_to_camera_info(camera: CameraModel, *, header: Header | None = None
                                ) -> CameraInfo:
    """The sensor_msgs/CameraInfo of a CameraModel, as a driver publishes it (no
    rectification: R = I, P = [K | 0]; 'none' as plumb_bob with zero coefficients), so that
    ``camera_info_to_camera_model`` gives the same camera back."""
    model = 'plumb_bob' if camera.distortion_model == 'none' else camera.distortion_model
    d = [0.0] * 5 if camera.distortion_model == 'none' else [float(v) for v in camera.D]
    K = np.asarray(camera.K, np.float64)
    P = np.zeros((3, 4))
    P[:, :3] = K
    return CameraInfo(header=header if header is not None else Header(), width=camera.width,
                      height=camera.height, distortion_model=model, d=d,
                      k=K.ravel().tolist(), r=np.eye(3).ravel().tolist(), p=P.ravel().tolist())

"""Conversions between ROS 2 messages and plain numpy data: images, camera info and outputs."""
from __future__ import annotations

import array
import logging
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point32, Pose, PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import (
    CameraInfo,
    ChannelFloat32,
    CompressedImage,
    Image,
    PointCloud,
    PointCloud2,
    PointField,
)
from std_msgs.msg import Header

from lightglue_ros.errors import CalibrationError, ImageTooLargeError, InvalidImageError

if TYPE_CHECKING:
    from lightglue_ros.camera import CameraModel

__all__ = [
    'SUPPORTED_ENCODINGS',
    'DEFAULT_MAX_IMAGE_PIXELS',
    'MATCH_FIELDS',
    'VINS_CHANNELS',
    'VINS_MONO_CHANNELS',
    'VINS_FUSION_CHANNELS',
    'VINS_LAYOUTS',
    'image_msg_to_array',
    'compressed_image_size',
    'compressed_msg_to_array',
    'array_to_image_msg',
    'camera_info_to_camera_model',
    'make_matches_cloud',
    'read_matches_cloud',
    'make_vins_features',
    'rotation_to_quaternion',
    'quaternion_to_rotation',
    'make_pose_with_covariance',
    'make_odometry',
    'make_diagnostic_array',
    'stamp_to_ns',
    'ns_to_stamp',
]

# ------------------------------------------------------------------------------------------------
# Images in.
#
# Canonical form of every image returned here: a new C-contiguous array that owns its memory
# (never a view into the message buffer, so the caller may modify it freely), either
#   (H, W)    uint8 or uint16   mono (16-bit data keeps its 16 bits, native byte order), or
#   (H, W, 3) uint8             RGB (16-bit colour is scaled to 8 bits: round(x / 257)).
# Alpha channels are dropped; Bayer and YUV 4:2:2 data are converted to RGB.
# ------------------------------------------------------------------------------------------------

# encoding -> (channels, bytes per channel, what to do with the raw (H, W[, C]) array)
_ENCODINGS: dict[str, tuple[int, int, str]] = {
    'mono8': (1, 1, 'mono'),
    '8UC1': (1, 1, 'mono'),
    'mono16': (1, 2, 'mono'),
    '16UC1': (1, 2, 'mono'),
    'rgb8': (3, 1, 'rgb'),
    'bgr8': (3, 1, 'bgr'),
    # cv_bridge also treats 8UC3 / 8UC4 as BGR(A), which is what OpenCV-based drivers publish.
    '8UC3': (3, 1, 'bgr'),
    'rgba8': (4, 1, 'rgba'),
    'bgra8': (4, 1, 'bgra'),
    '8UC4': (4, 1, 'bgra'),
    'rgb16': (3, 2, 'rgb'),
    'bgr16': (3, 2, 'bgr'),
    '16UC3': (3, 2, 'bgr'),
    'rgba16': (4, 2, 'rgba'),
    'bgra16': (4, 2, 'bgra'),
    'bayer_rggb8': (1, 1, 'bayer'),
    'bayer_bggr8': (1, 1, 'bayer'),
    'bayer_gbrg8': (1, 1, 'bayer'),
    'bayer_grbg8': (1, 1, 'bayer'),
    'bayer_rggb16': (1, 2, 'bayer'),
    'bayer_bggr16': (1, 2, 'bayer'),
    'bayer_gbrg16': (1, 2, 'bayer'),
    'bayer_grbg16': (1, 2, 'bayer'),
    # Packed YUV 4:2:2, two bytes per pixel; 'yuv422' is UYVY in sensor_msgs/image_encodings.
    'yuv422': (2, 1, 'uyvy'),
    'uyvy': (2, 1, 'uyvy'),
    'yuv422_yuy2': (2, 1, 'yuyv'),
    'yuyv': (2, 1, 'yuyv'),
}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)

# Most pixels (width * height) an image may have; a larger one is refused before anything is
# allocated for it (a 335-byte JPEG can claim 20000 x 20000 pixels: 1.2 GB once decoded).
# 4096 x 4096 covers 16-megapixel cameras; the node's max_image_pixels parameter changes it.
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096

logger = logging.getLogger(__name__)

# ROS names a Bayer pattern by its top-left 2x2 block read row-wise (bayer_rggb8: R at (0, 0),
# B at (1, 1)), OpenCV by the 2x2 block starting at (1, 1), so every name is shifted:
# ROS rggb == OpenCV BG. The classic names are used because the correctly named aliases
# (COLOR_BayerRGGB2RGB, ...) only exist in recent OpenCV releases.
_BAYER_TO_RGB: dict[str, int] = {
    'rggb': cv2.COLOR_BayerBG2RGB,
    'bggr': cv2.COLOR_BayerRG2RGB,
    'gbrg': cv2.COLOR_BayerGR2RGB,
    'grbg': cv2.COLOR_BayerGB2RGB,
}

_YUV_TO_RGB: dict[str, int] = {
    'uyvy': cv2.COLOR_YUV2RGB_UYVY,
    'yuyv': cv2.COLOR_YUV2RGB_YUY2,
}


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Scale 16-bit data to 8 bits so that 0 -> 0 and 65535 -> 255 (a new array either way)."""
    if image.dtype == np.uint8:
        return image
    # (x + 128) // 257 is round(x / 257) in integers, exact and without a float temporary.
    return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _convert_raw(raw: np.ndarray, kind: str, encoding: str) -> np.ndarray:
    """Turn raw pixels (possibly a view into a message) into a new canonical array."""
    if kind == 'mono':
        return np.array(raw, order='C', copy=True)
    if kind == 'rgb':
        return _to_uint8(np.array(raw, order='C', copy=True))
    if kind == 'bayer':
        pattern = encoding.split('_')[1][:4]
        return _to_uint8(cv2.cvtColor(np.ascontiguousarray(raw), _BAYER_TO_RGB[pattern]))
    if kind in _YUV_TO_RGB:
        return cv2.cvtColor(np.ascontiguousarray(raw), _YUV_TO_RGB[kind])
    code = {'bgr': cv2.COLOR_BGR2RGB, 'rgba': cv2.COLOR_RGBA2RGB,
            'bgra': cv2.COLOR_BGRA2RGB}[kind]
    return _to_uint8(cv2.cvtColor(np.ascontiguousarray(raw), code))


def _check_pixels(width: int, height: int, max_pixels: int | None, what: str) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f'{what} of {width}x{height} = {width * height} pixels is larger than '
            f'max_image_pixels = {max_pixels}; refused before decoding')


def image_msg_to_array(msg: Image, *, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
                       ) -> np.ndarray:
    """Return the pixels of a sensor_msgs/Image in the canonical form (see module comment).

    Honours `step` (row padding is skipped) and `is_bigendian` (for 16-bit data). The result
    is always a fresh array: later changes to `msg.data` do not affect it and vice versa.
    Raises InvalidImageError for an unknown encoding, an empty image, a `step` shorter than a
    row of pixels, or `data` shorter than `step * height`; ImageTooLargeError (before any
    conversion) for more than `max_pixels` pixels (None: no limit).
    """
    encoding = msg.encoding
    if encoding not in _ENCODINGS:
        raise InvalidImageError(
            f'unsupported image encoding {encoding!r}; supported encodings: '
            f'{", ".join(SUPPORTED_ENCODINGS)}')
    channels, depth, kind = _ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise InvalidImageError(f'empty image: {width}x{height} pixels ({encoding})')
    _check_pixels(width, height, max_pixels, f'{encoding} image')
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise InvalidImageError(
            f'step {step} is smaller than one row of {width} {encoding} pixels '
            f'({row_bytes} bytes)')
    if kind in _YUV_TO_RGB and width % 2:
        raise InvalidImageError(f'{encoding} needs an even width, got {width}')
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    if buffer.size < step * height:
        raise InvalidImageError(
            f'truncated image data: {buffer.size} bytes, expected step * height = '
            f'{step} * {height} = {step * height}')
    rows = buffer[:step * height].reshape(height, step)[:, :row_bytes]
    if depth == 2:
        # Pack the rows first: a padded or odd step leaves 16-bit samples misaligned.
        dtype = np.dtype('>u2' if msg.is_bigendian else '<u2')
        raw = np.ascontiguousarray(rows).view(dtype).astype(np.uint16)
    else:
        raw = rows
    shape = (height, width) if channels == 1 else (height, width, channels)
    return _convert_raw(raw.reshape(shape), kind, encoding)


_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# JPEG markers without a length field: TEM, RST0-7, SOI.
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8), 0xD8])
# Start-of-frame markers (SOF0-SOF15 less DHT, JPG, DAC): they hold the image size.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first start-of-frame segment, None if there is none before
    the scan or the end of the data. Segments are skipped by their length, so EXIF
    thumbnails (inside APP1) are never mistaken for the image."""
    i, n = 2, len(data)
    while i + 1 < n:
        if data[i] != 0xFF:
            return None  # not at a marker: damaged
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            return None
        marker = data[i]
        i += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA) or i + 2 > n:  # EOI or start of scan before any frame
            return None
        length = int.from_bytes(data[i:i + 2], 'big')
        if marker in _JPEG_SOF:
            if length < 7 or i + 7 > n:
                return None
            height = int.from_bytes(data[i + 3:i + 5], 'big')
            width = int.from_bytes(data[i + 5:i + 7], 'big')
            return width, height
        if length < 2:
            return None
        i += length
    return None


def compressed_image_size(data: bytes) -> tuple[int, int]:
    """(width, height) that a JPEG or PNG stream's header declares, read without decoding.

    JPEG: the first start-of-frame segment; PNG: the IHDR chunk. Raises InvalidImageError when
    the data is neither, or its header is missing, truncated or declares a zero size (JPEG's
    height 0, 'defined later by a DNL marker', is not supported by libjpeg either).
    """
    size: tuple[int, int] | None = None
    if data[:2] == b'\xff\xd8':
        size, kind = _jpeg_size(data), 'JPEG'
    elif data[:8] == _PNG_SIGNATURE:
        kind = 'PNG'
        if len(data) >= 24 and data[12:16] == b'IHDR':
            size = (int.from_bytes(data[16:20], 'big'), int.from_bytes(data[20:24], 'big'))
    else:
        raise InvalidImageError('not a JPEG or PNG stream (the compressed formats that '
                                'image_transport writes)')
    if size is None:
        raise InvalidImageError(f'no {kind} image header (truncated or damaged data)')
    if size[0] == 0 or size[1] == 0:
        raise InvalidImageError(f'{kind} header declares an empty {size[0]}x{size[1]} image')
    return size


# libjpeg and libpng print their warnings straight to the process's stderr (file descriptor 2),
# bypassing every logger; these are the beginnings of what they (and OpenCV's imgcodecs) print.
_DECODER_PREFIXES = (
    'Corrupt JPEG data', 'Premature end of JPEG file', 'Invalid SOS parameters',
    'Inconsistent progression sequence', 'Application transferred too many scanlines',
    'Unknown Adobe color transform code', 'Warning: unknown JFIF revision',
    'Warning: thumbnail image size', 'JPEG datastream contains no image', 'Bogus ',
    'libpng warning', 'libpng error', '[ WARN:', '[ERROR:', '[ INFO:')
_stderr_lock = threading.Lock()
_capture_file: list[IO[bytes]] = []  # one temporary file, made on first use, reused


@contextmanager
def _native_stderr_captured() -> Iterator[list[str]]:
    """Redirect file descriptor 2 to a temporary file for the block; the decoder's lines end
    up in the yielded list. Lines that other threads wrote meanwhile (log output) are written
    back to stderr afterwards: delayed by the decode at most, never lost. Without a usable
    descriptor 2 or temporary file the block runs uncaptured."""
    lines: list[str] = []
    with _stderr_lock:
        try:
            if not _capture_file:
                _capture_file.append(tempfile.TemporaryFile())
            saved = os.dup(2)
        except OSError:  # no temporary directory, or no stderr at all
            yield lines
            return
        try:
            capture = _capture_file[0]
            os.dup2(capture.fileno(), 2)
            try:
                yield lines
            finally:
                os.dup2(saved, 2)
                capture.seek(0)
                text = capture.read().decode('utf-8', 'replace')
                capture.seek(0)
                capture.truncate()
                others = []
                for line in text.splitlines():
                    (lines if line.startswith(_DECODER_PREFIXES) else others).append(line)
                if others:
                    os.write(2, ('\n'.join(others) + '\n').encode())
        finally:
            os.close(saved)


def _decode(buffer: np.ndarray) -> tuple[np.ndarray | None, list[str]]:
    """cv2.imdecode with the decoder's stderr messages returned instead of printed."""
    with _native_stderr_captured() as messages:
        try:
            image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
        except cv2.error as err:
            messages.append(str(err).strip().splitlines()[-1])
            image = None
    return image, messages


def compressed_msg_to_array(msg: CompressedImage, *,
                            max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
                            on_warning: Callable[[str], None] | None = None) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (JPEG or PNG) to the canonical form.

    Decoding keeps the stored depth (a 16-bit PNG stays uint16 mono). image_transport stores
    colour as BGR, which is turned into RGB; a single-channel image whose `format` says it
    was Bayer (e.g. 'bayer_rggb8; png compressed mono8') is demosaiced.
    The size the header declares is checked before decoding: more than `max_pixels` pixels
    (None: no limit) raises ImageTooLargeError and nothing is allocated. libjpeg/libpng
    messages never reach stderr: for undecodable data they end the error's text; warnings
    about an image that still decoded (libjpeg's 'Corrupt JPEG data: 50 extraneous bytes
    before marker 0xc4') go to `on_warning` (default: this module's logger, at debug level).
    Raises InvalidImageError for empty, non-JPEG/PNG or undecodable data and for
    compressedDepth images.
    """
    fmt = msg.format or ''
    if 'compresseddepth' in fmt.lower():
        raise InvalidImageError(f'compressedDepth images are not supported (format {fmt!r})')
    data = bytes(msg.data)
    if not data:
        raise InvalidImageError(f'empty compressed image (format {fmt!r})')
    what = f'compressed image (format {fmt!r}, {len(data)} bytes)'
    try:
        width, height = compressed_image_size(data)
    except InvalidImageError as err:
        raise InvalidImageError(f'cannot decode {what}: {err}') from err
    _check_pixels(width, height, max_pixels, what)
    image, messages = _decode(np.frombuffer(data, dtype=np.uint8))
    if image is None or image.size == 0:
        detail = f': {"; ".join(messages)}' if messages else ''
        raise InvalidImageError(f'cannot decode {what}{detail}')
    for message in messages:
        (on_warning or logger.debug)(message)
    if image.dtype not in (np.uint8, np.uint16):
        raise InvalidImageError(f'decoded image has unsupported dtype {image.dtype}')
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        original = fmt.split(';')[0].strip()
        if _ENCODINGS.get(original, (0, 0, ''))[2] == 'bayer':
            return _convert_raw(image, 'bayer', original)
        return np.ascontiguousarray(image)
    if image.shape[2] == 3:
        return _to_uint8(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    if image.shape[2] == 4:
        return _to_uint8(cv2.cvtColor(image, cv2.COLOR_BGRA2RGB))
    raise InvalidImageError(f'decoded image has unsupported shape {image.shape}')


def _copy_header(header: Header | None) -> Header:
    # A copy, so that messages built from one header never alias each other's stamp.
    if header is None:
        return Header()
    return Header(stamp=Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec),
                  frame_id=header.frame_id)


def array_to_image_msg(array_: np.ndarray, *, header: Header | None = None,
                       encoding: str | None = None) -> Image:
    """Build a sensor_msgs/Image from a canonical array.

    (H, W) uint8 -> 'mono8', (H, W) uint16 -> 'mono16', (H, W, 3) uint8 (RGB) -> 'rgb8';
    `encoding='bgr8'` stores an RGB array as BGR bytes, so that image_msg_to_array gives the
    same RGB array back. (H, W, 1) is treated as (H, W). Data is written little-endian with no
    row padding. Raises InvalidImageError for other shapes/dtypes or a mismatched encoding.
    """
    image = np.asarray(array_)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2 and image.dtype == np.uint8:
        natural, allowed = 'mono8', ('mono8', '8UC1')
    elif image.ndim == 2 and image.dtype == np.uint16:
        natural, allowed = 'mono16', ('mono16', '16UC1')
    elif image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        natural, allowed = 'rgb8', ('rgb8', 'bgr8')
    else:
        raise InvalidImageError(
            f'cannot publish an array of shape {image.shape} and dtype {image.dtype}; expected '
            '(H, W) uint8/uint16 or (H, W, 3) uint8 RGB')
    encoding = natural if encoding is None else encoding
    if encoding not in allowed:
        raise InvalidImageError(
            f'encoding {encoding!r} does not fit an array of shape {image.shape} and dtype '
            f'{image.dtype}; use one of {", ".join(allowed)}')
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidImageError(f'empty image of shape {image.shape}')
    if encoding == 'bgr8':
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    data = np.ascontiguousarray(image, dtype=image.dtype.newbyteorder('<'))
    msg = Image()
    msg.header = _copy_header(header)
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(data.strides[0])
    msg.data = data.tobytes()
    return msg


# ------------------------------------------------------------------------------------------------
# Camera info in.
# ------------------------------------------------------------------------------------------------

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


# ------------------------------------------------------------------------------------------------
# Messages out.
# ------------------------------------------------------------------------------------------------

# Layout of the matches cloud: field -> dtype; offsets follow in this order, padded to 32 bytes.
MATCH_FIELDS: tuple[tuple[str, str], ...] = (
    ('u', '<f4'),         # current image, pixels
    ('v', '<f4'),
    ('kf_u', '<f4'),      # matched keypoint in the keyframe, pixels
    ('kf_v', '<f4'),
    ('score', '<f4'),     # match confidence
    ('track_id', '<i4'),
    ('kf_index', '<i4'),  # which keyframe the match is against
    ('inlier', 'u1'),     # 1 if geometric verification kept it
)
_MATCH_DTYPE = np.dtype({
    'names': [name for name, _ in MATCH_FIELDS],
    'formats': [fmt for _, fmt in MATCH_FIELDS],
    'offsets': [0, 4, 8, 12, 16, 20, 24, 28],
    # Padded to a multiple of 4 so that every point starts aligned for readers that cast.
    'itemsize': 32,
})

_POINTFIELD_TYPES: dict[int, str] = {
    PointField.INT8: 'i1', PointField.UINT8: 'u1',
    PointField.INT16: 'i2', PointField.UINT16: 'u2',
    PointField.INT32: 'i4', PointField.UINT32: 'u4',
    PointField.FLOAT32: 'f4', PointField.FLOAT64: 'f8',
}
_NUMPY_TO_POINTFIELD: dict[str, int] = {v: k for k, v in _POINTFIELD_TYPES.items()}


def _column(name: str, values: object, dtype: str, n: int | None) -> np.ndarray:
    column = np.asarray(values)
    if column.ndim != 1:
        raise ValueError(f'{name} must be one-dimensional, got shape {column.shape}')
    if n is not None and column.shape[0] != n:
        raise ValueError(f'{name} has {column.shape[0]} entries, expected {n}')
    if np.dtype(dtype).kind == 'i' and column.size:
        if column.dtype.kind not in 'iub':
            raise ValueError(f'{name} must be integer, got dtype {column.dtype}')
        info = np.iinfo(dtype)
        if column.min() < info.min or column.max() > info.max:
            raise ValueError(f'{name} does not fit {np.dtype(dtype)}')
    return column


def make_matches_cloud(header: Header, *, u_cur: np.ndarray, v_cur: np.ndarray,
                       u_kf: np.ndarray, v_kf: np.ndarray, score: np.ndarray,
                       track_id: np.ndarray, kf_index: np.ndarray | int,
                       inlier: np.ndarray) -> PointCloud2:
    """Pack N matches into an unordered (height 1, width N) little-endian PointCloud2.

    Fields (see MATCH_FIELDS): u, v, kf_u, kf_v, score (float32), track_id, kf_index (int32),
    inlier (uint8 0/1). `kf_index` may be a single int for all matches. is_dense is True
    unless a float field holds NaN/inf. Raises ValueError for mismatched lengths or ints
    that do not fit int32.
    """
    u = _column('u_cur', u_cur, '<f4', None)
    n = u.shape[0]
    if np.ndim(kf_index) == 0:
        kf_index = np.full(n, int(kf_index), dtype=np.int64)
    columns = {
        'u': u,
        'v': _column('v_cur', v_cur, '<f4', n),
        'kf_u': _column('u_kf', u_kf, '<f4', n),
        'kf_v': _column('v_kf', v_kf, '<f4', n),
        'score': _column('score', score, '<f4', n),
        'track_id': _column('track_id', track_id, '<i4', n),
        'kf_index': _column('kf_index', kf_index, '<i4', n),
        'inlier': _column('inlier', inlier, 'u1', n) != 0,
    }
    points = np.zeros(n, dtype=_MATCH_DTYPE)
    for name, column in columns.items():
        points[name] = column
    msg = PointCloud2()
    msg.header = _copy_header(header)
    msg.height, msg.width = 1, n
    msg.fields = [
        PointField(name=name, offset=_MATCH_DTYPE.fields[name][1],
                   datatype=_NUMPY_TO_POINTFIELD[np.dtype(fmt).str[1:]], count=1)
        for name, fmt in MATCH_FIELDS]
    msg.is_bigendian = False
    msg.point_step = _MATCH_DTYPE.itemsize
    msg.row_step = _MATCH_DTYPE.itemsize * n
    msg.is_dense = bool(all(np.all(np.isfinite(points[name]))
                            for name in ('u', 'v', 'kf_u', 'kf_v', 'score')))
    msg.data = points.tobytes()
    return msg


def read_matches_cloud(msg: PointCloud2) -> dict[str, np.ndarray]:
    """Read every field of a PointCloud2 into {name: array of shape (height * width,)}.

    Works for any cloud with the standard PointField types (not only make_matches_cloud's
    layout); honours point_step, row_step padding and is_bigendian. A field with count > 1
    becomes shape (N, count). Arrays are native-endian copies. Raises ValueError for a
    malformed cloud.
    """
    endian = '>' if msg.is_bigendian else '<'
    names, formats, offsets = [], [], []
    for field in msg.fields:
        if field.datatype not in _POINTFIELD_TYPES:
            raise ValueError(f'field {field.name!r} has unknown datatype {field.datatype}')
        base = np.dtype(endian + _POINTFIELD_TYPES[field.datatype])
        count = max(int(field.count), 1)
        if field.offset + base.itemsize * count > msg.point_step:
            raise ValueError(f'field {field.name!r} does not fit point_step {msg.point_step}')
        names.append(field.name)
        formats.append(base if count == 1 else (base, (count,)))
        offsets.append(int(field.offset))
    height, width = int(msg.height), int(msg.width)
    if height * width == 0:
        return {name: np.zeros((0,) + np.dtype(fmt).shape, np.dtype(fmt).base.newbyteorder('='))
                for name, fmt in zip(names, formats)}
    row_bytes = width * int(msg.point_step)
    if msg.row_step < row_bytes:
        raise ValueError(f'row_step {msg.row_step} < width * point_step = {row_bytes}')
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    if buffer.size < msg.row_step * height:
        raise ValueError(f'truncated cloud: {buffer.size} bytes, expected '
                         f'{msg.row_step * height}')
    rows = buffer[:msg.row_step * height].reshape(height, msg.row_step)[:, :row_bytes]
    dtype = np.dtype({'names': names, 'formats': formats, 'offsets': offsets,
                      'itemsize': int(msg.point_step)})
    points = np.ascontiguousarray(rows).view(dtype).reshape(-1)
    return {name: points[name].astype(points[name].dtype.base.newbyteorder('='))
            for name in names}


# Channel layouts of ~/features, read by index by the two estimators (docs/node.md cites the
# code). VINS-Mono (vins_estimator/src/estimator_node.cpp, process()): channels[0] = id
# (feature_id * NUM_OF_CAM + camera_id), [1] u, [2] v, [3] velocity_x, [4] velocity_y; the
# names are those of its feature_tracker_node.cpp. VINS-Fusion (vins_estimator/src/
# rosNodeTest.cpp, feature_callback()): [0] feature_id, [1] camera_id, [2] u, [3] v,
# [4] velocity_x, [5] velocity_y and, because it then has more than 5 channels, [6..8] a
# ground-truth point (gx, gy, gz) it keeps for debugging only (pts_gt): written as zeros.
VINS_MONO_CHANNELS: tuple[str, ...] = (
    'id_of_point', 'u_of_point', 'v_of_point', 'velocity_x', 'velocity_y')
VINS_FUSION_CHANNELS: tuple[str, ...] = (
    'feature_id', 'camera_id', 'u_of_point', 'v_of_point', 'velocity_x', 'velocity_y',
    'gt_x', 'gt_y', 'gt_z')
VINS_LAYOUTS: dict[str, tuple[str, ...]] = {
    'vins_mono': VINS_MONO_CHANNELS, 'vins_fusion': VINS_FUSION_CHANNELS}
VINS_CHANNELS = VINS_MONO_CHANNELS  # the default layout

# Float32 represents every integer below 2**24 exactly; larger ids would silently merge.
_VINS_MAX_ID = 1 << 24


def make_vins_features(header: Header, *, track_id: np.ndarray, x_norm: np.ndarray,
                       y_norm: np.ndarray, u: np.ndarray, v: np.ndarray,
                       velocity_x: np.ndarray, velocity_y: np.ndarray,
                       layout: str = 'vins_mono', camera_id: int = 0) -> PointCloud:
    """Build the sensor_msgs/PointCloud of external features that VINS reads.

    points[i] = (x_norm, y_norm, 1): undistorted normalised coordinates. Channels in the order
    of ``VINS_LAYOUTS[layout]``: 'vins_mono' (5 channels, what VINS-Mono's feature_tracker
    publishes): id, u and v (pixels), velocity_x and velocity_y (normalised coordinates per
    second); VINS-Mono decodes id as feature_id * NUM_OF_CAM + camera_id, so pass such ids
    for a multi-camera setup. 'vins_fusion' (9 channels): id, camera_id, u, v, velocity_x,
    velocity_y, then three zeros for the ground-truth point VINS-Fusion reads whenever there
    are more than 5 channels. Ids are taken modulo 2**24 to stay exact in float32; VINS only
    associates ids within its sliding window, where a wrap cannot collide.
    Raises ValueError for mismatched lengths, negative ids or an unknown layout.
    """
    if layout not in VINS_LAYOUTS:
        raise ValueError(f'unknown features layout {layout!r}; one of: '
                         f'{", ".join(VINS_LAYOUTS)}')
    ids = _column('track_id', track_id, '<i8', None)
    n = ids.shape[0]
    if n and ids.min() < 0:
        raise ValueError('track_id must be non-negative')
    x = _column('x_norm', x_norm, '<f4', n).astype(np.float64)
    y = _column('y_norm', y_norm, '<f4', n).astype(np.float64)
    ids = ids % _VINS_MAX_ID
    pixels_and_velocity = [
        _column('u', u, '<f4', n),
        _column('v', v, '<f4', n),
        _column('velocity_x', velocity_x, '<f4', n),
        _column('velocity_y', velocity_y, '<f4', n),
    ]
    if layout == 'vins_mono':
        values = [ids, *pixels_and_velocity]
    else:
        zeros = np.zeros(n, np.float32)
        values = [ids, np.full(n, camera_id, np.float32), *pixels_and_velocity,
                  zeros, zeros, zeros]
    msg = PointCloud()
    msg.header = _copy_header(header)
    msg.points = [Point32(x=px, y=py, z=1.0) for px, py in zip(x.tolist(), y.tolist())]
    channels = []
    for name, column in zip(VINS_LAYOUTS[layout], values):
        # array('f') built from raw float32 bytes avoids a Python float per value.
        channels.append(ChannelFloat32(
            name=name, values=array.array('f', column.astype(np.float32).tobytes())))
    msg.channels = channels
    return msg


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


def _covariance_6x6(covariance: np.ndarray | None) -> np.ndarray:
    # ROS has no 'unknown' flag for a pose covariance; by the convention that sensor_msgs/Imu
    # documents (and REP-145 follows) covariance[0] = -1 marks it unknown, the rest stays 0.
    if covariance is None:
        flat = np.zeros(36)
        flat[0] = -1.0
        return flat
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.shape != (6, 6):
        raise ValueError(f'covariance must be 6x6, got shape {cov.shape}')
    if not np.all(np.isfinite(cov)):
        raise ValueError('covariance holds NaN or inf')
    return cov.reshape(36).copy()


def _set_pose(pose: Pose, R: np.ndarray, t: np.ndarray) -> None:
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    if t.shape != (3,) or not np.all(np.isfinite(t)):
        raise ValueError(f't must be a finite 3-vector, got {t.tolist()}')
    qx, qy, qz, qw = rotation_to_quaternion(R).tolist()
    pose.position.x, pose.position.y, pose.position.z = t.tolist()
    pose.orientation.x, pose.orientation.y = qx, qy
    pose.orientation.z, pose.orientation.w = qz, qw


def make_pose_with_covariance(header: Header, *, R: np.ndarray, t: np.ndarray,
                              covariance: np.ndarray | None) -> PoseWithCovarianceStamped:
    """Pose (R, t) expressed in header.frame_id, with a 6x6 covariance.

    The covariance is in ROS order (x, y, z, rotation about x, y, z), row-major. None marks
    it unknown: covariance[0] = -1 and all else 0 (the sensor_msgs/Imu convention).
    """
    msg = PoseWithCovarianceStamped()
    msg.header = _copy_header(header)
    _set_pose(msg.pose.pose, R, t)
    msg.pose.covariance = _covariance_6x6(covariance)
    return msg


def make_odometry(header: Header, child_frame_id: str, *, R: np.ndarray, t: np.ndarray,
                  covariance: np.ndarray | None) -> Odometry:
    """Odometry: the pose of child_frame_id in header.frame_id, covariance as in
    make_pose_with_covariance. The twist is not estimated: zero, with covariance unknown."""
    msg = Odometry()
    msg.header = _copy_header(header)
    msg.child_frame_id = child_frame_id
    _set_pose(msg.pose.pose, R, t)
    msg.pose.covariance = _covariance_6x6(covariance)
    msg.twist.covariance = _covariance_6x6(None)
    return msg


def _format_value(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return f'{float(value):.6g}'
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def make_diagnostic_array(stamp: Time | int, *, name: str, hardware_id: str, level: int | bytes,
                          message: str, values: Mapping[str, object]) -> DiagnosticArray:
    """A DiagnosticArray with one status. `level` is 0 OK, 1 WARN, 2 ERROR, 3 STALE (an int or
    DiagnosticStatus' byte constants); `stamp` a builtin_interfaces/Time or nanoseconds.
    Values are stringified, floats with 6 significant digits."""
    level_int = level[0] if isinstance(level, (bytes, bytearray)) and len(level) == 1 \
        else int(level)
    if level_int not in (0, 1, 2, 3):
        raise ValueError(f'diagnostic level must be 0..3, got {level!r}')
    msg = DiagnosticArray()
    msg.header.stamp = ns_to_stamp(stamp) if isinstance(stamp, int) else \
        Time(sec=stamp.sec, nanosec=stamp.nanosec)
    msg.status = [DiagnosticStatus(
        level=bytes([level_int]), name=name, message=message, hardware_id=hardware_id,
        values=[KeyValue(key=str(key), value=_format_value(value))
                for key, value in values.items()])]
    return msg


def stamp_to_ns(stamp: Time) -> int:
    """Nanoseconds of a builtin_interfaces/Time (or anything with .nanoseconds, e.g. an
    rclpy Time)."""
    if hasattr(stamp, 'sec') and hasattr(stamp, 'nanosec'):
        return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    return int(stamp.nanoseconds)


def ns_to_stamp(ns: int) -> Time:
    """builtin_interfaces/Time of a nanosecond count; nanosec is always in [0, 1e9), so a
    negative time has a negative sec (the ROS convention). Raises ValueError outside int32
    seconds."""
    sec, nanosec = divmod(int(ns), 1_000_000_000)
    if not -(1 << 31) <= sec < (1 << 31):
        raise ValueError(f'{ns} ns does not fit builtin_interfaces/Time')
    return Time(sec=sec, nanosec=nanosec)

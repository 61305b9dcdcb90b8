"""sensor_msgs/Image and CompressedImage <-> numpy images (every encoding, size caps)."""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from lightglue_ros.errors import ImageTooLargeError, InvalidImageError
from lightglue_ros.ros.messages import copy_header

# ------------------------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class JpegFrameHeader:
    """What the start-of-frame segment declares, and libjpeg's complaints on the way to it."""

    width: int
    height: int
    # (bytes skipped, marker) for each marker that junk preceded, as libjpeg reports them:
    # 'Corrupt JPEG data: 50 extraneous bytes before marker 0xc0'.
    extraneous: tuple[tuple[int, int], ...] = ()


def _next_jpeg_marker(data: bytes, i: int) -> tuple[int, int, int] | None:
    """(marker, offset after it, bytes discarded before it) of the first marker at or after
    ``i``, found the way libjpeg's next_marker does: everything up to the next 0xFF is skipped
    (counted as extraneous), then the 0xFF fill bytes; 0xFF 0x00 (a stuffed zero, no marker)
    is discarded and counted as well. None when the data ends first."""
    n, discarded = len(data), 0
    while True:
        found = data.find(0xFF, i)
        if found < 0:
            return None
        discarded += found - i
        i = found
        while i < n and data[i] == 0xFF:
            i += 1
        if i >= n:
            return None
        if data[i] != 0x00:
            return data[i], i + 1, discarded
        discarded += 2
        i += 1


def jpeg_frame_header(data: bytes) -> JpegFrameHeader | None:
    """The first start-of-frame segment of a JPEG stream (after its SOI), None when the scan or
    the end of the data comes before one.

    Markers are found as libjpeg finds them (``_next_jpeg_marker``: junk and fill bytes before
    a marker are skipped, which makes libjpeg warn but still decode), and segments are skipped
    by their length, so EXIF thumbnails (inside APP1) are never mistaken for the image.
    """
    i, extraneous = 2, []
    while True:
        found = _next_jpeg_marker(data, i)
        if found is None:
            return None
        marker, i, discarded = found
        if discarded:
            extraneous.append((discarded, marker))
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA) or i + 2 > len(data):  # EOI or start of scan before a frame
            return None
        length = int.from_bytes(data[i:i + 2], 'big')
        if marker in _JPEG_SOF:
            if length < 7 or i + 7 > len(data):
                return None
            height = int.from_bytes(data[i + 3:i + 5], 'big')
            width = int.from_bytes(data[i + 5:i + 7], 'big')
            return JpegFrameHeader(width, height, tuple(extraneous))
        if length < 2:
            return None
        i += length


def compressed_image_size(data: bytes) -> tuple[int, int]:
    """(width, height) that a JPEG or PNG stream's header declares, read without decoding.

    JPEG: the first start-of-frame segment, found as libjpeg finds it (``jpeg_frame_header``);
    PNG: the IHDR chunk. Raises InvalidImageError when
    the data is neither, or its header is missing, truncated or declares a zero size (JPEG's
    height 0, 'defined later by a DNL marker', is not supported by libjpeg either).
    """
    size: tuple[int, int] | None = None
    if data[:2] == b'\xff\xd8':
        kind = 'JPEG'
        frame = jpeg_frame_header(data)
        if frame is not None:
            size = (frame.width, frame.height)
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


def message_to_array(msg: Image | CompressedImage, *,
                     max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
                     on_warning: Callable[[str], None] | None = None) -> np.ndarray:
    """The pixels of an Image (``image_msg_to_array``) or a CompressedImage
    (``compressed_msg_to_array``, which alone reports decoder warnings to ``on_warning``), in
    the canonical form. Raises InvalidImageError (ImageTooLargeError above ``max_pixels``)."""
    if isinstance(msg, CompressedImage):
        return compressed_msg_to_array(msg, max_pixels=max_pixels, on_warning=on_warning)
    return image_msg_to_array(msg, max_pixels=max_pixels)


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
    msg.header = copy_header(header)
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(data.strides[0])
    msg.data = data.tobytes()
    return msg

"""Tests of the message conversions: lightglue_ros.ros.images, camera_info and messages."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip('sensor_msgs.msg')

from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from sensor_msgs.msg import (  # noqa: E402
    CameraInfo, CompressedImage, Image, PointCloud2, PointField)
from std_msgs.msg import Header  # noqa: E402

from lightglue_ros.errors import (  # noqa: E402
    CalibrationError, ImageTooLargeError, InvalidImageError)
from lightglue_ros import geometry  # noqa: E402
from lightglue_ros.ros import camera_info, images, messages  # noqa: E402

RNG = np.random.default_rng(1234)
H, W = 6, 10


def _rgb(h: int = H, w: int = W) -> np.ndarray:
    return RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _msg(data: bytes, encoding: str, width: int, height: int, step: int,
         big: bool = False) -> Image:
    msg = Image()
    msg.height, msg.width, msg.step = height, width, step
    msg.encoding = encoding
    msg.is_bigendian = int(big)
    msg.data = data
    return msg


def _packed(pixels: np.ndarray, encoding: str, big: bool = False) -> Image:
    """A message whose rows are the pixels' bytes exactly (no padding)."""
    h, w = pixels.shape[:2]
    if pixels.dtype == np.uint16:
        pixels = pixels.astype('>u2' if big else '<u2')
    data = np.ascontiguousarray(pixels).tobytes()
    return _msg(data, encoding, w, h, len(data) // h, big)


# ------------------------------------------------------------------------------------------------
# Raw images.
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('encoding', ['mono8', '8UC1'])
def test_mono8(encoding):
    gray = RNG.integers(0, 256, size=(H, W), dtype=np.uint8)
    out = images.image_msg_to_array(_packed(gray, encoding))
    assert out.dtype == np.uint8 and out.shape == (H, W)
    np.testing.assert_array_equal(out, gray)


@pytest.mark.parametrize('encoding', ['mono16', '16UC1'])
def test_mono16_endianness(encoding):
    gray = RNG.integers(0, 65536, size=(H, W), dtype=np.uint16)
    gray[0, 0] = 0x0102  # asymmetric bytes: a swap would show
    little = _packed(gray, encoding, big=False)
    big = _packed(gray, encoding, big=True)
    assert bytes(little.data) != bytes(big.data)
    for msg in (little, big):
        out = images.image_msg_to_array(msg)
        assert out.dtype == np.uint16 and out.shape == (H, W)
        assert out.dtype.byteorder in ('=', '|') or out.dtype.isnative
        np.testing.assert_array_equal(out, gray)


def test_rgb8():
    rgb = _rgb()
    out = images.image_msg_to_array(_packed(rgb, 'rgb8'))
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize('encoding', ['bgr8', '8UC3'])
def test_bgr8_gives_rgb(encoding):
    rgb = _rgb()
    bgr_bytes = np.ascontiguousarray(rgb[:, :, ::-1])
    out = images.image_msg_to_array(_packed(bgr_bytes, encoding))
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize('encoding,order', [('rgba8', [0, 1, 2]), ('bgra8', [2, 1, 0]),
                                            ('8UC4', [2, 1, 0])])
def test_alpha_is_dropped(encoding, order):
    rgb = _rgb()
    alpha = RNG.integers(0, 256, size=(H, W, 1), dtype=np.uint8)
    four = np.concatenate([rgb[:, :, order], alpha], axis=2)
    out = images.image_msg_to_array(_packed(four, encoding))
    assert out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize('encoding,order', [('rgb16', [0, 1, 2]), ('bgr16', [2, 1, 0]),
                                            ('rgba16', [0, 1, 2, 3]), ('bgra16', [2, 1, 0, 3])])
@pytest.mark.parametrize('big', [False, True])
def test_16bit_colour_scaled_to_rgb8(encoding, order, big):
    rgb16 = RNG.integers(0, 65536, size=(H, W, 4), dtype=np.uint16)
    rgb16[0, 0, :3] = [0, 65535, 257 * 100 + 128]  # ends of the range and a rounding case
    pixels = np.ascontiguousarray(rgb16[:, :, order])
    out = images.image_msg_to_array(_packed(pixels, encoding, big=big))
    expected = np.rint(rgb16[:, :, :3] / 257.0).astype(np.uint8)
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, expected)
    assert out[0, 0].tolist() == [0, 255, 100]


def _patches(h: int, w: int) -> tuple[np.ndarray, list[tuple[slice, slice, tuple]]]:
    """An RGB image of four flat, differently coloured quadrants and their interiors."""
    colours = [(200, 40, 10), (10, 180, 60), (30, 70, 220), (120, 120, 120)]
    image = np.zeros((h, w, 3), np.uint8)
    interiors = []
    for i, colour in enumerate(colours):
        ys = slice((i // 2) * h // 2, (i // 2 + 1) * h // 2)
        xs = slice((i % 2) * w // 2, (i % 2 + 1) * w // 2)
        image[ys, xs] = colour
        # Demosaicing mixes neighbours within a few pixels of an edge; test well inside.
        interiors.append((slice(ys.start + 3, ys.stop - 3), slice(xs.start + 3, xs.stop - 3),
                          colour))
    return image, interiors


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample an RGB image by the ROS definition: pattern names the top-left 2x2 row-wise."""
    channel = {'r': 0, 'g': 1, 'b': 2}
    out = np.zeros(rgb.shape[:2], rgb.dtype)
    for k, letter in enumerate(pattern):
        dy, dx = divmod(k, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, channel[letter]]
    return out


@pytest.mark.parametrize('pattern', ['rggb', 'bggr', 'gbrg', 'grbg'])
def test_bayer8_recovers_flat_colours(pattern):
    image, interiors = _patches(24, 32)
    out = images.image_msg_to_array(_packed(_mosaic(image, pattern), f'bayer_{pattern}8'))
    assert out.dtype == np.uint8 and out.shape == (24, 32, 3)
    for ys, xs, colour in interiors:
        assert np.abs(out[ys, xs].astype(int) - colour).max() <= 1, (pattern, colour)


@pytest.mark.parametrize('pattern', ['rggb', 'bggr', 'gbrg', 'grbg'])
def test_bayer16_recovers_flat_colours(pattern):
    image, interiors = _patches(24, 32)
    mosaic16 = _mosaic(image, pattern).astype(np.uint16) * 257
    out = images.image_msg_to_array(_packed(mosaic16, f'bayer_{pattern}16', big=True))
    assert out.dtype == np.uint8 and out.shape == (24, 32, 3)
    for ys, xs, colour in interiors:
        assert np.abs(out[ys, xs].astype(int) - colour).max() <= 1, (pattern, colour)


@pytest.mark.parametrize('encoding,luma_at', [('yuv422', 1), ('uyvy', 1),
                                              ('yuv422_yuy2', 0), ('yuyv', 0)])
def test_yuv422_luma_position_and_grey(encoding, luma_at):
    # With neutral chroma (128) the output is grey and follows Y pixel by pixel.
    luma = np.tile(np.linspace(20, 230, W).astype(np.uint8), (H, 1))
    packed = np.full((H, W, 2), 128, np.uint8)
    packed[:, :, luma_at] = luma
    out = images.image_msg_to_array(_packed(packed, encoding))
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 1])
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])
    assert np.all(np.diff(out[0, :, 0].astype(int)) > 0)


@pytest.mark.parametrize('encoding', ['mono8', 'rgb8', 'bgr8', 'mono16', 'bgra8', 'bayer_rggb8',
                                      'rgb16', 'yuv422'])
@pytest.mark.parametrize('pad', [1, 3, 8])
def test_step_padding_is_ignored(encoding, pad):
    reference = _packed_reference(encoding)
    expected = images.image_msg_to_array(reference)
    row = reference.step
    rows = np.frombuffer(bytes(reference.data), np.uint8).reshape(reference.height, row)
    junk = RNG.integers(0, 256, size=(reference.height, pad), dtype=np.uint8)
    padded = np.concatenate([rows, junk], axis=1)
    msg = _msg(padded.tobytes(), encoding, reference.width, reference.height, row + pad,
               bool(reference.is_bigendian))
    np.testing.assert_array_equal(images.image_msg_to_array(msg), expected)


def _packed_reference(encoding: str) -> Image:
    channels, depth, _ = images._ENCODINGS[encoding]
    dtype = np.uint16 if depth == 2 else np.uint8
    high = 65536 if depth == 2 else 256
    shape = (8, 12) if channels == 1 else (8, 12, channels)
    return _packed(RNG.integers(0, high, size=shape, dtype=dtype), encoding, big=depth == 2)


def test_extra_data_beyond_step_times_height_is_ignored():
    gray = RNG.integers(0, 256, size=(H, W), dtype=np.uint8)
    msg = _msg(gray.tobytes() + b'\xff' * 7, 'mono8', W, H, W)
    np.testing.assert_array_equal(images.image_msg_to_array(msg), gray)


@pytest.mark.parametrize('encoding', ['mono8', 'rgb8', 'mono16', 'bayer_rggb8'])
def test_result_does_not_alias_the_message(encoding):
    msg = _packed_reference(encoding)
    out = images.image_msg_to_array(msg)
    before = out.copy()
    assert out.flags.writeable and out.flags.c_contiguous
    assert not np.shares_memory(out, np.frombuffer(msg.data, np.uint8))
    msg.data[0] ^= 0xFF  # the node may reuse the buffer
    np.testing.assert_array_equal(out, before)
    out[...] = 0  # and writing into the result leaves the message alone
    again = images.image_msg_to_array(msg)
    assert again.reshape(-1)[-1] == before.reshape(-1)[-1] and again.any()


def test_unknown_encoding_is_named_and_supported_listed():
    msg = _msg(bytes(H * W * 4), '32FC1', W, H, W * 4)
    with pytest.raises(InvalidImageError, match=r"'32FC1'.*supported.*mono8.*bayer_rggb8"):
        images.image_msg_to_array(msg)


@pytest.mark.parametrize('width,height', [(0, H), (W, 0), (0, 0)])
def test_empty_image(width, height):
    with pytest.raises(InvalidImageError, match='empty image'):
        images.image_msg_to_array(_msg(b'', 'mono8', width, height, width))


def test_truncated_data():
    msg = _msg(bytes(W * 3 * H - 1), 'rgb8', W, H, W * 3)
    with pytest.raises(InvalidImageError, match=r'truncated.*179 bytes.*180'):
        images.image_msg_to_array(msg)


def test_truncated_last_row_padding_counts():
    # step * height is the documented size; a missing pad on the last row is truncation.
    msg = _msg(bytes((W + 2) * H - 2), 'mono8', W, H, W + 2)
    with pytest.raises(InvalidImageError, match='truncated'):
        images.image_msg_to_array(msg)


@pytest.mark.parametrize('encoding,step', [('rgb8', W * 3 - 1), ('mono16', W), ('mono8', 0)])
def test_step_too_small(encoding, step):
    msg = _msg(bytes(W * H * 8), encoding, W, H, step)
    with pytest.raises(InvalidImageError, match='step .* smaller than one row'):
        images.image_msg_to_array(msg)


def test_yuv_odd_width():
    msg = _msg(bytes(5 * 2 * H), 'yuv422', 5, H, 10)
    with pytest.raises(InvalidImageError, match='even width'):
        images.image_msg_to_array(msg)


# ------------------------------------------------------------------------------------------------
# Compressed images.
# ------------------------------------------------------------------------------------------------

def _compressed(data: bytes, fmt: str) -> CompressedImage:
    msg = CompressedImage()
    msg.format = fmt
    msg.data = data
    return msg


def _smooth_rgb(h: int = 48, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([200 + 0 * x, 40 + x, 20 + y], axis=2).astype(np.uint8)


def test_jpeg_colour_is_rgb():
    rgb = _smooth_rgb()
    ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    out = images.compressed_msg_to_array(_compressed(jpeg.tobytes(), 'bgr8; jpeg compressed bgr8'))
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb).mean() < 3
    assert out[..., 0].mean() > 190 and out[..., 2].mean() < 60  # red stayed red


def test_jpeg_mono():
    gray = _smooth_rgb()[:, :, 1]
    ok, jpeg = cv2.imencode('.jpg', gray, [cv2.IMWRITE_JPEG_QUALITY, 95])
    out = images.compressed_msg_to_array(_compressed(jpeg.tobytes(), 'jpeg'))
    assert out.shape == gray.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - gray).mean() < 3


def test_png_colour_exact():
    rgb = _rgb(20, 30)
    ok, png = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = images.compressed_msg_to_array(_compressed(png.tobytes(), 'png'))
    np.testing.assert_array_equal(out, rgb)


def test_png_16bit_mono_survives():
    gray = RNG.integers(0, 65536, size=(20, 30), dtype=np.uint16)
    ok, png = cv2.imencode('.png', gray)
    out = images.compressed_msg_to_array(
        _compressed(png.tobytes(), 'mono16; png compressed mono16'))
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, gray)


def test_png_bayer_format_is_demosaiced():
    image, interiors = _patches(24, 32)
    ok, png = cv2.imencode('.png', _mosaic(image, 'gbrg'))
    out = images.compressed_msg_to_array(
        _compressed(png.tobytes(), 'bayer_gbrg8; png compressed mono8'))
    assert out.shape == (24, 32, 3)
    for ys, xs, colour in interiors:
        assert np.abs(out[ys, xs].astype(int) - colour).max() <= 1


@pytest.mark.parametrize('data,match', [(b'', 'empty'), (b'not an image at all', 'cannot decode'),
                                        (b'\xff\xd8\xff\xe0' + bytes(40), 'cannot decode')])
def test_bad_compressed(data, match):
    with pytest.raises(InvalidImageError, match=match):
        images.compressed_msg_to_array(_compressed(data, 'jpeg'))


def test_compressed_depth_rejected():
    ok, png = cv2.imencode('.png', np.zeros((4, 4), np.uint16))
    with pytest.raises(InvalidImageError, match='compressedDepth'):
        images.compressed_msg_to_array(
            _compressed(bytes(12) + png.tobytes(), '16UC1; compressedDepth png'))


# ------------------------------------------------------------------------------------------------
# Pixel cap: the size a header declares is checked before anything is decoded or allocated.
# ------------------------------------------------------------------------------------------------

def _jpeg(h: int = 48, w: int = 64, **params: int) -> bytes:
    flags = [v for kv in params.items() for v in (getattr(cv2, kv[0]), kv[1])]
    ok, data = cv2.imencode('.jpg', cv2.cvtColor(_smooth_rgb(h, w), cv2.COLOR_RGB2BGR), flags)
    assert ok
    return data.tobytes()


def _png(h: int = 48, w: int = 64) -> bytes:
    ok, data = cv2.imencode('.png', _smooth_rgb(h, w))
    assert ok
    return data.tobytes()


def _sof_offset(jpeg: bytes) -> int:
    """Offset of the height field of the first SOF0/SOF2 segment (found the naive way)."""
    for marker in (b'\xff\xc0', b'\xff\xc2'):
        i = jpeg.find(marker)
        if i > 0:
            return i + 5
    raise AssertionError('no SOF segment')


def _claim_jpeg(jpeg: bytes, width: int, height: int) -> bytes:
    i = _sof_offset(jpeg)
    return jpeg[:i] + height.to_bytes(2, 'big') + width.to_bytes(2, 'big') + jpeg[i + 4:]


def _claim_png(png: bytes, width: int, height: int) -> bytes:
    return png[:16] + width.to_bytes(4, 'big') + height.to_bytes(4, 'big') + png[24:]


def test_header_sizes_are_read_without_decoding():
    assert images.compressed_image_size(_jpeg(48, 64)) == (64, 48)
    assert images.compressed_image_size(_jpeg(30, 20, IMWRITE_JPEG_PROGRESSIVE=1)) == (20, 30)
    assert images.compressed_image_size(_png(7, 9)) == (9, 7)
    # An EXIF-like APP1 segment holding a thumbnail's own SOF0 comes first: it is skipped.
    jpeg = _jpeg(48, 64)
    thumbnail_sof = b'\xff\xc0\x00\x11\x08' + (9999).to_bytes(2, 'big') * 2 + bytes(10)
    app1 = b'\xff\xe1' + (2 + len(thumbnail_sof)).to_bytes(2, 'big') + thumbnail_sof
    assert images.compressed_image_size(jpeg[:2] + app1 + jpeg[2:]) == (64, 48)
    for data, match in ((b'GIF89a' + bytes(20), 'not a JPEG or PNG'),
                        (jpeg[:20], 'no JPEG image header'),
                        (_png()[:20], 'no PNG image header'),
                        (_claim_jpeg(jpeg, 64, 0), 'empty 64x0')):
        with pytest.raises(InvalidImageError, match=match):
            images.compressed_image_size(data)


def _padded(jpeg: bytes, marker: bytes, junk: bytes) -> bytes:
    """``jpeg`` with ``junk`` inserted right before the first ``marker`` (0xFF and its code)."""
    i = jpeg.find(marker)
    assert i > 0, marker
    return jpeg[:i] + junk + jpeg[i:]


# Junk before a marker ahead of the frame header: libjpeg skips everything up to the next 0xFF,
# then the 0xFF fill bytes, and discards a stuffed 0xFF 0x00; it warns and decodes (#20).
JUNK_BEFORE_MARKER = {
    '50 zero bytes before DQT': (b'\xff\xdb', bytes(50)),
    '50 zero bytes before SOF0': (b'\xff\xc0', bytes(50)),
    'fill bytes before SOF0': (b'\xff\xc0', b'\xff' * 7),  # legal: no warning
    'stuffed zero and junk holding 0xFF': (b'\xff\xc0', b'\x01\xff\x00\x03\xff\x00'),
    'junk before DQT and before SOF0': (b'\xff\xdb', b'junk'),  # second junk added below
}


@pytest.mark.parametrize('case', JUNK_BEFORE_MARKER)
def test_jpeg_with_junk_before_a_marker_is_read_as_libjpeg_reads_it(case):
    """The pixel-cap pre-check must find the frame header wherever libjpeg does: such a JPEG
    decodes (with libjpeg's 'extraneous bytes' warning) and was refused as 'no JPEG image
    header'. The size and the warnings are compared with cv2.imdecode's."""
    clean = _jpeg(48, 64)
    marker, junk = JUNK_BEFORE_MARKER[case]
    data = _padded(clean, marker, junk)
    if case.startswith('junk before DQT and'):
        data = _padded(data, b'\xff\xc0', bytes(3))
    decoded, decoder_messages = images._decode(np.frombuffer(data, np.uint8))
    assert decoded is not None and decoded.shape == (48, 64, 3)  # what OpenCV does with it

    frame = images.jpeg_frame_header(data)
    assert frame is not None
    assert images.compressed_image_size(data) == (64, 48) == (frame.width, frame.height)
    # Junk in front of the frame header only: libjpeg's warning is the scan's first count
    # (libjpeg prints only the first warning of an image: emit_message in jerror.c).
    counted = [f'Corrupt JPEG data: {count} extraneous bytes before marker 0x{code:02x}'
               for count, code in frame.extraneous]
    assert counted[:1] == decoder_messages
    assert len(counted) == (2 if case.startswith('junk before DQT and') else len(counted[:1]))
    assert bool(decoder_messages) == (case != 'fill bytes before SOF0')

    warnings: list[str] = []
    out = images.compressed_msg_to_array(_compressed(data, 'jpeg'), on_warning=warnings.append)
    expected = images.compressed_msg_to_array(_compressed(clean, 'jpeg'))
    np.testing.assert_array_equal(out, expected)  # the junk changes nothing in the pixels
    assert warnings == decoder_messages


@pytest.mark.parametrize('data', [
    b'\xff\xd8' + bytes(200),  # no marker at all after SOI
    b'\xff\xd8' + bytes(100) + b'\xff\xd9',  # junk, then the end of the image
    b'\xff\xd8' + b'\xff\x00' * 50,  # only stuffed zeros
    b'\xff\xd8\xff\xdb\x00\x43' + bytes(65) + b'\x12' * 30,  # DQT, then junk to the end
], ids=['zeros', 'zeros then EOI', 'stuffed zeros', 'DQT then junk'])
def test_jpeg_without_a_frame_header_is_still_refused(data):
    image, _ = images._decode(np.frombuffer(data, np.uint8))
    assert image is None  # libjpeg finds no image either
    assert images.jpeg_frame_header(data) is None
    with pytest.raises(InvalidImageError, match='no JPEG image header'):
        images.compressed_msg_to_array(_compressed(data, 'jpeg'))


def test_pixel_cap_holds_for_a_junk_padded_jpeg_bomb(monkeypatch):
    """Junk before the frame header must not hide a huge declared size from the cap."""
    bomb = _padded(_claim_jpeg(_jpeg(), 20000, 20000), b'\xff\xc0', bytes(50))
    assert images.compressed_image_size(bomb) == (20000, 20000)

    def no_decoding(buffer):
        raise AssertionError('decoded although the header is over the cap')

    monkeypatch.setattr(images, '_decode', no_decoding)
    with pytest.raises(ImageTooLargeError, match='20000x20000 = 400000000 pixels'):
        images.compressed_msg_to_array(_compressed(bomb, 'jpeg'))


@pytest.mark.parametrize('kind', ['jpeg', 'png'])
def test_compressed_image_claiming_a_huge_size_is_refused_before_decoding(kind, monkeypatch):
    small = _jpeg() if kind == 'jpeg' else _png()
    claim = _claim_jpeg if kind == 'jpeg' else _claim_png
    side = 20000 if kind == 'jpeg' else 16000
    huge = claim(small, side, side)
    assert len(huge) < 4096  # a few hundred bytes that would decode to gigabytes

    def no_decoding(buffer):
        raise AssertionError('decoded although the header is over the cap')

    monkeypatch.setattr(images, '_decode', no_decoding)
    with pytest.raises(ImageTooLargeError, match=f'{side}x{side} = {side * side} pixels'):
        images.compressed_msg_to_array(_compressed(huge, kind))
    with pytest.raises(ImageTooLargeError, match='max_image_pixels = 3071'):
        images.compressed_msg_to_array(_compressed(small, kind), max_pixels=64 * 48 - 1)
    assert issubclass(ImageTooLargeError, InvalidImageError)  # callers that skip it still do


def test_pixel_cap_boundary_and_off_switch():
    out = images.compressed_msg_to_array(_compressed(_png(48, 64), 'png'), max_pixels=64 * 48)
    assert out.shape == (48, 64, 3)
    out = images.image_msg_to_array(_packed(_rgb(6, 10), 'rgb8'), max_pixels=60)
    assert out.shape == (6, 10, 3)
    with pytest.raises(ImageTooLargeError):
        images.image_msg_to_array(_packed(_rgb(6, 10), 'rgb8'), max_pixels=59)
    big = _claim_jpeg(_jpeg(), 5000, 5000)  # over the default cap of 4096 x 4096
    with pytest.raises(ImageTooLargeError):
        images.compressed_msg_to_array(_compressed(big, 'jpeg'))
    # Without a cap libjpeg happily makes a 1000 x 1000 image out of 64 x 48 pixels of data:
    # what a 335-byte JPEG claiming 20000 x 20000 does to the memory of a node.
    warnings: list[str] = []
    out = images.compressed_msg_to_array(_compressed(_claim_jpeg(_jpeg(), 1000, 1000), 'jpeg'),
                                       max_pixels=None, on_warning=warnings.append)
    assert out.shape == (1000, 1000, 3) and warnings


def test_raw_image_claiming_a_huge_size_is_refused_as_too_large():
    msg = _msg(b'\x00' * 64, 'rgb8', 20000, 20000, 60000)
    with pytest.raises(ImageTooLargeError, match='rgb8 image of 20000x20000'):
        images.image_msg_to_array(msg)
    assert images.DEFAULT_MAX_IMAGE_PIXELS == 4096 * 4096


# ------------------------------------------------------------------------------------------------
# Decoder messages: libjpeg/libpng write to file descriptor 2 themselves.
# ------------------------------------------------------------------------------------------------

def _corrupt_images() -> dict[str, bytes]:
    """Data that makes libjpeg / libpng print: a JPEG with garbage before a marker (decodes,
    'Corrupt JPEG data: 50 extraneous bytes'), a PNG with a damaged IDAT (does not)."""
    jpeg, png = _jpeg(), _png()
    marker = jpeg.find(b'\xff\xc4')
    return {'jpeg': jpeg[:marker] + bytes(50) + jpeg[marker:],
            'png': png[:41] + bytes(30) + png[71:]}


_STORM = """
import json, sys
from sensor_msgs.msg import CompressedImage
from lightglue_ros.ros import images
from lightglue_ros.errors import InvalidImageError
data = {k: bytes.fromhex(v) for k, v in json.loads(sys.argv[1]).items()}
warnings, errors, decoded = [], [], 0
for _ in range(100):
    for kind, blob in data.items():
        try:
            images.compressed_msg_to_array(CompressedImage(format=kind, data=blob),
                                           on_warning=warnings.append)
            decoded += 1
        except InvalidImageError as err:
            errors.append(str(err))
print('a line of our own', file=sys.stderr)
print(json.dumps({'warnings': warnings, 'errors': errors, 'decoded': decoded}))
"""


def test_corrupt_image_storm_leaves_stderr_quiet_and_reports_through_the_caller():
    images = _corrupt_images()
    env = {**os.environ, 'PYTHONPATH': str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, '-c', _STORM, json.dumps({k: v.hex() for k, v in images.items()})],
        capture_output=True, text=True, timeout=120, env=env, check=True)
    assert done.stderr == 'a line of our own\n', done.stderr  # nothing from the decoders
    result = json.loads(done.stdout)
    assert result['decoded'] == 100  # the JPEG still decodes: its warning goes to the caller
    assert len(result['warnings']) == 100
    assert all(w.startswith('Corrupt JPEG data: 50 extraneous bytes') for w in result['warnings'])
    assert len(result['errors']) == 100  # the PNG does not: libpng's reason ends the error
    assert all('cannot decode' in e and 'libpng error' in e for e in result['errors'])


def test_stderr_capture_passes_other_output_through(capfd):
    with images._native_stderr_captured() as lines:
        os.write(2, b'Corrupt JPEG data: premature end of data segment\n')
        os.write(2, b'[WARN] [1.0] [node]: a log line of another thread\n')
    assert lines == ['Corrupt JPEG data: premature end of data segment']
    assert capfd.readouterr().err == '[WARN] [1.0] [node]: a log line of another thread\n'


# ------------------------------------------------------------------------------------------------
# Images out.
# ------------------------------------------------------------------------------------------------

def test_array_to_image_msg_layouts():
    header = Header(stamp=Time(sec=3, nanosec=4), frame_id='cam')
    rgb = _rgb()
    msg = images.array_to_image_msg(rgb, header=header)
    assert (msg.encoding, msg.height, msg.width, msg.step) == ('rgb8', H, W, 3 * W)
    assert bytes(msg.data) == rgb.tobytes()
    assert msg.header.frame_id == 'cam' and msg.header.stamp.nanosec == 4
    header.frame_id = 'changed'
    assert msg.header.frame_id == 'cam'  # the header was copied

    bgr = images.array_to_image_msg(rgb, encoding='bgr8')
    assert bgr.encoding == 'bgr8' and bytes(bgr.data) == rgb[:, :, ::-1].tobytes()
    np.testing.assert_array_equal(images.image_msg_to_array(bgr), rgb)

    gray16 = np.array([[0x0102, 0xA0B0]], np.uint16)
    msg16 = images.array_to_image_msg(gray16)
    assert (msg16.encoding, msg16.is_bigendian, msg16.step) == ('mono16', 0, 4)
    assert bytes(msg16.data) == b'\x02\x01\xb0\xa0'
    np.testing.assert_array_equal(images.image_msg_to_array(msg16), gray16)

    gray = RNG.integers(0, 256, size=(H, W, 1), dtype=np.uint8)
    msg8 = images.array_to_image_msg(gray[:, ::-1])  # non-contiguous input
    assert msg8.encoding == 'mono8'
    np.testing.assert_array_equal(images.image_msg_to_array(msg8), gray[:, ::-1, 0])


@pytest.mark.parametrize('array,encoding,match', [
    (np.zeros((4, 4), np.float32), None, 'cannot publish'),
    (np.zeros((4, 4, 4), np.uint8), None, 'cannot publish'),
    (np.zeros((4, 4), np.uint8), 'rgb8', 'does not fit'),
    (np.zeros((4, 4, 3), np.uint8), 'mono8', 'does not fit'),
    (np.zeros((0, 4), np.uint8), None, 'empty'),
])
def test_array_to_image_msg_rejects(array, encoding, match):
    with pytest.raises(InvalidImageError, match=match):
        images.array_to_image_msg(array, encoding=encoding)


# ------------------------------------------------------------------------------------------------
# Camera info.
# ------------------------------------------------------------------------------------------------

def _camera_info(fx=500.0, fy=510.0, cx=320.0, cy=240.0, model='plumb_bob',
                 d=(0.1, -0.05, 0.001, 0.002, 0.01)) -> CameraInfo:
    msg = CameraInfo()
    msg.width, msg.height = 640, 480
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    msg.distortion_model = model
    msg.d = list(d)
    return msg


def _camera_module():
    return pytest.importorskip('lightglue_ros.camera')


@pytest.mark.parametrize('model,d,expected,expected_d', [
    ('plumb_bob', (0.1, -0.05, 0.001, 0.002, 0.01), 'plumb_bob', None),
    ('plumb_bob', (0.1, -0.05, 0.001, 0.002), 'plumb_bob', None),
    ('rational_polynomial', (0.1, -0.05, 0.001, 0.002, 0.01, 0.1, 0.0, 0.02),
     'rational_polynomial', None),
    ('equidistant', (0.1, -0.02, 0.003, -0.001), 'equidistant', None),
    ('fisheye', (0.1, -0.02, 0.003, -0.001), 'equidistant', None),
    ('equidistant', (), 'equidistant', (0.0,) * 4),  # no coefficients is still not pinhole
    ('plumb_bob', (0.0,) * 5, 'plumb_bob', None),  # as CameraModel.from_yaml keeps it
    ('plumb_bob', (0.1, 0.2, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0), 'plumb_bob', (0.1, 0.2, 0, 0, 0.3)),
    ('plumb_bob', (), 'none', ()),
    ('', (), 'none', ()),
    ('', (0.0,) * 5, 'none', ()),
    ('none', (), 'none', ()),
])
def test_camera_info_models(model, d, expected, expected_d):
    _camera_module()
    cam = camera_info.camera_info_to_camera_model(_camera_info(model=model, d=d))
    assert (cam.width, cam.height) == (640, 480)
    assert cam.distortion_model == expected
    np.testing.assert_array_equal(cam.K, [[500, 0, 320], [0, 510, 240], [0, 0, 1]])
    np.testing.assert_array_equal(cam.D, d if expected_d is None else expected_d)


def test_camera_info_matches_from_intrinsics():
    camera = _camera_module()
    d = (0.1, -0.05, 0.001, 0.002, 0.01)
    expected = camera.CameraModel.from_intrinsics(500.0, 510.0, 320.0, 240.0, 640, 480,
                                                  distortion_model='plumb_bob', D=d)
    assert camera_info.camera_info_to_camera_model(_camera_info(d=d)) == expected


def test_camera_info_binning_and_roi():
    _camera_module()
    msg = _camera_info(model='plumb_bob', d=(0.0,) * 5)
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = 100, 40, 401, 300
    msg.binning_x, msg.binning_y = 2, 4
    cam = camera_info.camera_info_to_camera_model(msg)
    assert (cam.width, cam.height) == (200, 75)
    # Pixel-centre convention: binned pixel i is centred on full pixel b * i + (b - 1) / 2.
    np.testing.assert_allclose(cam.K, [[250, 0, (220 - 0.5) / 2], [0, 127.5, (200 - 1.5) / 4],
                                       [0, 0, 1]])


@pytest.mark.parametrize('model,d', [('plumb_bob', (0.1,) * 6), ('equidistant', (0.1,) * 5),
                                     ('rational_polynomial', (0.1,) * 5)])
def test_camera_info_wrong_coefficient_count(model, d):
    _camera_module()
    with pytest.raises(CalibrationError, match='coefficients'):
        camera_info.camera_info_to_camera_model(_camera_info(model=model, d=d))


@pytest.mark.parametrize('kwargs', [{'fx': 0.0}, {'fy': 0.0}, {'fx': float('nan')},
                                    {'fx': 0.0, 'fy': 0.0, 'cx': 0.0, 'cy': 0.0}])
def test_camera_info_bad_focal(kwargs):
    _camera_module()
    with pytest.raises(CalibrationError):
        camera_info.camera_info_to_camera_model(_camera_info(**kwargs))


@pytest.mark.parametrize('kwargs,match', [
    ({'fx': 1e-300}, 'focal length'), ({'fy': 1e-300}, 'focal length'),
    ({'fx': 1e300}, 'focal length'), ({'fx': 1e300, 'fy': 1e300}, 'focal length'),
    ({'cx': 1e9}, 'principal point'), ({'cy': 1e9}, 'principal point'),
])
def test_camera_info_with_absurd_finite_values_is_rejected(kwargs, match):
    """Finite but absurd intrinsics filled ~/features with inf (x = (u - cx) / 1e-300)."""
    _camera_module()
    with pytest.raises(CalibrationError, match=f'{match} .* implausible for a 640x480 image'):
        camera_info.camera_info_to_camera_model(_camera_info(**kwargs))


def test_camera_info_unknown_model_named():
    _camera_module()
    with pytest.raises(CalibrationError, match="'double_sphere'"):
        camera_info.camera_info_to_camera_model(_camera_info(model='double_sphere'))


def test_camera_info_empty_model_with_distortion():
    _camera_module()
    with pytest.raises(CalibrationError, match='non-zero'):
        camera_info.camera_info_to_camera_model(_camera_info(model='', d=(0.1, 0, 0, 0, 0)))


# ------------------------------------------------------------------------------------------------
# Matches cloud.
# ------------------------------------------------------------------------------------------------

def _matches(n: int = 50) -> dict[str, np.ndarray]:
    return dict(
        u_cur=RNG.uniform(0, 640, n).astype(np.float32),
        v_cur=RNG.uniform(0, 480, n),  # float64 in: stored as float32
        u_kf=RNG.uniform(0, 640, n).astype(np.float32),
        v_kf=RNG.uniform(0, 480, n).astype(np.float32),
        score=RNG.uniform(0, 1, n).astype(np.float32),
        track_id=RNG.integers(-2**31, 2**31, n, dtype=np.int64),
        kf_index=RNG.integers(0, 100, n),
        inlier=RNG.uniform(size=n) > 0.3,
    )


def test_matches_cloud_round_trip_exact():
    m = _matches()
    header = Header(stamp=Time(sec=10, nanosec=20), frame_id='cam0')
    msg = messages.make_matches_cloud(header, **m)
    assert (msg.height, msg.width, msg.is_dense, msg.is_bigendian) == (1, 50, True, False)
    assert msg.point_step == 32 and msg.row_step == 32 * 50 and len(msg.data) == 32 * 50
    assert [f.name for f in msg.fields] == ['u', 'v', 'kf_u', 'kf_v', 'score', 'track_id',
                                            'kf_index', 'inlier']
    types = {f.name: f.datatype for f in msg.fields}
    assert types['u'] == PointField.FLOAT32 and types['track_id'] == PointField.INT32
    assert types['inlier'] == PointField.UINT8 and types['kf_index'] == PointField.INT32
    assert msg.header.frame_id == 'cam0'
    back = messages.read_matches_cloud(msg)
    pairs = {'u': 'u_cur', 'v': 'v_cur', 'kf_u': 'u_kf', 'kf_v': 'v_kf', 'score': 'score',
             'track_id': 'track_id', 'kf_index': 'kf_index'}
    for field, key in pairs.items():
        expected = m[key].astype(back[field].dtype)
        np.testing.assert_array_equal(back[field], expected)
        assert back[field].dtype == (np.int32 if field in ('track_id', 'kf_index')
                                     else np.float32)
    assert back['inlier'].dtype == np.uint8
    np.testing.assert_array_equal(back['inlier'], m['inlier'].astype(np.uint8))


def test_matches_cloud_bytes_are_little_endian_at_offsets():
    msg = messages.make_matches_cloud(Header(), u_cur=[1.5], v_cur=[2.0], u_kf=[3.0], v_kf=[4.0],
                                  score=[0.5], track_id=[0x01020304], kf_index=7, inlier=[True])
    data = bytes(msg.data)
    offsets = {f.name: f.offset for f in msg.fields}
    assert data[offsets['u']:offsets['u'] + 4] == np.float32(1.5).astype('<f4').tobytes()
    assert data[offsets['track_id']:offsets['track_id'] + 4] == b'\x04\x03\x02\x01'
    assert data[offsets['kf_index']:offsets['kf_index'] + 4] == b'\x07\x00\x00\x00'
    assert data[offsets['inlier']] == 1


def test_matches_cloud_empty_and_nan():
    empty = messages.make_matches_cloud(Header(), u_cur=[], v_cur=[], u_kf=[], v_kf=[], score=[],
                                    track_id=np.zeros(0, np.int32), kf_index=0, inlier=[])
    assert empty.width == 0 and len(empty.data) == 0
    assert all(v.size == 0 for v in messages.read_matches_cloud(empty).values())
    nan = messages.make_matches_cloud(Header(), u_cur=[np.nan], v_cur=[0], u_kf=[0], v_kf=[0],
                                  score=[1], track_id=[1], kf_index=0, inlier=[0])
    assert nan.is_dense is False


@pytest.mark.parametrize('change,match', [
    ({'v_cur': np.zeros(3)}, 'v_cur has 3 entries'),
    ({'track_id': np.array([2**31] * 50)}, 'track_id does not fit'),
    ({'track_id': np.zeros(50, np.float32)}, 'track_id must be integer'),
    ({'score': np.zeros((50, 1))}, 'one-dimensional'),
])
def test_matches_cloud_rejects(change, match):
    m = _matches()
    m.update(change)
    with pytest.raises(ValueError, match=match):
        messages.make_matches_cloud(Header(), **m)


def test_read_cloud_big_endian_padded_rows():
    # A foreign cloud: big-endian, 2 rows with padding, a count-2 float64 field.
    dtype = np.dtype({'names': ['a', 'b'], 'formats': ['>i2', ('>f8', (2,))],
                      'offsets': [0, 4], 'itemsize': 24})
    points = np.zeros((2, 3), dtype)
    points['a'] = np.arange(6).reshape(2, 3) - 3
    points['b'] = RNG.normal(size=(2, 3, 2))
    rows = [points[r].tobytes() + b'\xee' * 5 for r in range(2)]
    msg = PointCloud2(height=2, width=3, is_bigendian=True, point_step=24, row_step=3 * 24 + 5)
    msg.fields = [PointField(name='a', offset=0, datatype=PointField.INT16, count=1),
                  PointField(name='b', offset=4, datatype=PointField.FLOAT64, count=2)]
    msg.data = b''.join(rows)
    back = messages.read_matches_cloud(msg)
    np.testing.assert_array_equal(back['a'], points['a'].reshape(-1))
    np.testing.assert_array_equal(back['b'], points['b'].reshape(-1, 2))
    assert back['a'].dtype.isnative and back['b'].shape == (6, 2)
    msg.data = msg.data[:-1]
    with pytest.raises(ValueError, match='truncated'):
        messages.read_matches_cloud(msg)


# ------------------------------------------------------------------------------------------------
# VINS features.
# ------------------------------------------------------------------------------------------------

def test_vins_features_layout():
    n = 7
    ids = np.arange(n) * 3 + 1
    ids[-1] = 2**24 + 5  # wraps to 5
    x, y = RNG.normal(size=n), RNG.normal(size=n)
    u, v = RNG.uniform(0, 640, n), RNG.uniform(0, 480, n)
    vx, vy = RNG.normal(size=n), RNG.normal(size=n)
    header = Header(stamp=Time(sec=1, nanosec=2), frame_id='world')
    msg = messages.make_vins_features(header, track_id=ids, x_norm=x, y_norm=y, u=u, v=v,
                                  velocity_x=vx, velocity_y=vy)
    assert msg.header.frame_id == 'world' and msg.header.stamp.sec == 1
    assert [c.name for c in msg.channels] == ['id_of_point', 'u_of_point', 'v_of_point',
                                              'velocity_x', 'velocity_y']
    assert len(msg.points) == n and all(len(c.values) == n for c in msg.channels)
    np.testing.assert_allclose([p.x for p in msg.points], x.astype(np.float32))
    np.testing.assert_allclose([p.y for p in msg.points], y.astype(np.float32))
    assert all(p.z == 1.0 for p in msg.points)
    got_ids = np.array(msg.channels[0].values)
    np.testing.assert_array_equal(got_ids, np.r_[ids[:-1], 5])
    # The estimator reads the id back as int(value + 0.5): must be exact.
    assert [int(i + 0.5) for i in got_ids] == list(np.r_[ids[:-1], 5])
    for channel, expected in zip(msg.channels[1:], (u, v, vx, vy)):
        np.testing.assert_array_equal(np.array(channel.values, np.float32),
                                      expected.astype(np.float32))


def _vins_mono_reads(msg, num_of_cam: int = 1) -> dict[int, list]:
    """What VINS-Mono's estimator reads of each point, index by index, as its
    vins_estimator/src/estimator_node.cpp process() does (Python raises IndexError where the
    C++ would read out of range)."""
    image: dict[int, list] = {}
    for i in range(len(msg.points)):
        v = int(msg.channels[0].values[i] + 0.5)
        feature_id, camera_id = v // num_of_cam, v % num_of_cam
        x, y, z = (float(np.float32(c)) for c in (msg.points[i].x, msg.points[i].y,
                                                  msg.points[i].z))  # float32 on the wire
        p_u = msg.channels[1].values[i]
        p_v = msg.channels[2].values[i]
        velocity_x = msg.channels[3].values[i]
        velocity_y = msg.channels[4].values[i]
        assert z == 1
        image.setdefault(feature_id, []).append(
            (camera_id, (x, y, z, p_u, p_v, velocity_x, velocity_y)))
    return image


def _vins_fusion_reads(msg) -> tuple[dict[int, list], dict[int, tuple]]:
    """What VINS-Fusion's feature_callback (vins_estimator/src/rosNodeTest.cpp) reads: six
    channels, and with more than five channels also channels 6, 7, 8 (pts_gt)."""
    feature_frame: dict[int, list] = {}
    pts_gt: dict[int, tuple] = {}
    for i in range(len(msg.points)):
        feature_id = int(msg.channels[0].values[i])
        camera_id = int(msg.channels[1].values[i])
        x, y, z = (float(np.float32(c)) for c in (msg.points[i].x, msg.points[i].y,
                                                  msg.points[i].z))  # float32 on the wire
        p_u = msg.channels[2].values[i]
        p_v = msg.channels[3].values[i]
        velocity_x = msg.channels[4].values[i]
        velocity_y = msg.channels[5].values[i]
        if len(msg.channels) > 5:
            gx = msg.channels[6].values[i]
            gy = msg.channels[7].values[i]
            gz = msg.channels[8].values[i]
            pts_gt[feature_id] = (gx, gy, gz)
        assert z == 1
        feature_frame.setdefault(feature_id, []).append(
            (camera_id, (x, y, z, p_u, p_v, velocity_x, velocity_y)))
    return feature_frame, pts_gt


def _expected_reads(ids, columns) -> dict[int, list]:
    f32 = [np.asarray(c, np.float32).tolist() for c in columns]
    return {int(i): [(0, (x, y, 1.0, u, v, vx, vy))]
            for i, x, y, u, v, vx, vy in zip(ids, *f32)}


@pytest.mark.parametrize('layout', ['vins_mono', 'vins_fusion'])
def test_vins_features_are_what_each_estimator_reads(layout):
    n = 6
    ids = np.array([0, 1, 7, 100, 2**24 - 1, 12345])
    x, y = RNG.normal(size=n), RNG.normal(size=n)
    u, v = RNG.uniform(0, 640, n), RNG.uniform(0, 480, n)
    vx, vy = RNG.normal(size=n), RNG.normal(size=n)
    msg = messages.make_vins_features(Header(), track_id=ids, x_norm=x, y_norm=y, u=u, v=v,
                                  velocity_x=vx, velocity_y=vy, layout=layout)
    expected = _expected_reads(ids, (x, y, u, v, vx, vy))
    assert [c.name for c in msg.channels] == list(messages.VINS_LAYOUTS[layout])
    if layout == 'vins_mono':
        assert len(msg.channels) == 5
        assert _vins_mono_reads(msg) == expected
        with pytest.raises(IndexError):  # VINS-Fusion would read past the channels
            _vins_fusion_reads(msg)
    else:
        assert len(msg.channels) == 9
        frame, pts_gt = _vins_fusion_reads(msg)
        assert frame == expected
        assert pts_gt == {int(i): (0.0, 0.0, 0.0) for i in ids}
    empty = messages.make_vins_features(Header(), track_id=[], x_norm=[], y_norm=[], u=[], v=[],
                                    velocity_x=[], velocity_y=[], layout=layout)
    assert len(empty.channels) == len(messages.VINS_LAYOUTS[layout]) and not empty.points


def test_vins_features_rejects():
    with pytest.raises(ValueError, match="unknown features layout 'vins_3'"):
        messages.make_vins_features(Header(), track_id=[1], x_norm=[0], y_norm=[0], u=[0], v=[0],
                                velocity_x=[0], velocity_y=[0], layout='vins_3')
    with pytest.raises(ValueError, match='non-negative'):
        messages.make_vins_features(Header(), track_id=[-1], x_norm=[0], y_norm=[0], u=[0], v=[0],
                                velocity_x=[0], velocity_y=[0])
    with pytest.raises(ValueError, match='u has 2 entries'):
        messages.make_vins_features(Header(), track_id=[1], x_norm=[0], y_norm=[0], u=[0, 1],
                                v=[0], velocity_x=[0], velocity_y=[0])


# ------------------------------------------------------------------------------------------------
# Rotations and poses.
# ------------------------------------------------------------------------------------------------

def _rodrigues(axis, angle) -> np.ndarray:
    rvec = np.asarray(axis, np.float64) / np.linalg.norm(axis) * angle
    return cv2.Rodrigues(rvec.reshape(3, 1))[0]


def _axis_angle_quaternion(axis, angle) -> np.ndarray:
    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    return np.r_[axis * math.sin(angle / 2), math.cos(angle / 2)]


def _same_rotation_quaternion(q1, q2, atol=1e-9) -> bool:
    return np.allclose(q1, q2, atol=atol) or np.allclose(q1, -np.asarray(q2), atol=atol)


def test_known_quaternion():
    q = geometry.rotation_to_quaternion(_rodrigues([0, 0, 1], math.pi / 2))
    np.testing.assert_allclose(q, [0, 0, math.sqrt(0.5), math.sqrt(0.5)], atol=1e-12)
    np.testing.assert_allclose(geometry.rotation_to_quaternion(np.eye(3)), [0, 0, 0, 1])
    R = geometry.quaternion_to_rotation([0, 0, math.sqrt(0.5), math.sqrt(0.5)])
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)


@pytest.mark.parametrize('seed', range(20))
def test_quaternion_round_trip_random(seed):
    rng = np.random.default_rng(seed)
    axis, angle = rng.normal(size=3), rng.uniform(0, math.pi)
    R = _rodrigues(axis, angle)
    q = geometry.rotation_to_quaternion(R)
    assert q.shape == (4,) and q[3] >= 0 and abs(np.linalg.norm(q) - 1) < 1e-12
    assert _same_rotation_quaternion(q, _axis_angle_quaternion(axis, angle))
    np.testing.assert_allclose(geometry.quaternion_to_rotation(q), R, atol=1e-12)
    q_in = rng.normal(size=4) * 3  # unnormalised input
    R2 = geometry.quaternion_to_rotation(q_in)
    np.testing.assert_allclose(R2 @ R2.T, np.eye(3), atol=1e-12)
    assert _same_rotation_quaternion(geometry.rotation_to_quaternion(R2),
                                     q_in / np.linalg.norm(q_in))


@pytest.mark.parametrize('axis', [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, -2, 3],
                                  [-0.3, 0.2, -5]])
@pytest.mark.parametrize('angle', [math.pi, math.pi - 1e-9, math.pi - 1e-4])
def test_quaternion_near_180_degrees(axis, angle):
    R = _rodrigues(axis, angle)
    q = geometry.rotation_to_quaternion(R)
    assert _same_rotation_quaternion(q, _axis_angle_quaternion(axis, angle), atol=1e-7)
    np.testing.assert_allclose(geometry.quaternion_to_rotation(q), R, atol=1e-12)


def test_quaternion_of_slightly_non_orthonormal_matrix():
    R = _rodrigues([1, 2, 3], 1.0)
    q = geometry.rotation_to_quaternion(R + 1e-6 * RNG.normal(size=(3, 3)))
    assert _same_rotation_quaternion(q, _axis_angle_quaternion([1, 2, 3], 1.0), atol=1e-5)


@pytest.mark.parametrize('bad', [np.diag([1.0, 1.0, -1.0]), np.zeros((3, 3)), np.eye(4),
                                 np.full((3, 3), np.nan)])
def test_rotation_to_quaternion_rejects(bad):
    with pytest.raises(ValueError):
        geometry.rotation_to_quaternion(bad)


@pytest.mark.parametrize('bad', [[0, 0, 0, 0], [1, 0, 0], [np.nan, 0, 0, 1]])
def test_quaternion_to_rotation_rejects(bad):
    with pytest.raises(ValueError):
        geometry.quaternion_to_rotation(bad)


def test_pose_with_covariance_known_and_unknown():
    header = Header(stamp=Time(sec=5, nanosec=6), frame_id='map')
    R, t = _rodrigues([0, 1, 0], 0.3), np.array([1.0, -2.0, 3.5])
    cov = np.diag(np.arange(1.0, 7.0))
    cov[0, 1] = cov[1, 0] = 0.25
    msg = messages.make_pose_with_covariance(header, R=R, t=t, covariance=cov)
    pose = msg.pose.pose
    assert msg.header.frame_id == 'map' and msg.header.stamp.nanosec == 6
    assert [pose.position.x, pose.position.y, pose.position.z] == [1.0, -2.0, 3.5]
    q = [pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w]
    np.testing.assert_allclose(geometry.quaternion_to_rotation(q), R, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(msg.pose.covariance).reshape(6, 6), cov)

    unknown = messages.make_pose_with_covariance(header, R=R, t=t, covariance=None)
    flat = np.asarray(unknown.pose.covariance)
    assert flat[0] == -1.0 and not np.any(flat[1:])
    with pytest.raises(ValueError, match='6x6'):
        messages.make_pose_with_covariance(header, R=R, t=t, covariance=np.eye(3))
    with pytest.raises(ValueError, match='3-vector'):
        messages.make_pose_with_covariance(header, R=R, t=[1, 2], covariance=None)


def test_odometry():
    header = Header(stamp=Time(sec=5), frame_id='odom')
    R = _rodrigues([1, 1, 1], 2.0)
    msg = messages.make_odometry(header, 'camera', R=R, t=[0.5, 0, 0], covariance=np.eye(6) * 0.01)
    assert msg.header.frame_id == 'odom' and msg.child_frame_id == 'camera'
    o = msg.pose.pose.orientation
    np.testing.assert_allclose(geometry.quaternion_to_rotation([o.x, o.y, o.z, o.w]), R,
                               atol=1e-12)
    assert msg.pose.covariance[0] == 0.01 and msg.pose.covariance[7] == 0.01
    assert msg.twist.covariance[0] == -1.0  # twist not estimated
    unknown = messages.make_odometry(header, 'camera', R=R, t=[0, 0, 0], covariance=None)
    assert unknown.pose.covariance[0] == -1.0


# ------------------------------------------------------------------------------------------------
# Diagnostics and time.
# ------------------------------------------------------------------------------------------------

def test_diagnostic_array():
    stamp = Time(sec=12, nanosec=34)
    msg = messages.make_diagnostic_array(
        stamp, name='lightglue/tracker', hardware_id='cam0', level=1, message='few matches',
        values={'matches': 12, 'fps': 29.97123456, 'device': 'cuda', 'ok': np.bool_(True),
                'n': np.int64(3)})
    assert msg.header.stamp.sec == 12 and msg.header.stamp.nanosec == 34
    (status,) = msg.status
    assert status.level == DiagnosticStatus.WARN
    assert (status.name, status.hardware_id, status.message) == ('lightglue/tracker', 'cam0',
                                                                 'few matches')
    assert {kv.key: kv.value for kv in status.values} == {
        'matches': '12', 'fps': '29.9712', 'device': 'cuda', 'ok': 'True', 'n': '3'}
    by_bytes = messages.make_diagnostic_array(10**9 + 5, name='x', hardware_id='', level=b'\x02',
                                          message='', values={})
    assert by_bytes.status[0].level == DiagnosticStatus.ERROR
    assert (by_bytes.header.stamp.sec, by_bytes.header.stamp.nanosec) == (1, 5)
    with pytest.raises(ValueError, match='level'):
        messages.make_diagnostic_array(stamp, name='x', hardware_id='', level=4, message='',
                                   values={})


@pytest.mark.parametrize('ns', [0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_123_456_789,
                                -1, -1_500_000_000])
def test_stamp_round_trip(ns):
    stamp = messages.ns_to_stamp(ns)
    assert 0 <= stamp.nanosec < 1_000_000_000
    assert stamp.sec * 1_000_000_000 + stamp.nanosec == ns
    assert messages.stamp_to_ns(stamp) == ns


def test_stamp_examples_and_limits():
    assert messages.stamp_to_ns(Time(sec=3, nanosec=7)) == 3_000_000_007
    stamp = messages.ns_to_stamp(-1)
    assert (stamp.sec, stamp.nanosec) == (-1, 999_999_999)
    with pytest.raises(ValueError):
        messages.ns_to_stamp(2**31 * 1_000_000_000)


@pytest.mark.parametrize('model, coefficients', [
    ('plumb_bob', (0.1, -0.05, 0.001, -0.002, 0.01)), ('equidistant', (0.1, 0.01, -0.02, 0.003)),
    ('none', ())])
def test_camera_model_to_camera_info_round_trips(model, coefficients):
    from lightglue_ros.camera import CameraModel

    camera = CameraModel.from_intrinsics(500.0, 505.0, 319.5, 241.0, 640, 480,
                                         distortion_model=model, D=coefficients)
    msg = camera_info.camera_model_to_camera_info(camera, header=Header(frame_id='cam'))
    assert msg.header.frame_id == 'cam' and (msg.width, msg.height) == (640, 480)
    np.testing.assert_array_equal(np.reshape(msg.p, (3, 4))[:, :3], camera.K)
    back = camera_info.camera_info_to_camera_model(msg)
    np.testing.assert_array_equal(back.K, camera.K)
    points = np.array([[10.0, 20.0], [320.0, 240.0], [600.0, 470.0]])
    np.testing.assert_allclose(back.undistort_points(points), camera.undistort_points(points),
                               atol=1e-12)

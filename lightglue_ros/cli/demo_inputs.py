"""The demo's frame sources: the synthetic room (with ground truth), an image folder, a video."""
from __future__ import annotations

import argparse
import itertools
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from lightglue_ros import synthetic
from lightglue_ros.camera import CameraModel
from lightglue_ros.cli.demo import DEFAULT_DEMO_FRAMES, SYNTHETIC_VIEWS
from lightglue_ros.cli.image_files import read_image_file
from lightglue_ros.cli.options import camera_from_options
from lightglue_ros.errors import CalibrationError, InvalidImageError
from lightglue_ros.realtime import back_and_forth

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.pgm', '.ppm', '.webp')


class GroundTruth(Protocol):
    """Known relative poses between the demo's frames (by index)."""

    def __len__(self) -> int: ...

    def relative_pose(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """(R, t) with x_j = R @ x_i + t (camera i -> camera j; t in metres)."""
        ...


@dataclass
class DemoInput:
    """Frames for the demo, with what is known about them."""

    description: str
    frames: Iterator[tuple[np.ndarray, int]]  # (image, stamp_ns)
    count: int | None  # number of frames, when known
    camera: CameraModel | None
    ground_truth: GroundTruth | None = None


@dataclass(frozen=True)
class PlayedSequence:
    """The ground truth of a synthetic sequence played in the order ``views`` (frame k of the
    demo shows view ``views[k]``)."""

    sequence: synthetic.SyntheticSequence
    views: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.views)

    def relative_pose(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """(R, t) with x_j = R @ x_i + t between the demo's frames i and j."""
        return self.sequence.relative_pose(self.views[i], self.views[j])


def synthetic_input(args: argparse.Namespace) -> DemoInput:
    """``args.frames`` frames of the synthetic room (``--seed``; 1 / ``--fps`` apart, by
    default the camera's ``--rate``): at most SYNTHETIC_VIEWS views along the camera path,
    played forward and back when more frames are asked for (stamps keep going forward)."""
    if args.intrinsics or args.camera_info:
        raise CalibrationError('--intrinsics / --camera-info apply to --images or --video; the '
                               'synthetic room has its own camera')
    count = args.frames or DEFAULT_DEMO_FRAMES
    fps = args.fps or args.rate
    num_views = min(count, SYNTHETIC_VIEWS)
    print(f'rendering {num_views} views of the synthetic room (seed {args.seed}) ...',
          flush=True)
    sequence = synthetic.make_sequence(num_views, seed=args.seed, fps=fps)
    views = tuple(itertools.islice(back_and_forth(num_views), count))
    stamps = [sequence.stamps_ns[0] + round(k * 1e9 / fps) for k in range(count)]
    camera = sequence.camera
    played = (f'{num_views} views along the camera path played forward and back'
              if count > num_views else 'along the camera path')
    return DemoInput(
        description=(f'synthetic room (seed {args.seed}), {count} frames {played}, '
                     f'{camera.width}x{camera.height} at {fps:g} fps, camera fx {camera.fx:g} '
                     f'fy {camera.fy:g} cx {camera.cx:g} cy {camera.cy:g}'),
        frames=iter([(sequence.images[v], stamp) for v, stamp in zip(views, stamps)]),
        count=count, camera=camera, ground_truth=PlayedSequence(sequence, views))


def _stamps_from_names(paths: Sequence[Path]) -> list[int] | None:
    """Stamps in ns from numeric file names (seconds, as TUM's), if all are increasing."""
    stamps = []
    for path in paths:
        if not re.fullmatch(r'\d+(\.\d+)?', path.stem):
            return None
        seconds, _, fraction = path.stem.partition('.')
        stamps.append(int(seconds) * 1_000_000_000 + int((fraction + '0' * 9)[:9]))
    if any(b <= a for a, b in zip(stamps, stamps[1:])):
        return None
    return stamps


def images_input(args: argparse.Namespace) -> DemoInput:
    """The image files of the ``--images`` folder, sorted by name, read as they are sent."""
    folder = Path(args.images)
    if not folder.is_dir():
        raise InvalidImageError(f'--images: no such folder: {folder}')
    paths = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise InvalidImageError(f'--images: no image files ({", ".join(IMAGE_SUFFIXES)}) in '
                                f'{folder}')
    if args.frames:
        paths = paths[:args.frames]
    first = read_image_file(paths[0])
    camera = camera_from_options(args, first.shape[1], first.shape[0])
    fps = args.fps or args.rate
    stamps = _stamps_from_names(paths) or [round(i * 1e9 / fps) + 1 for i in range(len(paths))]

    def frames() -> Iterator[tuple[np.ndarray, int]]:
        for path, stamp in zip(paths, stamps):
            yield read_image_file(path), stamp

    return DemoInput(
        description=(f'{len(paths)} images from {folder} ({first.shape[1]}x{first.shape[0]}'
                     f'{", " + _camera_text(camera) if camera else ", no calibration"})'),
        frames=frames(), count=len(paths), camera=camera)


def video_input(args: argparse.Namespace) -> DemoInput:
    """The frames of the ``--video`` file (OpenCV), decoded as they are sent."""
    path = Path(args.video)
    if not path.is_file():
        raise InvalidImageError(f'--video: no such file: {path}')
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InvalidImageError(f'--video: OpenCV cannot open {path}')
    ok, frame = capture.read()
    if not ok or frame is None:
        capture.release()
        raise InvalidImageError(f'--video: no frame could be read from {path}')
    height, width = frame.shape[:2]
    camera = camera_from_options(args, width, height)
    video_fps = capture.get(cv2.CAP_PROP_FPS)
    fps = args.fps or (video_fps if math.isfinite(video_fps) and video_fps > 0 else args.rate)
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    count = min(total, args.frames) if total > 0 and args.frames else (args.frames or
                                                                      (total or None))

    def frames() -> Iterator[tuple[np.ndarray, int]]:
        nonlocal frame
        index = 0
        try:
            while frame is not None and (args.frames is None or index < args.frames):
                image = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if frame.ndim == 3 else frame
                yield image, round(index * 1e9 / fps) + 1
                index += 1
                ok, frame = capture.read()
                if not ok:
                    frame = None
        finally:
            capture.release()

    return DemoInput(
        description=(f'video {path} ({width}x{height} at {fps:g} fps'
                     f'{", " + _camera_text(camera) if camera else ", no calibration"})'),
        frames=frames(), count=count, camera=camera)


def _camera_text(camera: CameraModel) -> str:
    return (f'camera fx {camera.fx:g} fy {camera.fy:g} cx {camera.cx:g} cy {camera.cy:g}'
            f'{"" if not camera.is_distorted else " " + camera.distortion_model}')

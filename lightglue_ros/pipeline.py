"""One frame through the tracker under the rules the live node and the bag replay share.

``FramePipeline.process(image, stamp_ns, camera)`` is the whole per-frame policy between a
decoded image and its ``FrameResult``: the fallback camera when no calibration is known,
frames stamped back in time (skipped, and after ``backwards_reset_frames`` in a row the
tracker restarts from the frame), and the mapping of every failure to a counted skip reason.
``lightglue_ros.ros.frames`` turns messages into images before it and results into messages
after it, for the node and the replay alike. No ROS here.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lightglue_ros.camera import CameraModel
from lightglue_ros.defaults import DEFAULT_BACKWARDS_RESET_FRAMES
from lightglue_ros.errors import (CalibrationError, ImageTooLargeError, InvalidImageError,
                                  TimestampError)

if TYPE_CHECKING:  # the tracker (and torch) load with the models, not with the skip reasons
    from lightglue_ros.tracker import FrameResult, Tracker

# Why a frame gave no result: the node's skipped.* diagnostics and the replay's summary.
SKIP_INVALID_IMAGE = 'invalid_image'  # unknown encoding, truncated data, zero size, bad JPEG
SKIP_TOO_LARGE = 'image_too_large'  # more pixels than max_image_pixels (refused before decoding)
SKIP_TIMESTAMP = 'non_increasing_stamp'  # header stamp not after the last processed frame's
SKIP_CALIBRATION = 'calibration_mismatch'  # the camera does not fit the image size
SKIP_ERROR = 'processing_error'  # the extractor or matcher raised (e.g. CUDA out of memory)
SKIP_REASONS = (SKIP_INVALID_IMAGE, SKIP_TOO_LARGE, SKIP_TIMESTAMP, SKIP_CALIBRATION,
                SKIP_ERROR)

Intrinsics = tuple[float, float, float, float]  # fx, fy, cx, cy in pixels


@dataclass(frozen=True)
class Skip:
    """A frame that gave no result: one of SKIP_REASONS and the error behind it."""

    reason: str
    detail: str

    @classmethod
    def of(cls, err: Exception) -> Skip:
        """The skip reason of an exception raised while decoding or tracking a frame."""
        if isinstance(err, ImageTooLargeError):  # before InvalidImageError: a subclass
            return cls(SKIP_TOO_LARGE, str(err))
        for kind, reason in ((InvalidImageError, SKIP_INVALID_IMAGE),
                             (TimestampError, SKIP_TIMESTAMP),
                             (CalibrationError, SKIP_CALIBRATION)):
            if isinstance(err, kind):
                return cls(reason, str(err))
        return cls(SKIP_ERROR, f'{type(err).__name__}: {err}')


@dataclass(frozen=True)
class FrameOutcome:
    """What became of one frame: a result or a skip, never both."""

    result: FrameResult | None
    skip: Skip | None
    camera: CameraModel | None  # the camera the tracker was given (fallback included)
    reset: int = 0  # frames back in time after which the tracker restarted at this frame


class FramePipeline:
    """The tracker plus the per-frame rules of the node and the replay.

    fallback: the camera for frames without calibration: a CameraModel (one image size) or
        pinhole intrinsics (fx, fy, cx, cy) for any size; None: no pose without calibration.
    backwards_reset_frames: the n-th frame in a row stamped at or before the last processed
        one resets the tracker and starts a new map from it (0: never reset, always skip).
    """

    def __init__(self, tracker: Tracker, *, fallback: CameraModel | Sequence[float] | None = None,
                 backwards_reset_frames: int = DEFAULT_BACKWARDS_RESET_FRAMES) -> None:
        self.tracker = tracker
        self.backwards_reset_frames = backwards_reset_frames
        self.set_fallback(fallback)
        self._backwards = 0  # consecutive frames stamped before the last processed one
        self._reset = 0  # the current frame's FrameOutcome.reset

    def set_fallback(self, fallback: CameraModel | Sequence[float] | None) -> None:
        if fallback is not None and not isinstance(fallback, CameraModel):
            values = tuple(float(v) for v in fallback)
            if len(values) != 4:
                raise CalibrationError(f'fallback intrinsics need fx, fy, cx, cy; got {values}')
            fallback = values
        self.fallback: CameraModel | Intrinsics | None = fallback
        self._fallback_models: dict[tuple[int, int], CameraModel] = {}

    def camera_for(self, camera: CameraModel | None, width: int, height: int
                   ) -> CameraModel | None:
        """``camera``, else the fallback for this image size (None without one). Raises
        CalibrationError when the fallback intrinsics are implausible for the size."""
        if camera is not None or self.fallback is None:
            return camera
        if isinstance(self.fallback, CameraModel):
            return self.fallback
        model = self._fallback_models.get((width, height))
        if model is None:
            model = CameraModel.from_intrinsics(*self.fallback, width, height)
            self._fallback_models[(width, height)] = model
        return model

    def process(self, image: np.ndarray, stamp_ns: int,
                camera: CameraModel | None = None) -> FrameOutcome:
        """Track one decoded frame (``Tracker.process``); failures come back as a Skip."""
        used: CameraModel | None = None
        self._reset = 0
        try:
            used = self.camera_for(camera, image.shape[1], image.shape[0])
            result = self._run_tracker(image, stamp_ns, used)
        except Exception as err:  # noqa: BLE001 - every failure is a counted skip
            skip = Skip.of(err)
            if skip.reason == SKIP_ERROR:
                self._free_device_memory()
            return FrameOutcome(None, skip, used, self._reset)
        return FrameOutcome(result, None, used, self._reset)

    def _run_tracker(self, image: np.ndarray, stamp_ns: int, camera: CameraModel | None
               ) -> FrameResult:
        try:
            result = self.tracker.process(image, stamp_ns, camera)
        except TimestampError:
            self._backwards += 1
            limit = self.backwards_reset_frames
            if limit <= 0 or self._backwards < limit:
                raise
            self._reset, self._backwards = self._backwards, 0
            self.tracker.reset()
            return self.tracker.process(image, stamp_ns, camera)
        self._backwards = 0
        return result

    def _free_device_memory(self) -> None:
        if self.tracker.device.type == 'cuda':
            import torch  # already loaded by the tracker; only here to reach its CUDA cache

            torch.cuda.empty_cache()

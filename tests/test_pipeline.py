"""FramePipeline: the per-frame rules of the node and the replay, without ROS or models."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch

from lightglue_ros.camera import CameraModel
from lightglue_ros.errors import (CalibrationError, ImageTooLargeError, InvalidImageError,
                                  TimestampError)
from lightglue_ros.pipeline import (SKIP_CALIBRATION, SKIP_ERROR, SKIP_INVALID_IMAGE,
                                    SKIP_REASONS, SKIP_TIMESTAMP, SKIP_TOO_LARGE, FramePipeline,
                                    Skip)

IMAGE = np.zeros((48, 64), np.uint8)


@dataclass
class FakeTracker:
    """The part of Tracker the pipeline uses: stamps must increase, as the real one's."""

    device: torch.device = field(default_factory=lambda: torch.device('cpu'))
    fail_with: Exception | None = None
    last_stamp: int | None = None
    calls: list[tuple[int, Any]] = field(default_factory=list)
    resets: int = 0

    def process(self, image: np.ndarray, stamp_ns: int, camera: Any = None) -> str:
        if self.fail_with is not None:
            raise self.fail_with
        if self.last_stamp is not None and stamp_ns <= self.last_stamp:
            raise TimestampError(f'{stamp_ns} after {self.last_stamp}')
        if camera is not None and (camera.width, camera.height) != image.shape[1::-1]:
            raise CalibrationError('camera does not fit')
        self.last_stamp = stamp_ns
        self.calls.append((stamp_ns, camera))
        return f'result {stamp_ns}'

    def reset(self) -> None:
        self.resets += 1
        self.last_stamp = None


def test_a_good_frame_gives_the_trackers_result_and_no_skip() -> None:
    pipeline = FramePipeline(FakeTracker())
    outcome = pipeline.process(IMAGE, 10)
    assert (outcome.result, outcome.skip, outcome.camera, outcome.reset) == \
        ('result 10', None, None, 0)


def test_the_given_camera_wins_over_the_fallback() -> None:
    camera = CameraModel.from_intrinsics(50.0, 50.0, 32.0, 24.0, 64, 48)
    tracker = FakeTracker()
    outcome = FramePipeline(tracker, fallback=(90.0, 90.0, 30.0, 20.0)).process(IMAGE, 1, camera)
    assert outcome.camera is camera and tracker.calls == [(1, camera)]


def test_fallback_intrinsics_give_one_camera_per_image_size() -> None:
    tracker = FakeTracker()
    pipeline = FramePipeline(tracker, fallback=[90.0, 91.0, 30.0, 20.0])
    first = pipeline.process(IMAGE, 1).camera
    again = pipeline.process(IMAGE, 2).camera
    larger = pipeline.process(np.zeros((96, 128), np.uint8), 3).camera
    assert first is again  # built once for the size
    assert (first.width, first.height, larger.width, larger.height) == (64, 48, 128, 96)
    np.testing.assert_array_equal(first.K, [[90.0, 0, 30.0], [0, 91.0, 20.0], [0, 0, 1]])
    pipeline.set_fallback(None)
    assert pipeline.process(IMAGE, 4).camera is None


def test_fallback_implausible_for_the_image_size_is_a_counted_skip() -> None:
    # A principal point far outside a 64x48 image: CameraModel refuses it for that size.
    pipeline = FramePipeline(FakeTracker(), fallback=(50.0, 50.0, 5000.0, 5000.0))
    outcome = pipeline.process(IMAGE, 1)
    assert outcome.result is None and outcome.skip.reason == SKIP_CALIBRATION


def test_a_fallback_needs_four_values() -> None:
    with pytest.raises(CalibrationError, match='fx, fy, cx, cy'):
        FramePipeline(FakeTracker(), fallback=(1.0, 2.0, 3.0))


def test_stamps_going_back_are_skipped_then_reset_the_tracker_at_the_limit() -> None:
    tracker = FakeTracker()
    pipeline = FramePipeline(tracker, backwards_reset_frames=3)
    assert pipeline.process(IMAGE, 100).result == 'result 100'
    skips = [pipeline.process(IMAGE, stamp) for stamp in (50, 60)]
    assert [o.skip.reason for o in skips] == [SKIP_TIMESTAMP] * 2
    assert all(o.reset == 0 for o in skips) and tracker.resets == 0
    third = pipeline.process(IMAGE, 70)  # the third in a row: a new map from this frame
    assert (third.result, third.skip, third.reset, tracker.resets) == ('result 70', None, 3, 1)


def test_a_good_frame_restarts_the_count_of_frames_back_in_time() -> None:
    tracker = FakeTracker()
    pipeline = FramePipeline(tracker, backwards_reset_frames=2)
    pipeline.process(IMAGE, 100)
    assert pipeline.process(IMAGE, 50).skip.reason == SKIP_TIMESTAMP
    assert pipeline.process(IMAGE, 101).result == 'result 101'
    assert pipeline.process(IMAGE, 60).skip.reason == SKIP_TIMESTAMP  # one in a row again
    assert tracker.resets == 0


def test_zero_backwards_reset_frames_never_resets() -> None:
    tracker = FakeTracker()
    pipeline = FramePipeline(tracker, backwards_reset_frames=0)
    pipeline.process(IMAGE, 100)
    outcomes = [pipeline.process(IMAGE, stamp) for stamp in range(10)]
    assert {o.skip.reason for o in outcomes} == {SKIP_TIMESTAMP} and tracker.resets == 0


@pytest.mark.parametrize('error, reason', [
    (ImageTooLargeError('too many pixels'), SKIP_TOO_LARGE),
    (InvalidImageError('empty image'), SKIP_INVALID_IMAGE),
    (CalibrationError('camera is 640x480'), SKIP_CALIBRATION),
    (TimestampError('stamp 5 after 6'), SKIP_TIMESTAMP),
    (RuntimeError('CUDA out of memory'), SKIP_ERROR),
])
def test_every_failure_of_the_tracker_is_a_skip_with_its_reason(error: Exception,
                                                                reason: str) -> None:
    outcome = FramePipeline(FakeTracker(fail_with=error)).process(IMAGE, 1)
    assert outcome.result is None and outcome.skip.reason == reason
    assert str(error) in outcome.skip.detail
    assert reason in SKIP_REASONS


def test_an_unexpected_error_names_its_type() -> None:
    assert Skip.of(KeyError('x')) == Skip(SKIP_ERROR, "KeyError: 'x'")


def test_processing_errors_free_the_cuda_cache_only_on_cuda(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    emptied: list[bool] = []
    monkeypatch.setattr(torch.cuda, 'empty_cache', lambda: emptied.append(True))
    FramePipeline(FakeTracker(fail_with=RuntimeError('x'))).process(IMAGE, 1)
    assert emptied == []
    cuda = FakeTracker(device=torch.device('cuda'), fail_with=RuntimeError('out of memory'))
    FramePipeline(cuda).process(IMAGE, 1)
    assert emptied == [True]
    FramePipeline(FakeTracker(device=torch.device('cuda'),
                              fail_with=InvalidImageError('bad'))).process(IMAGE, 1)
    assert emptied == [True]  # bad input is not a memory problem

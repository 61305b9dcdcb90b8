"""lightglue_ros.realtime (the camera clock, back-and-forth playing, rate and latency of the
outputs) and the real-time target they are compared with (profiles.REALTIME_TARGET)."""
from __future__ import annotations

import itertools

import pytest

from lightglue_ros.errors import ConfigError
from lightglue_ros.profiles import REALTIME_TARGET
from lightglue_ros.realtime import RateSummary, back_and_forth, camera_ticks


class FakeClock:
    """A monotonic clock that only moves when someone sleeps or works."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_camera_ticks_keep_the_schedule_whatever_the_caller_does():
    clock = FakeClock()
    ticks = camera_ticks(20.0, clock=clock, sleep=clock.sleep)
    assert next(ticks) == 0.0 and clock.sleeps == []  # the first tick at once
    clock.now += 0.01  # 10 ms of work: the next tick is due 40 ms later
    assert next(ticks) == pytest.approx(0.05) and clock.sleeps == [pytest.approx(0.04)]
    clock.now += 0.12  # late by 70 ms: ticks 2 and 3 come at once, tick 4 on time
    assert next(ticks) == pytest.approx(0.17)
    assert next(ticks) == pytest.approx(0.17)
    assert len(clock.sleeps) == 1
    assert next(ticks) == pytest.approx(0.20)  # start + 4 / 20 Hz: no drift
    assert clock.sleeps[-1] == pytest.approx(0.03)


def test_camera_ticks_need_a_positive_rate():
    with pytest.raises(ConfigError, match='camera rate must be > 0'):
        next(camera_ticks(0.0))


def test_back_and_forth_sweeps_the_views_to_and_fro():
    assert list(itertools.islice(back_and_forth(4), 11)) == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2]
    assert list(itertools.islice(back_and_forth(2), 5)) == [0, 1, 0, 1, 0]
    assert list(itertools.islice(back_and_forth(1), 3)) == [0, 0, 0]
    with pytest.raises(ConfigError, match='num_views must be >= 1'):
        back_and_forth(0)


def test_rate_summary_matches_outputs_to_frames_by_key():
    published = {10: 1.0, 11: 1.1, 12: 1.2, 13: 1.3, 14: 1.4}
    # 11 and 13 had no output; 99 is an output of a frame left out (e.g. a warm-up frame).
    received = {10: 1.05, 12: 1.28, 14: 1.45, 99: 0.5}
    summary = RateSummary.from_times(published, received)
    assert (summary.published, summary.processed) == (5, 3)
    assert summary.hz == pytest.approx(2 / 0.40)  # 3 outputs from 1.05 s to 1.45 s
    assert summary.latency_p50_ms == pytest.approx(50.0)  # of 50, 80 and 50 ms
    assert summary.latency_p95_ms == pytest.approx(77.0)
    assert summary.as_dict()['processed'] == 3


def test_rate_summary_of_too_few_outputs():
    nothing = RateSummary.from_times({1: 0.0, 2: 0.1}, {})
    assert (nothing.processed, nothing.hz) == (0, 0.0)
    assert nothing.latency_p50_ms is None and nothing.latency_p95_ms is None
    one = RateSummary.from_times({1: 0.0, 2: 0.1}, {2: 0.3})
    assert (one.processed, one.hz, one.latency_p50_ms) == (1, 0.0, pytest.approx(200.0))


def test_the_realtime_target():
    target = REALTIME_TARGET
    assert (target.camera_hz, target.processing_mode) == (30.0, 'latest')
    assert target.met_by(target.node_hz, target.latency_p50_ms)
    assert not target.met_by(target.node_hz - 0.1, target.latency_p50_ms)
    assert not target.met_by(target.node_hz, target.latency_p50_ms + 0.1)
    assert not target.met_by(target.node_hz, None)
    assert target.describe() == ('>= 20 Hz, latency p50 <= 60 ms at a 30 Hz camera in latest '
                                 'mode')

"""The matcher node's statistics: counters, rates and the /diagnostics report.

Nothing here imports ROS; the node feeds these from its callbacks and worker thread, and the
diagnostics timer reads ``NodeStats.report``. All classes are thread-safe.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lightglue_ros.pipeline import SKIP_ERROR

__all__ = ['StampGapMonitor', 'NodeStats', 'Report', 'DROP_SUPERSEDED', 'DROP_OVERFLOW',
           'DROP_REASONS', 'LEVEL_OK', 'LEVEL_WARN', 'LEVEL_ERROR']

# Why a frame never reached the tracker's result (diagnostics keys dropped.* / skipped.*).
DROP_SUPERSEDED = 'superseded'  # latest mode: a newer frame replaced it while the worker was busy
DROP_OVERFLOW = 'queue_overflow'  # lossless mode: the queue was full, the oldest frame went
DROP_REASONS = (DROP_SUPERSEDED, DROP_OVERFLOW)
# Skip reasons (skipped.*): lightglue_ros.pipeline; pose_unavailable.* and keyframes.*:
# lightglue_ros.tracker.POSE_UNAVAILABLE_REASONS and KEYFRAME_REASONS.

LEVEL_OK, LEVEL_WARN, LEVEL_ERROR = 0, 1, 2
# A running stream that goes silent for this many frame periods (and at least STALL_MIN_S)
# while its publisher is still matched has stalled (NodeStats.check_stall).
STALL_PERIODS = 30
STALL_MIN_S = 1.0


class StampGapMonitor:
    """Gaps in the header stamps of the images that reach the node: frames lost before the
    image callback (DDS transport, a subscription history too shallow), not the frames the
    node drops itself. Not thread-safe (NodeStats guards it).

    The frame period is the median of the last ``window`` stamp intervals (the lower of the two
    middle values, so that a stream missing every third frame still shows its true period);
    stamp jitter does not move it. Once ``min_intervals`` are known, an interval longer than
    ``gap_factor`` periods is a gap with round(interval / period) - 1 frames missing (a lower
    bound when most frames are lost). A loss pattern is at least ``min_gaps`` gaps and at least
    ``gap_fraction`` of the classified intervals in the window: one late frame is a driver
    hiccup, repeated holes in a regular stream are transport loss. ``add`` returns True the
    first time a pattern is seen, so that the caller logs it once. A stamp before the previous
    one (bag loop, driver restart) starts the window over; an interval of more than
    ``pause_factor`` periods is the stream pausing, not loss, and is left out.
    """

    def __init__(self, *, window: int = 100, min_intervals: int = 5,
                 gap_factor: float = 1.5, min_gaps: int = 3, gap_fraction: float = 0.05,
                 pause_factor: float = 100.0) -> None:
        self.window = window
        self.min_intervals = min_intervals
        self.gap_factor = gap_factor
        self.min_gaps = min_gaps
        self.gap_fraction = gap_fraction
        self.pause_factor = pause_factor
        self.gaps = 0  # since start
        self.missing_frames = 0  # estimated, since start
        self.pattern = ''  # the first loss pattern, in words ('' until one is seen)
        self._last_ns: int | None = None
        self._intervals: deque[int] = deque(maxlen=window)
        self._flags: deque[bool] = deque(maxlen=window)  # classified intervals: gap or not

    @property
    def ready(self) -> bool:
        """True once enough intervals are known to judge the next one."""
        return len(self._intervals) >= self.min_intervals

    @property
    def period_ns(self) -> float:
        """The frame period (median of the window's stamp intervals, the lower middle value),
        nanoseconds; NaN before two stamps."""
        if not self._intervals:
            return float('nan')
        return float(np.percentile(self._intervals, 50, method='lower'))

    def add(self, stamp_ns: int) -> bool:
        """Take the stamp of the next received image; True the first time it completes a
        loss pattern (``pattern`` then says what was seen)."""
        last, self._last_ns = self._last_ns, stamp_ns
        if last is None:
            return False
        interval = stamp_ns - last
        if interval <= 0:
            if interval < 0:  # went back: a new stream
                self._intervals.clear()
                self._flags.clear()
            return False
        if self.ready:
            period = self.period_ns
            if interval > self.pause_factor * period:
                return False
            gap = interval > self.gap_factor * period
            self._flags.append(gap)
            if gap:
                self.gaps += 1
                self.missing_frames += max(1, round(interval / period) - 1)
        self._intervals.append(interval)
        return self._new_pattern()

    def _new_pattern(self) -> bool:
        if self.pattern:
            return False
        gaps = sum(self._flags)
        if gaps < max(self.min_gaps, self.gap_fraction * len(self._flags)):
            return False
        self.pattern = (f'{gaps} gaps in the last {len(self._flags)} frame intervals '
                        f'(frame period {self.period_ns * 1e-6:.1f} ms), at least '
                        f'{self.missing_frames} frames missing so far')
        return True


@dataclass(frozen=True)
class Report:
    """One diagnostics status: level (0 OK, 1 WARN, 2 ERROR), message and key-values."""

    level: int
    message: str
    values: dict[str, Any]


def _percentiles(samples: list[float], prefix: str) -> dict[str, float]:
    if not samples:
        return {f'{prefix}_p50_ms': float('nan'), f'{prefix}_p90_ms': float('nan'),
                f'{prefix}_p99_ms': float('nan'), f'{prefix}_max_ms': float('nan')}
    p50, p90, p99 = np.percentile(np.asarray(samples), [50, 90, 99])
    return {f'{prefix}_p50_ms': float(p50), f'{prefix}_p90_ms': float(p90),
            f'{prefix}_p99_ms': float(p99), f'{prefix}_max_ms': float(max(samples))}


class NodeStats:
    """Counters and sliding windows behind the node's /diagnostics status.

    Rates count events of the last ``rate_window_s`` seconds; latency percentiles cover the
    last ``latency_samples`` processed frames. ``report`` also says what changed since the
    previous report (drops, skips, errors), which sets the status level.
    """

    def __init__(self, *, rate_window_s: float = 5.0, latency_samples: int = 100,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.rate_window_s = rate_window_s
        self.started = clock()
        self.received = 0
        self.processed = 0
        self.dropped: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.pose_unavailable: Counter[str] = Counter()  # processed frames without a pose
        self.keyframes: Counter[str] = Counter()  # keyframe changes by reason
        self.camera_info_received = 0
        self.camera_info_invalid = 0
        self.debug_images = 0
        self.tracker_resets = 0
        self.decoder_warnings = 0  # libjpeg/libpng warnings about images that still decoded
        self.gap_monitor = StampGapMonitor()
        self.stalls = 0  # times a running stream went silent with its publisher matched
        self._last_input: float | None = None
        self._stalled = False
        self.last_error = ''
        self.last: dict[str, Any] = {}  # per-frame numbers of the last processed frame
        self._inputs: deque[float] = deque()
        self._outputs: deque[float] = deque()
        self._latency: deque[float] = deque(maxlen=latency_samples)
        self._stamp_age: deque[float] = deque(maxlen=latency_samples)
        self._core: deque[float] = deque(maxlen=latency_samples)
        self._reported: dict[str, int] = {}

    # -- events ---------------------------------------------------------------------------
    def on_input(self, stamp_ns: int | None = None) -> bool:
        """An image arrived (with its header stamp); True the first time the stamps show a
        transport loss pattern (StampGapMonitor; its ``pattern`` says what)."""
        with self._lock:
            self.received += 1
            self._last_input = self._clock()
            self._inputs.append(self._last_input)
            self._stalled = False
            return self.gap_monitor.add(stamp_ns) if stamp_ns is not None else False

    def check_stall(self, publishers: int) -> float | None:
        """Seconds since the last image, the first time (per silence) that they exceed
        STALL_PERIODS frame periods (at least STALL_MIN_S) of a stream whose period is known,
        while ``publishers`` (of the image topic) are still matched; else None. Counted."""
        with self._lock:
            if self._stalled or self._last_input is None or publishers <= 0 \
                    or not self.gap_monitor.ready:
                return None
            silent = self._clock() - self._last_input
            if silent < max(STALL_MIN_S, STALL_PERIODS * self.gap_monitor.period_ns * 1e-9):
                return None
            self._stalled = True
            self.stalls += 1
            return silent

    def on_decoder_warning(self) -> None:
        with self._lock:
            self.decoder_warnings += 1

    def on_drop(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self.dropped[reason] += count

    def on_skip(self, reason: str, error: str = '') -> None:
        with self._lock:
            self.skipped[reason] += 1
            if error:
                self.last_error = f'{reason}: {error}'

    def on_camera_info(self, valid: bool) -> None:
        with self._lock:
            self.camera_info_received += 1
            self.camera_info_invalid += 0 if valid else 1

    def on_reset(self) -> None:
        with self._lock:
            self.tracker_resets += 1

    def on_debug_image(self) -> None:
        with self._lock:
            self.debug_images += 1

    def on_result(self, *, latency_ms: float, stamp_age_ms: float, core_ms: float,
                  pose_reason: str, keyframe_reasons: tuple[str, ...],
                  values: dict[str, Any]) -> None:
        """A processed frame whose outputs are published. pose_reason: '' with a pose."""
        with self._lock:
            self.processed += 1
            self._outputs.append(self._clock())
            self._latency.append(latency_ms)
            self._stamp_age.append(stamp_age_ms)
            self._core.append(core_ms)
            if pose_reason:
                self.pose_unavailable[pose_reason] += 1
            for reason in keyframe_reasons:
                self.keyframes[reason] += 1
            self.last = dict(values)

    # -- reading --------------------------------------------------------------------------
    def _rate(self, times: deque[float], now: float) -> float:
        while times and times[0] < now - self.rate_window_s:
            times.popleft()
        span = min(self.rate_window_s, now - self.started)
        return len(times) / span if span > 0 else 0.0

    def latencies_ms(self) -> list[float]:
        with self._lock:
            return list(self._latency)

    def snapshot(self) -> dict[str, Any]:
        """Every diagnostics value, in a stable order."""
        now = self._clock()
        with self._lock:
            values: dict[str, Any] = {
                'input_rate_hz': self._rate(self._inputs, now),
                'output_rate_hz': self._rate(self._outputs, now),
            }
            values.update(_percentiles(list(self._latency), 'latency'))
            values.update(_percentiles(list(self._stamp_age), 'stamp_age'))
            values['core_p50_ms'] = (float(np.median(self._core)) if self._core
                                     else float('nan'))
            values['core_max_ms'] = max(self._core) if self._core else float('nan')
            values.update({
                'frames_received': self.received,
                'frames_processed': self.processed,
                'frames_dropped': sum(self.dropped.values()),
                'frames_skipped': sum(self.skipped.values()),
            })
            values.update({f'dropped.{k}': v for k, v in sorted(self.dropped.items())})
            values.update({f'skipped.{k}': v for k, v in sorted(self.skipped.items())})
            values.update({f'pose_unavailable.{k}': v
                           for k, v in sorted(self.pose_unavailable.items())})
            values['keyframes'] = sum(self.keyframes.values())
            values.update({f'keyframes.{k}': v for k, v in sorted(self.keyframes.items())})
            values.update({
                'camera_info_received': self.camera_info_received,
                'camera_info_invalid': self.camera_info_invalid,
                'tracker_resets': self.tracker_resets,
                'debug_images': self.debug_images,
                'decoder_warnings': self.decoder_warnings,
                'input_period_ms': self.gap_monitor.period_ns * 1e-6,
                'input_gaps': self.gap_monitor.gaps,
                'input_frames_missing': self.gap_monitor.missing_frames,
                'input_stalls': self.stalls,
            })
            values.update(self.last)
            values['last_error'] = self.last_error
            return values

    def report(self, static: dict[str, Any] | None = None) -> Report:
        """The diagnostics status now; the level reflects what happened since the last call:
        ERROR after processing errors, WARN after drops, skips, invalid camera_info, frames
        without a pose, gaps in the input stamps or a stalled input, OK otherwise."""
        values = dict(static or {})
        values.update(self.snapshot())
        with self._lock:
            counts = {
                'dropped': sum(self.dropped.values()),
                'skipped': sum(self.skipped.values()) - self.skipped.get(SKIP_ERROR, 0),
                'errors': self.skipped.get(SKIP_ERROR, 0),
                'invalid camera_info': self.camera_info_invalid,
                'without pose': sum(self.pose_unavailable.values()),
                'input gaps': self.gap_monitor.gaps,
                'input stalls': self.stalls,
            }
            new = {k: v - self._reported.get(k, 0) for k, v in counts.items()}
            self._reported = counts
        news = [f'{n} {what}' for what, n in new.items() if n > 0]
        if new['errors']:
            level = LEVEL_ERROR
        elif news:
            level = LEVEL_WARN
        else:
            level = LEVEL_OK
        if self.received == 0:
            message = 'waiting for images'
        else:
            message = ('ok' if not news else ', '.join(news) + ' since the last report')
        return Report(level, message, values)

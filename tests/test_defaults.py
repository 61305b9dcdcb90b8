"""Every default is stated once and flows outward: the networks, the tracker, the node's
parameters and the command line show the same values, and one check guards max_keypoints."""
from __future__ import annotations

import inspect

import pytest

from lightglue_ros import defaults, geometry
from lightglue_ros.errors import ConfigError
from lightglue_ros.models.extractors import AlikedExtractor, DiskExtractor
from lightglue_ros.models.lightglue import LightGlue
from lightglue_ros.models.superpoint import SuperPoint
from lightglue_ros.models.xfeat import XFeat
from lightglue_ros.tracker import TrackerConfig

NETWORKS = (SuperPoint, DiskExtractor, AlikedExtractor, XFeat)


@pytest.mark.parametrize('network', NETWORKS, ids=lambda n: n.name)
def test_every_network_keeps_the_same_keypoints_at_the_same_size(network):
    """A network built on its own behaves like the tracker's: they once disagreed (SuperPoint
    kept every keypoint at native size, XFeat 1024 at native size, DISK/ALIKED 1024 at 1024)."""
    assert network.default_conf['max_keypoints'] == defaults.DEFAULT_MAX_KEYPOINTS
    assert network.default_conf['resize'] == defaults.DEFAULT_RESIZE
    config = TrackerConfig()
    assert (config.max_keypoints, config.resize) == (defaults.DEFAULT_MAX_KEYPOINTS,
                                                     defaults.DEFAULT_RESIZE)


def test_the_tracker_takes_the_matcher_and_pose_defaults_from_their_owners():
    config = TrackerConfig()
    for key in ('depth_confidence', 'width_confidence', 'filter_threshold', 'precision'):
        assert getattr(config, key) == LightGlue.default_conf[key], key
    pose = inspect.signature(geometry.estimate_relative_pose).parameters
    for ours, theirs in (('pose_method', 'method'), ('ransac_threshold_px', 'threshold_px'),
                         ('ransac_confidence', 'confidence'), ('min_pose_matches', 'min_matches'),
                         ('min_parallax_deg', 'min_parallax_deg')):
        assert getattr(config, ours) == pose[theirs].default, ours


def test_node_parameters_show_the_tracker_defaults():
    pytest.importorskip('rclpy')
    from lightglue_ros.ros.params import DEFAULTS, SPECS

    config = TrackerConfig()
    for spec in SPECS.values():
        if spec.tracker_key in ('max_keypoints', 'extractor', 'depth_confidence',
                                'ransac_threshold_px', 'min_pose_matches', 'pose_method'):
            assert DEFAULTS[spec.name] == getattr(config, spec.tracker_key), spec.name
    assert SPECS['max_keypoints'].max == defaults.MAX_KEYPOINTS_LIMIT


@pytest.mark.parametrize('value', [0, -2, defaults.MAX_KEYPOINTS_LIMIT + 1, 12.0, True, '64'])
def test_one_check_refuses_a_bad_keypoint_budget_everywhere(value):
    message = r'max_keypoints must be .*an int in \[1, 16384\], got'
    with pytest.raises(ConfigError, match=message):
        TrackerConfig(max_keypoints=value)
    for network in (SuperPoint, XFeat):
        with pytest.raises(ConfigError, match=message):
            network(max_keypoints=value)


@pytest.mark.parametrize('value', [None, -1])
def test_a_network_on_its_own_may_keep_every_keypoint(value):
    assert SuperPoint(max_keypoints=value).conf['max_keypoints'] == value
    with pytest.raises(ConfigError, match='max_keypoints'):
        TrackerConfig(max_keypoints=value)


def test_pose_options_are_checked_once_and_named_as_the_caller_names_them():
    with pytest.raises(ConfigError, match='min_pose_matches must be an integer >= 5'):
        TrackerConfig(min_pose_matches=4)
    with pytest.raises(ConfigError, match='min_matches must be an integer >= 5'):
        geometry.check_pose_options(min_matches=4)
    with pytest.raises(ConfigError, match='ransac_confidence must be in'):
        TrackerConfig(ransac_confidence=1.0)

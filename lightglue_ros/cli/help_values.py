"""Names and defaults that the parsers show, copied from modules that import torch, rclpy or
OpenCV: building the ``lightglue-ros`` parser imports none of those, so that ``--help`` answers
at once. Each value has one owner, named beside it; tests/test_cli_help.py keeps them equal.
"""
from __future__ import annotations

# lightglue_ros.models.extractors.EXTRACTORS
EXTRACTORS = ('superpoint', 'disk', 'aliked', 'xfeat')
# lightglue_ros.tracker.TrackerConfig: extractor, max_keypoints, resize
TRACKER_EXTRACTOR = 'superpoint'
TRACKER_MAX_KEYPOINTS = 1024
TRACKER_RESIZE = 1024
# lightglue_ros.synthetic: DEFAULT_NUM_FRAMES, DEFAULT_FPS
SYNTHETIC_FRAMES = 20
SYNTHETIC_FPS = 5.0
# lightglue_ros.ros.bag_io: STORAGES, SUMMARY_NAME, PLOTS_NAME
STORAGES = ('mcap', 'sqlite3')
SUMMARY_NAME = 'replay_summary.json'
PLOTS_NAME = 'plots'
# lightglue_ros.ros.replay: DEBUG_IMAGE_TOPIC, DEFAULT_TOPIC_PREFIX, DEFAULT_ODOM_FRAME,
# DEFAULT_BACKWARDS_RESET
DEBUG_IMAGE_TOPIC = 'debug_image'
DEFAULT_TOPIC_PREFIX = '/lightglue_matcher'
DEFAULT_ODOM_FRAME = 'odom'
DEFAULT_BACKWARDS_RESET = 3
# lightglue_ros.ros.params: SPECS['features_layout'].choices, DEFAULTS['features_layout']
FEATURES_LAYOUTS = ('vins_mono', 'vins_fusion')
DEFAULT_FEATURES_LAYOUT = 'vins_mono'

# (value here, module, expression there) for the test
OWNERS = (
    (EXTRACTORS, 'lightglue_ros.models.extractors', 'EXTRACTORS'),
    (TRACKER_EXTRACTOR, 'lightglue_ros.tracker', 'TrackerConfig.extractor'),
    (TRACKER_MAX_KEYPOINTS, 'lightglue_ros.tracker', 'TrackerConfig.max_keypoints'),
    (TRACKER_RESIZE, 'lightglue_ros.tracker', 'TrackerConfig.resize'),
    (SYNTHETIC_FRAMES, 'lightglue_ros.synthetic', 'DEFAULT_NUM_FRAMES'),
    (SYNTHETIC_FPS, 'lightglue_ros.synthetic', 'DEFAULT_FPS'),
    (STORAGES, 'lightglue_ros.ros.bag_io', 'STORAGES'),
    (SUMMARY_NAME, 'lightglue_ros.ros.bag_io', 'SUMMARY_NAME'),
    (PLOTS_NAME, 'lightglue_ros.ros.bag_io', 'PLOTS_NAME'),
    (DEBUG_IMAGE_TOPIC, 'lightglue_ros.ros.replay', 'DEBUG_IMAGE_TOPIC'),
    (DEFAULT_TOPIC_PREFIX, 'lightglue_ros.ros.replay', 'DEFAULT_TOPIC_PREFIX'),
    (DEFAULT_ODOM_FRAME, 'lightglue_ros.ros.replay', 'DEFAULT_ODOM_FRAME'),
    (DEFAULT_BACKWARDS_RESET, 'lightglue_ros.ros.replay', 'DEFAULT_BACKWARDS_RESET'),
    (FEATURES_LAYOUTS, 'lightglue_ros.ros.params', "SPECS['features_layout'].choices"),
    (DEFAULT_FEATURES_LAYOUT, 'lightglue_ros.ros.params', "DEFAULTS['features_layout']"),
)

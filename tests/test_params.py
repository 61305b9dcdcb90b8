"""Tests of the matcher node's parameter table: defaults, validation, TrackerConfig mapping,
declaration with descriptors on a real rclpy node, and the shipped config file and docs."""
from __future__ import annotations

import math
import random
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from lightglue_ros.errors import ConfigError
from lightglue_ros.ros import params as P
from lightglue_ros.tracker import TrackerConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# rclpy's type-description support imports lark, which imports deprecated sre modules.
pytestmark = pytest.mark.filterwarnings('ignore:module .sre_:DeprecationWarning')
CONFIG_FILE = PROJECT_ROOT / 'config' / 'matcher.yaml'


def _values(**changes: Any) -> dict[str, Any]:
    return {**P.DEFAULTS, **changes}


# ------------------------------------------------------------------------------------------------
# The table.
# ------------------------------------------------------------------------------------------------

def test_every_parameter_is_described_typed_and_ranged_consistently() -> None:
    assert len(P.SPECS) == len(P.PARAMETERS), 'duplicate parameter names'
    for spec in P.PARAMETERS:
        assert spec.description.endswith('.') and len(spec.description) > 20, spec.name
        assert spec.type in (bool, int, float, str, tuple), spec.name
        assert P.check_value(spec, spec.default) is None, spec.name
        if spec.type in (int, float):
            assert spec.min is not None and spec.max is not None, f'{spec.name} has no range'
        if spec.choices:
            assert spec.type is str and spec.default in spec.choices, spec.name
    # Model, device, QoS and processing mode need a restart; thresholds do not.
    read_only = {s.name for s in P.PARAMETERS if s.read_only}
    assert {'extractor', 'extractor_weights', 'matcher_weights', 'max_keypoints', 'resize',
            'device', 'precision', 'qos_reliability', 'processing_mode'} <= read_only
    assert {'depth_confidence', 'width_confidence', 'filter_threshold',
            'keyframe_min_matches', 'keyframe_min_inliers', 'ransac_threshold_px',
            'fallback_intrinsics'}.isdisjoint(read_only)


def test_defaults_are_the_tracker_defaults() -> None:
    assert P.validate(P.DEFAULTS) is None
    assert P.tracker_config(P.DEFAULTS) == TrackerConfig()
    mapped = {spec.tracker_key for spec in P.PARAMETERS if spec.tracker_key}
    assert mapped == {f.name for f in fields(TrackerConfig)}, 'every tracker setting is a param'
    assert P.DEFAULTS['extractor'] == 'superpoint' and P.DEFAULTS['device'] == 'auto'
    assert P.DEFAULTS['processing_mode'] == 'latest'
    assert P.DEFAULTS['qos_reliability'] == 'best_effort'


def test_sentinels_map_to_tracker_none_values() -> None:
    config = P.tracker_config(_values(extractor_weights='', matcher_weights='', resize=0,
                                      detection_threshold=-1.0))
    assert config.extractor_weights is None and config.matcher_weights is None
    assert config.resize is None and config.detection_threshold is None
    config = P.tracker_config(_values(extractor_weights='/w/a.pth', resize=640,
                                      detection_threshold=0.2, extractor='aliked'))
    assert (config.extractor_weights, config.resize, config.detection_threshold) == (
        '/w/a.pth', 640, 0.2)


def test_tracker_updates_take_only_run_time_settings() -> None:
    updates = P.tracker_updates({'filter_threshold': 0.3, 'keyframe_min_matches': 50,
                                 'extractor': 'disk', 'log_throttle_s': 1.0,
                                 'fallback_intrinsics': (1.0, 1.0, 1.0, 1.0)})
    assert updates == {'filter_threshold': 0.3, 'keyframe_min_matches': 50}
    assert P.RUNTIME_TRACKER_KEYS >= {'depth_confidence', 'width_confidence',
                                      'filter_threshold', 'ransac_threshold_px', 'pose_method'}


@pytest.mark.parametrize('changes, reason', [
    ({'extractor': 'sift'}, 'extractor must be one of superpoint, disk, aliked'),
    ({'device': 'gpu'}, 'device must be auto, cpu, cuda or cuda:N'),
    ({'device': 'cuda:x'}, 'device must be auto, cpu, cuda or cuda:N'),
    ({'precision': 'int8'}, 'precision must be one of fp32, fp16, bf16'),
    ({'max_keypoints': 0}, r'max_keypoints must be in \[1, 16384\]'),
    ({'max_keypoints': 12.0}, 'max_keypoints must be a int'),
    ({'compressed_input': 1}, 'compressed_input must be a bool'),
    ({'resize': True}, 'resize must be a int'),
    ({'depth_confidence': 0.0}, r'depth_confidence must be -1 \(off\) or in \(0, 1\]'),
    ({'width_confidence': -0.5}, r'width_confidence must be -1 \(off\) or in \(0, 1\]'),
    ({'filter_threshold': 1.0}, 'filter_threshold must be < 1'),
    ({'filter_threshold': math.nan}, 'filter_threshold must be finite'),
    ({'keyframe_hysteresis': 0.5}, r'keyframe_hysteresis must be in \[1, 100\]'),
    ({'keyframe_min_matches': -1}, 'keyframe_min_matches must be in'),
    ({'ransac_threshold_px': 0.0}, 'ransac_threshold_px must be > 0'),
    ({'ransac_confidence': 1.0}, r'ransac_confidence must be in \(0, 1\)'),
    ({'min_pose_matches': 4}, r'min_pose_matches must be in \[5, 100000\]'),
    ({'detection_threshold': -0.5}, r'detection_threshold must be -1 \(default\) or >= 0'),
    ({'pose_method': 'eight_point'}, 'pose_method must be one of'),
    ({'processing_mode': 'fast'}, 'processing_mode must be one of latest, lossless'),
    ({'qos_reliability': 'system_default'}, 'qos_reliability must be one of'),
    ({'queue_size': 0}, 'queue_size must be in'),
    ({'fallback_intrinsics': (500.0, 0.0, 320.0, 240.0)}, 'must be all 0 \\(none\\) or all > 0'),
    ({'fallback_intrinsics': (500.0, 500.0)}, 'fallback_intrinsics must be 4 floats'),
    ({'fallback_intrinsics': (500, 500, 320, 240)}, 'fallback_intrinsics must be 4 floats'),
    ({'ransac_threshold_px': 1}, 'ransac_threshold_px must be a float'),
    ({'fallback_intrinsics': (500.0, math.inf, 1.0, 1.0)}, 'fallback_intrinsics must be finite'),
    ({'fallback_intrinsics': (-1.0, -1.0, -1.0, -1.0)}, 'values must be in'),
    ({'diagnostics_period_s': 0.0}, 'diagnostics_period_s must be in'),
    ({'features_layout': 'vins_3'}, 'features_layout must be one of vins_mono, vins_fusion'),
    ({'max_image_pixels': 0}, r'max_image_pixels must be in \[1, 1.07374e\+09\]'),
    ({'max_image_pixels': 1.0e6}, 'max_image_pixels must be a int'),
    ({'bogus': 1}, 'unknown parameter'),
])
def test_validate_refuses_with_a_reason(changes: dict[str, Any], reason: str) -> None:
    message = P.validate(_values(**changes))
    assert message is not None and re.search(reason, message), message


def test_validate_accepts_edge_values() -> None:
    for changes in ({'depth_confidence': -1.0, 'width_confidence': -1.0},
                    {'depth_confidence': 1.0}, {'filter_threshold': 0.0},
                    {'device': 'cuda:1'}, {'resize': 0}, {'detection_threshold': 0.0},
                    {'fallback_intrinsics': (525.0, 525.0, 319.5, 239.5)},
                    {'fallback_intrinsics': [525.0, 525.0, 319.5, 239.5]},
                    {'keyframe_min_matches': 0, 'keyframe_min_inliers': 0},
                    {'max_keypoints': 1, 'backwards_reset_frames': 0, 'log_throttle_s': 0.0}):
        assert P.validate(_values(**changes)) is None, changes


def test_fallback_intrinsics() -> None:
    assert P.fallback_intrinsics(P.DEFAULTS) is None
    assert P.fallback_intrinsics(_values(fallback_intrinsics=(1.0, 2.0, 3.0, 4.0))) == (
        1.0, 2.0, 3.0, 4.0)


def test_node_settings() -> None:
    settings = P.NodeSettings.from_values(P.DEFAULTS)
    assert not settings.lossless and settings.frame_capacity == 1 and not settings.reliable
    settings = P.NodeSettings.from_values(_values(processing_mode='lossless', queue_size=7,
                                                  qos_reliability='reliable'))
    assert settings.lossless and settings.frame_capacity == 7 and settings.reliable
    assert settings.features_layout == 'vins_mono'
    settings = P.NodeSettings.from_values(_values(features_layout='vins_fusion'))
    assert settings.features_layout == 'vins_fusion'


def test_input_guards_read_only_and_run_time() -> None:
    # The layout is what a consumer is wired to: a restart; the pixel cap applies per frame.
    assert P.SPECS['features_layout'].read_only
    assert not P.SPECS['max_image_pixels'].read_only
    assert P.DEFAULTS['max_image_pixels'] == 4096 * 4096
    assert P.validate(_values(max_image_pixels=1 << 30)) is None


# ------------------------------------------------------------------------------------------------
# The shipped files.
# ------------------------------------------------------------------------------------------------

def test_config_file_lists_every_parameter_at_its_default() -> None:
    values = P.load_params_file(CONFIG_FILE)
    assert set(values) == set(P.SPECS)
    for name, value in values.items():
        default = P.DEFAULTS[name]
        if isinstance(default, tuple):
            assert tuple(value) == default and all(isinstance(v, float) for v in value), name
        else:
            # The same Python type as well: rcl refuses 1 for a double parameter.
            assert value == default and type(value) is type(default), name
    assert P.validate(values) is None


def test_config_file_comments_name_every_choice() -> None:
    # The choices are stated once (ParamSpec.choices, from the modules that own them); the
    # shipped file's comments repeat them for its readers and must not fall behind.
    text = CONFIG_FILE.read_text('utf-8')
    comments = dict(re.findall(r'^ {4}(\w+): [^#\n]*# (.*)$', text, re.M))
    for spec in P.PARAMETERS:
        if spec.choices:
            missing = [c for c in spec.choices if not re.search(rf'\b{c}\b', comments[spec.name])]
            assert not missing, f'{spec.name}: the comment omits {missing}'


def test_load_params_file_merges_wildcard_and_node_sections(tmp_path: Path) -> None:
    path = tmp_path / 'p.yaml'
    path.write_text('/**:\n  ros__parameters:\n    max_keypoints: 10\n    resize: 5\n'
                    'lightglue_matcher:\n  ros__parameters:\n    resize: 7\n'
                    'other_node:\n  ros__parameters:\n    resize: 9\n')
    assert P.load_params_file(path) == {'max_keypoints': 10, 'resize': 7}
    path.write_text('lightglue_matcher:\n  params: {}\n')
    with pytest.raises(ConfigError, match='no ros__parameters'):
        P.load_params_file(path)


def test_docs_describe_every_parameter() -> None:
    doc = (PROJECT_ROOT / 'docs' / 'node.md').read_text(encoding='utf-8')
    for spec in P.PARAMETERS:
        assert f'`{spec.name}`' in doc, f'docs/node.md does not describe {spec.name}'


# ------------------------------------------------------------------------------------------------
# Declaration on a real rclpy node (no topics involved).
# ------------------------------------------------------------------------------------------------

def _node(context: Any, **overrides: Any) -> Any:
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    return Node(f'params_test_{random.randrange(1 << 30)}', context=context,
                parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])


def test_declare_parameters_sets_descriptors(context: Any) -> None:
    from rcl_interfaces.msg import ParameterType

    node = _node(context, max_keypoints=512, fallback_intrinsics=[1.0, 2.0, 3.0, 4.0])
    try:
        values = P.declare_parameters(node)
        assert values['max_keypoints'] == 512
        assert values['fallback_intrinsics'] == (1.0, 2.0, 3.0, 4.0)
        assert values['extractor'] == 'superpoint'
        descriptor = node.describe_parameter('max_keypoints')
        assert descriptor.read_only and descriptor.type == ParameterType.PARAMETER_INTEGER
        assert (descriptor.integer_range[0].from_value,
                descriptor.integer_range[0].to_value) == (1, 16384)
        assert 'keypoints' in descriptor.description
        descriptor = node.describe_parameter('filter_threshold')
        assert not descriptor.read_only and descriptor.floating_point_range[0].to_value == 1.0
        assert descriptor.additional_constraints == '< 1'
        assert node.describe_parameter('extractor').additional_constraints == \
            'one of: ' + ', '.join(P.SPECS['extractor'].choices)
        assert {'superpoint', 'disk', 'aliked'} <= set(P.SPECS['extractor'].choices)
        assert node.describe_parameter('fallback_intrinsics').type == \
            ParameterType.PARAMETER_DOUBLE_ARRAY
        # rclpy enforces the descriptor (range, read-only) before our own validation.
        from rclpy.parameter import Parameter

        result = node.set_parameters([Parameter('max_keypoints', value=100)])[0]
        assert not result.successful and 'read-only' in result.reason
        result = node.set_parameters([Parameter('keyframe_min_matches', value=-5)])[0]
        assert not result.successful and 'out of range' in result.reason
    finally:
        node.destroy_node()


@pytest.mark.parametrize('overrides, reason', [
    ({'max_keypoints': 0}, 'max_keypoints: .*out of range'),
    ({'max_keypoints': 'many'}, 'max_keypoints must be a int'),
    ({'filter_threshold': 1}, 'filter_threshold must be a float'),  # an int for a double
    ({'depth_confidence': 0.0}, r'depth_confidence must be -1 \(off\) or in \(0, 1\]'),
    ({'device': 'tpu'}, 'device must be auto, cpu, cuda or cuda:N'),
    ({'fallback_intrinsics': [1.0, 2.0]}, 'fallback_intrinsics must be 4 floats'),
])
def test_declare_parameters_refuses_invalid_start_up_values(
        context: Any, overrides: dict[str, Any], reason: str) -> None:
    node = _node(context, **overrides)
    try:
        with pytest.raises(ConfigError, match=reason):
            P.declare_parameters(node)
    finally:
        node.destroy_node()

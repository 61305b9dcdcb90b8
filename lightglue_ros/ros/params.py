"""The matcher node's parameters: one table, its validation and its mapping to TrackerConfig.

Every parameter is declared from ``PARAMETERS`` with a ParameterDescriptor (description,
integer/floating-point range, choices in ``additional_constraints``, ``read_only`` for what
needs a restart: models, device, QoS, processing mode). ``validate`` is the single check used
at start-up and by the node's on-set-parameters callback; it returns a reason or None.
Nothing here talks to the ROS graph, so the table can be tested (and documented) on its own.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightglue_ros.defaults import (CUDA_GRAPHS_MODES, DEFAULT_BACKWARDS_RESET_FRAMES,
                                    DEFAULT_FEATURES_INLIERS_ONLY, DEFAULT_FEATURES_LAYOUT,
                                    DEFAULT_ODOM_FRAME, DEFAULT_PIPELINED,
                                    DEFAULT_THREADS_PER_STAGE, EXTRACTORS,
                                    FEATURES_LAYOUTS, MAX_KEYPOINTS_LIMIT, NODE_NAME,
                                    STATIC_EARLY_EXIT_MODES, TORCH_COMPILE_MODES)
from lightglue_ros.errors import ConfigError
from lightglue_ros.geometry import POSE_METHODS
from lightglue_ros.models.lightglue import PRECISIONS
from lightglue_ros.ros.images import DEFAULT_MAX_IMAGE_PIXELS
from lightglue_ros.tracker import TrackerConfig

if TYPE_CHECKING:
    from rclpy.node import Node


__all__ = [
    'NODE_NAME', 'ParamSpec', 'PARAMETERS', 'SPECS', 'DEFAULTS', 'RUNTIME_TRACKER_KEYS',
    'NodeSettings', 'check_value', 'validate', 'tracker_config', 'tracker_updates',
    'fallback_intrinsics', 'declare_parameters', 'load_params_file',
]

ParamValue = bool | int | float | str | tuple[float, ...]


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its default fixes its type (bool, int, float, str, or a tuple of
    floats for a double array)."""

    name: str
    default: ParamValue
    description: str
    min: float | None = None  # inclusive range (ints, floats, each value of an array)
    max: float | None = None
    choices: tuple[str, ...] = ()  # allowed strings (empty: any)
    read_only: bool = False  # needs a restart (models, device, QoS, processing mode)
    tracker_key: str | None = None  # TrackerConfig field it maps to, if any
    constraint: str = ''  # extra rule in words (shown in the descriptor and docs)

    @property
    def type(self) -> type:
        """bool, int, float, str, or tuple (an array of doubles)."""
        return type(self.default)

    @property
    def constraints(self) -> str:
        """additional_constraints text of the descriptor."""
        parts = []
        if self.choices:
            parts.append('one of: ' + ', '.join(self.choices))
        if self.constraint:
            parts.append(self.constraint)
        return '; '.join(parts)

    def descriptor(self) -> Any:
        """rcl_interfaces/ParameterDescriptor of this parameter (imports ROS lazily)."""
        from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                        ParameterType)

        kind = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
                tuple: ParameterType.PARAMETER_DOUBLE_ARRAY}[self.type]
        descriptor = ParameterDescriptor(
            name=self.name, type=kind, description=self.description,
            additional_constraints=self.constraints, read_only=self.read_only)
        if self.type is int and self.min is not None and self.max is not None:
            descriptor.integer_range = [IntegerRange(
                from_value=int(self.min), to_value=int(self.max), step=1)]
        elif self.type is float and self.min is not None and self.max is not None:
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(self.min), to_value=float(self.max), step=0.0)]
        return descriptor


def _tracker_default(name: str) -> Any:
    return next(f.default for f in fields(TrackerConfig) if f.name == name)


_T = _tracker_default  # the table below takes the tracker's own defaults

PARAMETERS: tuple[ParamSpec, ...] = (
    # -- input --------------------------------------------------------------------------------
    ParamSpec('compressed_input', False,
              'Subscribe to image/compressed (sensor_msgs/CompressedImage) instead of image '
              '(sensor_msgs/Image).', read_only=True),
    ParamSpec('qos_reliability', 'best_effort',
              'Reliability of the image and camera_info subscriptions: best_effort (the '
              'sensor-data profile; matches every publisher) or reliable (bag playback, '
              'lossless mode).', choices=('best_effort', 'reliable'), read_only=True),
    ParamSpec('qos_depth', 5, 'History depth (keep-last) of the input subscriptions.',
              min=1, max=1000, read_only=True),
    ParamSpec('processing_mode', 'latest',
              'latest: the worker takes the newest frame, frames that arrive while it is busy '
              'replace the waiting one (counted as dropped); lossless: every frame in order '
              'through a queue of queue_size frames (overflow drops the oldest, counted).',
              choices=('latest', 'lossless'), read_only=True),
    ParamSpec('queue_size', 100, 'Frames the lossless queue holds before it overflows.',
              min=1, max=10000, read_only=True),
    ParamSpec('pipelined', DEFAULT_PIPELINED,
              'true: two worker threads, one decodes and extracts the next frame while the '
              'other matches, estimates the pose and publishes the current one (frame order '
              'and lossless mode stay exact; latest mode still drops only superseded frames); '
              'false: one worker, one frame at a time.', read_only=True),
    ParamSpec('threads_per_stage', DEFAULT_THREADS_PER_STAGE,
              "torch's intra-op CPU threads of each worker thread; 0: automatic (the cores "
              'this process may use, shared among the worker threads).',
              min=0, max=256, read_only=True),
    ParamSpec('max_image_pixels', DEFAULT_MAX_IMAGE_PIXELS,
              'Images with more pixels (width * height, as the header of a raw image or of a '
              'JPEG/PNG declares it) are refused before decoding (skipped.image_too_large).',
              min=1, max=1 << 30),
    # -- model (restart to change) ------------------------------------------------------------
    ParamSpec('extractor', _T('extractor'),
              'Keypoint extractor; LightGlue uses the weights trained for it.',
              choices=EXTRACTORS, read_only=True, tracker_key='extractor'),
    ParamSpec('extractor_weights', '',
              'Extractor weights file or folder; empty: resolve by name (cache dir, '
              '$LIGHTGLUE_ROS_WEIGHTS_PATH, download).', read_only=True,
              tracker_key='extractor_weights'),
    ParamSpec('matcher_weights', '',
              'LightGlue weights file or folder for the extractor; empty: resolve by name.',
              read_only=True, tracker_key='matcher_weights'),
    ParamSpec('max_keypoints', _T('max_keypoints'), 'Strongest keypoints kept per frame.',
              min=1, max=MAX_KEYPOINTS_LIMIT, read_only=True, tracker_key='max_keypoints'),
    ParamSpec('resize', _T('resize'),
              'Longer image side the extractor sees, pixels (downscale only); 0: native size.',
              min=0, max=16384, read_only=True, tracker_key='resize'),
    ParamSpec('detection_threshold', -1.0,
              "Extractor score threshold; -1: the extractor's default.", min=-1.0, max=1.0,
              read_only=True, tracker_key='detection_threshold', constraint='-1 or >= 0'),
    ParamSpec('device', _T('device'),
              'Torch device: auto (CUDA when available), cpu, cuda or cuda:N.', read_only=True,
              tracker_key='device', constraint='auto | cpu | cuda | cuda:N'),
    ParamSpec('precision', _T('precision'),
              'Matcher precision on CUDA (weights cast once at start-up); the CPU always runs '
              'fp32.',
              choices=PRECISIONS, read_only=True, tracker_key='precision'),
    ParamSpec('cuda_graphs', _T('cuda_graphs'),
              'Static-shape matcher (keypoints padded to max_keypoints) replayed from CUDA '
              'graphs: auto (on for a CUDA device, off elsewhere), on (on the CPU it runs '
              'eagerly), off (the dynamic eager matcher). Same matches either way.',
              choices=CUDA_GRAPHS_MODES, read_only=True, tracker_key='cuda_graphs'),
    ParamSpec('torch_compile', _T('torch_compile'),
              'torch.compile the static-shape path (where cuda_graphs selects it) at its first '
              'frame per image size, logged with the time; compiled code is cached on disk '
              '(~/.cache/lightglue_ros/torch_compile) for the next start. If compiling fails, '
              'one line says why and it runs eagerly. Same matches either way.',
              choices=TORCH_COMPILE_MODES, read_only=True, tracker_key='torch_compile'),
    ParamSpec('static_early_exit', _T('static_early_exit'),
              "How the static-shape path ends at LightGlue's early exit: mask (one graph, the "
              'layers after the exit run masked, no host read) or skip (a graph per layer; the '
              "host reads each layer's exit flag, one layer late on CUDA, and launches no "
              'more layers). Same matches either way.',
              choices=STATIC_EARLY_EXIT_MODES, read_only=True, tracker_key='static_early_exit'),
    # -- matcher and keyframe thresholds (run-time) -------------------------------------------
    ParamSpec('depth_confidence', _T('depth_confidence'),
              'LightGlue early exit: stop after the layer where this fraction of points is '
              'confident; -1: off.', min=-1.0, max=1.0, tracker_key='depth_confidence',
              constraint='-1 (off) or in (0, 1]'),
    ParamSpec('width_confidence', _T('width_confidence'),
              'LightGlue point pruning confidence; -1: off.', min=-1.0, max=1.0,
              tracker_key='width_confidence', constraint='-1 (off) or in (0, 1]'),
    ParamSpec('filter_threshold', _T('filter_threshold'),
              'Minimum LightGlue score for a match to be kept.',
              min=0.0, max=1.0, tracker_key='filter_threshold', constraint='< 1'),
    ParamSpec('keyframe_min_matches', _T('keyframe_min_matches'),
              'A frame with fewer matches to the keyframe ends the keyframe.',
              min=0, max=100000, tracker_key='keyframe_min_matches'),
    ParamSpec('keyframe_min_inliers', _T('keyframe_min_inliers'),
              'A frame with fewer pose inliers ends the keyframe.',
              min=0, max=100000, tracker_key='keyframe_min_inliers'),
    ParamSpec('keyframe_hysteresis', _T('keyframe_hysteresis'),
              'A frame tracks well (may become the next keyframe) at this multiple of the '
              'keyframe minimums.', min=1.0, max=100.0, tracker_key='keyframe_hysteresis'),
    ParamSpec('pose_method', _T('pose_method'),
              'Relative pose estimator (docs/pose_estimators.md).',
              choices=POSE_METHODS, tracker_key='pose_method'),
    ParamSpec('ransac_threshold_px', _T('ransac_threshold_px'),
              'Epipolar inlier threshold, pixels.', min=0.0, max=100.0,
              tracker_key='ransac_threshold_px', constraint='> 0'),
    ParamSpec('ransac_confidence', _T('ransac_confidence'),
              'RANSAC confidence of the relative pose.',
              min=0.0, max=1.0, tracker_key='ransac_confidence', constraint='in (0, 1)'),
    ParamSpec('min_pose_matches', _T('min_pose_matches'),
              'Fewer matches: no pose (reason too_few_matches).', min=5, max=100000,
              tracker_key='min_pose_matches'),
    ParamSpec('min_parallax_deg', _T('min_parallax_deg'),
              'Median parallax below which the pose is a rotation-only estimate, degrees.',
              min=0.0, max=90.0, tracker_key='min_parallax_deg'),
    # -- calibration fallback (run-time) ------------------------------------------------------
    ParamSpec('fallback_intrinsics', (0.0, 0.0, 0.0, 0.0),
              'Fallback intrinsics [fx, fy, cx, cy] (pixels, no distortion) used while no '
              'valid camera_info has arrived; all 0: none (without camera_info the pose is '
              'skipped).', min=0.0, max=1e6,
              constraint='4 values, all 0 (none) or all > 0 and <= 1e6'),
    # -- outputs and robustness ---------------------------------------------------------------
    ParamSpec('odom_frame_id', DEFAULT_ODOM_FRAME,
              'frame_id of ~/odometry (child_frame_id is the image frame_id).', read_only=True),
    ParamSpec('features_layout', DEFAULT_FEATURES_LAYOUT,
              'Channels of ~/features: vins_mono (id, u, v, velocity_x, velocity_y, as '
              'VINS-Mono reads them) or vins_fusion (id, camera_id, u, v, velocity_x, '
              'velocity_y and three zeros, as VINS-Fusion reads them).',
              choices=FEATURES_LAYOUTS, read_only=True),
    ParamSpec('features_inliers_only', DEFAULT_FEATURES_INLIERS_ONLY,
              "true: ~/features carries the pose inliers only (as VINS-Mono's own tracker "
              'removes its RANSAC outliers; a frame without a pose then carries none); '
              'false: every match.', read_only=True),
    ParamSpec('diagnostics_period_s', 1.0, 'Period of the /diagnostics status, seconds.',
              min=0.1, max=60.0, read_only=True),
    ParamSpec('backwards_reset_frames', DEFAULT_BACKWARDS_RESET_FRAMES,
              'Frames stamped at or before the last processed one are skipped; the n-th such '
              'frame in a row resets the tracker and starts a new map from it (bag looped, '
              'driver restarted); 0: never reset.', min=0, max=100000),
    ParamSpec('log_throttle_s', 5.0,
              'Each kind of warning (bad frame, bad camera_info, drops) is logged at most once '
              'per this many seconds, with a count of the suppressed ones.',
              min=0.0, max=3600.0),
)

SPECS: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMETERS}
DEFAULTS: dict[str, ParamValue] = {spec.name: spec.default for spec in PARAMETERS}
SPECS_BY_KEY: dict[str, ParamSpec] = {s.tracker_key: s for s in PARAMETERS if s.tracker_key}
# Tracker settings that may change while the node runs (Tracker.update_thresholds).
RUNTIME_TRACKER_KEYS: frozenset[str] = frozenset(
    spec.tracker_key for spec in PARAMETERS if spec.tracker_key and not spec.read_only)


def check_value(spec: ParamSpec, value: Any) -> str | None:
    """Why ``value`` is not a valid value of ``spec`` on its own, or None.

    Types are strict, as rcl's are: a double parameter needs a float (``1.0``, not ``1``).
    """
    name = spec.name
    if spec.type is tuple:
        return _check_array(spec, value)
    ok_type = isinstance(value, spec.type) and (spec.type is bool
                                                 or not isinstance(value, bool))
    if not ok_type:
        # YAML (parameter files, ros2 launch/run arguments) reads an unquoted on/off as a bool.
        hint = (" (YAML reads on/off as booleans: quote the value, 'on')"
                if isinstance(value, bool) and 'on' in spec.choices else '')
        return f'{name} must be a {spec.type.__name__}, got {value!r}{hint}'
    if isinstance(value, float) and not math.isfinite(value):
        return f'{name} must be finite, got {value!r}'
    if spec.min is not None and spec.max is not None and not spec.min <= value <= spec.max:
        return f'{name} must be in [{spec.min:g}, {spec.max:g}], got {value!r}'
    if spec.choices and value not in spec.choices:
        return f'{name} must be one of {", ".join(spec.choices)}, got {value!r}'
    return None


def _check_array(spec: ParamSpec, value: Any) -> str | None:
    name, size = spec.name, len(spec.default)
    if isinstance(value, (str, bytes)) or not hasattr(value, '__len__') \
            or len(value) != size or not all(isinstance(v, float) for v in value):
        return f'{name} must be {size} floats, got {_show(value)}'
    if not all(math.isfinite(v) for v in value):
        return f'{name} must be finite, got {_show(value)}'
    if spec.min is not None and spec.max is not None \
            and not all(spec.min <= v <= spec.max for v in value):
        return f'{name} values must be in [{spec.min:g}, {spec.max:g}], got {_show(value)}'
    return None


def _show(value: Any) -> str:
    return repr(list(value)) if hasattr(value, '__iter__') and not isinstance(value, str) \
        else repr(value)


def _encoding_checks(values: Mapping[str, Any]) -> str | None:
    """The rules of the parameters' own encodings (-1 or all zeros for "none"); every other
    rule between values is TrackerConfig's, checked by building it."""
    detection = values['detection_threshold']
    if not (detection == -1.0 or detection >= 0.0):
        return f'detection_threshold must be -1 (default) or >= 0, got {detection!r}'
    fallback = list(values['fallback_intrinsics'])
    if any(v != 0 for v in fallback) and not all(v > 0 for v in fallback):
        return ('fallback_intrinsics [fx, fy, cx, cy] must be all 0 (none) or all > 0, '
                f'got {fallback}')
    return None


def validate(values: Mapping[str, Any]) -> str | None:
    """Why this full set of values is invalid, or None. Checks every value (type, range,
    choices), the rules between them, and that TrackerConfig accepts the mapping."""
    unknown = sorted(set(values) - set(SPECS))
    if unknown:
        return f'unknown parameter(s): {", ".join(unknown)}'
    missing = sorted(set(SPECS) - set(values))
    if missing:
        return f'missing parameter(s): {", ".join(missing)}'
    for spec in PARAMETERS:
        reason = check_value(spec, values[spec.name])
        if reason:
            return reason
    reason = _encoding_checks(values)
    if reason:
        return reason
    try:
        tracker_config(values)
    except ConfigError as err:
        return str(err)
    return None


def _tracker_value(key: str, value: Any) -> Any:
    if key in ('extractor_weights', 'matcher_weights'):
        return value or None  # '' = resolve by name
    if key == 'resize':
        return value or None  # 0 = native size
    if key == 'detection_threshold':
        return None if value == -1.0 else float(value)
    return float(value) if isinstance(SPECS_BY_KEY[key].default, float) else value


def tracker_config(values: Mapping[str, Any]) -> TrackerConfig:
    """TrackerConfig of a (validated) set of parameter values. Raises ConfigError."""
    options = {spec.tracker_key: _tracker_value(spec.tracker_key, values[spec.name])
               for spec in PARAMETERS if spec.tracker_key}
    return TrackerConfig.from_dict(options)


def tracker_updates(changed: Mapping[str, Any]) -> dict[str, Any]:
    """The Tracker.update_thresholds keywords for changed run-time parameters."""
    return {SPECS[name].tracker_key: _tracker_value(SPECS[name].tracker_key, value)
            for name, value in changed.items()
            if name in SPECS and SPECS[name].tracker_key in RUNTIME_TRACKER_KEYS}


def fallback_intrinsics(values: Mapping[str, Any]) -> tuple[float, float, float, float] | None:
    """(fx, fy, cx, cy) of the fallback camera, or None when not set (all zero)."""
    fx, fy, cx, cy = (float(v) for v in values['fallback_intrinsics'])
    return (fx, fy, cx, cy) if min(fx, fy, cx, cy) > 0 else None


@dataclass(frozen=True)
class NodeSettings:
    """The node-level (non-tracker) settings fixed at start-up."""

    compressed_input: bool
    reliable: bool
    qos_depth: int
    lossless: bool
    queue_size: int
    odom_frame_id: str
    diagnostics_period_s: float
    features_layout: str
    features_inliers_only: bool
    pipelined: bool
    threads_per_stage: int

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> NodeSettings:
        return cls(compressed_input=bool(values['compressed_input']),
                   reliable=values['qos_reliability'] == 'reliable',
                   qos_depth=int(values['qos_depth']),
                   lossless=values['processing_mode'] == 'lossless',
                   queue_size=int(values['queue_size']),
                   odom_frame_id=str(values['odom_frame_id']),
                   diagnostics_period_s=float(values['diagnostics_period_s']),
                   features_layout=str(values['features_layout']),
                   features_inliers_only=bool(values['features_inliers_only']),
                   pipelined=bool(values['pipelined']),
                   threads_per_stage=int(values['threads_per_stage']))

    @property
    def frame_capacity(self) -> int:
        """Frames waiting for the worker: 1 (latest) or queue_size (lossless)."""
        return self.queue_size if self.lossless else 1


def _reason(err: Exception, name: str) -> str:
    return str(err).removesuffix(f': {name}')  # rclpy appends the parameter's name


def declare_parameters(node: Node) -> dict[str, ParamValue]:
    """Declare every parameter of the table on ``node`` and return the validated values.

    Values come from the node's overrides (--params-file, -p, parameter_overrides). Raises
    ConfigError with the reason when a value has the wrong type, is out of range, or the set
    fails ``validate``.
    """
    from rclpy.exceptions import (InvalidParameterTypeException,
                                  InvalidParameterValueException,
                                  ParameterUninitializedException)

    values: dict[str, ParamValue] = {}
    for spec in PARAMETERS:
        try:
            parameter = node.declare_parameter(spec.name, spec.default, spec.descriptor())
        except InvalidParameterTypeException as err:
            raise ConfigError(f'parameter {spec.name} must be a {spec.type.__name__}: '
                              f'{_reason(err, spec.name)}') from err
        except InvalidParameterValueException as err:
            raise ConfigError(f'parameter {spec.name}: {_reason(err, spec.name)}') from err
        except ParameterUninitializedException as err:  # pragma: no cover - defaults given
            raise ConfigError(f'parameter {spec.name} has no value') from err
        value = parameter.value
        values[spec.name] = tuple(value) if spec.type is tuple else value
    reason = validate(values)
    if reason:
        raise ConfigError(f'invalid parameters: {reason}')
    return values


def load_params_file(path: str | Path, node_name: str = NODE_NAME) -> dict[str, Any]:
    """The ros__parameters a ROS params file gives ``node_name`` ('/**' first, then the
    node's own section, as rcl merges them). Raises ConfigError for a malformed file."""
    import yaml

    with open(path, encoding='utf-8') as handle:
        document = yaml.safe_load(handle) or {}
    if not isinstance(document, dict):
        raise ConfigError(f'{path}: expected a mapping of node names')
    merged: dict[str, Any] = {}
    for key in ('/**', node_name, f'/{node_name}'):
        section = document.get(key)
        if section is None:
            continue
        params = section.get('ros__parameters') if isinstance(section, dict) else None
        if not isinstance(params, dict):
            raise ConfigError(f'{path}: {key!r} has no ros__parameters mapping')
        merged.update(params)
    return merged

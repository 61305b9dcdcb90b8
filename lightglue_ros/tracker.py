"""Keyframe tracker: one extractor and one matcher pass per frame against a cached keyframe.

Feed frames one at a time with ``Tracker.process(image, stamp_ns, camera)``; each call returns a
``FrameResult``. The ROS node and the rosbag replay are thin wrappers around this class.

Keyframe policy (see docs/tracker.md): a frame *tracks well* when its matches and pose inliers
to the keyframe reach ``keyframe_min_matches`` / ``keyframe_min_inliers`` times
``keyframe_hysteresis``. When a frame falls below the thresholds themselves, the last frame that
tracked well becomes the keyframe (its features, its pose and its track ids are at hand) and the
current frame is matched once more against it; only when no such frame exists does the current
frame become the keyframe. The band between the two levels keeps a borderline frame from being
promoted and then dropped again at once.

One concept, over 500 lines: the keyframe tracker, with its configuration, its results and the
models it builds (``build_models``).
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch

from lightglue_ros.camera import CameraModel
from lightglue_ros.cuda_graphs import (GraphedExtractor, GraphedMatcher, build_matcher_runner,
                                       has_fixed_path)
from lightglue_ros.defaults import (CUDA_GRAPHS_MODES, DEFAULT_CUDA_GRAPHS, DEFAULT_EXTRACTOR,
                                    DEFAULT_MAX_KEYPOINTS, DEFAULT_RESIZE,
                                    DEFAULT_STATIC_EARLY_EXIT, DEFAULT_TORCH_COMPILE, EXTRACTORS,
                                    STATIC_EARLY_EXIT_MODES, TORCH_COMPILE_MODES,
                                    check_max_keypoints)
from lightglue_ros.errors import CalibrationError, ConfigError, TimestampError
from lightglue_ros.features import Features, FixedFeatures
from lightglue_ros.geometry import (DEFAULT_CONFIDENCE, DEFAULT_METHOD, DEFAULT_MIN_MATCHES,
                                    DEFAULT_MIN_PARALLAX_DEG, DEFAULT_THRESHOLD_PX,
                                    FailureReason, RelativePose, check_pose_options, compose,
                                    estimate_relative_pose, invert)
from lightglue_ros.image import image_to_tensor, validate_image
from lightglue_ros.models.extractors import build_extractor
from lightglue_ros.models.lightglue import PRECISIONS, LightGlue, MatchResult, PreparedFeatures
from lightglue_ros.models.lightglue_static import PaddedFeatures, StaticMatch

logger = logging.getLogger(__name__)

_DEVICE_RE = re.compile(r'^(auto|cpu|cuda|cuda:\d+)$')
_MATCHER_DEFAULTS = LightGlue.default_conf
# TrackerConfig's names of estimate_relative_pose's options (its error messages use them).
_POSE_OPTION_NAMES = {'method': 'pose_method', 'threshold_px': 'ransac_threshold_px',
                      'confidence': 'ransac_confidence', 'min_matches': 'min_pose_matches'}

UNMATCHED = -1  # the track id / index that means "no correspondence"
WARM_UP_SIDE = 64  # pixels of the synthetic image Tracker.warm_up runs the networks on
# KeyframeEvent.reason: why the keyframe changed at a frame.
KEYFRAME_REASONS = ('first_frame', 'low_matches', 'low_inliers', 'pose_failed',
                    'image_size_changed')
# FrameResult.reason of a frame without a pose: the tracker's own and the relative pose's.
POSE_UNAVAILABLE_REASONS = ('no_calibration', 'too_few_keypoints',
                            *(reason for reason in get_args(FailureReason) if reason))


@dataclass(frozen=True)
class TrackerConfig:
    """All tracker settings; ``TrackerConfig.from_dict`` rejects unknown keys."""

    # The networks' and the pose's settings default to their owners' (LightGlue.default_conf,
    # geometry); what is the tracker's own is stated here.
    extractor: str = DEFAULT_EXTRACTOR  # one of defaults.EXTRACTORS
    extractor_weights: str | None = None  # file; None = resolve by name (lightglue_ros.weights)
    matcher_weights: str | None = None  # file; None = resolve by name
    max_keypoints: int = DEFAULT_MAX_KEYPOINTS  # strongest keypoints kept per frame
    resize: int | None = DEFAULT_RESIZE  # longer image side the extractor sees (None = native)
    detection_threshold: float | None = None  # None = the extractor's default
    device: str = 'auto'  # auto | cpu | cuda | cuda:N
    precision: str = _MATCHER_DEFAULTS['precision']  # matcher weights on CUDA; CPU is fp32
    # Static-shape matcher replayed from CUDA graphs at max_keypoints: auto (on for CUDA) |
    # on | off (the dynamic eager matcher); lightglue_ros.cuda_graphs.
    cuda_graphs: str = DEFAULT_CUDA_GRAPHS
    # off | on: torch.compile the static path (where cuda_graphs selects it), compiled code
    # cached on disk; lightglue_ros.compiled.
    torch_compile: str = DEFAULT_TORCH_COMPILE
    # mask | skip: how the static path ends at an early exit (layers after it run masked in
    # one graph, or are not launched: a graph per layer); lightglue_ros.cuda_graphs.
    static_early_exit: str = DEFAULT_STATIC_EARLY_EXIT
    depth_confidence: float = _MATCHER_DEFAULTS['depth_confidence']  # early exit; -1 = off
    width_confidence: float = _MATCHER_DEFAULTS['width_confidence']  # point pruning; -1 = off
    filter_threshold: float = _MATCHER_DEFAULTS['filter_threshold']  # minimum match score
    keyframe_min_matches: int = 200  # a frame with fewer matches ends the keyframe
    keyframe_min_inliers: int = 150  # a frame with fewer pose inliers ends the keyframe
    keyframe_hysteresis: float = 1.25  # a frame tracks well at this multiple of the minimums
    pose_method: str = DEFAULT_METHOD  # one of geometry.POSE_METHODS
    ransac_threshold_px: float = DEFAULT_THRESHOLD_PX  # epipolar inlier threshold (pixels)
    ransac_confidence: float = DEFAULT_CONFIDENCE
    min_pose_matches: int = DEFAULT_MIN_MATCHES  # fewer: no pose (too_few_matches); >= 5
    min_parallax_deg: float = DEFAULT_MIN_PARALLAX_DEG  # below: rotation-only estimate

    def __post_init__(self) -> None:
        for name, choices in (('extractor', EXTRACTORS), ('precision', PRECISIONS),
                              ('cuda_graphs', CUDA_GRAPHS_MODES),
                              ('torch_compile', TORCH_COMPILE_MODES),
                              ('static_early_exit', STATIC_EARLY_EXIT_MODES)):
            if getattr(self, name) not in choices:
                raise ConfigError(f'{name} must be one of {", ".join(choices)}, '
                                  f'got {getattr(self, name)!r}')
        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device):
            raise ConfigError(f'device must be auto, cpu, cuda or cuda:N, got {self.device!r}')
        check_max_keypoints(self.max_keypoints, allow_all=False)
        check_pose_options(method=self.pose_method, threshold_px=self.ransac_threshold_px,
                           confidence=self.ransac_confidence, min_matches=self.min_pose_matches,
                           min_parallax_deg=self.min_parallax_deg, names=_POSE_OPTION_NAMES)
        if self.keyframe_min_matches < 0 or self.keyframe_min_inliers < 0:
            raise ConfigError('keyframe thresholds must be >= 0')
        if self.keyframe_hysteresis < 1.0:
            raise ConfigError(f'keyframe_hysteresis must be >= 1, got {self.keyframe_hysteresis}')
        if not self.filter_threshold >= 0.0:
            raise ConfigError(f'filter_threshold must be >= 0, got {self.filter_threshold}')
        if not self.filter_threshold < 1.0:
            raise ConfigError(f'filter_threshold must be < 1, got {self.filter_threshold}')
        for name in ('depth_confidence', 'width_confidence'):
            value = getattr(self, name)
            if not (value == -1 or 0.0 < value <= 1.0):
                raise ConfigError(f'{name} must be -1 (off) or in (0, 1], got {value}')

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrackerConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f'unknown tracker option(s): {", ".join(sorted(unknown))}')
        return cls(**values)


@dataclass(frozen=True)
class FrameTimings:
    extract_ms: float = 0.0
    match_ms: float = 0.0
    pose_ms: float = 0.0
    total_ms: float = 0.0


@dataclass(frozen=True)
class KeyframeEvent:
    """The keyframe changed at this frame."""

    frame_index: int  # frame that became the keyframe
    stamp_ns: int
    previous_index: int  # previous keyframe's frame index (-1 for the first)
    reason: str  # one of KEYFRAME_REASONS
    detail: str  # human-readable numbers behind the reason
    inherited_tracks: int  # keypoints of the new keyframe that kept an existing track id


@dataclass(frozen=True)
class FrameResult:
    """What the tracker found for one frame. Arrays are numpy, one row per match.

    Points are pixels (x, y) of the original images; ``kf_points[i]`` matches ``points[i]``.
    The matches relate this frame to keyframe ``keyframe_index``; when ``keyframe_events``
    says this frame became the keyframe, later frames match against it.
    ``pose`` is the relative pose keyframe -> current (x_cur = R x_kf + t); ``R_world_cam`` /
    ``t_world_cam`` place the camera in the first keyframe's frame (monocular: keyframe steps
    have unit length, see docs/tracker.md). ``points_norm`` are undistorted normalised
    coordinates (NaN without calibration); ``velocity_norm`` their change per second for
    tracks seen in the previous frame (zero for new tracks).
    """

    index: int
    stamp_ns: int
    ok: bool
    reason: str  # '' | first_frame | image_size_changed | one of POSE_UNAVAILABLE_REASONS
    keyframe_index: int
    keyframe_stamp_ns: int
    num_keypoints: int
    points: np.ndarray  # [K x 2] float32
    kf_points: np.ndarray  # [K x 2] float32
    scores: np.ndarray  # [K] float32
    track_ids: np.ndarray  # [K] int64
    inliers: np.ndarray  # [K] bool (all False without a pose)
    points_norm: np.ndarray  # [K x 2] float32
    velocity_norm: np.ndarray  # [K x 2] float32
    pose: RelativePose | None
    R_kf_cam: np.ndarray | None  # this camera's pose in the keyframe camera (pose inverted)
    t_kf_cam: np.ndarray | None
    R_world_cam: np.ndarray | None
    t_world_cam: np.ndarray | None
    stop_layer: int
    num_pruned_keyframe: int  # LightGlue's num_pruned0 / num_pruned1 for this pair
    num_pruned_current: int
    keyframe_events: tuple[KeyframeEvent, ...]  # keyframe changes at this frame (usually none)
    timings: FrameTimings = field(default_factory=FrameTimings)

    @property
    def num_matches(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


@dataclass
class _View:
    """A processed frame whose features may serve as keyframe."""

    index: int
    stamp_ns: int
    features: Features
    camera: CameraModel | None
    track_ids: np.ndarray  # [N] int64 per keypoint, UNMATCHED where none yet
    R_world_cam: np.ndarray
    t_world_cam: np.ndarray
    prepared: PreparedFeatures | PaddedFeatures | None = None
    keypoints: np.ndarray | None = None  # [N x 2] host copy of features.keypoints
    # [N x 2] float64 undistorted normalised keypoints (None without a camera): computed once
    # per frame, for its pose, its outputs and its pose as a keyframe.
    keypoints_norm: np.ndarray | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.keypoints is None:
            self.keypoints = self.features.keypoints.cpu().numpy()
        if self.camera is not None:
            self.keypoints_norm = self.camera.undistort_points(self.keypoints)


@dataclass(frozen=True)
class ExtractedFrame:
    """One image's features, extracted ahead of ``Tracker.track`` (``Tracker.extract``)."""

    # Fixed-count features on the static path (their count is read back with the frame's one
    # device -> host copy), compact Features otherwise.
    features: Features | FixedFeatures
    # The matcher's side of it (None: too few keypoints to track).
    prepared: PreparedFeatures | PaddedFeatures | None
    extract_ms: float  # extraction and preparation, milliseconds


@dataclass(frozen=True)
class _HostMatch:
    """The part of a MatchResult that a frame's result needs, on the host."""

    pairs: np.ndarray  # [K x 2] int64, (keyframe index, current index)
    scores: np.ndarray  # [K] float32
    num_pruned_keyframe: int
    num_pruned_current: int
    stop_layer: int

    @property
    def num_matches(self) -> int:
        return len(self.pairs)


def _to_host(match: MatchResult, keypoints: torch.Tensor | None = None
             ) -> tuple[_HostMatch, np.ndarray | None]:
    """A match (and the frame's [N x 2] keypoints) in one device -> host copy.

    Each copy from a GPU waits for it: packed into one float32 buffer (exact for the float32
    values, and for indices and counts below 2**24), the frame waits once instead of five times.
    """
    stop = match.stop_layer
    parts = [match.matches.reshape(-1), match.scores, (match.layers0 < stop).sum().reshape(1),
             (match.layers1 < stop).sum().reshape(1)]
    if keypoints is not None:
        parts.append(keypoints.reshape(-1))
    flat = torch.cat([part.to(torch.float32) for part in parts]).cpu().numpy()
    k = len(match)
    host = _HostMatch(flat[:2 * k].astype(np.int64).reshape(k, 2), flat[2 * k:3 * k].copy(),
                      int(flat[3 * k]), int(flat[3 * k + 1]), stop)
    points = flat[3 * k + 2:].reshape(-1, 2) if keypoints is not None else None
    return host, points


def _to_host_fixed(match: StaticMatch | None, keyframe_valid: torch.Tensor | None,
                   features: FixedFeatures | None = None
                   ) -> tuple[_HostMatch | None, np.ndarray | None, int]:
    """``_to_host`` of the static path: a fixed-shape match (keyframe = image 0) and the
    frame's fixed-count keypoints with their count, in one device -> host copy; everything
    before it ran without a host read. Returns (match or None, [n x 2] keypoints or None, n)."""
    parts = []
    if features is not None:
        parts += [features.keypoints.reshape(-1), features.valid.sum().reshape(1)]
    if match is not None:
        k = match.matches0.shape[0]
        current_valid = match.layers.new_ones(k, dtype=torch.bool) if features is None \
            else features.valid
        matches0 = torch.where(keyframe_valid, match.matches0, -1)
        pruned = [((match.layers[:k] < match.stop) & keyframe_valid).sum(),
                  ((match.layers[k:] < match.stop) & current_valid).sum()]
        parts += [matches0, match.scores0, match.stop.reshape(1),
                  *(p.reshape(1) for p in pruned)]
    flat = torch.cat([part.to(torch.float32) for part in parts]).cpu().numpy()
    points, count = None, 0
    if features is not None:
        size = 2 * features.budget
        count = int(flat[size])
        points = flat[:2 * count].reshape(-1, 2).copy()
        flat = flat[size + 1:]
    if match is None:
        return None, points, count
    k = match.matches0.shape[0]
    matches0 = flat[:k].astype(np.int64)
    rows = np.flatnonzero(matches0 > -1)
    host = _HostMatch(np.stack([rows, matches0[rows]], -1), flat[k:2 * k][rows].copy(),
                      int(flat[2 * k + 1]), int(flat[2 * k + 2]), int(flat[2 * k]))
    return host, points, count


@dataclass(frozen=True)
class Models:
    """The networks of a TrackerConfig on their device, and the weights files they loaded."""

    extractor: torch.nn.Module
    matcher: LightGlue
    device: torch.device
    extractor_weights: Path
    matcher_weights: Path


def build_models(config: TrackerConfig) -> Models:
    """The extractor and LightGlue (LighterGlue for XFeat) of ``config`` on its device; the
    weights are resolved by name unless given (``lightglue_ros.weights``: cache, search path,
    download). The one place the networks are built from settings (tracker, CLI, benchmarks)."""
    from lightglue_ros.weights import resolve_weights

    device = resolve_device(config.device)
    extractor_weights = Path(resolve_weights(config.extractor, config.extractor_weights))
    matcher_weights = Path(resolve_weights(f'{config.extractor}_lightglue',
                                           config.matcher_weights))
    options: dict[str, Any] = {'max_keypoints': config.max_keypoints, 'resize': config.resize}
    if config.detection_threshold is not None:
        options['detection_threshold'] = config.detection_threshold
    extractor = build_extractor(config.extractor, weights=extractor_weights, device=device,
                                **options)
    matcher = LightGlue(config.extractor, weights=matcher_weights,
                        depth_confidence=config.depth_confidence,
                        width_confidence=config.width_confidence,
                        filter_threshold=config.filter_threshold,
                        precision=config.precision).to(device)
    return Models(extractor, matcher, device, extractor_weights, matcher_weights)


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when available; 'cuda' without a GPU raises ConfigError."""
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f'invalid device {device!r}: {err}') from err
    if resolved.type == 'cuda' and not torch.cuda.is_available():
        raise ConfigError(f'device {device!r} requested but CUDA is not available')
    return resolved


class Tracker:
    """Streams frames through extractor -> LightGlue (keyframe cache) -> relative pose."""

    def __init__(self, config: TrackerConfig | None = None, *,
                 extractor: torch.nn.Module | None = None,
                 matcher: LightGlue | None = None) -> None:
        """Models are built from ``config`` (``build_models``) unless both are given (tests,
        benchmarks and the node's restart share them)."""
        self.config = config or TrackerConfig()
        if (extractor is None) != (matcher is None):
            raise ConfigError('give the tracker both models (extractor and matcher) or neither')
        if extractor is None or matcher is None:
            models = build_models(self.config)
            extractor, matcher = models.extractor, models.matcher
        self.device = resolve_device(self.config.device)
        self.extractor, self.matcher = extractor, matcher
        # What matches: the matcher itself, or its static-shape path (cuda_graphs setting).
        compile = self.config.torch_compile == 'on'
        self.runner: LightGlue | GraphedMatcher = build_matcher_runner(
            matcher, self.config.cuda_graphs, self.config.max_keypoints, self.device,
            compile=compile, early_exit=self.config.static_early_exit)
        # On the static path an extractor with a fixed-count path (not DISK) feeds the matcher
        # fixed shapes: no host read from image upload to the frame's one copy.
        self.fixed_extractor: GraphedExtractor | None = (
            GraphedExtractor(extractor, compile=compile)
            if isinstance(self.runner, GraphedMatcher) and has_fixed_path(extractor) else None)
        self.reset()

    def reset(self) -> None:
        """Forget the keyframe and trajectory; the next good frame starts a new map."""
        self._keyframe: _View | None = None
        self._candidate: _View | None = None  # last frame that tracked well
        self._frame_index = 0
        self._last_stamp_ns: int | None = None
        self._next_track_id = 0
        self._previous_norm: dict[int, np.ndarray] = {}
        self._previous_stamp_ns: int | None = None

    def warm_up(self) -> None:
        """Run the networks once on a small synthetic image; the tracker's state is untouched.

        The first inference in a process may pick other CPU kernels than later ones (measured:
        keypoints 1.5e-4 px apart in about one process start of twenty), and on CUDA it pays
        for kernel loading. Warmed up, the first real frame is as fast and as reproducible as
        every later one (the node does this at start-up, the replay before its first frame).
        """
        noise = np.random.default_rng(0).integers(0, 256, size=(WARM_UP_SIDE, WARM_UP_SIDE),
                                                  dtype=np.uint8)
        features = self.extractor.extract(image_to_tensor(noise, device=self.device))
        if len(features) > 0:
            self.runner.match(features, features)

    def update_thresholds(self, **values: Any) -> None:
        """Change run-time thresholds (validated like the config; models stay)."""
        new = replace(self.config, **values)  # __post_init__ validates
        self.config = new
        self.matcher.set_thresholds(depth_confidence=new.depth_confidence,
                                    width_confidence=new.width_confidence,
                                    filter_threshold=new.filter_threshold)

    @property
    def keyframe_index(self) -> int:
        return self._keyframe.index if self._keyframe is not None else -1

    # -- per frame ------------------------------------------------------------------------
    def process(self, image: np.ndarray, stamp_ns: int,
                camera: CameraModel | None = None) -> FrameResult:
        """Track one frame: ``track(extract(image), stamp_ns, camera)``.

        image: (H, W) or (H, W, 3|4) uint8/uint16 (RGB order); any size.
        stamp_ns: capture time in nanoseconds, strictly increasing.
        camera: intrinsics for the pose (None: matches only, reason 'no_calibration').
        Raises InvalidImageError, TimestampError or CalibrationError before any state changes
        (and before the networks run).
        """
        validate_image(image)
        height, width = image.shape[:2]
        self._check_frame(stamp_ns, camera, (width, height))
        return self.track(self.extract(image), stamp_ns, camera)

    def extract(self, image: np.ndarray) -> ExtractedFrame:
        """The first half of ``process``: the frame's features, prepared for matching.

        Touches no tracking state, so a pipeline may extract the next frame on another
        thread while ``track`` handles this one (one ``extract`` and one ``track`` at a time).
        Raises InvalidImageError for an image the extractor cannot take.
        """
        start = time.perf_counter()
        validate_image(image)
        tensor = image_to_tensor(image, device=self.device)
        if self.fixed_extractor is not None:
            fixed = self.fixed_extractor.extract_fixed(tensor)
            return ExtractedFrame(fixed, self.runner.prepare_fixed(fixed),
                                  (time.perf_counter() - start) * 1e3)
        features = self.extractor.extract(tensor)
        # Too few keypoints: no pose and no keyframe material, so nothing to prepare.
        prepared = (self.runner.prepare_features(features)
                    if len(features) >= self.config.min_pose_matches else None)
        return ExtractedFrame(features, prepared, (time.perf_counter() - start) * 1e3)

    def track(self, frame: ExtractedFrame, stamp_ns: int,
              camera: CameraModel | None = None) -> FrameResult:
        """The second half of ``process``: match ``frame`` against the keyframe, estimate the
        pose and decide keyframe changes. Raises TimestampError or CalibrationError before any
        state changes; ``frame`` may then be tracked again (e.g. after ``reset``)."""
        start = time.perf_counter()
        features, prepared, extract_ms = frame.features, frame.prepared, frame.extract_ms
        self._check_frame(stamp_ns, camera, features.image_size)
        index = self._frame_index
        self._frame_index += 1
        self._last_stamp_ns = stamp_ns

        keyframe = self._keyframe
        t0 = time.perf_counter()
        host: _HostMatch | None = None
        keypoints: np.ndarray | None = None
        if isinstance(features, FixedFeatures):
            # Match before the count is known (no host read); one copy brings both back.
            static = None
            if keyframe is not None and keyframe.features.image_size == features.image_size:
                kf_prepared = self._keyframe_cache(keyframe)
                static = self.runner.match_static(kf_prepared, prepared)
            host, keypoints, count = _to_host_fixed(
                static, kf_prepared.valid if static is not None else None, features)
            features = features.compact(count)
            if count < self.config.min_pose_matches:
                prepared = None
        if prepared is None:
            # Textureless or black frames: nothing to track, and no keyframe material.
            return self._unmatched(index, stamp_ns, 'too_few_keypoints', features, start,
                                   FrameTimings(extract_ms=extract_ms))
        if keyframe is None or keyframe.features.image_size != features.image_size:
            reason = 'first_frame' if keyframe is None else 'image_size_changed'
            view = self._new_view(index, stamp_ns, features, camera, keyframe, keypoints)
            view.prepared = prepared
            event = self._promote(view, reason, f'{len(features)} keypoints')
            return self._unmatched(index, stamp_ns, reason, features, start,
                                   FrameTimings(extract_ms=extract_ms), event=event)

        if host is None:
            match = self.runner.match_prepared(self._keyframe_cache(keyframe), prepared)
            host, keypoints = _to_host(match, features.keypoints)  # the frame's one host copy
        pairs = host.pairs  # (kf index, cur index)
        match_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        # Its track ids and world pose follow from the pose (_place).
        current = _View(index, stamp_ns, features, camera, np.empty(0, np.int64), np.eye(3),
                        np.zeros(3), prepared=prepared, keypoints=keypoints)
        pose = self._estimate_pose(keyframe, current, pairs)
        pose_ms = (time.perf_counter() - t0) * 1e3

        events: list[KeyframeEvent] = []
        weak = self._weakness(host, pose)
        candidate = self._candidate
        if weak and candidate is not None and candidate.index != keyframe.index:
            # The last frame that tracked well becomes the keyframe; match once more against it.
            events.append(self._promote(candidate, *weak))
            keyframe = candidate
            t0 = time.perf_counter()
            host = self._match_again(keyframe, prepared)
            pairs = host.pairs
            match_ms += (time.perf_counter() - t0) * 1e3
            t0 = time.perf_counter()
            pose = self._estimate_pose(keyframe, current, pairs)
            pose_ms += (time.perf_counter() - t0) * 1e3
            weak = self._weakness(host, pose)
        cam_in_kf = self._place(current, keyframe, pairs, pose)
        if weak:
            # No keyframe holds on to this frame: tracking restarts from it.
            reason, detail = weak
            events.append(self._promote(current, reason, f'{detail}; restarting from this frame'))
        elif self._tracks_well(host, pose):
            self._candidate = current
        timings = FrameTimings(extract_ms, match_ms, pose_ms,
                               extract_ms + (time.perf_counter() - start) * 1e3)
        return self._result(keyframe, host, pose, current, cam_in_kf, tuple(events), timings)

    # -- helpers --------------------------------------------------------------------------
    def _check_frame(self, stamp_ns: int, camera: CameraModel | None,
                     image_size: tuple[int, int]) -> None:
        if self._last_stamp_ns is not None and stamp_ns <= self._last_stamp_ns:
            raise TimestampError(f'timestamp {stamp_ns} ns does not increase (previous '
                                 f'{self._last_stamp_ns} ns)')
        width, height = image_size
        if camera is not None and (camera.width, camera.height) != (width, height):
            raise CalibrationError(
                f'camera model is for {camera.width}x{camera.height} but the image is '
                f'{width}x{height}')

    def _match_again(self, keyframe: _View, prepared: PreparedFeatures | PaddedFeatures
                     ) -> _HostMatch:
        """The current frame matched against another keyframe (a second host copy)."""
        kf_prepared = self._keyframe_cache(keyframe)
        if isinstance(prepared, PaddedFeatures) and prepared.num_points is None:
            static = self.runner.match_static(kf_prepared, prepared)
            host, _, _ = _to_host_fixed(static, kf_prepared.valid)
        else:
            host, _ = _to_host(self.runner.match_prepared(kf_prepared, prepared))
        assert host is not None
        return host

    def _keyframe_cache(self, view: _View) -> PreparedFeatures | PaddedFeatures:
        if view.prepared is None:
            view.prepared = self.runner.prepare_features(view.features)
        return view.prepared

    def _estimate_pose(self, keyframe: _View, current: _View, pairs: np.ndarray
                       ) -> RelativePose | None:
        """pairs: [K x 2] (keyframe keypoint index, current keypoint index)."""
        if current.camera is None or keyframe.camera is None:
            return None
        cfg = self.config
        kf, cur = pairs[:, 0], pairs[:, 1]
        return estimate_relative_pose(
            keyframe.keypoints[kf], current.keypoints[cur], keyframe.camera, current.camera,
            method=cfg.pose_method, threshold_px=cfg.ransac_threshold_px,
            confidence=cfg.ransac_confidence, min_matches=cfg.min_pose_matches,
            min_parallax_deg=cfg.min_parallax_deg,
            points_kf_norm=keyframe.keypoints_norm[kf],
            points_cur_norm=current.keypoints_norm[cur])

    def _weakness(self, match: _HostMatch, pose: RelativePose | None
                  ) -> tuple[str, str] | None:
        """(reason, detail) when this frame no longer holds on to its keyframe, else None."""
        cfg = self.config
        if match.num_matches < cfg.keyframe_min_matches:
            return 'low_matches', f'{match.num_matches} matches < {cfg.keyframe_min_matches}'
        if pose is not None and not pose.success:
            return 'pose_failed', f'pose failed: {pose.reason}'
        if pose is not None and pose.num_inliers < cfg.keyframe_min_inliers:
            return 'low_inliers', f'{pose.num_inliers} inliers < {cfg.keyframe_min_inliers}'
        return None

    def _tracks_well(self, match: _HostMatch, pose: RelativePose | None) -> bool:
        cfg = self.config
        h = cfg.keyframe_hysteresis
        if match.num_matches < cfg.keyframe_min_matches * h:
            return False
        return pose is None or (pose.success and pose.num_inliers >= cfg.keyframe_min_inliers * h)

    def _new_view(self, index: int, stamp_ns: int, features: Features,
                  camera: CameraModel | None, previous: _View | None,
                  keypoints: np.ndarray | None = None) -> _View:
        # A restart continues the trajectory from the previous keyframe's pose.
        R = previous.R_world_cam if previous is not None else np.eye(3)
        t = previous.t_world_cam if previous is not None else np.zeros(3)
        return _View(index, stamp_ns, features, camera,
                     np.full(len(features), UNMATCHED, dtype=np.int64), R.copy(), t.copy(),
                     keypoints=keypoints)

    def _promote(self, view: _View, reason: str, detail: str) -> KeyframeEvent:
        inherited = int((view.track_ids != UNMATCHED).sum())
        fresh = view.track_ids == UNMATCHED
        view.track_ids = view.track_ids.copy()
        view.track_ids[fresh] = np.arange(self._next_track_id,
                                          self._next_track_id + int(fresh.sum()))
        self._next_track_id += int(fresh.sum())
        previous = self.keyframe_index
        self._keyframe = view
        self._candidate = None
        logger.info('keyframe %d -> %d (%s: %s)', previous, view.index, reason, detail)
        return KeyframeEvent(view.index, view.stamp_ns, previous, reason, detail, inherited)

    def _place(self, current: _View, keyframe: _View, idx: np.ndarray,
               pose: RelativePose | None) -> tuple[np.ndarray, np.ndarray] | None:
        """Give the current frame its track ids and world pose (it may become a keyframe);
        returns its pose in the keyframe camera's frame (None without a pose)."""
        track_ids = np.full(len(current.features), UNMATCHED, dtype=np.int64)
        # Only geometrically verified matches pass their id on (when a pose exists).
        has_pose = pose is not None and pose.success
        keep = pose.inlier_mask if has_pose else np.ones(len(idx), bool)
        track_ids[idx[keep, 1]] = keyframe.track_ids[idx[keep, 0]]
        current.track_ids = track_ids
        current.R_world_cam, current.t_world_cam = keyframe.R_world_cam, keyframe.t_world_cam
        cam_in_kf = None
        if has_pose:
            # pose maps keyframe camera -> current camera; its inverse maps current -> keyframe,
            # and the keyframe's world pose maps keyframe -> world.
            cam_in_kf = invert(pose.R_kf_to_cur, pose.t_kf_to_cur)
            current.R_world_cam, current.t_world_cam = compose(
                *cam_in_kf, keyframe.R_world_cam, keyframe.t_world_cam)
        return cam_in_kf

    def _result(self, keyframe: _View, host: _HostMatch, pose: RelativePose | None, view: _View,
                cam_in_kf: tuple[np.ndarray, np.ndarray] | None,
                events: tuple[KeyframeEvent, ...], timings: FrameTimings) -> FrameResult:
        features = view.features
        idx = host.pairs
        points = view.keypoints[idx[:, 1]].astype(np.float32)
        kf_points = keyframe.keypoints[idx[:, 0]].astype(np.float32)
        track_ids = keyframe.track_ids[idx[:, 0]]
        inliers = pose.inlier_mask.copy() if pose is not None else np.zeros(len(idx), bool)
        points_norm, velocity = self._normalised(view, idx[:, 1], track_ids)
        has_pose = pose is not None and pose.success
        reason = '' if has_pose else ('no_calibration' if pose is None else pose.reason)
        R_kf_cam, t_kf_cam = cam_in_kf if cam_in_kf is not None else (None, None)
        return FrameResult(
            index=view.index, stamp_ns=view.stamp_ns, ok=has_pose, reason=reason,
            keyframe_index=keyframe.index, keyframe_stamp_ns=keyframe.stamp_ns,
            num_keypoints=len(features), points=points, kf_points=kf_points,
            scores=host.scores, track_ids=track_ids,
            inliers=inliers, points_norm=points_norm, velocity_norm=velocity, pose=pose,
            R_kf_cam=R_kf_cam, t_kf_cam=t_kf_cam,
            R_world_cam=view.R_world_cam if has_pose else None,
            t_world_cam=view.t_world_cam if has_pose else None,
            stop_layer=host.stop_layer, num_pruned_keyframe=host.num_pruned_keyframe,
            num_pruned_current=host.num_pruned_current, keyframe_events=events,
            timings=timings)

    def _normalised(self, view: _View, rows: np.ndarray, track_ids: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Normalised coordinates of the view's keypoints ``rows`` and their velocities."""
        stamp_ns = view.stamp_ns
        if view.keypoints_norm is None:
            nan = np.full((len(rows), 2), np.nan, dtype=np.float32)
            self._previous_norm, self._previous_stamp_ns = {}, None
            return nan, np.zeros((len(rows), 2), np.float32)
        norm = view.keypoints_norm[rows].astype(np.float32)
        velocity = np.zeros_like(norm)
        if self._previous_stamp_ns is not None:
            dt = (stamp_ns - self._previous_stamp_ns) * 1e-9
            for row, track in enumerate(track_ids):
                previous = self._previous_norm.get(int(track))
                if previous is not None:
                    velocity[row] = (norm[row] - previous) / dt
        self._previous_norm = {int(t): p for t, p in zip(track_ids, norm)}
        self._previous_stamp_ns = stamp_ns
        return norm, velocity

    def _unmatched(self, index: int, stamp_ns: int, reason: str, features: Features,
                   start: float, timings: FrameTimings, *,
                   event: KeyframeEvent | None = None) -> FrameResult:
        keyframe = self._keyframe
        empty2 = np.zeros((0, 2), np.float32)
        is_keyframe = event is not None
        R = keyframe.R_world_cam if is_keyframe and keyframe is not None else None
        t = keyframe.t_world_cam if is_keyframe and keyframe is not None else None
        self._previous_norm, self._previous_stamp_ns = {}, None
        return FrameResult(
            index=index, stamp_ns=stamp_ns, ok=is_keyframe, reason=reason,
            keyframe_index=self.keyframe_index,
            keyframe_stamp_ns=keyframe.stamp_ns if keyframe is not None else -1,
            num_keypoints=len(features), points=empty2, kf_points=empty2.copy(),
            scores=np.zeros(0, np.float32), track_ids=np.zeros(0, np.int64),
            inliers=np.zeros(0, bool), points_norm=empty2.copy(), velocity_norm=empty2.copy(),
            pose=None, R_kf_cam=None, t_kf_cam=None, R_world_cam=R, t_world_cam=t,
            stop_layer=0, num_pruned_keyframe=0, num_pruned_current=0,
            keyframe_events=(event,) if event is not None else (),
            timings=replace(timings,
                            total_ms=timings.extract_ms + (time.perf_counter() - start) * 1e3))


def load_tracker_config(path: str | Path) -> TrackerConfig:
    """A TrackerConfig from a YAML mapping (strict keys)."""
    import yaml

    with open(path, encoding='utf-8') as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        raise ConfigError(f'{path}: expected a mapping of tracker options')
    return TrackerConfig.from_dict(values)

"""Tests of the matcher node over real rclpy/DDS: outputs equal the core tracker's, overload,
bad input, parameters, the console script and its shutdown; plus its plain-Python helpers.

Every test talks on a random ROS domain restricted to this machine, so parallel runs do not
hear each other. Waits are bounded and say what they waited for.
"""
from __future__ import annotations

import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args

import cv2
import numpy as np
import pytest
import torch

rclpy = pytest.importorskip('rclpy')
# rclpy's type-description support imports lark, which imports deprecated sre modules.
pytestmark = pytest.mark.filterwarnings('ignore:module .sre_:DeprecationWarning')

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from helpers import SMALL_SIZE, stamp_ns, wait_until  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.logging import LoggingSeverity  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from ros_helpers import (FRAME_ID, OUTPUTS, WAIT_S, Rig, camera_info_msg, header,  # noqa: E402
                         ros_env)
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from lightglue_ros.camera import CameraModel  # noqa: E402
from lightglue_ros.errors import ConfigError  # noqa: E402
from lightglue_ros.image import read_image  # noqa: E402
from lightglue_ros.ros.images import array_to_image_msg  # noqa: E402
from lightglue_ros.ros.messages import (frame_outputs, read_matches_cloud,  # noqa: E402
                                        stamp_to_ns)
from lightglue_ros.ros.node import MatcherNode  # noqa: E402
from lightglue_ros.ros.frame_queue import FrameQueue  # noqa: E402
from lightglue_ros.ros.log_throttle import Throttle  # noqa: E402
from lightglue_ros.ros.stats import (DROP_OVERFLOW, DROP_SUPERSEDED, LEVEL_ERROR,  # noqa: E402
                                     LEVEL_OK, LEVEL_WARN, NodeStats, StampGapMonitor)
from lightglue_ros.tracker import WARM_UP_SIDE, Tracker, TrackerConfig  # noqa: E402
from lightglue_ros.tracks import PublishedTracks  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SMALL_KEYPOINTS = 128  # in-process tests run on half-size frames (SMALL_SIZE) with few keypoints


# ------------------------------------------------------------------------------------------------
# Plain helpers (no ROS graph).
# ------------------------------------------------------------------------------------------------

def test_frame_queue_latest_keeps_only_the_newest() -> None:
    queue: FrameQueue[int] = FrameQueue(1)
    assert queue.put(1) is None
    assert queue.put(2) == 1  # replaced: the caller counts it as dropped
    assert queue.put(3) == 2
    assert len(queue) == 1
    assert queue.get(timeout=0.0) == 3
    assert queue.get(timeout=0.01) is None


def test_frame_queue_lossless_is_bounded_and_ordered() -> None:
    queue: FrameQueue[int] = FrameQueue(3)
    evicted = [queue.put(i) for i in range(5)]
    assert evicted == [None, None, None, 0, 1]  # overflow evicts the oldest
    assert [queue.get(0.0) for _ in range(3)] == [2, 3, 4]


def test_frame_queue_join_waits_for_the_frame_in_flight_and_close_wakes_get() -> None:
    queue: FrameQueue[int] = FrameQueue(2)
    queue.put(1)
    assert queue.get(0.0) == 1
    assert not queue.join(timeout=0.01)  # in flight until task_done
    queue.task_done()
    assert queue.join(timeout=0.01)
    results: list[Any] = []
    waiter = threading.Thread(target=lambda: results.append(queue.get(timeout=10.0)))
    waiter.start()
    queue.close()
    waiter.join(5.0)
    assert results == [None] and not waiter.is_alive()
    with pytest.raises(ValueError, match='capacity'):
        FrameQueue(0)


def test_throttle_suppresses_per_key_and_counts() -> None:
    now = [0.0]
    throttle = Throttle(5.0, clock=lambda: now[0])
    assert throttle('a') == 0
    assert throttle('a') is None and throttle('a') is None
    assert throttle('b') == 0  # keys are independent
    now[0] = 5.0
    assert throttle('a') == 2  # two suppressed since the last one shown


def test_stamp_gap_monitor_tells_transport_loss_from_jitter_and_pauses() -> None:
    period = 33_333_333
    rng = random.Random(7)

    def feed(indices: list[float], monitor: StampGapMonitor | None = None
             ) -> tuple[StampGapMonitor, list[int]]:
        monitor = monitor or StampGapMonitor()
        fired = [n for n, i in enumerate(indices) if monitor.add(int(i * period))]
        return monitor, fired

    # Regular and jittered (+-20 % of a period) streams: no pattern, no gaps worth a warning.
    monitor, fired = feed([float(i) for i in range(300)])
    assert not fired and monitor.gaps == 0 and monitor.period_ns == period
    monitor, fired = feed([i + rng.uniform(-0.2, 0.2) for i in range(3000)])
    assert not fired and monitor.gaps == 0
    # Every third frame missing: the period stays one frame, each hole is a gap.
    kept = [float(i) for i in range(90) if i % 3 != 2]
    monitor, fired = feed(kept)
    assert fired == [10], fired  # once, as soon as three gaps are seen
    assert monitor.gaps == 27 and monitor.missing_frames == 27
    assert monitor.pattern.startswith('3 gaps in the last 5 frame intervals')
    # Heavy random loss (5 % received, as best effort over Fast DDS defaults) is caught too.
    sparse = [float(i) for i in range(3000) if rng.random() < 0.05]
    assert feed(sparse)[1]
    # A pause (the driver stops for 10 s) is not loss; stamps going back start over.
    monitor, fired = feed([*range(20), *range(320, 340), *range(0, 20)])
    assert not fired and monitor.gaps == 0


def test_node_stats_rates_percentiles_and_levels() -> None:
    now = [100.0]
    stats = NodeStats(rate_window_s=5.0, clock=lambda: now[0])
    assert stats.report().message == 'waiting for images'
    for i in range(10):
        now[0] += 0.5
        stats.on_input()
        stats.on_result(latency_ms=float(i), stamp_age_ms=2.0 * i, core_ms=1.0,
                        pose_reason='', keyframe_reasons=('first_frame',) if i == 0 else (),
                        values={'matches': 10 + i})
    values = stats.snapshot()
    assert values['input_rate_hz'] == pytest.approx(2.0)
    assert values['latency_p50_ms'] == pytest.approx(4.5)
    assert values['latency_max_ms'] == 9.0 and values['matches'] == 19
    assert values['keyframes.first_frame'] == 1
    assert stats.report().level == LEVEL_OK
    stats.on_drop(DROP_SUPERSEDED, 2)
    stats.on_skip('invalid_image', 'bad encoding')
    report = stats.report()
    assert report.level == LEVEL_WARN and '2 dropped' in report.message
    assert report.values['dropped.superseded'] == 2 and report.values['frames_skipped'] == 1
    assert report.values['last_error'] == 'invalid_image: bad encoding'
    assert stats.report().level == LEVEL_OK  # the level reflects news since the last report
    stats.on_skip('processing_error', 'CUDA out of memory')
    assert stats.report().level == LEVEL_ERROR


def _documented_diagnostics_keys() -> set[str]:
    """The keys the Diagnostics table of docs/node.md names (first column, in backquotes)."""
    text = (PROJECT_ROOT / 'docs' / 'node.md').read_text(encoding='utf-8')
    section = text.split('\n## Diagnostics\n', 1)[1].split('\n## ', 1)[0]
    keys: set[str] = set()
    for line in section.splitlines():
        if line.startswith('| `'):
            keys.update(re.findall(r'`([^`]+)`', line.split('|')[1]))
    return keys


def _emittable_diagnostics_keys() -> set[str]:
    """Every key the node's /diagnostics status can carry: its static values, the last frame's,
    and the counters with every reason of each family the code can count."""
    from lightglue_ros.ros.node import FRAME_DIAGNOSTICS, STATIC_DIAGNOSTICS
    from lightglue_ros.pipeline import SKIP_REASONS
    from lightglue_ros.ros.stats import DROP_REASONS
    from lightglue_ros.tracker import (KEYFRAME_REASONS,
                                       POSE_UNAVAILABLE_REASONS)

    stats = NodeStats()
    for reason in DROP_REASONS:
        stats.on_drop(reason)
    for reason in SKIP_REASONS:
        stats.on_skip(reason, 'x')
    for reason in POSE_UNAVAILABLE_REASONS:
        stats.on_result(latency_ms=1.0, stamp_age_ms=1.0, core_ms=1.0, pose_reason=reason,
                        keyframe_reasons=KEYFRAME_REASONS,
                        values=dict.fromkeys(FRAME_DIAGNOSTICS, 0))
    return set(stats.report(dict.fromkeys(STATIC_DIAGNOSTICS, '')).values)


def test_docs_name_exactly_the_diagnostics_keys_the_node_can_emit() -> None:
    from lightglue_ros import tracker
    from lightglue_ros.geometry import FailureReason
    from lightglue_ros.tracker import KEYFRAME_REASONS, POSE_UNAVAILABLE_REASONS

    # The reason lists are the tracker's and the pose estimator's own.
    source = Path(tracker.__file__).read_text(encoding='utf-8')
    assert set(POSE_UNAVAILABLE_REASONS) == {
        'no_calibration', 'too_few_keypoints', *(r for r in get_args(FailureReason) if r)}
    for reason in ('no_calibration', 'too_few_keypoints', *KEYFRAME_REASONS):
        assert f"'{reason}'" in source, reason
    documented, emitted = _documented_diagnostics_keys(), _emittable_diagnostics_keys()
    assert not emitted - documented, f'not in docs/node.md: {sorted(emitted - documented)}'
    assert not documented - emitted, f'never emitted: {sorted(documented - emitted)}'


# ------------------------------------------------------------------------------------------------
# ROS fixtures and helpers.
# ------------------------------------------------------------------------------------------------

def _weights(weights_dir: Path) -> dict[str, str]:
    return {'extractor': 'aliked',
            'extractor_weights': str(weights_dir / 'aliked-n16.pth'),
            'matcher_weights': str(weights_dir / 'aliked_lightglue.pth')}


def _small_params(weights_dir: Path, **extra: Any) -> dict[str, Any]:
    values = {**_weights(weights_dir), 'max_keypoints': SMALL_KEYPOINTS, 'resize': 0,
              'device': 'cpu', 'keyframe_min_matches': 20, 'keyframe_min_inliers': 10,
              'processing_mode': 'lossless', 'qos_reliability': 'reliable', 'qos_depth': 50,
              'diagnostics_period_s': 0.2, 'log_throttle_s': 0.0,
              # The core's results computed here are compared with the node's exactly: the
              # same intra-op thread count (it changes the floating-point reduction order).
              'threads_per_stage': torch.get_num_threads()}
    values.update(extra)
    return values


@pytest.fixture(scope='module')
def small_models(weights_dir: Path) -> tuple[Any, Any]:
    """ALIKED + LightGlue at the in-process tests' settings, built once and shared."""
    params = _small_params(weights_dir)
    tracker = Tracker(TrackerConfig(
        extractor='aliked', extractor_weights=params['extractor_weights'],
        matcher_weights=params['matcher_weights'], max_keypoints=SMALL_KEYPOINTS, resize=None,
        device='cpu'))
    return tracker.extractor, tracker.matcher


def _assert_same_outputs(rig: Rig, expected: dict[int, Any], what: str) -> None:
    """Every output of every frame in ``expected`` (stamp -> FrameOutputs) arrived, equal
    field by field (message ==), and nothing else did for those frames."""
    # DDS keeps order within a topic, not across topics: wait until every topic holds as many
    # messages for these frames as the core produced before comparing.
    for name in OUTPUTS:
        count = sum(1 for outputs in expected.values() for topic, _ in outputs.items()
                    if topic == name)
        wait_until(lambda name=name, count=count: sum(
            1 for msg in rig.messages(name)
            if name == 'keyframe' or stamp_to_ns(msg.header.stamp) in expected) >= count,
            WAIT_S, f'{what}: {count} {name} message(s)')
    for name in OUTPUTS:
        got: dict[int, list[Any]] = defaultdict(list)
        for msg in rig.messages(name):
            # keyframe messages carry the new keyframe's stamp: compared as one list
            got[-1 if name == 'keyframe' else stamp_to_ns(msg.header.stamp)].append(msg)
        want: dict[int, list[Any]] = defaultdict(list)
        for stamp, outputs in expected.items():
            for topic, msg in outputs.items():
                if topic == name:
                    want[-1 if name == 'keyframe' else stamp].append(msg)
        for stamp in set(want) | {s for s in got if s in expected or s == -1}:
            assert got.get(stamp, []) == want.get(stamp, []), \
                f'{what}: {name} of frame {stamp} differs from the core tracker'


def _core_outputs(frames: list[tuple[np.ndarray, int]], camera: CameraModel | None,
                  config: TrackerConfig, models: tuple[Any, Any]) -> tuple[dict[int, Any], list]:
    tracker = Tracker(config, extractor=models[0], matcher=models[1])
    tracker.update_thresholds()
    tracker.warm_up()  # as the node does before its first frame
    expected, results = {}, []
    tracks = PublishedTracks()  # the node's default features_inliers_only
    for image, stamp in frames:
        result = tracker.process(image, stamp, camera)
        results.append(result)
        expected[stamp] = frame_outputs(result, header(stamp), odom_frame_id='odom',
                                        tracks=tracks)
    return expected, results


def _small_config(weights_dir: Path, **extra: Any) -> TrackerConfig:
    from lightglue_ros.ros.params import DEFAULTS, tracker_config

    return tracker_config({**DEFAULTS, **_small_params(weights_dir, **extra)})


@pytest.fixture
def make_node(context: Any, small_models: tuple[Any, Any], weights_dir: Path
              ) -> Iterator[Callable[..., tuple[MatcherNode, Rig]]]:
    """make_node(**params) -> (node, rig): an in-process node on the shared small models."""
    made: list[tuple[MatcherNode, Rig]] = []

    def make(*, rig_options: dict[str, Any] | None = None, namespace: str = '',
             **params: Any) -> tuple[MatcherNode, Rig]:
        values = _small_params(weights_dir, **params)
        namespace = namespace or f'/t{random.randrange(1 << 30)}'
        node = MatcherNode(context=context, namespace=namespace, models=small_models,
                           parameter_overrides=[Parameter(k, value=v)
                                                for k, v in values.items()])
        options = {'reliable': values['qos_reliability'] == 'reliable',
                   'compressed': values.get('compressed_input', False)}
        options.update(rig_options or {})
        # Bad-input warnings are expected here; keep the test output readable.
        node.get_logger().set_level(LoggingSeverity.ERROR)
        rig = Rig(context, node.get_fully_qualified_name(), node=node, **options)
        made.append((node, rig))
        rig.wait_connected()
        return node, rig

    yield make
    for node, rig in made:
        node.stop()
        rig.close()
        node.destroy_node()


# ------------------------------------------------------------------------------------------------
# In-process node.
# ------------------------------------------------------------------------------------------------

def _bad_image(kind: str, good: np.ndarray) -> Image:
    msg = array_to_image_msg(good)
    if kind == 'unknown_encoding':
        msg.encoding = 'rgb9000'
    elif kind == 'truncated':
        msg.data = bytes(msg.data)[: msg.step * msg.height // 2]
    elif kind == 'zero_size':
        msg.width = msg.height = msg.step = 0
        msg.data = b''
    return msg


class FlakyExtractor:
    """Wraps an extractor; raises like a GPU out of memory while ``fail`` is set."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.fail = False

    def extract(self, image: Any) -> Any:
        if self.fail:
            self.fail = False
            raise RuntimeError('CUDA out of memory. Tried to allocate 2.00 GiB')
        return self.inner.extract(image)


def test_bad_inputs_are_skipped_and_counted_and_the_next_good_frame_is_processed(
        make_node: Callable[..., tuple[MatcherNode, Rig]], small_frames: list,
        small_camera: CameraModel) -> None:
    node, rig = make_node()
    flaky = FlakyExtractor(node.tracker.extractor)
    node.tracker.extractor = flaky
    rig.publish_info(small_camera)
    wait_until(lambda: node.stats.camera_info_received >= 1, 30, 'camera_info to arrive')
    zero_focal = camera_info_msg(small_camera)
    zero_focal.k = [0.0] * 9  # what an uncalibrated camera publishes
    nan_focal = camera_info_msg(small_camera)
    nan_focal.k = [float('nan')] + list(nan_focal.k[1:])
    image0, stamp0 = small_frames[0]
    stamps = [stamp for _, stamp in small_frames]
    # (case, publish the bad input, skip reason; None: an invalid camera_info, ignored)
    cases: list[tuple[str, Callable[[], None], str | None]] = [
        ('unknown encoding', lambda: rig.publish_image(
            _bad_image('unknown_encoding', image0), stamps[1] + 1), 'invalid_image'),
        ('data shorter than step*height', lambda: rig.publish_image(
            _bad_image('truncated', image0), stamps[2] + 1), 'invalid_image'),
        ('zero size', lambda: rig.publish_image(
            _bad_image('zero_size', image0), stamps[3] + 1), 'invalid_image'),
        ('camera_info with zero focal length', lambda: rig.publish_info(zero_focal), None),
        ('camera_info with NaN focal length', lambda: rig.publish_info(nan_focal), None),
        ('stamp going backwards', lambda: rig.publish_image(image0, stamp0),
         'non_increasing_stamp'),
        ('image size changing mid-stream', lambda: rig.publish_image(
            cv2.resize(image0, (160, 120)), stamps[7] + 1), 'calibration_mismatch'),
        ('extractor error (CUDA out of memory)', lambda: (
            setattr(flaky, 'fail', True), rig.publish_image(image0, stamps[8] + 1)),
         'processing_error'),
    ]
    assert len(cases) + 2 == len(small_frames)
    rig.publish_image(*small_frames[0])
    rig.publish_image(*small_frames[1])
    rig.wait_matches(stamps[1])
    skips: dict[str, int] = defaultdict(int)
    for i, (case, publish_bad, reason) in enumerate(cases):
        publish_bad()
        if reason is None:
            invalid = sum(1 for c in cases[:i + 1] if c[2] is None)
            wait_until(lambda n=invalid: node.stats.camera_info_invalid == n, 30,
                       f'the {case} to be counted')
        else:
            skips[reason] += 1
            wait_until(lambda r=reason, n=skips[reason]: node.stats.skipped[r] == n, WAIT_S,
                       f'the {case} to be skipped as {reason}')
        image, stamp = small_frames[i + 2]
        rig.publish_image(image, stamp)
        rig.wait_matches(stamp)  # the good frame after it is processed
    assert node.wait_idle(WAIT_S)
    assert dict(node.stats.skipped) == dict(skips)
    assert node.stats.processed == len(small_frames)
    assert node.stats.camera_info_invalid == 2
    # The good frames gave exactly what the core tracker gives for them alone: bad input
    # never touched the tracker's state (invalid camera_info kept the valid one in use).
    expected, _ = _core_outputs(small_frames, small_camera, node.tracker.config,
                                (flaky.inner, node.tracker.matcher))
    _assert_same_outputs(rig, expected, 'after bad input')
    values = rig.wait_diagnostics(
        lambda d: d.get('frames_processed') == str(len(small_frames)), 'every frame counted')
    assert values['skipped.invalid_image'] == '3'
    assert values['skipped.non_increasing_stamp'] == '1'
    assert values['skipped.calibration_mismatch'] == '1'
    assert values['skipped.processing_error'] == '1'
    assert values['camera_info_invalid'] == '2'
    assert 'CUDA out of memory' in values['last_error']


class RecordingLogger:
    """Stands in for the node's logger: records warnings."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, message: str, **_: Any) -> None:
        self.warnings.append(message)

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def test_compressed_input_is_decoded_and_corrupt_data_skipped_with_throttled_warnings(
        make_node: Callable[..., tuple[MatcherNode, Rig]], small_frames: list,
        small_camera: CameraModel, monkeypatch: pytest.MonkeyPatch) -> None:
    node, rig = make_node(compressed_input=True, log_throttle_s=60.0)
    logger = RecordingLogger()
    monkeypatch.setattr(node, 'get_logger', lambda: logger)
    rig.publish_info(small_camera)
    wait_until(lambda: node.stats.camera_info_received >= 1, 30, 'camera_info to arrive')
    (image0, stamp0), (image1, stamp1), (image2, stamp2) = small_frames[:3]
    for image, stamp, fmt, ext in ((image0, stamp0, 'rgb8; png compressed bgr8', '.png'),
                                   (image1, stamp1, 'rgb8; jpeg compressed bgr8', '.jpg')):
        ok, data = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        assert ok
        rig.publish_image(CompressedImage(format=fmt, data=data.tobytes()), stamp)
    for i in range(3):  # corrupt data, three times: skipped, counted, logged once
        rig.publish_image(CompressedImage(format='jpeg', data=b'\xff\xd8 not a jpeg'),
                          stamp1 + 1 + i)
    ok, data = cv2.imencode('.png', cv2.cvtColor(image2, cv2.COLOR_RGB2BGR))
    rig.publish_image(CompressedImage(format='png', data=data.tobytes()), stamp2)
    matches = rig.wait_matches(stamp2)
    assert node.wait_idle(WAIT_S)
    assert node.stats.skipped['invalid_image'] == 3
    assert read_matches_cloud(matches)['u'].size > 0
    assert set(rig.by_stamp('matches')) == {stamp0, stamp1, stamp2}
    invalid = [w for w in logger.warnings if 'invalid_image' in w]
    assert len(invalid) == 1 and 'cannot decode compressed image' in invalid[0], \
        logger.warnings


def _claimed_jpeg(image: np.ndarray, width: int, height: int) -> bytes:
    """A small real JPEG whose frame header claims width x height pixels."""
    ok, data = cv2.imencode('.jpg', cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    jpeg = data.tobytes()
    i = jpeg.find(b'\xff\xc0') + 5
    return jpeg[:i] + height.to_bytes(2, 'big') + width.to_bytes(2, 'big') + jpeg[i + 4:]


def test_compressed_bombs_decoder_warnings_and_absurd_camera_info_are_counted_skips(
        make_node: Callable[..., tuple[MatcherNode, Rig]], small_frames: list,
        small_camera: CameraModel, monkeypatch: pytest.MonkeyPatch) -> None:
    node, rig = make_node(compressed_input=True, log_throttle_s=60.0)
    logger = RecordingLogger()
    monkeypatch.setattr(node, 'get_logger', lambda: logger)
    rig.publish_info(small_camera)
    wait_until(lambda: node.stats.camera_info_received >= 1, 30, 'camera_info to arrive')
    absurd = []
    for change in ({'fx': 1e-300}, {'fx': 1e300}, {'cx': 1e9}):
        msg = camera_info_msg(small_camera)
        k = list(msg.k)
        k[{'fx': 0, 'cx': 2}[next(iter(change))]] = next(iter(change.values()))
        msg.k = k
        absurd.append(msg)
        rig.publish_info(msg)
    wait_until(lambda: node.stats.camera_info_invalid == 3, 30,
               'three absurd camera_info rejected')
    (image0, stamp0), (image1, stamp1) = small_frames[:2]
    ok, png = cv2.imencode('.png', np.zeros((8, 8), np.uint8))
    huge_png = png.tobytes()[:16] + (16000).to_bytes(4, 'big') * 2 + png.tobytes()[24:]
    bombs = [_claimed_jpeg(image0, 20000, 20000), huge_png]
    assert all(len(bomb) < 40000 for bomb in bombs)
    for i, bomb in enumerate(bombs):
        rig.publish_image(CompressedImage(format='jpeg', data=bomb), stamp0 - 10 + i)
    ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(image0, cv2.COLOR_RGB2BGR))
    marker = jpeg.tobytes().find(b'\xff\xc4')
    corrupt = jpeg.tobytes()[:marker] + bytes(50) + jpeg.tobytes()[marker:]  # still decodes
    rig.publish_image(CompressedImage(format='jpeg', data=corrupt), stamp0)
    ok, jpeg1 = cv2.imencode('.jpg', cv2.cvtColor(image1, cv2.COLOR_RGB2BGR))
    rig.publish_image(CompressedImage(format='jpeg', data=jpeg1.tobytes()), stamp1)
    rig.wait_matches(stamp1)
    assert node.wait_idle(WAIT_S)
    assert dict(node.stats.skipped) == {'image_too_large': 2}
    assert node.stats.decoder_warnings == 1 and node.stats.processed == 2
    too_large = [w for w in logger.warnings if 'image_too_large' in w]
    assert len(too_large) == 1 and '20000x20000' in too_large[0]  # throttled: once
    assert [w for w in logger.warnings if w.startswith('image decoder: Corrupt JPEG data')]
    features = rig.by_stamp('features')[stamp1]  # the valid camera_info stayed in use
    assert all(math.isfinite(p.x) and math.isfinite(p.y) for p in features.points)
    values = rig.wait_diagnostics(lambda d: d.get('frames_processed') == '2', 'both frames')
    assert values['skipped.image_too_large'] == '2' and values['camera_info_invalid'] == '3'
    assert values['decoder_warnings'] == '1'
    assert values['calibration'] == f'camera_info {small_camera.width}x{small_camera.height}'


def test_gaps_and_stalls_of_the_input_are_counted_and_logged_once(
        make_node: Callable[..., tuple[MatcherNode, Rig]], small_frames: list,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A regular stream that stalls with its publisher still there, then goes on missing every
    third frame (what best-effort transport of large images does): counted in diagnostics,
    one clear warning of each kind however long it goes on."""
    node, rig = make_node(processing_mode='latest')
    logger = RecordingLogger()
    monkeypatch.setattr(node, 'get_logger', lambda: logger)
    image = cv2.resize(small_frames[0][0], (80, 60), interpolation=cv2.INTER_AREA)
    period = 33_333_333
    start = small_frames[0][1]
    # A raw image claiming 20000 x 20000 pixels is skipped as too large, not as truncated.
    bomb = array_to_image_msg(image)
    bomb.width = bomb.height = 20000
    bomb.step = 60000
    frames = [i for i in range(12)] + [i for i in range(12, 72) if i % 3 != 2]
    for n, i in enumerate(frames):
        rig.publish_image(bomb if n == 0 else image, start + i * period)
        time.sleep(0.002)
        if n == 11:  # the regular part alone: no warning, until it stops for over 1 s
            wait_until(lambda: node.stats.received == 12, 30, 'the regular frames')
            assert not [w for w in logger.warnings if 'lost' in w], logger.warnings
            wait_until(lambda: node.stats.stalls == 1, 30, 'the stall to be noticed')
    wait_until(lambda: node.stats.received == len(frames), 30, 'every frame (reliable QoS)')
    assert node.wait_idle(WAIT_S)
    intervals = np.diff(frames)
    gaps = int(sum(1 for k, d in enumerate(intervals) if k >= 5 and d > 1.5))
    assert gaps == 19  # frames 14, 17, ..., 68 missing
    lost = [w for w in logger.warnings if 'images are being lost' in w]
    assert len(lost) == 1, logger.warnings
    assert 'qos_reliability: reliable' in lost[0] and 'fastdds_large_data.xml' in lost[0]
    stalled = [w for w in logger.warnings if w.startswith('no image for')]
    assert len(stalled) == 1 and '1 publisher(s)' in stalled[0] and '30.0 Hz' in stalled[0]
    wait_until(lambda: node.stats.stalls == 2, 30, 'the silence after the test stream')
    assert len([w for w in logger.warnings if w.startswith('no image for')]) == 1
    assert node.stats.skipped['image_too_large'] == 1
    values = rig.wait_diagnostics(lambda d: d.get('input_gaps') == str(gaps)
                                  and d.get('input_stalls') == '2', 'the gaps and stalls')
    assert values['input_frames_missing'] == str(gaps)
    assert float(values['input_period_ms']) == pytest.approx(period * 1e-6)
    assert values['_level'] == '1'
    from lightglue_ros.ros.node import FRAME_DIAGNOSTICS, STATIC_DIAGNOSTICS

    assert set(node._static_diagnostics()) == set(STATIC_DIAGNOSTICS)
    assert set(FRAME_DIAGNOSTICS) <= set(values)


def test_fallback_intrinsics_without_camera_info_and_matches_without_any_calibration(
        make_node: Callable[..., tuple[MatcherNode, Rig]], small_frames: list,
        small_camera: CameraModel) -> None:
    fx, fy, cx, cy = (float(v) for v in small_camera.K[[0, 1, 0, 1], [0, 1, 2, 2]])
    node, rig = make_node(fallback_intrinsics=[fx, fy, cx, cy])
    (image0, stamp0), (image1, stamp1), (image2, stamp2) = small_frames[:3]
    rig.publish_image(image0, stamp0)
    rig.publish_image(image1, stamp1)
    rig.wait_matches(stamp1)
    wait_until(lambda: stamp1 in rig.by_stamp('relative_pose'), 30, 'a pose from the fallback')
    values = rig.wait_diagnostics(lambda d: d.get('frames_processed') == '2', 'two frames')
    assert values['calibration'] == 'fallback intrinsics'
    assert node.stats.debug_images == 0  # nobody subscribed to debug_image

    # No calibration at all (fallback cleared at run time): matches, but no pose.
    result = node.set_parameters([Parameter('fallback_intrinsics', value=[0.0] * 4)])[0]
    assert result.successful, result.reason
    debug: list[Image] = []
    sub = rig.client.create_subscription(Image, f'{node.get_fully_qualified_name()}/debug_image',
                                         debug.append, 10)
    wait_until(lambda: sub.get_publisher_count() >= 1, 30, 'the debug_image publisher')
    wait_until(lambda: node._debug_publisher.get_subscription_count() >= 1, 30,
               'the node to see the debug_image subscriber')
    rig.publish_image(image2, stamp2)
    matches = rig.wait_matches(stamp2)
    assert read_matches_cloud(matches)['u'].size > 0
    assert node.wait_idle(WAIT_S)
    assert stamp2 not in rig.by_stamp('relative_pose') and stamp2 not in rig.by_stamp('features')
    assert node.stats.pose_unavailable['no_calibration'] == 1
    values = rig.wait_diagnostics(lambda d: d.get('pose_unavailable.no_calibration') == '1',
                                  'the skipped pose')
    assert values['calibration'] == 'none (pose skipped)'
    assert values['_level'] == '1'  # WARN
    wait_until(lambda: debug, 30, 'a debug image once subscribed')
    assert stamp_to_ns(debug[0].header.stamp) == stamp2
    assert debug[0].header.frame_id == FRAME_ID
    assert (debug[0].width, debug[0].height, debug[0].encoding) == (*SMALL_SIZE, 'rgb8')

    # The image size changes mid-stream (no calibration to contradict it): tracking restarts
    # from that frame, and again when the size comes back.
    (image3, stamp3), (image4, stamp4) = small_frames[3:5]
    rig.publish_image(cv2.resize(image3, (160, 120), interpolation=cv2.INTER_AREA), stamp3)
    rig.publish_image(image4, stamp4)
    rig.wait_matches(stamp4)
    keyframes = rig.wait_count('keyframe', 3)
    reasons = [{kv.key: kv.value for kv in k.status[0].values}['reason'] for k in keyframes]
    assert reasons == ['first_frame', 'image_size_changed', 'image_size_changed']
    assert [stamp_to_ns(k.header.stamp) for k in keyframes[1:]] == [stamp3, stamp4]
    assert node.stats.keyframes['image_size_changed'] == 2 and not node.stats.skipped


class Gate:
    """Wraps a model; holds the worker thread that calls its ``method`` (``extract`` of an
    extractor, ``match_prepared`` of a matcher) until ``open()``, so that frames pile up behind
    a frame in flight however fast the machine is. ``holding`` is set once a thread waits at
    the gate; ``calls`` counts the calls of ``method``. Every other attribute is the model's."""

    def __init__(self, inner: Any, method: str = 'extract', *, is_open: bool = False) -> None:
        self.inner, self.method = inner, method
        self.holding = threading.Event()
        self._open = threading.Event()
        if is_open:
            self._open.set()
        self.calls = 0

    def open(self) -> None:
        self._open.set()

    def __getattr__(self, name: str) -> Any:
        if name != self.method:
            return getattr(self.inner, name)

        def gated(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if not self._open.is_set():
                self.holding.set()
                if not self._open.wait(WAIT_S):
                    raise TimeoutError('the test never opened the gate')
            return getattr(self.inner, name)(*args, **kwargs)
        return gated


def _hold_the_worker(node: MatcherNode, rig: Rig, frames: list[tuple[np.ndarray, int]]
                     ) -> Gate:
    """Publish frames[0] and wait until the worker holds it at a closed gate (then publish
    the rest, and open the gate)."""
    gate = Gate(node.tracker.extractor)
    node.tracker.extractor = gate
    rig.publish_image(*frames[0])
    assert gate.holding.wait(WAIT_S), 'the worker never took the first frame'
    return gate


def test_overload_drops_to_the_newest_frame_with_bounded_latency(
        make_node: Callable[..., tuple[MatcherNode, Rig]], small_frames: list,
        small_camera: CameraModel) -> None:
    """In latest mode, frames that arrive while the worker is busy replace each other in the
    one-frame slot: the worker goes on with the newest, so no frame waits behind older ones
    (latency: at most the frame in flight, then its own). The worker is held at a gate while
    the frames arrive, so the overload does not depend on the machine's speed."""
    node, rig = make_node(processing_mode='latest')  # reliable input: every frame arrives
    rig.publish_info(small_camera)
    wait_until(lambda: node.stats.camera_info_received >= 1, 30, 'camera_info to arrive')
    frames = small_frames[:10]
    gate = _hold_the_worker(node, rig, frames)
    try:
        for image, stamp in frames[1:]:
            rig.publish_image(image, stamp)
        # frames 1..8 were each replaced by the next one; frame 9 waits in the slot
        superseded = len(frames) - 2
        wait_until(lambda: node.stats.dropped[DROP_SUPERSEDED] >= superseded, 30,
                   f'{superseded} superseded frames')
        assert node.stats.received == len(frames)
        assert dict(node.stats.dropped) == {DROP_SUPERSEDED: superseded}
    finally:
        gate.open()
    matches = rig.wait_count('matches', 2)
    assert [stamp_to_ns(m.header.stamp) for m in matches] == [frames[0][1], frames[-1][1]], \
        'the frame in flight, then the newest'
    assert node.stats.processed == 2 and not node.stats.skipped
    values = rig.wait_diagnostics(lambda d: d.get('frames_processed') == '2', 'both frames')
    assert values['frames_dropped'] == values['dropped.superseded'] == str(superseded)
    assert values['mode'] == 'latest' and values['queue_length'] == '0'


def test_lossless_mode_processes_in_order_and_reports_queue_overflow(
        make_node: Callable[..., tuple[MatcherNode, Rig]], small_frames: list,
        small_camera: CameraModel) -> None:
    """In lossless mode frames wait in order; when queue_size frames wait, the oldest waiting
    one is dropped (the worker is held at a gate while they arrive: overflow by construction).
    """
    node, rig = make_node(processing_mode='lossless', queue_size=2)
    rig.publish_info(small_camera)
    wait_until(lambda: node.stats.camera_info_received >= 1, 30, 'camera_info to arrive')
    frames = small_frames[:7]
    gate = _hold_the_worker(node, rig, frames)
    try:
        for image, stamp in frames[1:]:
            rig.publish_image(image, stamp)
        # frames 1..6 arrive at a queue of two: 1..4 overflow, 5 and 6 wait
        overflow = len(frames) - 3
        wait_until(lambda: node.stats.dropped[DROP_OVERFLOW] >= overflow, 30,
                   f'{overflow} overflowing frames')
        assert node.stats.received == len(frames)
        assert dict(node.stats.dropped) == {DROP_OVERFLOW: overflow}
    finally:
        gate.open()
    stamps = [stamp_to_ns(m.header.stamp) for m in rig.wait_count('matches', 3)]
    assert stamps == [frames[0][1], frames[-2][1], frames[-1][1]]
    values = rig.wait_diagnostics(lambda d: d.get('dropped.queue_overflow') == str(overflow),
                                  'the overflow')
    assert values['mode'] == 'lossless'


@pytest.mark.parametrize('pipelined', [True, False])
def test_pipelined_node_extracts_the_next_frame_while_the_current_one_is_tracked(
        make_node: Callable[..., tuple[MatcherNode, Rig]], small_frames: list,
        small_camera: CameraModel, pipelined: bool) -> None:
    """With ``pipelined`` the extraction of frame 2 does not wait for the matching of frame 1
    (held at a gate here); without it, it does. Frames come out in order either way."""
    node, rig = make_node(processing_mode='lossless', pipelined=pipelined)
    rig.publish_info(small_camera)
    wait_until(lambda: node.stats.camera_info_received >= 1, 30, 'camera_info to arrive')
    frames = small_frames[:3]
    rig.publish_image(*frames[0])  # the first frame: a keyframe, nothing to match
    rig.wait_matches(frames[0][1])
    extractor = node.tracker.extractor = Gate(node.tracker.extractor, is_open=True)
    matcher = node.tracker.runner = Gate(node.tracker.runner, 'match_prepared')
    try:
        rig.publish_image(*frames[1])
        assert matcher.holding.wait(WAIT_S), 'frame 1 never reached the matcher'
        rig.publish_image(*frames[2])
        if pipelined:
            wait_until(lambda: extractor.calls == 2, WAIT_S,
                       'frame 2 extracted while frame 1 is held in matching')
        else:
            wait_until(lambda: node.stats.received == 3, WAIT_S, 'frame 2 to arrive')
            assert extractor.calls == 1  # the one worker is held in frame 1's matching
    finally:
        matcher.open()
    stamps = [stamp_to_ns(m.header.stamp) for m in rig.wait_count('matches', 3)]
    assert stamps == [stamp for _, stamp in frames]
    assert node.stats.processed == 3 and not node.stats.dropped


def test_backwards_stamps_reset_the_tracker_after_the_limit(
        make_node: Callable[..., tuple[MatcherNode, Rig]], small_frames: list,
        small_camera: CameraModel) -> None:
    node, rig = make_node(backwards_reset_frames=2)
    rig.publish_info(small_camera)
    wait_until(lambda: node.stats.camera_info_received >= 1, 30, 'camera_info to arrive')
    (image0, stamp0), (image1, stamp1) = small_frames[:2]
    rig.publish_image(image0, stamp1)
    rig.publish_image(image0, stamp0)  # back in time: skipped
    rig.publish_image(image1, stamp0 + 1)  # again: the bag looped, so start a new map
    rig.wait_matches(stamp0 + 1)
    assert node.stats.skipped['non_increasing_stamp'] == 1 and node.stats.tracker_resets == 1
    wait_until(lambda: len(rig.messages('keyframe')) == 2, 30, 'the second first_frame keyframe')
    keyframes = rig.messages('keyframe')
    assert [stamp_to_ns(k.header.stamp) for k in keyframes] == [stamp1, stamp0 + 1]
    assert {kv.key: kv.value for kv in keyframes[1].status[0].values}['reason'] == 'first_frame'


def test_the_node_warms_its_networks_up_before_the_first_frame(
        make_node: Callable[..., tuple[MatcherNode, Rig]], small_models: tuple[Any, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A cold first inference can differ from later ones in the last bits (and is slower):
    # the node runs Tracker.warm_up on its worker before it takes frames.
    extractor = small_models[0]
    shapes: list[tuple[int, ...]] = []
    original = extractor.extract
    monkeypatch.setattr(extractor, 'extract',
                        lambda image: shapes.append(tuple(image.shape)) or original(image))
    node, _ = make_node()
    assert shapes == [(1, WARM_UP_SIDE, WARM_UP_SIDE)]
    assert node.stats.processed == 0


def test_backwards_reset_frames_changes_at_run_time(
        make_node: Callable[..., tuple[MatcherNode, Rig]], small_frames: list,
        small_camera: CameraModel) -> None:
    node, rig = make_node()  # the default: the third frame back in time resets
    assert node.set_parameters([Parameter('backwards_reset_frames', value=1)])[0].successful
    rig.publish_info(small_camera)
    wait_until(lambda: node.stats.camera_info_received >= 1, 30, 'camera_info to arrive')
    (image0, stamp0), (image1, stamp1) = small_frames[:2]
    rig.publish_image(image1, stamp1)
    rig.publish_image(image0, stamp0)  # back in time once: with the new limit, a new map
    rig.wait_matches(stamp0)
    assert node.stats.tracker_resets == 1 and node.stats.skipped['non_increasing_stamp'] == 0


def test_parameters_change_at_run_time_and_invalid_values_are_refused(
        make_node: Callable[..., tuple[MatcherNode, Rig]], small_frames: list,
        context: Any) -> None:
    from rclpy.parameter_client import AsyncParameterClient

    node, rig = make_node()
    ok = node.set_parameters([Parameter('filter_threshold', value=0.25),
                              Parameter('keyframe_min_matches', value=30)])
    assert all(r.successful for r in ok)
    refused = {
        'filter_threshold': (1.5, 'out of range'),
        'depth_confidence': (0.0, 'depth_confidence must be -1 (off) or in (0, 1]'),
        'fallback_intrinsics': ([500.0, 0.0, 320.0, 240.0],
                                'fallback_intrinsics [fx, fy, cx, cy] must be all 0 (none)'),
        'extractor': ('disk', 'read-only'),
        'max_keypoints': (64, 'read-only'),
        'keyframe_min_matches': (1.5, 'Wrong parameter type'),
        'ransac_threshold_px': (0.0, 'ransac_threshold_px must be > 0'),
        'pose_method': ('eight_point', 'pose_method must be one of'),
    }
    for name, (value, reason) in refused.items():
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful, name
        assert reason in result.reason, (name, result.reason)
    assert node.get_parameter('filter_threshold').value == 0.25
    # Over the wire (ros2 param set does the same): the reason comes back to the caller.
    client = AsyncParameterClient(rig.client, node.get_fully_qualified_name())
    assert client.wait_for_services(timeout_sec=30.0)
    future = client.set_parameters([Parameter('width_confidence', value=-0.5),
                                    Parameter('keyframe_hysteresis', value=1.5)])
    response = wait_until(lambda: future.result() if future.done() else None, 30,
                          'the set_parameters service')
    first, second = response.results
    assert not first.successful and 'width_confidence' in first.reason
    assert second.successful
    # The worker applies the thresholds before its next frame.
    image, stamp = small_frames[0]
    rig.publish_image(image, stamp)
    rig.wait_matches(stamp)
    config = node.tracker.config
    assert (config.filter_threshold, config.keyframe_min_matches,
            config.keyframe_hysteresis, config.width_confidence) == (0.25, 30, 1.5, 0.99)
    assert node.tracker.matcher.conf['filter_threshold'] == 0.25


def test_invalid_start_up_parameters_are_refused_with_a_reason(
        context: Any, weights_dir: Path) -> None:
    cases = {
        'max_keypoints': (0, 'out of range'),
        'device': ('gpu', 'device must be auto, cpu, cuda or cuda:N'),
        'extractor': ('sift', 'extractor must be one of'),
        'processing_mode': ('fast', 'processing_mode must be one of'),
        'width_confidence': (0.0, 'width_confidence must be -1 (off) or in (0, 1]'),
        'resize': ('big', 'must be a int'),
    }
    for name, (value, reason) in cases.items():
        with pytest.raises(ConfigError, match=reason.replace('(', r'\(').replace(')', r'\)')
                           .replace('[', r'\[').replace(']', r'\]')):
            MatcherNode(context=context, parameter_overrides=[
                *(Parameter(k, value=v) for k, v in _weights(weights_dir).items()),
                Parameter(name, value=value)])


# ------------------------------------------------------------------------------------------------
# The installed console script, as `ros2 run` starts it.
# ------------------------------------------------------------------------------------------------

def _console_script() -> str:
    path = Path(sys.executable).with_name('matcher_node')
    if not path.exists():
        pytest.skip('the matcher_node console script is not installed (pip install -e .)')
    return str(path)


def _start_node(args: list[str], command: list[str] | None = None) -> subprocess.Popen:
    env = {**os.environ, **ros_env(), 'PYTHONUNBUFFERED': '1'}
    env.pop('ROS_LOCALHOST_ONLY', None)
    return subprocess.Popen([*(command or [_console_script()]), '--ros-args', *args],
                            cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _stop(process: subprocess.Popen, sig: int, timeout: float = 60.0) -> tuple[int, str]:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f'the node did not stop within {timeout} s:\n{output}') from None
    return process.returncode, output


# Settings of the end-to-end comparison: real frames, 512 keypoints, a keyframe threshold
# between frame 1's matches to frame 0 (323, tracks well) and frame 3's (220): at frame 3
# frame 1 becomes the keyframe (low_matches).
E2E_FRAMES = (0, 1, 3)
E2E_PARAMS = {'max_keypoints': 512, 'resize': 320, 'device': 'cpu',
              'keyframe_min_matches': 240, 'processing_mode': 'lossless',
              'qos_reliability': 'reliable', 'qos_depth': 20, 'diagnostics_period_s': 0.5,
              'odom_frame_id': 'odom'}


def test_console_script_matches_the_core_tracker_and_stops_on_sigterm(
        context: Any, freiburg_frames: list[Path], freiburg_dir: Path,
        weights_dir: Path) -> None:
    from lightglue_ros.ros.params import DEFAULTS, load_params_file, tracker_config

    config_file = PROJECT_ROOT / 'config' / 'matcher.yaml'
    # The node's torch threads as this process's: the thread count changes float rounding.
    overrides = {**_weights(weights_dir), **E2E_PARAMS,
                 'threads_per_stage': torch.get_num_threads()}
    namespace = f'/e2e{random.randrange(1 << 20)}'
    process = _start_node([
        '--params-file', str(config_file),
        *(arg for k, v in overrides.items() for arg in ('-p', f'{k}:={v}')),
        '-r', f'__ns:={namespace}', '-r', 'image:=/e2e_cam/image_raw',
        '-r', f'camera_info:={namespace}/e2e_cam/camera_info'])
    rig = None
    try:
        rig = Rig(context, f'{namespace}/lightglue_matcher', reliable=True, debug_image=True,
                  image_topic='/e2e_cam/image_raw',
                  info_topic=f'{namespace}/e2e_cam/camera_info')
        # The core's results, computed here while the node starts.
        camera = CameraModel.from_yaml(freiburg_dir / 'camera_info.yaml')
        frames = [(read_image(freiburg_frames[i]), stamp_ns(freiburg_frames[i]))
                  for i in E2E_FRAMES]
        values = {**DEFAULTS, **load_params_file(config_file), **overrides}
        config = tracker_config(values)
        expected, results = _core_outputs(frames, camera, config, _models(config))
        events = [e for r in results for e in r.keyframe_events]
        assert [e.reason for e in events] == ['first_frame', 'low_matches'], events

        outputs = OUTPUTS + ('debug_image',)
        rig.wait_connected(timeout=120.0, outputs=outputs)
        rig.publish_info(camera, frames[0][1])
        # Both sides matched (the node counts our subscriptions) and calibration is in.
        rig.wait_diagnostics(lambda d: d.get('camera_info_received', '0') != '0' and all(
            d.get(f'subscribers.{name}', '0') != '0' for name in outputs),
            'camera_info received and every output subscribed', timeout=60.0)
        for image, stamp in frames:
            rig.publish_info(camera, stamp)  # as a driver does, beside every image
            rig.publish_image(image, stamp, encoding='bgr8')
        for _, stamp in frames:
            rig.wait_matches(stamp, timeout=WAIT_S)
        wait_until(lambda: len(rig.messages('keyframe')) >= 2, 30, 'both keyframe messages')
        wait_until(lambda: len(rig.messages('debug_image')) >= len(frames), 30, 'debug images')
        _assert_same_outputs(rig, expected, 'console script')

        # Stamps and frames: every output carries the image's stamp and frame_id (odometry:
        # odom -> camera), keyframe messages the new keyframe's stamp.
        stamps = [stamp for _, stamp in frames]
        for name in ('matches', 'features', 'debug_image'):
            assert [stamp_to_ns(m.header.stamp) for m in rig.messages(name)] == stamps, name
            assert {m.header.frame_id for m in rig.messages(name)} == {FRAME_ID}, name
        # The first keyframe has no pose relative to anything, but starts the trajectory.
        assert [stamp_to_ns(m.header.stamp) for m in rig.messages('relative_pose')] == \
            stamps[1:]
        odometry = rig.messages('odometry')
        assert [stamp_to_ns(m.header.stamp) for m in odometry] == stamps
        assert {(m.header.frame_id, m.child_frame_id) for m in odometry} == {('odom', FRAME_ID)}
        keyframes = [{kv.key: kv.value for kv in m.status[0].values}
                     for m in rig.messages('keyframe')]
        assert [(k['frame_index'], k['previous_index'], k['reason']) for k in keyframes] == [
            ('0', '-1', 'first_frame'), ('1', '0', 'low_matches')]
        assert [stamp_to_ns(m.header.stamp) for m in rig.messages('keyframe')] == [
            stamps[0], stamps[1]]
        debug = rig.messages('debug_image')[-1]
        assert (debug.width, debug.height, debug.encoding) == (640, 480, 'rgb8')

        status = rig.wait_diagnostics(lambda d: d.get('frames_processed') == '3',
                                      'three processed frames')
        assert status['device'] == 'cpu' and status['precision'] == 'fp32'
        assert status['mode'] == 'lossless' and status['frames_dropped'] == '0'
        assert status['keyframes.low_matches'] == '1'
        assert status['matches'] == str(results[-1].num_matches)
        assert status['inliers'] == str(results[-1].num_inliers)
        for key in ('input_rate_hz', 'output_rate_hz', 'latency_p50_ms', 'latency_p90_ms',
                    'latency_p99_ms', 'stop_layer', 'frames_skipped'):
            assert key in status, key
    finally:
        if rig is not None:
            rig.close()
        code, output = _stop(process, signal.SIGTERM)
    assert code == 0, output
    assert 'Traceback' not in output, output


_MODEL_CACHE: dict[tuple, tuple[Any, Any]] = {}


def _models(config: TrackerConfig) -> tuple[Any, Any]:
    key = (config.extractor, config.max_keypoints, config.resize)
    if key not in _MODEL_CACHE:
        tracker = Tracker(config)
        _MODEL_CACHE[key] = (tracker.extractor, tracker.matcher)
    return _MODEL_CACHE[key]


def test_console_script_refuses_invalid_parameters_and_stops_on_sigint(
        context: Any, weights_dir: Path) -> None:
    base = [arg for k, v in {**_weights(weights_dir), 'device': 'cpu',
                             'max_keypoints': 64}.items() for arg in ('-p', f'{k}:={v}')]
    bad = _start_node(['--params-file', str(PROJECT_ROOT / 'config' / 'matcher.yaml'), *base,
                       '-p', 'depth_confidence:=0.0'])
    try:
        output, _ = bad.communicate(timeout=120.0)
    except subprocess.TimeoutExpired:
        bad.kill()
        raise
    assert bad.returncode == 1, output
    assert 'depth_confidence must be -1 (off) or in (0, 1]' in output, output

    namespace = f'/sigint{random.randrange(1 << 20)}'
    good = _start_node([*base, '-r', f'__ns:={namespace}', '-r', '__node:=sigint_matcher',
                        '-p', 'diagnostics_period_s:=0.2'])
    seen = threading.Event()
    probe = Node(f'sigint_probe_{random.randrange(1 << 30)}', context=context)
    probe.create_subscription(
        DiagnosticArray, '/diagnostics',
        lambda msg: seen.set() if any(s.name.startswith('sigint_matcher:')
                                      for s in msg.status) else None, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(probe)
    try:
        # Diagnostics come from the executor's timer: the node is up and spinning.
        deadline = time.monotonic() + 120.0
        while not seen.is_set() and good.poll() is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        assert seen.is_set(), f'the node never published diagnostics (exit {good.poll()})'
    finally:
        executor.shutdown()
        probe.destroy_node()
        code, output = _stop(good, signal.SIGINT)
    assert code == 0, output
    assert 'Traceback' not in output, output


def _has_loaded(pid: int, library: str) -> bool:
    try:
        return library in Path(f'/proc/{pid}/maps').read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path('/proc/self/maps').exists(), reason='needs /proc/<pid>/maps')
@pytest.mark.parametrize('how,sig,library', [
    ('console_script', signal.SIGINT, '_rclpy_pybind11'),  # importing rclpy
    ('console_script', signal.SIGTERM, 'libtorch_cpu'),  # importing torch (seconds)
    ('python -m', signal.SIGTERM, '_rclpy_pybind11'),
    ('python -m', signal.SIGINT, 'libtorch_cpu'),
])
def test_a_signal_during_start_up_exits_cleanly(how: str, sig: int, library: str,
                                                weights_dir: Path) -> None:
    """SIGINT/SIGTERM while the node imports rclpy or torch (well before the models are
    loaded): exit code 0 and no traceback (was: a KeyboardInterrupt traceback, or death by
    SIGTERM with -15)."""
    command = None if how == 'console_script' else [
        sys.executable, '-m', 'lightglue_ros.ros.node']
    process = _start_node([arg for k, v in {**_weights(weights_dir), 'device': 'cpu'}.items()
                           for arg in ('-p', f'{k}:={v}')], command)
    deadline = time.monotonic() + 60.0
    while not _has_loaded(process.pid, library):
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, f'{library} never loaded'
        time.sleep(0.005)
    code, output = _stop(process, sig)
    assert 'Traceback' not in output, output
    assert code == 0, output


def test_models_are_built_on_the_worker_thread_that_runs_them(
        context: Any, weights_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Built on the main thread and run on the worker, every frame took ~1.3x as long (torch's
    OpenMP pool of the building thread, measured 2026-12-03): the worker builds them."""
    from lightglue_ros.ros import matcher as matcher_module

    built_on: list[str] = []

    class RecordingTracker(matcher_module.Tracker):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built_on.append(threading.current_thread().name)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(matcher_module, 'Tracker', RecordingTracker)
    node = MatcherNode(context=context, parameter_overrides=[
        Parameter(k, value=v) for k, v in _small_params(weights_dir).items()])
    try:
        assert built_on == ['lightglue_worker']
        assert isinstance(node.tracker, RecordingTracker)
    finally:
        node.destroy_node()

"""MatcherNode: the Tracker behind ROS 2 topics (see docs/node.md); ``lightglue_ros.ros.node``
is the executable's entry point, which imports this module once its signal handlers are in.

Callbacks never run inference: the image callback only enqueues the message (a depth-1 slot
in ``latest`` mode, a bounded queue in ``lossless`` mode) and worker threads turn it into
output messages with ``frames.MessagePipeline`` (the path the bag replay shares, so the
messages are the same) and publish them. With ``pipelined`` (the default) there are two: the
first decodes and extracts the next frame while the second matches, estimates the pose and
publishes the current one; a hand-off of one frame between them keeps the order, and the first
takes the next frame from the queue only once the second has taken the one before, so that in
``latest`` mode the frame it takes is the newest. Bad input is logged (throttled), counted in
/diagnostics and skipped; the node never dies of it.
"""
from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from lightglue_ros import startup
from lightglue_ros.camera import CameraModel
from lightglue_ros.errors import CalibrationError, LightGlueRosError
from lightglue_ros.pipeline import SKIP_ERROR, FramePipeline, Skip, stage_threads, use_threads
from lightglue_ros.profiles import pipeline_name
from lightglue_ros.ros.camera_info import camera_info_to_camera_model
from lightglue_ros.ros.frame_queue import FrameQueue
from lightglue_ros.ros.frames import ExtractedMessage, FrameMessages, MessagePipeline
from lightglue_ros.ros.log_throttle import Throttle
from lightglue_ros.ros.messages import OUTPUT_TYPES, make_diagnostic_array, stamp_to_ns
from lightglue_ros.ros.params import (NODE_NAME, NodeSettings, declare_parameters,
                                      fallback_intrinsics, tracker_config, tracker_updates,
                                      validate)
from lightglue_ros.ros.stats import DROP_OVERFLOW, DROP_SUPERSEDED, NodeStats
from lightglue_ros.tracker import Tracker

__all__ = ['MatcherNode', 'run', 'OUTPUT_TYPES', 'STATIC_DIAGNOSTICS', 'FRAME_DIAGNOSTICS']

OUTPUT_DEPTH = 10  # reliable keep-last: matches best-effort and reliable subscribers alike
STOP_TIMEOUT_S = 10.0  # how long stop() waits for the frame in flight
WORKER_THREAD_NAME = 'lightglue_worker'  # builds the models; all of a frame, or its extraction
TRACK_THREAD_NAME = 'lightglue_track'  # pipelined: matching, pose and publishing
# Keys of the node's own /diagnostics values (NodeStats.snapshot adds the counters).
STATIC_DIAGNOSTICS: tuple[str, ...] = (
    'mode', 'device', 'precision', 'extractor', 'max_keypoints', 'features_layout',
    'calibration', 'queue_length',
    *(f'subscribers.{name}' for name in (*OUTPUT_TYPES, 'debug_image')))
# Keys of the last processed frame's numbers (NodeStats.on_result values).
FRAME_DIAGNOSTICS: tuple[str, ...] = (
    'core_ms', 'latency_ms', 'stop_layer', 'matches', 'inliers', 'keypoints', 'keyframe_index',
    'pruned_keyframe', 'pruned_current')
# Run-time parameters of the frame's path (MessagePipeline, FramePipeline), not the tracker's.
PIPELINE_PARAMETERS = ('fallback_intrinsics', 'backwards_reset_frames', 'max_image_pixels')
TRANSPORT_HELP = ('qos_reliability: reliable (with a reliable publisher), or the Fast DDS '
                  'profile config/fastdds_large_data.xml for the driver and this node; see '
                  'docs/node.md, "Image transport"')


class MatcherNode(Node):
    """Subscribes image (or image/compressed) and camera_info; publishes under ~/.

    ``models=(extractor, matcher)`` shares already-built models (tests, benchmarks); they must
    have been built with the node's model parameters. Raises ConfigError (or a weights error)
    when the parameters are invalid or the models cannot be built.
    """

    def __init__(self, node_name: str = NODE_NAME, *, models: tuple[Any, Any] | None = None,
                 **kwargs: Any) -> None:
        self._worker: threading.Thread | None = None
        self._track_worker: threading.Thread | None = None  # pipelined only
        self._stopping = threading.Event()
        self._started = threading.Event()  # the node is set up: the worker may take frames
        super().__init__(node_name, **kwargs)
        try:
            self._values = declare_parameters(self)
            self.settings = NodeSettings.from_values(self._values)
            self.tracker = self._start_worker(models)
        except BaseException:
            self._stopping.set()
            if self._worker is not None:  # still building the models after a Ctrl-C
                self._worker.join(STOP_TIMEOUT_S)
            super().destroy_node()  # nothing else was created yet
            raise
        if models is not None:  # shared matcher: give it this node's thresholds
            self.tracker.update_thresholds()
        self.stats = NodeStats()
        self._throttle = Throttle(float(self._values['log_throttle_s']))
        self._queue: FrameQueue[tuple[Any, float]] = FrameQueue(
            self.settings.frame_capacity)
        # Pipelined: the one extracted frame waiting for the track thread.
        self._handoff: FrameQueue[tuple[ExtractedMessage, float]] = FrameQueue(1)
        self._lock = threading.Lock()  # guards the fields below (callbacks vs worker)
        self._camera: CameraModel | None = None  # from the latest valid camera_info
        self._fallback = fallback_intrinsics(self._values)
        self.pipeline = FramePipeline(
            self.tracker, fallback=self._fallback,
            backwards_reset_frames=int(self._values['backwards_reset_frames']))
        self.frames = MessagePipeline(
            self.pipeline, odom_frame_id=self.settings.odom_frame_id,
            features_layout=self.settings.features_layout,
            features_inliers_only=self.settings.features_inliers_only,
            max_image_pixels=int(self._values['max_image_pixels']),
            on_decoder_warning=self._decoder_warning)
        self._pending: dict[str, Any] = {}  # changes the worker applies before the next frame
        self._stall_warned = False

        self._output_publishers = {
            name: self.create_publisher(kind, f'~/{name}', OUTPUT_DEPTH)
            for name, kind in OUTPUT_TYPES.items()}
        self._debug_publisher = self.create_publisher(Image, '~/debug_image', 1)
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, '/diagnostics',
                                                            OUTPUT_DEPTH)
        qos = self._input_qos()
        if self.settings.compressed_input:
            self.create_subscription(CompressedImage, 'image/compressed', self._on_image, qos)
        else:
            self.create_subscription(Image, 'image', self._on_image, qos)
        self.create_subscription(CameraInfo, 'camera_info', self._on_camera_info, qos)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.create_timer(self.settings.diagnostics_period_s, self._publish_diagnostics)

        self._started.set()
        mode = 'lossless' if self.settings.lossless else 'latest'
        self.get_logger().info(
            f'{pipeline_name(self.tracker.config.extractor)} on {self.tracker.device} '
            f'({self.tracker.config.max_keypoints} keypoints, {mode} mode); listening on '
            f'{self._image_topic()} and {self.resolve_topic_name("camera_info")}')

    # -- set-up ---------------------------------------------------------------------------
    def _input_qos(self) -> QoSProfile:
        """The sensor-data profile (best effort, keep last, volatile) or its reliable twin."""
        reliability = (ReliabilityPolicy.RELIABLE if self.settings.reliable
                       else qos_profile_sensor_data.reliability)
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.settings.qos_depth,
                          reliability=reliability,
                          durability=qos_profile_sensor_data.durability)

    def _image_topic(self) -> str:
        return self.resolve_topic_name(
            'image/compressed' if self.settings.compressed_input else 'image')

    # -- callbacks (executor thread; no inference) ----------------------------------------
    def _on_image(self, msg: Any) -> None:
        if self.stats.on_input(stamp_to_ns(msg.header.stamp)):
            # Once per node: frames go missing before they reach this callback.
            self.get_logger().warning(
                f'images are being lost before they reach the node: '
                f'{self.stats.gap_monitor.pattern} (counted in /diagnostics as input_gaps, '
                f'input_frames_missing). Remedy: {TRANSPORT_HELP}')
        evicted = self._queue.put((msg, time.monotonic()))
        if evicted is not None:
            reason = DROP_OVERFLOW if self.settings.lossless else DROP_SUPERSEDED
            self.stats.on_drop(reason)
            if self.settings.lossless:
                self._warn('overflow', f'lossless queue full ({self.settings.queue_size} '
                           'frames): dropped the oldest frame; raise queue_size or slow the '
                           'input down')

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            camera = camera_info_to_camera_model(msg)
        except CalibrationError as err:
            self.stats.on_camera_info(valid=False)
            self._warn('camera_info', f'ignoring camera_info: {err}')
            return
        self.stats.on_camera_info(valid=True)
        with self._lock:
            self._camera = camera

    def _validate_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        changed = {p.name: _plain(p.value) for p in parameters}
        with self._lock:
            merged = {**self._values, **changed}
        reason = validate(merged)
        return SetParametersResult(successful=reason is None, reason=reason or '')

    def _apply_parameters(self, parameters: list[Parameter]) -> None:
        changed = {p.name: _plain(p.value) for p in parameters}
        with self._lock:
            self._values.update(changed)
            self._pending.update(tracker_updates(changed))
            self._fallback = fallback_intrinsics(self._values)
            if 'fallback_intrinsics' in changed:
                self._pending['fallback_intrinsics'] = self._fallback
            for name in ('backwards_reset_frames', 'max_image_pixels'):
                if name in changed:
                    self._pending[name] = int(changed[name])
            self._throttle.period_s = float(self._values['log_throttle_s'])
        self.get_logger().info('parameters set: ' + ', '.join(
            f'{name}={value!r}' for name, value in changed.items()))

    def _publish_diagnostics(self) -> None:
        self._check_stall()
        report = self.stats.report(self._static_diagnostics())
        msg = make_diagnostic_array(
            self.get_clock().now().to_msg(), name=f'{self.get_name()}: feature matcher',
            hardware_id=str(self.tracker.device), level=report.level, message=report.message,
            values=report.values)
        self._diagnostics_publisher.publish(msg)

    def _check_stall(self) -> None:
        publishers = self.count_publishers(self._image_topic())
        silent = self.stats.check_stall(publishers)
        if silent is None or self._stall_warned:
            return
        self._stall_warned = True  # once per node; every stall is counted
        rate = 1e9 / self.stats.gap_monitor.period_ns
        self.get_logger().warning(
            f'no image for {silent:.1f} s although {publishers} publisher(s) of '
            f'{self._image_topic()} are matched (the stream ran at {rate:.1f} Hz): the driver '
            'stopped sending, or frames are lost in transport (counted in /diagnostics as '
            f'input_stalls). Remedy for transport loss: {TRANSPORT_HELP}')

    def _static_diagnostics(self) -> dict[str, Any]:
        config = self.tracker.config
        with self._lock:
            if self._camera is not None:
                camera = f'camera_info {self._camera.width}x{self._camera.height}'
            elif self._fallback is not None:
                camera = 'fallback intrinsics'
            else:
                camera = 'none (pose skipped)'
        values: dict[str, Any] = {
            'mode': 'lossless' if self.settings.lossless else 'latest',
            'device': str(self.tracker.device), 'precision': config.precision,
            'extractor': config.extractor, 'max_keypoints': config.max_keypoints,
            'features_layout': self.settings.features_layout,
            'calibration': camera, 'queue_length': len(self._queue)}
        publishers = {**self._output_publishers, 'debug_image': self._debug_publisher}
        values.update({f'subscribers.{name}': publisher.get_subscription_count()
                       for name, publisher in publishers.items()})
        return values

    # -- worker thread --------------------------------------------------------------------
    def _start_worker(self, models: tuple[Any, Any] | None) -> Tracker:
        """Start the worker thread, which builds the tracker (and, unless given, its models)
        and then processes frames once the node is set up.

        The models are built on the thread that runs them: with torch's OpenMP, a thread pool
        left behind by building on the main thread slows every later frame on another thread
        (measured 2026-12-03, XFeat profile, 2 cores: 90-105 ms per frame against 75-85 ms).
        """
        built: dict[str, Any] = {}
        ready = threading.Event()
        threads = stage_threads(self.settings.threads_per_stage,
                                2 if self.settings.pipelined else 1)

        def work() -> None:
            use_threads(threads)
            try:
                extractor, matcher = models if models is not None else (None, None)
                tracker = Tracker(tracker_config(self._values), extractor=extractor,
                                  matcher=matcher)
                tracker.warm_up()  # the first frame as fast and reproducible as the rest
                built['tracker'] = tracker
            except BaseException as err:  # noqa: BLE001 - handed to the constructor
                built['error'] = err
                return
            finally:
                ready.set()
            while not self._started.wait(0.2):
                if self._stopping.is_set():
                    return
            if self.settings.pipelined:
                self._track_worker = threading.Thread(
                    target=self._run_stage, args=(self._handoff, self._track_stage, threads),
                    name=TRACK_THREAD_NAME, daemon=True)
                self._track_worker.start()
                self._run_stage(self._queue, self._extract_stage,
                                ready=self._handoff.wait_for_room)
            else:
                self._run_stage(self._queue, self._process)

        self._worker = threading.Thread(target=work, name=WORKER_THREAD_NAME, daemon=True)
        self._worker.start()
        ready.wait()
        if 'error' in built:
            raise built['error']
        return built['tracker']

    def _run_stage(self, queue: FrameQueue[Any], stage: Callable[..., None],
                   threads: int | None = None,
                   ready: Callable[[float], bool] | None = None) -> None:
        """A worker thread's loop: take an item from ``queue`` (once ``ready``), run ``stage``
        on it; a failure is a counted skip, never the end of the thread."""
        if threads is not None:
            use_threads(threads)
        while not self._stopping.is_set():
            if ready is not None and not ready(0.2):
                continue
            item = queue.get(timeout=0.2)
            if item is None:
                continue
            try:
                stage(*item)
            except Exception as err:  # noqa: BLE001 - the worker must survive anything
                if self._stopping.is_set() or not self.context.ok():
                    break
                self.stats.on_skip(SKIP_ERROR, f'{type(err).__name__}: {err}')
                self._warn('worker', f'frame failed: {type(err).__name__}: {err}')
            finally:
                queue.task_done()

    def _process(self, msg: Any, received: float) -> None:
        """All of one frame on one thread (``pipelined`` false)."""
        self._apply_pending()
        with self._lock:
            camera = self._camera
        self._publish(self.frames.process(msg, camera), received)

    def _extract_stage(self, msg: Any, received: float) -> None:
        """Pipelined, first thread: decode and extract; the track thread is ready for it."""
        self._handoff.put((self.frames.extract(msg), received))

    def _track_stage(self, frame: ExtractedMessage, received: float) -> None:
        """Pipelined, second thread: track, convert and publish an extracted frame."""
        self._apply_pending()
        with self._lock:
            camera = self._camera
        self._publish(self.frames.track(frame, camera), received)

    def _publish(self, frame: FrameMessages, received: float) -> None:
        """Publish a frame's messages (or count its skip) and update the statistics."""
        if frame.reset:
            self.get_logger().warning(
                f'{frame.reset} consecutive frames went back in time: resetting the tracker '
                '(new map from this frame)')
            self.stats.on_reset()
        if frame.skip is not None:
            return self._skip(frame.skip)
        for name, out in frame.outputs.items():
            self._output_publishers[name].publish(out)
        latency_ms = (time.monotonic() - received) * 1e3
        stamp_age_ms = (self.get_clock().now().nanoseconds - frame.stamp_ns) * 1e-6
        if self._debug_publisher.get_subscription_count() > 0:
            self._debug_publisher.publish(frame.debug_image())
            self.stats.on_debug_image()
        result, (height, width) = frame.result, frame.image.shape[:2]
        if result.reason == 'no_calibration':
            self._warn('no_calibration', 'no camera_info received and no fallback intrinsics '
                       'set: publishing matches without a pose')
        for event in result.keyframe_events:
            if event.reason == 'image_size_changed':
                self._warn('image_size', f'image size changed to {width}x{height}: tracking '
                           f'restarts from frame {event.frame_index}')
        self.stats.on_result(
            latency_ms=latency_ms, stamp_age_ms=stamp_age_ms, core_ms=result.timings.total_ms,
            pose_reason='' if result.ok else result.reason,  # never '' without a pose
            keyframe_reasons=tuple(e.reason for e in result.keyframe_events),
            values=dict(zip(FRAME_DIAGNOSTICS, (
                result.timings.total_ms, latency_ms, result.stop_layer, result.num_matches,
                result.num_inliers, result.num_keypoints, result.keyframe_index,
                result.num_pruned_keyframe, result.num_pruned_current), strict=True)))
        return None

    def _decoder_warning(self, message: str) -> None:
        """libjpeg/libpng complained about an image that still decoded: counted, throttled."""
        self.stats.on_decoder_warning()
        self._warn('decoder', f'image decoder: {message}')

    def _apply_pending(self) -> None:
        """Parameter changes reach the tracker and the frame's path here, on the worker
        thread."""
        with self._lock:
            pending, self._pending = self._pending, {}
        thresholds = {k: v for k, v in pending.items() if k not in PIPELINE_PARAMETERS}
        if thresholds:
            self.tracker.update_thresholds(**thresholds)
        if 'fallback_intrinsics' in pending:
            self.pipeline.set_fallback(pending['fallback_intrinsics'])
        if 'backwards_reset_frames' in pending:
            self.pipeline.backwards_reset_frames = pending['backwards_reset_frames']
        if 'max_image_pixels' in pending:
            self.frames.max_image_pixels = pending['max_image_pixels']

    def _skip(self, skip: Skip) -> None:
        self.stats.on_skip(skip.reason, skip.detail)
        self._warn(skip.reason, f'skipping frame ({skip.reason}): {skip.detail}')

    def _warn(self, key: str, message: str) -> None:
        suppressed = self._throttle(key)
        if suppressed is None:
            return
        if suppressed:
            message += f' ({suppressed} similar message(s) suppressed)'
        self.get_logger().warning(message)

    # -- life cycle -----------------------------------------------------------------------
    def wait_idle(self, timeout: float) -> bool:
        """Block until no frame waits or is in flight (tests, benchmarks); False on timeout."""
        deadline = time.monotonic() + timeout
        # A frame leaves the queue only once it is in the hand-off: none is missed between.
        return self._queue.join(timeout) and \
            self._handoff.join(max(0.0, deadline - time.monotonic()))

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Stop the worker (the frame in flight finishes, waiting frames are discarded);
        False when it is still busy after ``timeout`` seconds."""
        self._stopping.set()
        if self._worker is None:
            return True
        self._queue.close()
        self._handoff.close()
        deadline = time.monotonic() + timeout
        workers = [w for w in (self._worker, self._track_worker) if w is not None]
        for worker in workers:
            if worker.is_alive() and worker is not threading.current_thread():
                worker.join(max(0.0, deadline - time.monotonic()))
        return not any(worker.is_alive() for worker in workers)

    def destroy_node(self) -> None:
        self.stop()
        super().destroy_node()


def _plain(value: Any) -> Any:
    """Array parameter values (list or array.array) as tuples, like the parameter table."""
    return tuple(value) if isinstance(value, (list, tuple)) or hasattr(value, 'typecode') \
        else value


def run(args: list[str] | None = None) -> int:
    """Start the node and spin until SIGINT/SIGTERM: 0 then (also while the models load), 1
    when the parameters are invalid or the models cannot be built. ``node.main`` calls it."""
    rclpy.init(args=args)
    node: MatcherNode | None = None
    executor: SingleThreadedExecutor | None = None
    code = 0
    try:
        node = MatcherNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # SIGINT / SIGTERM
    except Exception as err:
        if not rclpy.ok():
            pass  # a signal shut the context down while the node was starting
        elif node is None and isinstance(err, (LightGlueRosError, ValueError, OSError)):
            rclpy.logging.get_logger(NODE_NAME).fatal(f'cannot start: {err}')
            code = 1
        else:
            raise
    finally:
        startup.stop_raising_on_signals()  # a second Ctrl-C must not cut the clean-up short
        if node is not None:
            node.stop()
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        _exit_now_if_worker_busy(code)
    return code


def _exit_now_if_worker_busy(code: int) -> None:
    """End the process at once when a worker thread outlived its bounded stop.

    Python's teardown stops a daemon thread that is inside torch by unwinding it through C++
    code that forbids it: std::terminate, exit -6 ('terminate called without an active
    exception', issue #20). The node is destroyed by now, so nothing is lost by leaving
    without the teardown. Called in ``run``'s finally clause: an exception on its way out
    (other than the Ctrl-C that ended the spin) is printed and exits with 1.
    """
    if not any(thread.name in (WORKER_THREAD_NAME, TRACK_THREAD_NAME) and thread.is_alive()
               for thread in threading.enumerate()):
        return
    rclpy.logging.get_logger(NODE_NAME).error(
        f'the worker is still busy {STOP_TIMEOUT_S:.0f} s after the stop (a slow frame or '
        'model build); exiting without waiting for it')
    error = sys.exc_info()[1]
    if error is not None and not isinstance(error, KeyboardInterrupt):
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

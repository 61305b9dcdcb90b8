"""The demo's ROS 2 harness: the real ``MatcherNode``, a camera publisher and a listener in one
process on an isolated domain. The camera plays the frames on a timer (``camera_ticks``) to the
node in latest mode, or, in lossless mode, sends each frame once the previous one's outputs
arrived (lock-step); the listener matches the outputs to the frames by stamp.

Needs rclpy and the message packages (imported here at the top): ``lightglue_ros.cli.demo``
imports this module only when the demo runs over ROS.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from lightglue_ros.cli.demo_inputs import DemoInput
from lightglue_ros.cli.errors import PROG, DemoError
from lightglue_ros.cli.report import FrameRecord, NodeCounts
from lightglue_ros.geometry import quaternion_to_rotation
from lightglue_ros.realtime import camera_ticks
from lightglue_ros.ros.camera_info import camera_model_to_camera_info
from lightglue_ros.ros.images import array_to_image_msg, image_msg_to_array
from lightglue_ros.ros.messages import ns_to_stamp, read_matches_cloud, stamp_to_ns
from lightglue_ros.ros.node import MatcherNode
from lightglue_ros.ros.params import NODE_NAME
from lightglue_ros.ros.stats import DROP_SUPERSEDED

DEMO_NAMESPACE = '/lightglue_demo'
DEMO_FRAME_ID = 'camera'
DISCOVERY_TIMEOUT_S = 20.0
SETTLE_S = 2.0  # how long the last frame's pose and debug image may trail its matches
NODE_FQN = f'{DEMO_NAMESPACE}/{NODE_NAME}'
OUTPUT_NAMES = ('matches', 'relative_pose', 'keyframe', 'debug_image')  # the node's ~/NAME
OnFrame = Callable[[FrameRecord, list[int]], None]


@dataclass
class DemoRun:
    """What ``run_node_demo`` hands back."""

    records: list[FrameRecord]  # every published frame, in publishing order
    setup: dict[str, Any]  # the ROS set-up, for the summary
    node: NodeCounts  # the node's own counts at the end


class _Collector:
    """Listener-side bookkeeping: callbacks (executor thread) fill it, the main thread waits."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.records: dict[int, FrameRecord] = {}  # by stamp_ns
        # The frame whose keyframe messages come now: the node publishes a frame's keyframe
        # messages after its matches and before the next frame's matches (one thread).
        self.current: FrameRecord | None = None
        self.processed: list[int] = []  # stamps in the order their matches arrived

    def on_matches(self, msg: PointCloud2) -> None:
        now = time.monotonic()
        fields = read_matches_cloud(msg)
        with self.cond:
            record = self.records.get(stamp_to_ns(msg.header.stamp))
            if record is not None:
                record.matches, record.matches_time = fields, now
                self.processed.append(record.stamp_ns)
                self.current = record
            self.cond.notify_all()

    def on_pose(self, msg: PoseWithCovarianceStamped) -> None:
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        R = quaternion_to_rotation(np.array([q.x, q.y, q.z, q.w]))
        t = np.array([p.x, p.y, p.z])
        with self.cond:
            record = self.records.get(stamp_to_ns(msg.header.stamp))
            if record is not None:
                record.pose = (R, t)
            self.cond.notify_all()

    def on_keyframe(self, msg: DiagnosticArray) -> None:
        with self.cond:
            for status in msg.status:
                values = {kv.key: kv.value for kv in status.values}
                if self.current is not None:
                    self.current.events.append(values)
            self.cond.notify_all()

    def on_debug_image(self, msg: Image) -> None:
        image = image_msg_to_array(msg)
        with self.cond:
            record = self.records.get(stamp_to_ns(msg.header.stamp))
            if record is not None:
                record.debug_image = image
            self.cond.notify_all()

    def add(self, record: FrameRecord) -> None:
        with self.cond:
            self.records[record.stamp_ns] = record

    def processed_stamps(self) -> list[int]:
        with self.cond:
            return list(self.processed)


def default_domain_id() -> int:
    """A ROS_DOMAIN_ID in [1, 100] from the process id."""
    # Safe ids on Linux are 0..101 (higher ones reach into the ephemeral port range); 0 is the
    # everyday default, so stay away from it.
    return 1 + os.getpid() % 100


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _wait(cond: threading.Condition, predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    with cond:
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            cond.wait(min(remaining, 0.1))
    return True


def run_node_demo(args: argparse.Namespace, source: DemoInput, weights: tuple[Path, Path],
                  on_frame: OnFrame) -> DemoRun:
    """Play the frames to a real MatcherNode and collect its outputs: on a timer at
    ``args.rate`` with the node in latest mode, or (``args.lossless``) lock-step, each frame
    sent once the previous one's outputs arrived. ``on_frame(record, processed stamps)`` gets
    every frame in publishing order once it is final (its outputs arrived or never will)."""
    domain_id = args.domain_id if args.domain_id is not None else default_domain_id()
    frames_hint = source.count or 100
    overrides = {
        # Reliable and deep enough for every frame: a frame the node does not process is one
        # it dropped itself (counted), not one lost on the way.
        'processing_mode': 'lossless' if args.lossless else 'latest',
        'qos_reliability': 'reliable', 'qos_depth': int(min(1000, max(10, frames_hint))),
        'queue_size': int(min(10000, max(100, frames_hint))),
        'extractor': args.extractor, 'extractor_weights': str(weights[0]),
        'matcher_weights': str(weights[1]), 'max_keypoints': int(args.max_keypoints),
        'resize': int(args.resize), 'device': str(args.device), **args.tracker_options,
    }
    reliable = QoSProfile(depth=int(overrides['qos_depth']),
                          reliability=ReliabilityPolicy.RELIABLE,
                          history=HistoryPolicy.KEEP_LAST)
    topics = {name: f'{NODE_FQN}/{name}' for name in OUTPUT_NAMES}
    setup = {'domain_id': domain_id, 'discovery_range': 'LOCALHOST',
             'rmw_implementation': os.environ.get('RMW_IMPLEMENTATION', 'default'),
             'node': NODE_FQN, 'image_topic': f'{DEMO_NAMESPACE}/image',
             'camera_info_topic': f'{DEMO_NAMESPACE}/camera_info', 'output_topics': topics,
             'parameters': overrides}

    collector = _Collector()
    context = Context()
    with _environment(ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST'):
        rclpy.init(args=[PROG], context=context, domain_id=domain_id,
                   signal_handler_options=SignalHandlerOptions.NO)
        nodes: list[Node] = []
        executor = None
        spinner = None
        matcher = None
        try:
            matcher = MatcherNode(NODE_NAME, namespace=DEMO_NAMESPACE, context=context,
                                  parameter_overrides=[Parameter(k, value=v)
                                                       for k, v in overrides.items()])
            nodes.append(matcher)
            camera_node = Node('demo_camera', namespace=DEMO_NAMESPACE, context=context)
            nodes.append(camera_node)
            image_pub = camera_node.create_publisher(Image, 'image', reliable)
            info_pub = camera_node.create_publisher(CameraInfo, 'camera_info', reliable)
            listener = Node('demo_listener', namespace=DEMO_NAMESPACE, context=context)
            nodes.append(listener)
            out_qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE,
                                 history=HistoryPolicy.KEEP_LAST)
            listener.create_subscription(PointCloud2, topics['matches'], collector.on_matches,
                                         out_qos)
            listener.create_subscription(PoseWithCovarianceStamped, topics['relative_pose'],
                                         collector.on_pose, out_qos)
            listener.create_subscription(DiagnosticArray, topics['keyframe'],
                                         collector.on_keyframe, out_qos)
            listener.create_subscription(Image, topics['debug_image'], collector.on_debug_image,
                                         out_qos)
            executor = SingleThreadedExecutor(context=context)
            for node in nodes:
                executor.add_node(node)
            spinner = threading.Thread(target=executor.spin, name='demo_executor', daemon=True)
            spinner.start()
            _wait_for_graph(matcher, listener, image_pub, info_pub, topics, domain_id)

            camera = _Camera(image_pub, info_pub, source, collector, on_frame)
            if args.lossless:
                _lock_step(camera, matcher, args.timeout)
            else:
                _paced(camera, matcher, args.rate, args.timeout)
            counts = _node_counts(matcher)
        finally:
            if matcher is not None:
                matcher.stop()
            if executor is not None:
                executor.shutdown(timeout_sec=5.0)
            for node in nodes:
                with contextlib.suppress(Exception):
                    node.destroy_node()
            rclpy.try_shutdown(context=context)
            if spinner is not None:
                spinner.join(timeout=5.0)
    return DemoRun(camera.records, setup, counts)


class _Camera:
    """The demo's camera: turns frames into messages, publishes them, and hands the records
    to ``on_frame`` in publishing order once they are final."""

    def __init__(self, image_pub: Any, info_pub: Any, source: DemoInput, collector: _Collector,
                 on_frame: OnFrame) -> None:
        self.image_pub, self.info_pub = image_pub, info_pub
        self.source, self.collector, self.on_frame = source, collector, on_frame
        self.records: list[FrameRecord] = []
        self.handed = 0  # records handed to on_frame

    def frames(self) -> Iterator[tuple[FrameRecord, Image, CameraInfo | None]]:
        """The next frame's record and messages, made before its publish time comes."""
        for image, stamp_ns in self.source.frames:
            header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=DEMO_FRAME_ID)
            info = (camera_model_to_camera_info(self.source.camera, header=header)
                    if self.source.camera is not None else None)
            record = FrameRecord(len(self.records), stamp_ns, 0.0)
            self.records.append(record)
            self.collector.add(record)
            yield record, array_to_image_msg(image, header=header), info

    def publish(self, record: FrameRecord, image: Image, info: CameraInfo | None) -> None:
        if info is not None:
            self.info_pub.publish(info)
        record.published = time.monotonic()
        self.image_pub.publish(image)

    def hand_over(self, end: int) -> None:
        """Hand the records before index ``end`` to on_frame."""
        stamps = self.collector.processed_stamps()
        while self.handed < min(end, len(self.records)):
            self.on_frame(self.records[self.handed], stamps)
            self.handed += 1

    def settle(self, record: FrameRecord) -> None:
        """Wait for the rest of a processed frame's outputs: the debug image (published last)
        and the pose, when one is expected."""
        cond = self.collector.cond
        _wait(cond, lambda: record.debug_image is not None, SETTLE_S)
        expects_pose = self.source.camera is not None and record.inliers > 0
        _wait(cond, lambda: record.pose is not None or not expects_pose, SETTLE_S)
        time.sleep(0.02)  # keyframe messages published just before


def _lock_step(camera: _Camera, matcher: MatcherNode, timeout: float) -> None:
    """Lossless: each frame goes out once the previous one's outputs arrived."""
    collector = camera.collector
    for record, image, info in camera.frames():
        with collector.cond:
            collector.current = record
        camera.publish(record, image, info)
        if not _wait(collector.cond, lambda r=record: r.matches is not None, timeout):
            raise DemoError(
                f'no result for frame {record.index} after {timeout:g} s (the matcher node '
                f'received {_node_counts(matcher).received} frame(s)); raise --timeout on a '
                'slow machine')
        camera.settle(record)
        camera.hand_over(record.index + 1)


def _paced(camera: _Camera, matcher: MatcherNode, rate_hz: float, timeout: float) -> None:
    """Latest mode: a frame every 1 / rate_hz s whatever the node does, then wait (up to
    ``timeout``) until the node has dealt with every frame and its outputs are here."""
    collector = camera.collector
    ticks = camera_ticks(rate_hz)
    for record, image, info in camera.frames():
        next(ticks)
        camera.publish(record, image, info)
        with collector.cond:
            newest = collector.current
        if newest is not None:  # the frames before the newest one with output are final
            camera.hand_over(newest.index)
    published = len(camera.records)

    def finished() -> bool:
        counts = _node_counts(matcher)
        return (counts.received == published
                and counts.processed + counts.superseded + counts.skipped == published
                and len(collector.processed) >= counts.processed)

    _wait(collector.cond, finished, timeout)
    with collector.cond:
        newest = collector.current
    if newest is not None:
        camera.settle(newest)
    camera.hand_over(published)


def _node_counts(matcher: MatcherNode) -> NodeCounts:
    values = matcher.stats.snapshot()
    superseded = int(values.get(f'dropped.{DROP_SUPERSEDED}', 0))
    return NodeCounts(received=int(values['frames_received']),
                      processed=int(values['frames_processed']), superseded=superseded,
                      skipped=int(values['frames_dropped']) - superseded
                      + int(values['frames_skipped']))


def _wait_for_graph(matcher: MatcherNode, listener: Node, image_pub: Any, info_pub: Any,
                    topics: dict[str, str], domain_id: int) -> None:
    """Wait until every publisher/subscription pair of the demo has matched (discovery)."""
    deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
    debug_topic = topics['debug_image']
    while True:
        ready = (image_pub.get_subscription_count() >= 1
                 and info_pub.get_subscription_count() >= 1
                 and matcher.count_subscribers(debug_topic) >= 1
                 and all(listener.count_publishers(t) >= 1 for t in topics.values()))
        if ready:
            break
        if time.monotonic() > deadline:
            raise DemoError(f'the demo nodes did not discover each other within '
                            f'{DISCOVERY_TIMEOUT_S:g} s (ROS_DOMAIN_ID {domain_id}, localhost '
                            'only); check that the RMW works on this machine (loopback or '
                            'shared memory not blocked)')
        time.sleep(0.05)
    crowd = (image_pub.get_subscription_count() + matcher.count_subscribers(debug_topic)
             + matcher.count_publishers(image_pub.topic_name))
    if crowd > 3:
        raise DemoError('another program uses the demo topics in this ROS domain; pick another '
                        'one with --domain-id')
    time.sleep(0.2)  # let discovery settle on both sides of every pair

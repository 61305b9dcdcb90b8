"""ROS helpers shared by the node and launch tests: the test domain, message builders, a
publish counter and the Rig (a test client beside a node under test).

Imports rclpy: import it only after ``pytest.importorskip('rclpy')``. The rclpy ``context``
fixture is in conftest.py.
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from helpers import wait_until
from nav_msgs.msg import Odometry
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud, PointCloud2
from std_msgs.msg import Header

from devtools.ros_spin import BackgroundSpinner
from lightglue_ros.camera import CameraModel
from lightglue_ros.ros.images import array_to_image_msg
from lightglue_ros.ros.messages import ns_to_stamp, stamp_to_ns

# One random domain per test session, restricted to this machine (ros_env): parallel runs do
# not hear each other.
DOMAIN_ID = random.SystemRandom().randint(1, 200)
OUTPUTS = ('matches', 'features', 'relative_pose', 'odometry', 'keyframe')
OUTPUT_TYPES = {'matches': PointCloud2, 'features': PointCloud,
                'relative_pose': PoseWithCovarianceStamped, 'odometry': Odometry,
                'keyframe': DiagnosticArray, 'debug_image': Image}
FRAME_ID = 'camera_optical'
WAIT_S = 120.0  # one frame can take seconds on a loaded 2-core machine


def ros_env() -> dict[str, str]:
    """The test domain, discovery on this machine only (environment of node processes)."""
    return {'ROS_DOMAIN_ID': str(DOMAIN_ID), 'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
            'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp'}


def header(stamp_ns: int, frame_id: str = FRAME_ID) -> Header:
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


def camera_info_msg(camera: CameraModel, stamp_ns: int = 0, *,
                    frame_id: str = FRAME_ID) -> CameraInfo:
    msg = CameraInfo(header=header(stamp_ns, frame_id), width=camera.width,
                     height=camera.height, distortion_model=camera.distortion_model)
    msg.k = camera.K.reshape(-1).tolist()
    msg.d = camera.D.tolist()
    msg.r = np.eye(3).reshape(-1).tolist()
    P = np.zeros((3, 4))
    P[:, :3] = camera.K
    msg.p = P.reshape(-1).tolist()
    return msg


class PublishCounter:
    """Counts the messages an in-process node hands to each of its publishers from now on,
    by full topic name: what the node sent, whatever the transport then delivers."""

    def __init__(self, node: Node) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        for publisher in node.publishers:
            publisher.publish = self._counting(publisher.topic_name, publisher.publish)

    def _counting(self, topic: str, publish: Callable[[Any], None]) -> Callable[[Any], None]:
        def counted(msg: Any) -> None:
            publish(msg)
            with self._lock:
                self._counts[topic] += 1
        return counted

    def __getitem__(self, topic: str) -> int:
        with self._lock:
            return self._counts[topic]


class Rig:
    """A test client beside a node under test: publishes images and camera_info, records
    every output with its arrival time; the client (and ``node``, the in-process node under
    test, with ``extra_nodes``) spin in one background executor.

    With ``node`` given, the rig counts what that node publishes (``node_sent``), which lets
    ``wait_count`` know how many messages are due.
    """

    def __init__(self, context: Any, node_fqn: str, *, reliable: bool,
                 compressed: bool = False, debug_image: bool = False,
                 image_topic: str | None = None, info_topic: str | None = None,
                 node: Any = None, extra_nodes: tuple[Node, ...] = ()) -> None:
        self.client = Node(f'test_client_{random.randrange(1 << 30)}', context=context)
        if reliable:
            qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        else:
            qos = qos_profile_sensor_data
        namespace = node_fqn.rsplit('/', 1)[0]
        image_topic = image_topic or f'{namespace}/image' + ('/compressed' if compressed else '')
        self.image_pub = self.client.create_publisher(
            CompressedImage if compressed else Image, image_topic, qos)
        self.info_pub = self.client.create_publisher(
            CameraInfo, info_topic or f'{namespace}/camera_info', qos)
        self.lock = threading.Lock()
        self.received: dict[str, list[tuple[Any, float]]] = defaultdict(list)
        self.published: dict[int, float] = {}  # stamp ns -> time the image was published
        self.subs = {}
        names = OUTPUTS + (('debug_image',) if debug_image else ())
        for name in names:
            self.subs[name] = self._subscribe(f'{node_fqn}/{name}', OUTPUT_TYPES[name], name)
        self.subs['diagnostics'] = self._subscribe('/diagnostics', DiagnosticArray,
                                                   'diagnostics')
        self.node_fqn = node_fqn
        self.node_name = node_fqn.rsplit('/', 1)[1]
        self.node = node
        self.node_sent = PublishCounter(node) if node is not None else None
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.client)
        for spun in (node, *extra_nodes):
            if spun is not None:
                self.executor.add_node(spun)
        self.spinner = BackgroundSpinner(self.executor, name='test_rig_spin').start()

    def _subscribe(self, topic: str, kind: type, name: str) -> Any:
        qos = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)

        def callback(msg: Any) -> None:
            with self.lock:
                self.received[name].append((msg, time.monotonic()))
        return self.client.create_subscription(kind, topic, callback, qos)

    def wait_connected(self, timeout: float = 30.0, *, outputs: tuple[str, ...] = OUTPUTS
                       ) -> None:
        wait_until(lambda: self.image_pub.get_subscription_count() >= 1
                   and self.info_pub.get_subscription_count() >= 1,
                   timeout, 'the node to subscribe image and camera_info')
        for name in outputs + ('diagnostics',):
            wait_until(lambda n=name: self.subs[n].get_publisher_count() >= 1, timeout,
                       f'the node to publish {name}')

    def publish_info(self, camera: CameraModel | CameraInfo, stamp_ns: int = 0) -> None:
        msg = camera if isinstance(camera, CameraInfo) else camera_info_msg(camera, stamp_ns)
        self.info_pub.publish(msg)

    def publish_image(self, image: np.ndarray | Image | CompressedImage, stamp_ns: int,
                      **kwargs: Any) -> None:
        msg = image if not isinstance(image, np.ndarray) else array_to_image_msg(
            image, header=header(stamp_ns), **kwargs)
        msg.header = header(stamp_ns)
        with self.lock:
            self.published[stamp_ns] = time.monotonic()
        self.image_pub.publish(msg)

    def messages(self, name: str) -> list[Any]:
        with self.lock:
            return [msg for msg, _ in self.received[name]]

    def by_stamp(self, name: str) -> dict[int, Any]:
        return {stamp_to_ns(msg.header.stamp): msg for msg in self.messages(name)}

    def wait_matches(self, stamp_ns: int, timeout: float = WAIT_S) -> Any:
        return wait_until(lambda: self.by_stamp('matches').get(stamp_ns), timeout,
                          f'matches of the frame stamped {stamp_ns}')

    def wait_count(self, name: str, count: int, timeout: float = 30.0) -> list[Any]:
        """All messages of ``name`` once the node under test is idle, which must be exactly
        ``count``: every frame the node received is finished, it published exactly ``count``
        (counted at its publisher), and all of them arrived. No surplus can come later: no
        other publisher is on the topic, and DDS delivers each message once.

        Call it once every frame the test sent has reached the node (e.g. the last frame's
        matches arrived, or ``node.stats.received`` says so)."""
        assert self.node is not None, 'wait_count needs the Rig built with the node under test'
        assert self.node.wait_idle(WAIT_S), 'the node never finished its frames'
        sent = self.node_sent[f'{self.node_fqn}/{name}']
        assert sent == count, f'the node published {sent} {name} messages, expected {count}'
        wait_until(lambda: len(self.messages(name)) >= count, timeout,
                   f'{count} {name} messages')
        messages = self.messages(name)
        assert len(messages) == count, f'{len(messages)} {name} messages, expected {count}'
        return messages

    def diagnostics(self) -> list[dict[str, str]]:
        """Key-values of the node's statuses, oldest first."""
        out = []
        for msg in self.messages('diagnostics'):
            for status in msg.status:
                if status.name.startswith(f'{self.node_name}:'):
                    values = {kv.key: kv.value for kv in status.values}
                    values['_level'] = str(status.level[0] if isinstance(status.level, bytes)
                                           else status.level)
                    values['_message'] = status.message
                    out.append(values)
        return out

    def wait_diagnostics(self, predicate: Callable[[dict[str, str]], bool], what: str,
                         timeout: float = 30.0) -> dict[str, str]:
        return wait_until(lambda: next((d for d in reversed(self.diagnostics()) if predicate(d)),
                                       None), timeout, f'diagnostics with {what}')

    def close(self) -> None:
        self.spinner.stop()
        self.executor.shutdown(timeout_sec=5.0)
        self.client.destroy_node()

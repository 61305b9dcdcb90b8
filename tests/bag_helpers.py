"""Input bags for the replay tests, written with rosbags' own writers (rosbag2 sqlite3 / MCAP
and ROS 1), and the readers that compare what a replay wrote. Shared by test_replay,
test_tracks and the fleet tests; needs rclpy and rosbags (the callers skip without them)."""
from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.rosbag1 import Writer as Writer1
from rosbags.rosbag2 import StoragePlugin
from rosbags.rosbag2 import Writer as Writer2
from rosbags.typesys import Stores, get_typestore

from lightglue_ros.camera import CameraModel
from lightglue_ros.defaults import DEFAULT_TOPIC_PREFIX
from lightglue_ros.ros import bag_io
from lightglue_ros.ros.replay import output_topics

IMAGE_TOPIC = '/cam/image_raw'
COMPRESSED_TOPIC = '/cam/image_raw/compressed'
INFO_TOPIC = '/cam/camera_info'
IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
FORMATS = ('sqlite3', 'mcap', 'ros1')
TS2 = get_typestore(Stores.ROS2_KILTED)
TS1 = get_typestore(Stores.ROS1_NOETIC)


def stamp_of(path: Path) -> int:
    return int(round(float(path.stem) * 1e9))


# ------------------------------------------------------------------------------------------------
# Writing input bags with rosbags.
# ------------------------------------------------------------------------------------------------

def _header(ts: Any, stamp_ns: int, seq: int) -> Any:
    t = ts.types
    stamp = t['builtin_interfaces/msg/Time'](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    if ts is TS1:
        return t['std_msgs/msg/Header'](seq=seq, stamp=stamp, frame_id='camera')
    return t['std_msgs/msg/Header'](stamp=stamp, frame_id='camera')


def image_msg(ts: Any, stamp_ns: int, rgb: np.ndarray, *, seq: int = 0,
              encoding: str = 'rgb8') -> Any:
    pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if encoding == 'bgr8' else rgb
    h, w = rgb.shape[:2]
    return ts.types[IMAGE](header=_header(ts, stamp_ns, seq), height=h, width=w,
                           encoding=encoding, is_bigendian=0, step=w * 3,
                           data=np.ascontiguousarray(pixels).reshape(-1))


def compressed_msg(ts: Any, stamp_ns: int, data: bytes, *,
                   fmt: str = 'rgb8; png compressed bgr8') -> Any:
    return ts.types[COMPRESSED](header=_header(ts, stamp_ns, 0), format=fmt,
                                data=np.frombuffer(data, np.uint8))


def info_msg(ts: Any, stamp_ns: int, camera: CameraModel, *, seq: int = 0) -> Any:
    t = ts.types
    roi = t['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0, width=0,
                                                do_rectify=False)
    P = np.hstack([camera.K, np.zeros((3, 1))]).reshape(-1)
    fields = dict(header=_header(ts, stamp_ns, seq), height=camera.height, width=camera.width,
                  distortion_model='plumb_bob', binning_x=0, binning_y=0, roi=roi)
    arrays = dict(d=np.zeros(5), k=camera.K.reshape(-1).copy(), r=np.eye(3).reshape(-1), p=P)
    if ts is TS1:
        arrays = {key.upper(): value for key, value in arrays.items()}
    return t[CAMERA_INFO](**fields, **arrays)


Record = tuple[str, str, int, Any]  # topic, msgtype, bag time, message (or raw bytes)


def write_bag(path: Path, fmt: str, records: Iterable[Record], *,
              chunk_threshold: int | None = None) -> Path:
    """Write records into a rosbag2 (sqlite3 / mcap) folder or a ROS 1 .bag file."""
    ts = TS1 if fmt == 'ros1' else TS2
    if fmt == 'ros1':
        writer: Any = Writer1(path)
        if chunk_threshold:
            writer.chunk_threshold = chunk_threshold
    else:
        plugin = StoragePlugin.MCAP if fmt == 'mcap' else StoragePlugin.SQLITE3
        writer = Writer2(path, version=9, storage_plugin=plugin)
    connections: dict[str, Any] = {}
    with writer:
        for topic, msgtype, bag_time, msg in records:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=ts)
            if isinstance(msg, bytes):
                raw = msg
            elif fmt == 'ros1':
                raw = ts.serialize_ros1(msg, msgtype)
            else:
                raw = ts.serialize_cdr(msg, msgtype)
            writer.write(connections[topic], bag_time, raw)
    return path


def frame_records(fmt: str, frames: list[tuple[int, np.ndarray]], camera: CameraModel, *,
                  info: bool = True) -> list[Record]:
    """camera_info then image per frame, stamped and logged at the frame's stamp. ROS 1 bags
    carry bgr8 (what ROS 1 drivers publish), rosbag2 ones rgb8: the decoded pixels are equal."""
    ts = TS1 if fmt == 'ros1' else TS2
    encoding = 'bgr8' if fmt == 'ros1' else 'rgb8'
    records: list[Record] = []
    for seq, (stamp, rgb) in enumerate(frames):
        if info:
            records.append((INFO_TOPIC, CAMERA_INFO, stamp, info_msg(ts, stamp, camera, seq=seq)))
        records.append((IMAGE_TOPIC, IMAGE, stamp,
                        image_msg(ts, stamp, rgb, seq=seq, encoding=encoding)))
    return records


def bag_path(root: Path, fmt: str, name: str = 'input') -> Path:
    return root / (f'{name}.bag' if fmt == 'ros1' else name)


def write_previous_output(path: Path, storage: str = 'sqlite3') -> Path:
    """An earlier replay's output folder, written by the replay's own output writer (no
    tracking): the bag (empty), its summary and a plots folder."""
    bag_io.OutputBag(path, storage, output_topics()).close()
    (path / 'replay_summary.json').write_text('{}\n')
    (path / 'plots').mkdir()
    (path / 'plots' / 'matches_inliers.png').write_bytes(b'\x89PNG\r\n\x1a\n')
    return path


def mcap_chunks(bag: Path) -> tuple[Path, list[Any]]:
    """The .mcap file of a bag folder and its chunk index (rosbags' reader)."""
    from rosbags.rosbag2.storage_mcap import McapReader

    (path,) = bag.glob('*.mcap')
    reader = McapReader(path)
    reader.open()
    try:
        return path, list(reader.chunks)
    finally:
        reader.close()


def chunk_records(data: bytes | bytearray, chunk: Any) -> list[tuple[int, int, int]]:
    """(offset in the file, opcode, length) of every record inside an uncompressed MCAP chunk."""
    assert chunk.compression == ''
    pos = chunk.chunk_start_offset + 9 + 40  # chunk opcode + length, then its fixed fields
    end = pos + chunk.uncompressed_size
    records = []
    while pos < end:
        size = int.from_bytes(data[pos + 1:pos + 9], 'little')
        records.append((pos, data[pos], size))
        pos += 9 + size
    assert pos == end
    return records


# ------------------------------------------------------------------------------------------------
# Reading outputs.
# ------------------------------------------------------------------------------------------------

def read_raw(path: Path) -> dict[str, list[tuple[int, bytes]]]:
    """topic -> [(bag time, raw CDR)] of every message, in bag order."""
    out: dict[str, list[tuple[int, bytes]]] = {}
    with AnyReader([path]) as reader:
        for topic in reader.topics:
            out[topic] = []
        for connection, bag_time, raw in reader.messages():
            out[connection.topic].append((bag_time, bytes(raw)))
    return out


def content(raw: bytes, msgtype: str) -> Any:
    """A message's content, comparable with ==: rosbags' decoding of the CDR with arrays as
    bytes and floats as their bits (NaN == NaN). Raw CDR is not comparable: the rmw serialiser
    leaves the alignment padding bytes uninitialised."""
    def canonical(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return tuple((f.name, canonical(getattr(value, f.name)))
                         for f in dataclasses.fields(value))
        if isinstance(value, np.ndarray):
            return value.dtype.str, value.shape, value.tobytes()
        if isinstance(value, float):
            return struct.pack('<d', value)
        if isinstance(value, (list, tuple)):
            return tuple(canonical(v) for v in value)
        return value

    return canonical(TS2.deserialize_cdr(raw, msgtype))


def contents(messages: Iterable[bytes], msgtype: str) -> list[Any]:
    return [content(raw, msgtype) for raw in messages]


def rclpy_type(msgtype: str) -> type:
    package, _, name = msgtype.split('/')
    module = __import__(f'{package}.msg', fromlist=[name])
    return getattr(module, name)


def stamp_ns_of(msg: Any) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def topic(name: str) -> str:
    return f'{DEFAULT_TOPIC_PREFIX}/{name}'

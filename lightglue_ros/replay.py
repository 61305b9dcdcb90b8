"""Offline replay: run the tracker over every image of a bag and record the node's outputs.

``replay_bag`` reads rosbag2 (sqlite3 or MCAP, a bag directory or a single ``.db3``/``.mcap``
file) and ROS 1 bags with the ``rosbags`` library, feeds every image of one topic to a
``Tracker`` in bag order (no drops, no rate limit) and writes a rosbag2 holding the same topics
and message types as the live node (``lightglue_ros.ros.outputs.OUTPUT_TOPICS``, built by the
same ``frame_outputs`` function, so the messages are identical), plus a JSON summary and PNG
plots. See docs/replay.md.

Time stamps: the tracker and every output header use the input image's header stamp (as the
node does); each output message is recorded at the input image's bag (log) time, so the output
bag lines up with the input bag.

Ctrl-C (SIGINT) or SIGTERM finishes the current frame, closes the output bag (its metadata is
written on close, so it is valid and readable) and writes the summary with
``interrupted: true``. A second Ctrl-C stops at once, still closing the bag. Before the first
frame (imports, model loading) both signals end the process with code 130 and one line
(``lightglue_ros.startup``).

A damaged bag that yields fewer images than its index lists is an error (IncompleteBagError,
exit 1) unless ``allow_partial`` / ``--allow-partial``; ``--overwrite`` replaces only an earlier
replay's output (marked in its metadata.yaml).
"""
from __future__ import annotations

import argparse
import bisect
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

# First, before numpy and torch: a clean exit on Ctrl-C / SIGTERM during the imports below
# (python -m lightglue_ros.replay).
from lightglue_ros import startup

import numpy as np

from lightglue_ros import __version__, argtypes
from lightglue_ros.camera import CameraModel
from lightglue_ros.errors import (
    BagError,
    CalibrationError,
    ConfigError,
    InvalidImageError,
    LightGlueRosError,
    TimestampError,
)
from lightglue_ros.ros.params import DEFAULTS as NODE_DEFAULTS
from lightglue_ros.ros.params import NODE_NAME, output_focal_px
from lightglue_ros.ros.stats import (SKIP_CALIBRATION, SKIP_ERROR, SKIP_INVALID_IMAGE,
                                     SKIP_TIMESTAMP)
from lightglue_ros.tracker import FrameResult, Tracker, TrackerConfig

logger = logging.getLogger(__name__)

IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO_TYPE = 'sensor_msgs/msg/CameraInfo'
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
DEBUG_IMAGE_TOPIC = 'debug_image'  # relative name, as the node's ~/debug_image
DEFAULT_TOPIC_PREFIX = f'/{NODE_NAME}'  # output topic = prefix/name, as the node's ~/name
DEFAULT_ODOM_FRAME = str(NODE_DEFAULTS['odom_frame_id'])
DEFAULT_BACKWARDS_RESET = int(NODE_DEFAULTS['backwards_reset_frames'])
STORAGES = ('mcap', 'sqlite3')
SUMMARY_NAME = 'replay_summary.json'  # written inside the output bag folder by default
PLOTS_NAME = 'plots'
BAG_VERSION = 8  # rosbag2 metadata version 8: read by Jazzy and Kilted (and rosbags)
# Written into the output bag's metadata.yaml (custom_data): --overwrite replaces only a folder
# that carries it, i.e. an earlier replay's output.
MARKER_KEY = 'lightglue_ros.replay'
EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, startup.EXIT_INTERRUPTED  # 130, SIGTERM as well

# Why a frame was skipped (summary key skipped_by_reason); the node's names
# (lightglue_ros.ros.stats) plus one that only a bag can cause:
SKIP_DESERIALIZE = 'deserialize_error'  # the raw message does not decode as its type
SKIP_REASONS = (SKIP_DESERIALIZE, SKIP_INVALID_IMAGE, SKIP_TIMESTAMP, SKIP_CALIBRATION,
                SKIP_ERROR)


class OutputExistsError(BagError, FileExistsError):
    """The output path exists and overwrite was not requested."""


class IncompleteBagError(BagError):
    """Fewer images could be read than the bag's index lists (a damaged bag), and a partial
    replay was not allowed. The output bag is closed and readable; ``summary`` (also written as
    JSON) says how many images are missing."""

    def __init__(self, message: str, summary: ReplaySummary) -> None:
        super().__init__(message)
        self.summary = summary


# ------------------------------------------------------------------------------------------------
# Summary.
# ------------------------------------------------------------------------------------------------

@dataclass
class ReplaySummary:
    """What a replay did. Per-frame lists hold one entry per processed frame, in order."""

    input: str
    output: str
    image_topic: str
    camera_info_topic: str | None
    storage: str
    input_format: str  # rosbag2 | rosbag1
    topic_prefix: str
    frames: int = 0  # image messages read from the bag
    expected_frames: int = 0  # image messages the bag's index lists for the topic
    missing_frames: int = 0  # listed but never read (damaged bag); 0 when interrupted/limited
    processed: int = 0  # frames the tracker returned a result for (= matches messages)
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    skipped_frames: list[dict[str, Any]] = field(default_factory=list)  # first 100, with details
    interrupted: bool = False
    error: str | None = None
    complete: bool = False  # every image of the topic was read (not interrupted/limited/failed)
    wall_s: float = 0.0  # the frame loop, from the first read to the last write
    fps: float = 0.0  # processed / wall_s
    keyframes: int = 0  # keyframe events (= keyframe messages), the first keyframe included
    keyframe_switches: int = 0  # keyframe changes after the first keyframe
    tracker_resets: int = 0  # after backwards_reset_frames stamps that went back in time
    camera_info_messages: int = 0  # camera_info messages read
    camera_info_errors: int = 0  # camera_info messages that gave no valid camera model
    camera_info_missing: int = 0  # listed in the bag's index but never read (damaged bag)
    camera_info_read_error: str | None = None  # why reading camera_info stopped early
    messages_written: dict[str, int] = field(default_factory=dict)  # output topic -> count
    latency_ms: dict[str, float] = field(default_factory=dict)  # mean / p50 / p95 / max
    tracker_ms: dict[str, float] = field(default_factory=dict)  # the same, tracker only
    config: dict[str, Any] = field(default_factory=dict)
    # Per processed frame.
    frame_index: list[int] = field(default_factory=list)  # tracker frame index
    stamp_ns: list[int] = field(default_factory=list)  # input header stamp
    bag_time_ns: list[int] = field(default_factory=list)  # input bag (log) time
    keypoints: list[int] = field(default_factory=list)
    matches: list[int] = field(default_factory=list)
    inliers: list[int] = field(default_factory=list)
    stop_layer: list[int] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)  # ms: decode + track + outputs + write
    tracker_latency: list[float] = field(default_factory=list)  # ms: Tracker.process alone
    keyframe_index: list[int] = field(default_factory=list)  # keyframe the matches refer to
    keyframe_event: list[str] = field(default_factory=list)  # reason(s) of a change, else ''
    ok: list[bool] = field(default_factory=list)  # a pose was estimated
    reason: list[str] = field(default_factory=list)  # FrameResult.reason
    position: list[list[float] | None] = field(default_factory=list)  # t_world_cam or None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + '.tmp')
        tmp.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + '\n',
                       encoding='utf-8')
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ReplaySummary:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def load(cls, path: str | Path) -> ReplaySummary:
        return cls.from_dict(json.loads(Path(path).read_text(encoding='utf-8')))

    # -- bookkeeping --------------------------------------------------------------------------
    def _add_frame(self, result: FrameResult, bag_time_ns: int, latency_ms: float) -> None:
        self.processed += 1
        self.frame_index.append(int(result.index))
        self.stamp_ns.append(int(result.stamp_ns))
        self.bag_time_ns.append(int(bag_time_ns))
        self.keypoints.append(int(result.num_keypoints))
        self.matches.append(result.num_matches)
        self.inliers.append(result.num_inliers)
        self.stop_layer.append(int(result.stop_layer))
        self.latency.append(round(float(latency_ms), 3))
        self.tracker_latency.append(round(float(result.timings.total_ms), 3))
        self.keyframe_index.append(int(result.keyframe_index))
        self.keyframe_event.append(','.join(e.reason for e in result.keyframe_events))
        self.ok.append(bool(result.ok))
        self.reason.append(result.reason)
        for event in result.keyframe_events:
            self.keyframes += 1
            self.keyframe_switches += event.previous_index >= 0
        t = result.t_world_cam
        self.position.append([float(v) for v in np.asarray(t).reshape(3)]
                             if t is not None and np.all(np.isfinite(t)) else None)

    def _skip(self, reason: str, bag_time_ns: int, detail: str) -> None:
        self.skipped += 1
        self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + 1
        if len(self.skipped_frames) < 100:
            self.skipped_frames.append({'frame': self.frames - 1, 'bag_time_ns': int(bag_time_ns),
                                        'reason': reason, 'detail': detail[:300]})
        logger.warning('skipping image %d (%s): %s', self.frames - 1, reason, detail)

    def _finish(self, wall_s: float) -> None:
        self.wall_s = round(wall_s, 4)
        self.fps = round(self.processed / wall_s, 4) if wall_s > 0 else 0.0
        self.latency_ms = _stats(self.latency)
        self.tracker_ms = _stats(self.tracker_latency)


def _stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values, dtype=np.float64)
    return {'mean': round(float(a.mean()), 3), 'p50': round(float(np.percentile(a, 50)), 3),
            'p95': round(float(np.percentile(a, 95)), 3), 'max': round(float(a.max()), 3)}


# ------------------------------------------------------------------------------------------------
# Input.
# ------------------------------------------------------------------------------------------------

def _rclpy_types() -> dict[str, Any]:
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    return {IMAGE_TYPE: Image, COMPRESSED_TYPE: CompressedImage, CAMERA_INFO_TYPE: CameraInfo}


def _rclpy_header(header: Any) -> Any:
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return Header(stamp=Time(sec=int(header.stamp.sec), nanosec=int(header.stamp.nanosec)),
                  frame_id=str(header.frame_id))


def _ros1_to_rclpy(obj: Any, msgtype: str) -> Any:
    """A message deserialised by rosbags from a ROS 1 bag -> the rclpy (ROS 2) message."""
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest

    header = _rclpy_header(obj.header)
    if msgtype == IMAGE_TYPE:
        return Image(header=header, height=int(obj.height), width=int(obj.width),
                     encoding=str(obj.encoding), is_bigendian=int(obj.is_bigendian),
                     step=int(obj.step), data=np.asarray(obj.data, np.uint8).tobytes())
    if msgtype == COMPRESSED_TYPE:
        return CompressedImage(header=header, format=str(obj.format),
                               data=np.asarray(obj.data, np.uint8).tobytes())
    if msgtype == CAMERA_INFO_TYPE:
        roi = obj.roi
        return CameraInfo(
            header=header, height=int(obj.height), width=int(obj.width),
            distortion_model=str(obj.distortion_model),
            d=[float(v) for v in obj.D], k=[float(v) for v in obj.K],
            r=[float(v) for v in obj.R], p=[float(v) for v in obj.P],
            binning_x=int(obj.binning_x), binning_y=int(obj.binning_y),
            roi=RegionOfInterest(x_offset=int(roi.x_offset), y_offset=int(roi.y_offset),
                                 height=int(roi.height), width=int(roi.width),
                                 do_rectify=bool(roi.do_rectify)))
    raise BagError(f'unsupported message type {msgtype}')


def _resolve_input(path: Path) -> Path:
    """A rosbag2 folder without metadata.yaml (a recording that crashed) holding exactly one
    .mcap/.db3 file is read from that file."""
    if path.is_dir() and not (path / 'metadata.yaml').exists():
        files = sorted(p for p in path.iterdir() if p.suffix in ('.mcap', '.db3'))
        if len(files) == 1:
            logger.warning('%s has no metadata.yaml; reading %s directly', path, files[0].name)
            return files[0]
        raise BagError(f'{path} is not a bag: no metadata.yaml and '
                       f'{len(files)} .mcap/.db3 files')
    return path


class _InputBag:
    """An open input bag: topic checks and messages as rclpy objects."""

    def __init__(self, path: Path) -> None:
        from rosbags.highlevel import AnyReader

        if not path.exists():
            raise BagError(f'input bag {path} does not exist')
        self.path = _resolve_input(path)
        try:
            self.reader = AnyReader([self.path])
            self.reader.open()
        except Exception as err:  # rosbags raises many kinds for a damaged file
            raise BagError(f'cannot open bag {path}: {type(err).__name__}: {err} '
                           '(corrupt, truncated or not a bag)') from err
        self.is2 = self.reader.is2
        self.types = _rclpy_types()

    @property
    def format(self) -> str:
        return 'rosbag2' if self.is2 else 'rosbag1'

    def close(self) -> None:
        try:
            self.reader.close()
        except Exception:  # noqa: BLE001 - closing a damaged bag must not hide the real error
            logger.debug('closing the input bag failed', exc_info=True)

    def topics_of(self, msgtypes: Sequence[str]) -> dict[str, tuple[str, int]]:
        return {name: (info.msgtype or '?', info.msgcount)
                for name, info in sorted(self.reader.topics.items())
                if info.msgtype in msgtypes}

    def connections(self, topic: str, msgtypes: Sequence[str], what: str) -> list[Any]:
        conns = [c for c in self.reader.connections if c.topic == topic]
        if not conns:
            candidates = self.topics_of(msgtypes)
            listing = ', '.join(f'{n} ({t.rsplit("/", 1)[-1]}, {c} msgs)'
                                for n, (t, c) in candidates.items()) or 'none'
            raise BagError(f'topic {topic!r} not found in {self.path}; {what} topics in the '
                           f'bag: {listing}')
        bad = sorted({c.msgtype for c in conns if c.msgtype not in msgtypes})
        if bad:
            raise BagError(f'topic {topic!r} has type {", ".join(bad)}; expected '
                           f'{" or ".join(msgtypes)}')
        return conns

    def deserialize(self, raw: bytes, msgtype: str) -> Any:
        if self.is2:
            from rclpy.serialization import deserialize_message

            return deserialize_message(raw, self.types[msgtype])
        return _ros1_to_rclpy(self.reader.deserialize(raw, msgtype), msgtype)

    def messages(self, connections: Sequence[Any]) -> Iterator[tuple[Any, int, bytes]]:
        return self.reader.messages(connections=connections)


class _Cameras:
    """Camera models by stamp: the latest valid camera_info at or before an image's stamp (the
    first valid one for images before it); the fallback only where the topic has no valid
    camera_info at all. Invalid camera_info messages are ignored (counted), as the node
    ignores them and keeps the previous calibration."""

    def __init__(self, fallback: CameraModel | Sequence[float] | None) -> None:
        self.stamps: list[int] = []
        self.models: list[CameraModel] = []
        self.fallback = fallback
        self._fallback_cache: dict[tuple[int, int], CameraModel] = {}
        if fallback is not None and not isinstance(fallback, CameraModel):
            values = [float(v) for v in fallback]
            if len(values) != 4:
                raise ConfigError(f'fallback intrinsics need fx, fy, cx, cy; got {values}')
            self.fallback = tuple(values)

    def load(self, bag: _InputBag, connections: Sequence[Any], summary: ReplaySummary) -> None:
        from lightglue_ros.ros.conversions import camera_info_to_camera_model, stamp_to_ns

        entries: list[tuple[int, CameraModel | None]] = []
        messages = bag.messages(connections)
        while True:
            try:
                connection, _, raw = next(messages)
            except StopIteration:
                break
            except Exception as err:  # noqa: BLE001 - a damaged bag: keep what was read
                # The images may lie elsewhere in the bag and read fine; the replay goes on
                # with the camera_info read so far (or the fallback), and the loss is counted.
                summary.camera_info_read_error = f'{type(err).__name__}: {err}'
                logger.warning('reading camera_info stopped after %d messages (%s); going on '
                               'with those', summary.camera_info_messages,
                               summary.camera_info_read_error)
                break
            summary.camera_info_messages += 1
            try:
                msg = bag.deserialize(raw, connection.msgtype)
                stamp = stamp_to_ns(msg.header.stamp)
            except Exception as err:  # noqa: BLE001 - counted, the images go on
                summary.camera_info_errors += 1
                logger.warning('undecodable camera_info message: %s', err)
                continue
            try:
                model = camera_info_to_camera_model(msg)
            except Exception as err:  # noqa: BLE001 - CalibrationError, or garbage values
                summary.camera_info_errors += 1
                logger.warning('ignoring invalid camera_info at %d ns: %s', stamp, err)
                continue
            if entries and entries[-1][1] == model:
                model = entries[-1][1]  # share one object for an unchanged calibration
            entries.append((stamp, model))
        listed = sum(int(c.msgcount) for c in connections)
        summary.camera_info_missing = max(listed - summary.camera_info_messages, 0)
        if summary.camera_info_missing:
            logger.warning('%d of %d camera_info messages the bag lists could not be read',
                           summary.camera_info_missing, listed)
        if not entries and summary.camera_info_messages + summary.camera_info_missing:
            logger.warning('no valid camera_info in the bag: %s', 'using the fallback intrinsics'
                           if self.fallback is not None else 'no calibration, matches only')
        entries.sort(key=lambda e: e[0])
        self.stamps = [s for s, _ in entries]
        self.models = [m for _, m in entries]

    def lookup(self, stamp_ns: int, width: int, height: int) -> CameraModel | None:
        model = None
        if self.stamps:
            i = max(bisect.bisect_right(self.stamps, stamp_ns) - 1, 0)
            return self.models[i]
        if self.fallback is not None:
            if isinstance(self.fallback, CameraModel):
                return self.fallback
            model = self._fallback_cache.get((width, height))
            if model is None:
                fx, fy, cx, cy = self.fallback
                model = CameraModel.from_intrinsics(fx, fy, cx, cy, width, height)
                self._fallback_cache[(width, height)] = model
        return model


# ------------------------------------------------------------------------------------------------
# Output.
# ------------------------------------------------------------------------------------------------

def _check_output(output: Path, input_path: Path, overwrite: bool) -> None:
    """Refuse an output that would overwrite the input or anything but an earlier replay's
    output, or that cannot be written (read-only file system, a file where a folder should be):
    before any model is loaded."""
    out, inp = output.resolve(), input_path.resolve()
    if out == inp or out in inp.parents:
        raise BagError(f'output {output} would overwrite the input bag {input_path}')
    if output.suffix == '.bag':
        raise BagError(f'output {output}: only rosbag2 output is written (a folder, not .bag)')
    if output.exists() or output.is_symlink():
        if not overwrite:
            raise OutputExistsError(f'output {output} exists; pass --overwrite '
                                    '(overwrite=True) to replace it')
        reason = _not_our_output(output)
        if reason:
            raise BagError(f'refusing to overwrite {output}: {reason}; --overwrite replaces '
                           'only the output folder of an earlier replay')
    _check_writable(output, 'the output bag')


def _not_our_output(path: Path) -> str | None:
    """Why ``path`` is not a replay output folder (None when it is): a folder holding a rosbag2
    whose metadata.yaml carries MARKER_KEY and nothing else but its storage files, the summary
    and the plots folder."""
    import yaml

    if path.is_symlink() or not path.is_dir():
        return 'it is not a folder' if not path.is_symlink() else 'it is a symbolic link'
    metadata = path / 'metadata.yaml'
    try:
        info = yaml.safe_load(metadata.read_text(encoding='utf-8'))['rosbag2_bagfile_information']
        files = {str(Path(name).name) for name in info['relative_file_paths']}
        marked = MARKER_KEY in (info.get('custom_data') or {})
    except FileNotFoundError:
        return 'it is not a rosbag2 folder (no metadata.yaml)'
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError) as err:
        return f'its metadata.yaml is not a rosbag2 one ({type(err).__name__})'
    if not marked:
        return 'it is a rosbag2 that was not written by a replay'
    allowed = {'metadata.yaml', SUMMARY_NAME, f'{SUMMARY_NAME}.tmp'} | files
    allowed |= {f'{name}{suffix}' for name in files for suffix in ('-shm', '-wal', '-journal')}
    foreign = sorted(p.name for p in path.iterdir()
                     if p.name not in allowed and not (p.name == PLOTS_NAME and p.is_dir()))
    plots = path / PLOTS_NAME
    if plots.is_dir():
        foreign += sorted(f'{PLOTS_NAME}/{p.name}' for p in plots.iterdir()
                          if p.suffix != '.png' or not p.is_file())
    if foreign:
        return f'it holds files that are not from a replay ({", ".join(foreign[:5])})'
    return None


def _check_writable(path: Path, what: str) -> None:
    """Raise BagError unless ``path`` can be created: its nearest existing folder takes a new
    file. A probe file is the one check that holds for root (who passes every permission
    check) on a read-only mount, and for a path below a file."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise BagError(f'cannot write {what} {path}: {parent} is not a folder')
    try:
        fd, probe = tempfile.mkstemp(prefix='.lightglue_ros_probe_', dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise BagError(f'cannot write {what} {path}: {err.strerror or err} ({parent})') from err


def _remove_output(output: Path) -> None:
    try:
        if output.is_dir() and not output.is_symlink():
            shutil.rmtree(output)
        elif output.exists() or output.is_symlink():
            output.unlink()
    except OSError as err:
        raise BagError(f'cannot replace the output {output}: {err.strerror or err}') from err


class _OutputBag:
    """A rosbag2 writer with one connection per output topic; closed exactly once."""

    def __init__(self, path: Path, storage: str, topics: dict[str, str]) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        plugin = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}[storage]
        typestore = get_typestore(Stores.ROS2_KILTED)
        self.writer = Writer(path, version=BAG_VERSION, storage_plugin=plugin)
        self.writer.set_custom_data(MARKER_KEY, __version__)  # see _not_our_output
        try:
            self.writer.open()
        except OSError as err:
            raise BagError(f'cannot write the output bag {path}: {err.strerror or err}') from err
        try:
            self.connections = {topic: self.writer.add_connection(topic, msgtype,
                                                                  typestore=typestore)
                                for topic, msgtype in topics.items()}
        except BaseException:
            self.writer.close()
            raise
        self.counts: Counter[str] = Counter({topic: 0 for topic in topics})
        self.closed = False

    def write(self, topic: str, bag_time_ns: int, data: bytes) -> None:
        self.writer.write(self.connections[topic], bag_time_ns, data)
        self.counts[topic] += 1

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()


# ------------------------------------------------------------------------------------------------
# Interruption.
# ------------------------------------------------------------------------------------------------

class _Stop:
    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ''


@contextmanager
def _stop_on_signals(stop: _Stop) -> Iterator[None]:
    """SIGINT/SIGTERM set stop.requested (the current frame finishes); a second one raises
    KeyboardInterrupt at once. Only the main thread can install handlers; elsewhere a
    KeyboardInterrupt is caught by the loop instead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        stop.signal_name = signal.Signals(signum).name
        logger.warning('%s: stopping after the current frame (again to stop at once)',
                       stop.signal_name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ------------------------------------------------------------------------------------------------
# The replay.
# ------------------------------------------------------------------------------------------------

def output_topics(prefix: str = DEFAULT_TOPIC_PREFIX, *, debug_images: bool = False
                  ) -> dict[str, str]:
    """Full output topic name -> message type, as written to the output bag."""
    from lightglue_ros.ros.outputs import OUTPUT_TOPICS

    names = dict(OUTPUT_TOPICS)
    if debug_images:
        names[DEBUG_IMAGE_TOPIC] = IMAGE_TYPE
    return {_join(prefix, name): msgtype for name, msgtype in names.items()}


def _join(prefix: str, name: str) -> str:
    prefix = '/' + prefix.strip('/') if prefix.strip('/') else ''
    return f'{prefix}/{name}'


def replay_bag(input: str | Path, output: str | Path, *, image_topic: str,  # noqa: A002
               camera_info_topic: str | None = None, storage: str = 'mcap',
               tracker: Tracker | None = None, config: TrackerConfig | None = None,
               overwrite: bool = False, debug_images: bool = False, progress: bool = True,
               max_frames: int | None = None,
               fallback_camera: CameraModel | Sequence[float] | None = None,
               topic_prefix: str = DEFAULT_TOPIC_PREFIX,
               odom_frame_id: str = DEFAULT_ODOM_FRAME,
               backwards_reset_frames: int = DEFAULT_BACKWARDS_RESET,
               summary_path: str | Path | None = None,
               plots_dir: str | Path | None | bool = None,
               allow_partial: bool = False) -> ReplaySummary:
    """Replay every image of ``image_topic`` in ``input`` through the tracker into ``output``.

    input: rosbag2 folder, .mcap/.db3 file, or ROS 1 .bag. output: a new rosbag2 folder
    (``storage`` mcap or sqlite3); an existing path raises OutputExistsError unless
    ``overwrite``. tracker: used as is after ``reset()`` (its models are reused); otherwise
    one is built from ``config`` (default TrackerConfig()). camera_info_topic: intrinsics
    paired by stamp (the latest at or before each image); without it, or where it is invalid,
    ``fallback_camera`` (a CameraModel or (fx, fy, cx, cy) for any image size), else no
    calibration (matches only). max_frames: stop after this many images (None: all).
    topic_prefix / odom_frame_id / backwards_reset_frames: as the node's namespace and
    parameters (after that many consecutive images stamped back in time the tracker resets;
    0: never).
    summary_path: default <output>/replay_summary.json. plots_dir: default <output>/plots;
    False for no plots.

    Undecodable frames are skipped and counted (summary.skipped_by_reason). On Ctrl-C the
    current frame finishes, the bag is closed and ``summary.interrupted`` is True. A damaged
    bag, i.e. one that fails while being read or yields fewer images than its index lists
    (``summary.missing_frames``), raises IncompleteBagError unless ``allow_partial``; whatever
    was written before is closed and readable either way, and the summary (with ``error`` for
    a read failure) is written first. Damaged camera_info is counted and the replay goes on
    with the camera_info that could be read (or the fallback).
    """
    from lightglue_ros.ros.conversions import stamp_to_ns

    input_path, output_path = Path(input), Path(output)
    if storage not in STORAGES:
        raise ConfigError(f'storage must be one of {", ".join(STORAGES)}, got {storage!r}')
    if max_frames is not None and max_frames < 0:
        raise ConfigError(f'max_frames must be >= 0, got {max_frames}')
    cameras = _Cameras(fallback_camera)
    _check_output(output_path, input_path, overwrite)
    summary_file = Path(summary_path) if summary_path else output_path / SUMMARY_NAME
    if summary_path:
        if summary_file.is_dir():
            raise BagError(f'cannot write the summary {summary_file}: it is a folder')
        _check_writable(summary_file, 'the summary')

    bag = _InputBag(input_path)
    try:
        image_conns = bag.connections(image_topic, IMAGE_TYPES, 'image')
        info_conns = (bag.connections(camera_info_topic, (CAMERA_INFO_TYPE,), 'camera_info')
                      if camera_info_topic else [])
        total = sum(c.msgcount for c in image_conns)
        if tracker is None:
            tracker = Tracker(config or TrackerConfig())
        tracker.reset()
        summary = ReplaySummary(
            input=str(input_path), output=str(output_path), image_topic=image_topic,
            camera_info_topic=camera_info_topic, storage=storage, input_format=bag.format,
            topic_prefix=topic_prefix, config=asdict(tracker.config))
        summary.expected_frames = total
        if info_conns:
            cameras.load(bag, info_conns, summary)
        if overwrite:
            _remove_output(output_path)
        topics = output_topics(topic_prefix, debug_images=debug_images)
        stop = _Stop()
        failure: BaseException | None = None
        loop: _Loop | None = None
        out = _OutputBag(output_path, storage, topics)
        start = time.perf_counter()
        try:  # from here on the output bag is always closed (and so valid)
            loop = _Loop(tracker, bag, out, summary, cameras, stamp_to_ns, topic_prefix,
                         odom_frame_id, debug_images, backwards_reset_frames)
            with _stop_on_signals(stop), _progress_bar(progress, total) as bar:
                loop.run(image_conns, stop, bar, max_frames)
        except KeyboardInterrupt:
            summary.interrupted = True
        except BaseException as err:  # closed and summarised below, then raised again
            failure = err
            summary.error = f'{type(err).__name__}: {err}'
        finally:
            summary._finish(time.perf_counter() - start)
            summary.messages_written = dict(out.counts)
            try:
                out.close()
            except Exception as err:  # noqa: BLE001 - e.g. a full disk; reported below
                failure = failure or err
                summary.error = summary.error or f'{type(err).__name__}: {err}'
        summary.interrupted = summary.interrupted or stop.requested
        # Missing: the read reached the end of the data (or failed) before the index's count.
        if isinstance(failure, _ReadError) or (loop is not None and loop.exhausted):
            summary.missing_frames = max(total - summary.frames, 0)
        if summary.frames > total:
            logger.warning('read %d images on %s; the bag index lists only %d',
                           summary.frames, image_topic, total)
        summary.complete = (failure is None and not summary.interrupted
                            and summary.frames >= total)
    finally:
        bag.close()

    try:
        summary.write_json(summary_file)
    except OSError as err:
        message = (f'cannot write the summary {summary_file}: {err.strerror or err}; the output '
                   f'bag {output_path} is closed and readable')
        if failure is None:
            raise BagError(message) from err
        logger.error('%s', message)  # the failure below is the one to report
    if plots_dir is not False:
        try:
            from lightglue_ros.plots import plot_summary

            plot_summary(summary, Path(plots_dir) if plots_dir else output_path / PLOTS_NAME)
        except Exception:  # noqa: BLE001 - plots are a convenience; the bag and JSON are written
            logger.exception('writing the replay plots failed')
    kept = f'the output bag {output_path} is closed and readable'
    if isinstance(failure, _ReadError) or (failure is None and summary.missing_frames):
        missing = (f'{summary.missing_frames} of {total} images the bag index lists were not '
                   'read')
        if isinstance(failure, _ReadError):
            problem = f'{input_path}: {failure}'
        else:  # rosbags skips some damage without a word: only the count shows it
            problem = (f'{input_path}: damaged bag: {summary.frames} of {total} images on '
                       f'{image_topic} could be read')
        if not allow_partial:
            raise IncompleteBagError(
                f'{problem} ({summary.processed} frames processed, {missing}; {kept}; '
                '--allow-partial accepts a partial replay)', summary) from failure
        logger.warning('%s (%s); partial replay allowed', problem, missing)
    elif isinstance(failure, OSError):
        raise BagError(f'writing the output bag {output_path} failed after '
                       f'{summary.processed} frames: {failure.strerror or failure}') from failure
    elif failure is not None:
        raise failure
    return summary


class _ReadError(Exception):
    """The input bag failed while being read (wrapped into BagError after cleanup)."""


class _Loop:
    """One frame at a time: read, decode, track, build and write the outputs."""

    def __init__(self, tracker: Tracker, bag: _InputBag, out: _OutputBag,
                 summary: ReplaySummary, cameras: _Cameras, stamp_to_ns: Callable[[Any], int],
                 prefix: str, odom_frame_id: str, debug_images: bool,
                 backwards_reset_frames: int) -> None:
        from rclpy.serialization import serialize_message

        from lightglue_ros.ros.conversions import compressed_msg_to_array, image_msg_to_array
        from lightglue_ros.ros.outputs import OUTPUT_TOPICS, frame_outputs

        self.tracker, self.bag, self.out, self.summary = tracker, bag, out, summary
        self.cameras, self.stamp_to_ns = cameras, stamp_to_ns
        self.serialize = serialize_message
        self.frame_outputs = frame_outputs
        self.decoders = {IMAGE_TYPE: image_msg_to_array, COMPRESSED_TYPE: compressed_msg_to_array}
        self.topic = {name: _join(prefix, name) for name in (*OUTPUT_TOPICS, DEBUG_IMAGE_TOPIC)}
        self.odom_frame_id = odom_frame_id
        self.debug_images = debug_images
        self.backwards_reset_frames = backwards_reset_frames
        self.backwards = 0  # consecutive images stamped before the last processed one
        self.exhausted = False  # the reader reached the end of the topic's messages

    def run(self, connections: Sequence[Any], stop: _Stop, bar: Any,
            max_frames: int | None) -> None:
        messages = self.bag.messages(connections)
        summary = self.summary
        while not stop.requested and (max_frames is None or summary.frames < max_frames):
            t0 = time.perf_counter()
            try:
                connection, bag_time, raw = next(messages)
            except StopIteration:
                self.exhausted = True
                break
            except Exception as err:
                raise _ReadError(f'reading failed after {summary.frames} images: '
                                 f'{type(err).__name__}: {err} (corrupt or truncated bag?)'
                                 ) from err
            summary.frames += 1
            self.frame(connection.msgtype, bag_time, raw, t0)
            bar.update(1)
            if summary.matches:
                bar.set_postfix(matches=summary.matches[-1], inliers=summary.inliers[-1],
                                kf=summary.keyframe_index[-1], refresh=False)

    def frame(self, msgtype: str, bag_time: int, raw: bytes, t0: float) -> None:
        summary = self.summary
        try:
            msg = self.bag.deserialize(raw, msgtype)
        except Exception as err:  # noqa: BLE001 - rclpy raises RMWError, rosbags SerdeError
            summary._skip(SKIP_DESERIALIZE, bag_time, f'{type(err).__name__}: {err}')
            return
        try:
            image = self.decoders[msgtype](msg)
        except InvalidImageError as err:
            summary._skip(SKIP_INVALID_IMAGE, bag_time, str(err))
            return
        header = msg.header
        stamp_ns = self.stamp_to_ns(header.stamp)
        camera = self.cameras.lookup(stamp_ns, image.shape[1], image.shape[0])
        result = self.track(image, stamp_ns, camera, bag_time)
        if result is None:
            return
        config = self.tracker.config
        outputs = self.frame_outputs(result, header, odom_frame_id=self.odom_frame_id,
                                     threshold_px=config.ransac_threshold_px,
                                     focal_px=output_focal_px(camera))
        for name, out_msg in outputs.items():
            self.out.write(self.topic[name], bag_time, self.serialize(out_msg))
        if self.debug_images:
            self.out.write(self.topic[DEBUG_IMAGE_TOPIC], bag_time,
                           self.serialize(debug_image_msg(image, result, header)))
        summary._add_frame(result, bag_time, (time.perf_counter() - t0) * 1e3)

    def track(self, image: np.ndarray, stamp_ns: int, camera: CameraModel | None,
              bag_time: int) -> FrameResult | None:
        """Tracker.process, or None for a skipped frame (the node's rules)."""
        summary = self.summary
        try:
            result = self.tracker.process(image, stamp_ns, camera)
        except TimestampError as err:
            self.backwards += 1
            limit = self.backwards_reset_frames
            if limit > 0 and self.backwards >= limit:
                logger.warning('%d consecutive images went back in time: resetting the tracker',
                               self.backwards)
                self.tracker.reset()
                summary.tracker_resets += 1
                self.backwards = 0
                return self.track(image, stamp_ns, camera, bag_time)
            summary._skip(SKIP_TIMESTAMP, bag_time, str(err))
            return None
        except InvalidImageError as err:
            summary._skip(SKIP_INVALID_IMAGE, bag_time, str(err))
            return None
        except CalibrationError as err:
            summary._skip(SKIP_CALIBRATION, bag_time, str(err))
            return None
        except Exception as err:  # noqa: BLE001 - extractor/matcher failure, as in the node
            summary._skip(SKIP_ERROR, bag_time, f'{type(err).__name__}: {err}')
            return None
        self.backwards = 0
        return result


def debug_image_msg(image: np.ndarray, result: FrameResult, header: Any) -> Any:
    """The debug picture of one frame as a sensor_msgs/Image (rgb8) with the image's header."""
    from lightglue_ros.ros.conversions import array_to_image_msg
    from lightglue_ros.viz import draw_tracks

    return array_to_image_msg(draw_tracks(image, result), header=header)


@contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Any]:
    from tqdm import tqdm

    bar = tqdm(total=total, unit='frame', disable=not enabled, dynamic_ncols=True,
               mininterval=0.25, smoothing=0.1, desc='replay', file=sys.stderr)
    try:
        yield bar
    finally:
        bar.close()


# ------------------------------------------------------------------------------------------------
# Command line.
# ------------------------------------------------------------------------------------------------

def configure_replay_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the replay options to ``parser`` and set ``handler`` (args -> exit code)."""
    parser.add_argument('input', help='rosbag2 folder, .mcap / .db3 file, or ROS 1 .bag')
    parser.add_argument('--image-topic', required=True,
                        help='sensor_msgs/Image or CompressedImage topic to track')
    parser.add_argument('--camera-info-topic', default=None,
                        help='sensor_msgs/CameraInfo topic (pose needs calibration)')
    parser.add_argument('--output', '-o', required=True, help='output rosbag2 folder')
    parser.add_argument('--storage', choices=STORAGES, default='mcap',
                        help='output storage (default: mcap)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace the output of an earlier replay (nothing else)')
    parser.add_argument('--allow-partial', action='store_true',
                        help='exit 0 although a damaged bag gave fewer images than its index '
                             'lists (the summary counts them in missing_frames)')
    parser.add_argument('--debug-images', action='store_true',
                        help=f'also write ~/{DEBUG_IMAGE_TOPIC} (matches drawn on the image)')
    parser.add_argument('--fallback-intrinsics', type=argtypes.intrinsics, metavar='FX,FY,CX,CY',
                        help='pinhole intrinsics where no (valid) camera_info exists')
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--params-file', metavar='YAML',
                        help="the matcher node's ROS params file (e.g. config/matcher.yaml): "
                             'replay with the same settings as the node')
    source.add_argument('--config', metavar='YAML',
                        help='tracker options (TrackerConfig keys), e.g. extractor: aliked')
    parser.add_argument('--extractor', help='superpoint | disk | aliked (overrides --config)')
    parser.add_argument('--extractor-weights', metavar='PATH')
    parser.add_argument('--matcher-weights', metavar='PATH')
    parser.add_argument('--max-keypoints', type=argtypes.positive_int)
    parser.add_argument('--resize', type=int, metavar='PX',
                        help='longer image side the extractor sees; 0: native size')
    parser.add_argument('--device', help='auto | cpu | cuda | cuda:N')
    parser.add_argument('--max-frames', type=argtypes.positive_int, help='stop after N images')
    parser.add_argument('--topic-prefix', default=DEFAULT_TOPIC_PREFIX,
                        help=f'namespace of the output topics (default: {DEFAULT_TOPIC_PREFIX})')
    parser.add_argument('--odom-frame-id', default=None,
                        help=f'frame_id of the odometry (default: {DEFAULT_ODOM_FRAME})')
    parser.add_argument('--backwards-reset-frames', type=int, default=None, metavar='N',
                        help='reset the tracker after N consecutive images stamped back in '
                             f'time; 0: never (default: {DEFAULT_BACKWARDS_RESET})')
    parser.add_argument('--summary', metavar='JSON',
                        help=f'summary file (default: OUTPUT/{SUMMARY_NAME})')
    parser.add_argument('--plots-dir', metavar='DIR',
                        help=f'folder for the PNG plots (default: OUTPUT/{PLOTS_NAME})')
    parser.add_argument('--no-plots', action='store_true')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('-v', '--verbose', action='store_true', help='log keyframe changes')
    parser.set_defaults(handler=replay_command)
    return parser


def add_replay_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``replay`` on an argparse sub-parsers object; ``args.handler(args)`` runs it."""
    parser = subparsers.add_parser(
        'replay', help='run the tracker over a bag and record the outputs',
        description='Replay a rosbag2 (sqlite3/MCAP) or ROS 1 bag through the tracker and write '
                    "the live node's outputs to a rosbag2, with a JSON summary and plots.")
    return configure_replay_parser(parser)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """replay_bag keywords from the command line: a node params file or a tracker YAML, then
    the explicit options on top."""
    from lightglue_ros.ros.params import (fallback_intrinsics, load_params_file, tracker_config,
                                          validate)
    from lightglue_ros.tracker import load_tracker_config

    settings: dict[str, Any] = {'fallback_camera': None, 'odom_frame_id': DEFAULT_ODOM_FRAME,
                                'backwards_reset_frames': DEFAULT_BACKWARDS_RESET}
    if args.params_file:
        values = {**NODE_DEFAULTS, **_read_yaml('--params-file', args.params_file,
                                                 load_params_file)}
        reason = validate(values)
        if reason:
            raise ConfigError(f'{args.params_file}: {reason}')
        config = tracker_config(values)
        settings.update(fallback_camera=fallback_intrinsics(values),
                        odom_frame_id=str(values['odom_frame_id']),
                        backwards_reset_frames=int(values['backwards_reset_frames']))
    elif args.config:
        config = _read_yaml('--config', args.config, load_tracker_config)
    else:
        config = TrackerConfig()
    for key, value in (('fallback_camera', args.fallback_intrinsics),
                       ('odom_frame_id', args.odom_frame_id),
                       ('backwards_reset_frames', args.backwards_reset_frames)):
        if value is not None:
            settings[key] = value
    overrides = {name: getattr(args, name) for name in
                 ('extractor', 'extractor_weights', 'matcher_weights', 'max_keypoints',
                  'resize', 'device') if getattr(args, name) is not None}
    if overrides.get('resize') is not None and overrides['resize'] <= 0:
        overrides['resize'] = None  # 0: native size, as the node's parameter
    values = asdict(config)
    if 'extractor' in overrides and overrides['extractor'] != config.extractor:
        # Weights files belong to one extractor; a new extractor resolves its own by name.
        values.update(extractor_weights=None, matcher_weights=None)
    values.update(overrides)
    settings['config'] = TrackerConfig.from_dict(values)
    return settings


def _read_yaml(option: str, path: str, load: Callable[[str], Any]) -> Any:
    """``load(path)`` with a one-line ConfigError for a file that is missing, binary, not UTF-8
    or not YAML (the loaders raise OSError, UnicodeDecodeError or yaml errors for those)."""
    import yaml

    try:
        return load(path)
    except UnicodeDecodeError as err:
        # The loader decodes in blocks, so err.start counts from its block: find the offset
        # in the file itself.
        data, offset = err.object, err.start
        try:
            Path(path).read_bytes().decode('utf-8')
        except UnicodeDecodeError as whole:
            data, offset = whole.object, whole.start
        except OSError:
            pass
        raise ConfigError(f'{option} {path}: not a UTF-8 text file (byte 0x{data[offset]:02x} '
                          f'at offset {offset}); expected a YAML file') from err
    except OSError as err:
        raise ConfigError(f'{option} {path}: cannot read it: {err.strerror or err}') from err
    except yaml.YAMLError as err:
        if isinstance(err, yaml.reader.ReaderError):  # a control character: a binary file
            problem = (f'character #x{err.character:02x} at offset {err.position} '
                       f'({err.reason}); a binary file?')
        else:  # a syntax error: its message without the quoted snippet of the file
            where = getattr(err, 'problem_mark', None)
            at = f'line {where.line + 1}, column {where.column + 1}: ' if where else ''
            problem = f'{at}{getattr(err, "problem", None) or err}'
        raise ConfigError(f'{option} {path}: not valid YAML: '
                          f'{" ".join(str(problem).split())}') from err


def replay_command(args: argparse.Namespace) -> int:
    """Run a replay from parsed arguments; returns the exit code (0, 1 error, 130 Ctrl-C or
    SIGTERM, at any point: start-up included)."""
    if args.verbose and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        with startup.interrupt_on_signals():  # the loop installs its own; this is for start-up
            summary = replay_bag(
                args.input, args.output, image_topic=args.image_topic,
                camera_info_topic=args.camera_info_topic, storage=args.storage,
                overwrite=args.overwrite, debug_images=args.debug_images,
                progress=not args.no_progress, max_frames=args.max_frames,
                topic_prefix=args.topic_prefix, summary_path=args.summary,
                plots_dir=False if args.no_plots else args.plots_dir,
                allow_partial=args.allow_partial, **_settings(args))
    except LightGlueRosError as err:
        print(f'replay: error: {_one_line(err)}', file=sys.stderr)
        return EXIT_ERROR
    except OSError as err:  # a file system failure no check above foresaw: still one line
        print(f'replay: error: {_one_line(err)}', file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as err:  # outside the loop (loading the models, say)
        signal_name = 'SIGTERM' if isinstance(err, startup.Terminated) else 'SIGINT'
        print(f'replay: interrupted ({signal_name})', file=sys.stderr)
        return EXIT_INTERRUPTED
    skipped = ', '.join(f'{k} {v}' for k, v in summary.skipped_by_reason.items())
    missing = (f', {summary.missing_frames} of {summary.expected_frames} images missing '
               '(damaged bag, --allow-partial)' if summary.missing_frames else '')
    print(f'replay: {summary.processed}/{summary.frames} frames processed'
          f'{f" (skipped: {skipped})" if skipped else ""}{missing}, {summary.fps:.2f} fps, '
          f'{summary.keyframes} keyframes -> {summary.output}'
          f'{" (interrupted)" if summary.interrupted else ""}', file=sys.stderr)
    return EXIT_INTERRUPTED if summary.interrupted else EXIT_OK


def _one_line(err: BaseException) -> str:
    return ' '.join(str(err).split()) or type(err).__name__


def replay_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``replay`` console script (``ros2 run lightglue_ros replay``)."""
    parser = argparse.ArgumentParser(
        prog='replay', description='Replay a bag through the tracker; see docs/replay.md.')
    configure_replay_parser(parser)
    try:
        with startup.interrupt_on_signals():
            args = parser.parse_args(list(argv) if argv is not None else None)
            return args.handler(args)
    except KeyboardInterrupt:
        print('replay: interrupted', file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == '__main__':
    startup.exit_process(replay_main())

"""Bags in and out of the replay: the input bag (rosbag2 sqlite3/MCAP, ROS 1) with its messages
as rclpy objects, and the output rosbag2 with its overwrite safety.

The replay (``lightglue_ros.ros.replay``) reads images and camera_info through ``InputBag`` and
records the node's outputs through ``OutputBag``; ``check_output`` runs before any model loads.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sqlite3
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.storage_mcap import write_channel, write_schema
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from lightglue_ros import __version__
from lightglue_ros.defaults import PLOTS_NAME, SUMMARY_NAME
from lightglue_ros.errors import BagError
from lightglue_ros.ros.bag_recovery import (STORAGE_SUFFIXES, RecoveredReader, pending_wal,
                                           split_recording)

logger = logging.getLogger(__name__)

IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO_TYPE = 'sensor_msgs/msg/CameraInfo'
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
RCLPY_TYPES: dict[str, type] = {IMAGE_TYPE: Image, COMPRESSED_TYPE: CompressedImage,
                                 CAMERA_INFO_TYPE: CameraInfo}
BAG_VERSION = 8  # rosbag2 metadata version 8: read by Jazzy and Kilted (and rosbags)
# Written into the output bag's metadata.yaml (custom_data): --overwrite replaces only a folder
# that carries it, i.e. an earlier replay's output.
MARKER_KEY = 'lightglue_ros.replay'
# Lies in the output folder while a replay writes it, naming the input, and is removed once
# metadata.yaml is written: a replay killed before that (SIGKILL, a power loss) leaves a folder
# that is still known as the unfinished output of that input (replaced by --overwrite and by
# a resumed fleet), not as somebody else's folder.
WRITING_NAME = '.replay_writing.json'


class OutputExistsError(BagError, FileExistsError):
    """The output path exists and overwrite was not requested."""


def _rclpy_header(header: Any) -> Any:
    return Header(stamp=Time(sec=int(header.stamp.sec), nanosec=int(header.stamp.nanosec)),
                  frame_id=str(header.frame_id))


def _ros1_to_rclpy(obj: Any, msgtype: str) -> Any:
    """A message deserialised by rosbags from a ROS 1 bag -> the rclpy (ROS 2) message."""
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


def resolve_input(path: Path) -> Path:
    """A rosbag2 folder without metadata.yaml (a recording that crashed) holding exactly one
    .mcap/.db3 file is read from that file; one holding a split recording (``split_recording``)
    stays the folder (read without its index: ``InputBag``)."""
    if path.is_dir() and not (path / 'metadata.yaml').exists():
        files = sorted(p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES)
        if len(files) == 1:
            logger.warning('%s has no metadata.yaml; reading %s directly', path, files[0].name)
            return files[0]
        if split_recording(path) is None:
            raise BagError(f'{path} is not a bag: no metadata.yaml and {len(files)} .mcap/.db3 '
                           'files (a split recording is read when they are named as rosbag2 '
                           f'names splits: {path.name}_0, {path.name}_1, ...)')
    return path


def _needs_recovery(path: Path) -> str | None:
    """Why rosbags alone would misread a bag that it opens (None: it reads it whole): a split
    recording without metadata.yaml, or an sqlite3 file whose write-ahead log holds
    transactions (rosbags reads the database file only, so those rows would vanish)."""
    split = split_recording(path)
    if split is not None:
        return (f'a split recording without metadata.yaml ({len(split)} files, '
                f'{split[0].name} ... {split[-1].name})')
    files = [p for p in ([path] if path.is_file() else path.iterdir()) if p.suffix == '.db3']
    wal = next((w for w in map(pending_wal, files) if w is not None), None)
    if wal is not None:
        return (f'{wal.name} holds transactions that are not in {wal.name[:-4]} (a write-ahead '
                'log the recorder never checkpointed: it did not close the bag)')
    return None


class InputBag:
    """An open input bag: topic checks and messages as rclpy objects.

    recover: a bag that rosbags cannot open (truncated: no MCAP summary, sqlite3 pages or ROS 1
    index) or would misread (``_needs_recovery``: a split recording without metadata.yaml, an
    sqlite3 write-ahead log never checkpointed) is read without its index
    (``lightglue_ros.ros.bag_recovery``); ``recovered`` is then that reader (its ``damage`` and
    ``lost`` say what is missing), else None. Without ``recover`` such a bag is a one-line
    BagError.
    """

    def __init__(self, path: Path, *, recover: bool = False) -> None:
        if not path.exists():
            raise BagError(f'input bag {path} does not exist')
        self.path = resolve_input(path)
        self.recovered: RecoveredReader | None = None
        problem = _needs_recovery(self.path)
        if problem is not None and not recover:
            raise BagError(f'cannot open bag {path}: {problem}; --allow-partial reads what it '
                           'holds')
        if problem is None:
            try:
                self.reader: Any = AnyReader([self.path])
                self.reader.open()
            except Exception as err:  # rosbags raises many kinds for a damaged file
                problem = f'{type(err).__name__}: {err}'
                if not recover:
                    raise BagError(f'cannot open bag {path}: {problem} (corrupt, truncated or '
                                   'not a bag; --allow-partial replays the messages before the '
                                   'damage)') from err
        if problem is not None:
            try:
                self.reader = self.recovered = RecoveredReader(self.path)
            except (BagError, OSError, ValueError) as err:
                raise BagError(f'cannot open bag {path}: {problem}; reading it without its '
                               f'index failed too: {err}') from err
            logger.warning('%s cannot be opened (%s); read without its index: %s', path,
                           problem, '; '.join(self.recovered.damage) or 'the data is whole')
        self.is2 = self.reader.is2

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
            return deserialize_message(raw, RCLPY_TYPES[msgtype])
        return _ros1_to_rclpy(self.reader.deserialize(raw, msgtype), msgtype)

    def messages(self, connections: Sequence[Any]) -> Iterator[tuple[Any, int, bytes]]:
        return self.reader.messages(connections=connections)


def check_output(output: Path, input_path: Path, overwrite: bool) -> None:
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
        reason = not_our_output(output)
        if reason:
            raise BagError(f'refusing to overwrite {output}: {reason}; --overwrite replaces '
                           'only the output folder of an earlier replay')
    check_writable(output, 'the output bag')


def not_our_output(path: Path) -> str | None:
    """Why ``path`` is not a replay output folder (None when it is): a folder holding a rosbag2
    whose metadata.yaml carries MARKER_KEY and nothing else but its storage files, the summary
    and the plots folder."""
    if path.is_symlink() or not path.is_dir():
        return 'it is not a folder' if not path.is_symlink() else 'it is a symbolic link'
    metadata = path / 'metadata.yaml'
    try:
        info = yaml.safe_load(metadata.read_text(encoding='utf-8'))['rosbag2_bagfile_information']
        files = {str(Path(name).name) for name in info['relative_file_paths']}
        marked = MARKER_KEY in (info.get('custom_data') or {})
    except FileNotFoundError:
        if unfinished_input(path) is None:
            return 'it is not a rosbag2 folder (no metadata.yaml)'
        files = {p.name for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES}
        marked = True
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError) as err:
        return f'its metadata.yaml is not a rosbag2 one ({type(err).__name__})'
    if not marked:
        return 'it is a rosbag2 that was not written by a replay'
    allowed = {'metadata.yaml', SUMMARY_NAME, f'{SUMMARY_NAME}.tmp', WRITING_NAME} | files
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


def unfinished_input(path: Path) -> str | None:
    """The input bag of a replay that began writing the output folder ``path`` and never
    closed it (``WRITING_NAME``), or None."""
    try:
        return str(json.loads((path / WRITING_NAME).read_text(encoding='utf-8'))['input'])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_writable(path: Path, what: str) -> None:
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


def remove_output(output: Path) -> None:
    try:
        if output.is_dir() and not output.is_symlink():
            shutil.rmtree(output)
        elif output.exists() or output.is_symlink():
            output.unlink()
    except OSError as err:
        raise BagError(f'cannot replace the output {output}: {err.strerror or err}') from err


class OutputWriteError(BagError):
    """Writing the output bag failed (a full disk, say); it was closed with what was written."""


class _ClosedStorage:
    """Stands in for a rosbags storage writer closed by ``OutputBag._salvage``, so that the
    rosbags Writer still writes metadata.yaml (its own format) for what the file holds."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def close(self, version: int, metadata: str) -> None:
        """Nothing left to close."""


class OutputBag:
    """A rosbag2 writer with one connection per output topic; closed exactly once.

    ``end_frame`` after each frame's messages puts them in the file (an sqlite3 commit, an
    MCAP chunk), so a failure later (a full disk, the process killed) keeps every whole
    frame. When writing or closing fails,
    ``close`` salvages the bag: sqlite3 keeps its last commit, an MCAP file is cut back to its
    last whole record and given an end (no summary section: readers scan it), and
    metadata.yaml is written for what the file holds; ``counts`` are then the messages the
    bag holds and ``state`` says, in words, what was checked.
    """

    def __init__(self, path: Path, storage: str, topics: dict[str, str],
                 input_path: Path | None = None) -> None:
        plugin = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}[storage]
        typestore = get_typestore(Stores.ROS2_KILTED)
        self.path, self.storage = path, storage
        self.writer = Writer(path, version=BAG_VERSION, storage_plugin=plugin)
        self.writer.set_custom_data(MARKER_KEY, __version__)  # see not_our_output
        try:
            self.writer.open()
        except OSError as err:
            raise BagError(f'cannot write the output bag {path}: {err.strerror or err}') from err
        try:
            (path / WRITING_NAME).write_text(json.dumps(
                {'input': str(Path(input_path).resolve()) if input_path else None,
                 'version': __version__}), encoding='utf-8')
            self.connections = {topic: self.writer.add_connection(topic, msgtype,
                                                                  typestore=typestore)
                                for topic, msgtype in topics.items()}
            if storage == 'sqlite3':
                # No fsync per commit: a commit per frame then costs little, and what was
                # committed survives the process (not a power loss, as rosbag2's default).
                self.writer.storage.conn.commit()
                self.writer.storage.conn.execute('PRAGMA synchronous=OFF')
        except BaseException:
            self.writer.close()
            raise
        self.counts: Counter[str] = Counter({topic: 0 for topic in topics})
        self.committed = Counter(self.counts)  # sqlite3: what the last commit holds
        self.closed = False
        self.failure: BaseException | None = None
        self.state = f'the output bag {path} is closed and readable'

    def write(self, topic: str, bag_time_ns: int, data: bytes) -> None:
        self._check()
        try:
            self.writer.write(self.connections[topic], bag_time_ns, data)
        except (OSError, sqlite3.Error) as err:
            raise self._failed(err) from err
        self.counts[topic] += 1

    def end_frame(self) -> None:
        """The messages written so far end with a whole frame: put them in the file, so that
        the process ending or the disk filling later keeps them (sqlite3: a commit; MCAP: the
        chunk is closed and flushed, one chunk a frame instead of one a MiB)."""
        self._check()
        storage = self.writer.storage
        try:
            if self.storage == 'sqlite3':
                storage.conn.commit()
            else:
                if storage.chunk.bio.tell():
                    storage.close_chunk()
                storage.bio.flush()
        except (OSError, sqlite3.Error) as err:
            raise self._failed(err) from err
        self.committed = Counter(self.counts)

    def _check(self) -> None:
        if self.failure is not None:
            raise OutputWriteError(f'the output bag {self.path} failed before') from self.failure

    def _failed(self, err: BaseException) -> OutputWriteError:
        self.failure = err
        reason = getattr(err, 'strerror', None) or str(err)
        return OutputWriteError(f'writing the output bag {self.path} failed: {reason}')

    def close(self) -> None:
        """Close the bag; after a failure (or when closing fails) salvage it. Raises
        OutputWriteError when the bag does not hold every message written."""
        if self.closed:
            return
        self.closed = True
        if self.failure is None:
            try:
                self.writer.close()
                self._finished_writing()
                return
            except (OSError, sqlite3.Error) as err:
                self._failed(err)
        written = sum(self.counts.values())
        self.state = self._salvage()
        self._finished_writing()
        reason = getattr(self.failure, 'strerror', None) or str(self.failure)
        raise OutputWriteError(f'writing the output bag {self.path} failed: {reason}; '
                               f'{self.state} ({sum(self.counts.values())} of {written} '
                               'messages written)') from self.failure

    def _finished_writing(self) -> None:
        """metadata.yaml now says the folder is a replay's output: the marker goes (when
        salvaging could not write metadata.yaml, it stays, still naming the folder ours)."""
        if (self.path / 'metadata.yaml').exists():
            with contextlib.suppress(OSError):
                (self.path / WRITING_NAME).unlink()

    def _salvage(self) -> str:
        """Make the bag readable with what its file holds; returns what is true of it."""
        storage = self.writer.storage
        data_file = Path(storage.path)
        try:
            if self.storage == 'sqlite3':
                with contextlib.suppress(sqlite3.Error):
                    storage.conn.rollback()  # back to the last whole frame
                with contextlib.suppress(sqlite3.Error):
                    storage.conn.close()
                self.counts = Counter(self.committed)
            else:
                with contextlib.suppress(OSError):
                    storage.bio.close()  # its unwritten tail is lost
                self.counts = Counter({topic: 0 for topic in self.counts}
                                      | _end_mcap(data_file, storage))
            self.writer.counts = {conn.id: self.counts[topic]
                                  for topic, conn in self.connections.items()}
            self.writer.storage = _ClosedStorage(data_file)
            self.writer.close()  # metadata.yaml, rosbags' own format
        except (OSError, sqlite3.Error, ValueError, BagError) as err:
            return (f'the output bag {self.path} could not be made readable '
                    f'({getattr(err, "strerror", None) or err}): {data_file.name} holds part '
                    'of the output, without metadata.yaml')
        try:  # never claim what was not checked
            held: Counter[str] = Counter()
            with AnyReader([self.path]) as reader:
                for connection in reader.connections:
                    held[connection.topic] += connection.msgcount
        except Exception as err:  # noqa: BLE001 - rosbags raises many kinds
            return (f'the output bag {self.path} is not readable after all '
                    f'({type(err).__name__}: {err})')
        if +held != +self.counts:
            return (f'the output bag {self.path} is readable but its index lists '
                    f'{sum(held.values())} messages, not {sum(self.counts.values())}')
        return f'the output bag {self.path} was closed with what was written and is readable'


MCAP_END = (b'\x0f' + (4).to_bytes(8, 'little') + bytes(4)  # data end, no checksum
            + b'\x02' + (20).to_bytes(8, 'little') + bytes(20)  # footer: no summary section
            + b'\x89MCAP0\r\n')


def _end_mcap(path: Path, storage: Any) -> Counter[str]:
    """Cut an MCAP file back to its last whole record and end it (no summary section) after
    the schema and channel records of rosbags' writer ``storage`` (they may have been in the
    chunk that was lost); returns the messages per topic the file then holds."""
    size = path.stat().st_size
    end = 8
    with path.open('rb') as f:
        f.seek(end)
        while True:
            head = f.read(9)
            if len(head) < 9:
                break
            length = int.from_bytes(head[1:], 'little')
            if head[0] in (0x0F, 0x02) or end + 9 + length > size:
                break
            end += 9 + length
            f.seek(end)
    with path.open('r+b') as f:
        f.truncate(end)  # frees the cut record's space first: the end fits on a full disk
        f.seek(end)
        records = io.BytesIO()
        for schema in storage.schemas:
            write_schema(records, schema)
        for channel in storage.channels:
            write_channel(records, channel, storage.schemas)
        f.write(records.getvalue() + MCAP_END)
    reader = RecoveredReader(path)
    return Counter({c.topic: c.msgcount for c in reader.connections})

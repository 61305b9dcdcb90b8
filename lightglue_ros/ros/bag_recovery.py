"""Reading what is left of a damaged bag: every intact message up to the damage, as
``ros2 bag reindex`` recovers a recording cut off by a power loss.

rosbags needs a bag's index (the MCAP summary and footer, an sqlite3 file whose b-tree pages
are all there, the ROS 1 index at the end of the file); a truncated file has none. This module
reads the storage files themselves, record by record (one concept over 500 lines: recovery,
for the three storage formats):

* MCAP: the records from the start of the file (top level and inside chunks; uncompressed,
  zstd and lz4 chunks, a cut chunk up to its cut), until the file ends or a record is cut.
* sqlite3: every page of the file that is a table leaf, its rows recognised by their shape
  (``messages``: id, topic_id, timestamp, data; ``topics``: id, name, type, ...), each blob
  followed through its overflow pages; rows whose pages are gone are counted as lost. A
  write-ahead log left beside the file (a recorder in WAL mode that died) is applied first by
  SQLite, to a temporary copy; rows of the log it cannot apply are counted as lost.
* ROS 1: the records from the start of the file, chunk by chunk (none, bz2, lz4), until the
  file ends or a record is cut.

A split recording without metadata.yaml (``split_recording``) is read file after file, in
split order. A message whose start survived but whose end did not is counted as lost for its
topic. Where
the bag folder's ``metadata.yaml`` survived, its message counts say how many messages were
recorded, so the messages after the damage are counted too; without it only the cut ones are
known. ``RecoveredReader`` offers the part of rosbags' ``AnyReader`` interface that
``lightglue_ros.ros.bag_io.InputBag`` uses. No ROS here.
"""
from __future__ import annotations

import bz2
import logging
import mmap
import re
import shutil
import sqlite3
import struct
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from lightglue_ros.errors import BagError

logger = logging.getLogger(__name__)

MCAP_MAGIC = b'\x89MCAP0\r\n'
ROS1_MAGIC = b'#ROSBAG V2.0\n'
SQLITE_MAGIC = b'SQLite format 3\x00'


@dataclass(frozen=True)
class RecoveredConnection:
    """One topic of a recovered bag (the fields of a rosbags Connection the replay reads)."""

    id: int
    topic: str
    msgtype: str  # ROS 2 spelling, e.g. sensor_msgs/msg/Image
    msgcount: int  # recorded (metadata.yaml) when known, else read + lost


@dataclass(frozen=True)
class TopicInfo:
    msgtype: str
    msgcount: int


Message = tuple[int, int, bytes]  # connection id, log time (ns), serialised message


class _Scan:
    """What one pass over a storage file found: topics, counts, messages cut, damage."""

    def __init__(self) -> None:
        self.topics: dict[int, tuple[str, str]] = {}  # connection id -> (topic, msgtype)
        self.read: Counter[int] = Counter()
        self.lost: Counter[int] = Counter()  # messages whose start survived, not their end
        self.damage = ''  # where the readable data ends, '' for an intact file


# ------------------------------------------------------------------------------------------------
# MCAP.
# ------------------------------------------------------------------------------------------------

def _mcap_string(data: bytes, pos: int) -> tuple[str, int]:
    (size,) = struct.unpack_from('<I', data, pos)
    end = pos + 4 + size
    if end > len(data):
        raise struct.error('string past the record')
    return data[pos + 4:end].decode('utf-8', 'replace'), end


def _decompress_prefix(data: bytes, compression: str) -> bytes:
    """As much of a (possibly cut) compressed chunk as decompresses."""
    if compression == '':
        return data
    if compression == 'zstd':
        from backports.zstd import ZstdDecompressor  # rosbags' own dependency

        decompressor: Any = ZstdDecompressor()
    elif compression == 'lz4':
        from lz4.frame import LZ4FrameDecompressor  # rosbags' own dependency

        decompressor = LZ4FrameDecompressor()
    else:
        return b''
    try:
        return decompressor.decompress(data)
    except Exception:  # noqa: BLE001 - garbage: nothing of this chunk can be read
        return b''


class _McapFile:
    """An MCAP file read from its start, record by record (no summary section needed)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def walk(self, scan: _Scan, with_data: bool) -> Iterator[Message]:
        schemas: dict[int, str] = {}
        with self.path.open('rb') as f:
            size = self.path.stat().st_size
            if f.read(8) != MCAP_MAGIC:
                raise BagError(f'{self.path}: not an MCAP file')
            while True:
                start = f.tell()
                head = f.read(9)
                if len(head) < 9:
                    scan.damage = (f'{self.path.name}: the file ends at byte {size} without its '
                                   'summary (cut after the last whole record)')
                    return
                opcode, length = head[0], int.from_bytes(head[1:], 'little')
                body = f.read(min(length, max(size - start - 9, 0)))
                cut = len(body) < length
                if opcode == 0x0F or opcode == 0x02:  # data end, footer: the data is whole
                    return
                if opcode == 0x06:
                    yield from self._chunk(body, cut, scan, schemas, with_data)
                else:
                    yield from self._records(bytes([opcode]) + head[1:] + body, scan, schemas,
                                             with_data)
                if cut:
                    scan.damage = (f'{self.path.name}: the file ends at byte {size}, inside a '
                                   f'record that starts at byte {start}')
                    return

    def _chunk(self, body: bytes, cut: bool, scan: _Scan, schemas: dict[int, str],
               with_data: bool) -> Iterator[Message]:
        try:  # start and end time, uncompressed size and CRC (28 bytes), then these:
            compression, pos = _mcap_string(body, 28)
            (records_size,) = struct.unpack_from('<Q', body, pos)
        except struct.error:
            return  # cut inside the chunk's header: nothing of it is readable
        records = _decompress_prefix(body[pos + 8:pos + 8 + records_size], compression)
        messages = sorted(self._records(records, scan, schemas, with_data),
                          key=lambda m: m[1])  # rosbags yields a chunk's messages by time
        yield from messages

    def _records(self, data: bytes, scan: _Scan, schemas: dict[int, str],
                 with_data: bool) -> Iterator[Message]:
        """The whole records in ``data``; a message record cut short is counted as lost."""
        pos = 0
        while pos + 9 <= len(data):
            opcode, length = data[pos], int.from_bytes(data[pos + 1:pos + 9], 'little')
            body = data[pos + 9:pos + 9 + length]
            pos += 9 + length
            try:
                if opcode == 0x03:
                    (schema_id,) = struct.unpack_from('<H', body, 0)
                    schemas[schema_id] = _mcap_string(body, 2)[0]
                elif opcode == 0x04:
                    channel_id, schema_id = struct.unpack_from('<HH', body, 0)
                    topic, _ = _mcap_string(body, 4)
                    scan.topics.setdefault(channel_id, (topic, schemas.get(schema_id, '')))
                elif opcode == 0x05:
                    (channel_id,) = struct.unpack_from('<H', body, 0)
                    if len(body) < length or length < 22:
                        scan.lost[channel_id] += 1
                        continue
                    scan.read[channel_id] += 1
                    (log_time,) = struct.unpack_from('<Q', body, 6)
                    yield channel_id, log_time, body[22:] if with_data else b''
            except struct.error:  # a record cut before its fixed fields
                continue


# ------------------------------------------------------------------------------------------------
# sqlite3.
# ------------------------------------------------------------------------------------------------

def _varint(data: Any, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        byte = data[pos + i]
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, pos + i + 1
    return (value << 8) | data[pos + 8], pos + 9


_INT_SIZES = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8}
WAL_MAGICS = (0x377F0682, 0x377F0683)  # big- / little-endian checksums (sqlite.org/fileformat)
WAL_HEADER, WAL_FRAME_HEADER = 32, 24  # bytes
# Written at the end of every page of the copy that the database file lacks (cut short): a page
# that still ends with it after the checkpoint is missing (no WAL frame wrote it).
_ABSENT_MARK = b'lightglue_ros:no page here\x00\x00\x00\x00\x00\x00'


def pending_wal(db: Path) -> Path | None:
    """The write-ahead log of an sqlite3 file that holds frames (``x.db3-wal``): left by a
    recorder in WAL mode (rosbag2's ``resilient`` preset) that did not close the bag; its
    transactions are not in the database file. None when there is none (or only a header)."""
    wal = db.with_name(db.name + '-wal')
    try:
        return wal if wal.stat().st_size > WAL_HEADER else None
    except OSError:
        return None


@dataclass(frozen=True)
class _WalFrame:
    page: int  # the database page this frame holds
    commit_pages: int  # the database size in pages after this commit; 0: not a commit frame
    data: bytes  # the page (whole frames only)


def _wal_frames(wal: Path, page_size: int) -> Iterator[_WalFrame]:
    """The whole frames of a write-ahead log in file order, checksums not checked: what
    SQLite applies of them is its to decide (``_SqliteFile._checkpointed``); these count the
    rows it could not apply. Frames of an older log generation (another salt) are included:
    their rows are in the database already."""
    with wal.open('rb') as f:
        header = f.read(WAL_HEADER)
        if len(header) == WAL_HEADER and int.from_bytes(header[:4], 'big') in WAL_MAGICS:
            page_size = int.from_bytes(header[8:12], 'big') or page_size
        while len(frame := f.read(WAL_FRAME_HEADER + page_size)) == WAL_FRAME_HEADER + page_size:
            yield _WalFrame(int.from_bytes(frame[:4], 'big'), int.from_bytes(frame[4:8], 'big'),
                            frame[WAL_FRAME_HEADER:])


class _SqliteFile:
    """An sqlite3 rosbag2 file read page by page, without SQLite (whose b-tree walk fails on
    the first missing page). A write-ahead log beside it (``pending_wal``) is applied first by
    SQLite itself, to a copy of both in a temporary folder (the bag is never written); the
    rows of its frames that SQLite could not apply (uncommitted, cut short) are counted as
    lost."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.wal = pending_wal(path)
        self._copy: tempfile.TemporaryDirectory[str] | None = None
        self._source: Path | None = None  # what is read: the file, or the checkpointed copy
        self._absent: set[int] = set()  # pages of the copy that neither file holds
        self._wal_problem = ''

    def walk(self, scan: _Scan, with_data: bool) -> Iterator[Message]:
        if self.path.stat().st_size < 100:
            raise BagError(f'{self.path}: not an sqlite3 file (too short)')
        with self.path.open('rb') as f:
            if f.read(16) != SQLITE_MAGIC:
                raise BagError(f'{self.path}: not an sqlite3 file')
        if self._source is None:
            self._source = self.path if self.wal is None else self._checkpointed()
        with self._source.open('rb') as f:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                yield from self._walk(data, scan, with_data)

    def close(self) -> None:
        if self._copy is not None:
            self._copy.cleanup()
            self._copy, self._source = None, None

    def _checkpointed(self) -> Path:
        """A copy of the database with its write-ahead log's committed transactions written
        into it by SQLite (``PRAGMA wal_checkpoint``). SQLite refuses a log whose database
        file is much shorter than the log's commits say (a file cut short): the copy is
        extended to that size first, each added page marked (``_ABSENT_MARK``) so that the
        pages no frame wrote are known to be missing. On failure the file is read as it is
        (``_wal_problem``)."""
        assert self.wal is not None
        size = self.path.stat().st_size
        with self.path.open('rb') as f:
            page_size = int.from_bytes(f.read(18)[16:18], 'big')
        page_size = 65536 if page_size == 1 else page_size
        commit_pages = max((frame.commit_pages for frame in _wal_frames(self.wal, page_size)),
                           default=0)
        self._copy = tempfile.TemporaryDirectory(prefix='lightglue_ros_wal_')
        folder = Path(self._copy.name)
        need = size + self.wal.stat().st_size
        if shutil.disk_usage(folder).free < need:
            self.close()
            raise BagError(f'{self.path}: applying its write-ahead log needs a copy of {need} '
                           f'bytes and {folder.parent} has less free (TMPDIR names another '
                           'folder)')
        copy = folder / self.path.name
        shutil.copyfile(self.path, copy)
        shutil.copyfile(self.wal, copy.with_name(copy.name + '-wal'))
        added = range(size // page_size + 1, commit_pages + 1)  # pages the file lacks
        if added:
            with copy.open('r+b') as f:
                for page in added:
                    f.seek(page * page_size - len(_ABSENT_MARK))
                    f.write(_ABSENT_MARK)
        try:
            connection = sqlite3.connect(copy)
            try:
                connection.execute('SELECT count(*) FROM sqlite_master').fetchone()
                busy, _, _ = connection.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone()
                mode = connection.execute('PRAGMA journal_mode=DELETE').fetchone()[0]
            finally:
                connection.close()
            if busy or mode != 'delete':
                raise sqlite3.OperationalError(f'checkpoint busy={busy}, journal_mode={mode}')
        except sqlite3.Error as err:
            logger.warning('%s: SQLite cannot apply its write-ahead log (%s); reading the file '
                           'as it is', self.path, err)
            self._wal_problem = f'{type(err).__name__}: {err}'
            self.close()
            return self.path
        with copy.open('rb') as f:
            pages = copy.stat().st_size // page_size
            for page in added:
                if page <= pages:
                    f.seek(page * page_size - len(_ABSENT_MARK))
                    if f.read(len(_ABSENT_MARK)) == _ABSENT_MARK:
                        self._absent.add(page)
        return copy

    def _walk(self, data: Any, scan: _Scan, with_data: bool) -> Iterator[Message]:
        page_size = int.from_bytes(data[16:18], 'big')
        page_size = 65536 if page_size == 1 else page_size
        self.page_size, self.usable = page_size, page_size - data[20]
        self.pages = len(data) // page_size
        rows: dict[int, tuple[int, int, int, int]] = {}  # rowid -> topic, time, page, cell
        for page in range(1, self.pages + 1):
            if page in self._absent:
                continue
            base = (page - 1) * page_size
            for cell, (rowid, values) in self._leaf_cells(data, base, page == 1):
                self._take(rowid, values, scan, rows, page, cell)
        whole = (len(data) == self.pages * page_size and self._header_pages(data) <= self.pages
                 and not self._absent)
        damage = []
        if not whole:
            damage.append(f'{self.path.name}: {self.path.stat().st_size} bytes, '
                          f'{self._header_pages(data)} pages recorded in its header of '
                          f'{page_size} bytes; read page by page')
        if self.wal is not None:
            damage.append(f'{self.wal.name}: ' + (
                f'its write-ahead log cannot be applied ({self._wal_problem}); the rows only in '
                'it are counted as lost' if self._wal_problem else
                "its write-ahead log's committed transactions applied (the recorder did not "
                'close the bag)'))
            self._count_wal_rows(scan, rows)
        scan.damage = '; '.join(damage)
        # By time, then by insertion: the order rosbags reads an intact file in.
        for _, (topic_id, stamp, page, cell) in sorted(rows.items(),
                                                       key=lambda r: (r[1][1], r[0])):
            blob = self._blob(data, (page - 1) * page_size + cell)
            if blob is None:
                scan.lost[topic_id] += 1
                continue
            scan.read[topic_id] += 1
            yield topic_id, stamp, blob if with_data else b''

    @staticmethod
    def _take(rowid: int, values: list[tuple[str, Any]], scan: _Scan,
              rows: dict[int, tuple[int, int, int, int]], page: int, cell: int) -> None:
        """A table row recognised by its shape: a message (id, topic_id, timestamp, data) or a
        topic (id, name, type, ...)."""
        kinds = [kind for kind, _ in values]
        if kinds[:1] == ['null'] and kinds[1:] == ['int', 'int', 'blob']:
            rows.setdefault(rowid, (values[1][1], values[2][1], page, cell))
        elif (len(kinds) >= 5 and kinds[0] == 'null' and kinds[1:3] == ['text', 'text']
              and str(values[1][1]).startswith('/') and '/' in str(values[2][1])):
            scan.topics.setdefault(rowid, (values[1][1], values[2][1]))

    def _count_wal_rows(self, scan: _Scan, rows: dict[int, tuple[int, int, int, int]]) -> None:
        """Count as lost the messages whose rows are in a frame of the write-ahead log but not
        in what was read (a transaction that never committed, or one SQLite could not apply);
        the rows of a frame cut short are not known."""
        assert self.wal is not None
        in_wal: dict[int, int] = {}  # rowid -> topic id
        for frame in _wal_frames(self.wal, self.page_size):
            found: dict[int, tuple[int, int, int, int]] = {}
            for cell, (rowid, values) in self._leaf_cells(frame.data, 0, frame.page == 1):
                self._take(rowid, values, scan, found, frame.page, cell)
            in_wal.update({rowid: topic for rowid, (topic, _, _, _) in found.items()})
        for rowid, topic_id in in_wal.items():
            if rowid not in rows:
                scan.lost[topic_id] += 1

    @staticmethod
    def _header_pages(data: Any) -> int:
        return int.from_bytes(data[28:32], 'big')

    def _leaf_cells(self, data: Any, base: int, first_page: bool
                    ) -> Iterator[tuple[int, tuple[int, list[tuple[str, Any]]]]]:
        """(cell offset in its page, (rowid, [(kind, value)] of the columns in the cell's local
        bytes)) of the table leaf page at ``base`` in ``data``; nothing for any other page."""
        header = base + (100 if first_page else 0)
        if data[header] != 0x0D:
            return
        cells = int.from_bytes(data[header + 3:header + 5], 'big')
        for i in range(cells):
            try:
                cell = int.from_bytes(data[header + 8 + 2 * i:header + 10 + 2 * i], 'big')
                if not header - base + 8 <= cell < self.usable:
                    continue
                yield cell, self._record_head(data, base + cell)
            except (IndexError, ValueError, UnicodeDecodeError):
                continue  # not a cell after all (a damaged or stale page)

    def _record_head(self, data: Any, cell: int) -> tuple[int, list[tuple[str, Any]]]:
        _, pos = _varint(data, cell)  # the payload size
        rowid, pos = _varint(data, pos)
        header_size, cursor = _varint(data, pos)
        end = body = pos + header_size
        types = []
        while cursor < end:
            serial, cursor = _varint(data, cursor)
            types.append(serial)
        values: list[tuple[str, Any]] = []
        for serial in types:
            if serial == 0:
                values.append(('null', None))
            elif serial in _INT_SIZES:
                n = _INT_SIZES[serial]
                values.append(('int', int.from_bytes(data[body:body + n], 'big', signed=True)))
                body += n
            elif serial in (8, 9):
                values.append(('int', serial - 8))
            elif serial == 7:
                values.append(('float', None))
                body += 8
            elif serial >= 12 and serial % 2 == 0:
                values.append(('blob', (serial - 12) // 2))
                body += (serial - 12) // 2
            elif serial >= 13:
                n = (serial - 13) // 2
                text = bytes(data[body:body + n]) if n < 4096 else b''
                values.append(('text', text.decode('utf-8')))
                body += n
            else:
                raise ValueError(f'serial type {serial}')
        return rowid, values

    def _blob(self, data: Any, cell: int) -> bytes | None:
        """The last column (the message data) of the messages row at byte ``cell``, or None
        where one of its overflow pages is missing."""
        size, pos = _varint(data, cell)
        _, pos = _varint(data, pos)
        usable = self.usable
        most_local = usable - 35
        if size <= most_local:
            payload = bytes(data[pos:pos + size])
        else:
            least = (usable - 12) * 32 // 255 - 23
            local = least + (size - least) % (usable - 4)
            local = local if local <= most_local else least
            parts = [bytes(data[pos:pos + local])]
            remaining = size - local
            next_page = int.from_bytes(data[pos + local:pos + local + 4], 'big')
            while remaining > 0:
                if not 1 <= next_page <= self.pages or next_page in self._absent:
                    return None
                base = (next_page - 1) * self.page_size
                take = min(remaining, usable - 4)
                parts.append(bytes(data[base + 4:base + 4 + take]))
                remaining -= take
                next_page = int.from_bytes(data[base:base + 4], 'big')
            payload = b''.join(parts)
        header_size, cursor = _varint(payload, 0)
        types = []
        while cursor < header_size:
            serial, cursor = _varint(payload, cursor)
            types.append(serial)
        blob_size = (types[-1] - 12) // 2
        return payload[len(payload) - blob_size:]


# ------------------------------------------------------------------------------------------------
# ROS 1.
# ------------------------------------------------------------------------------------------------

def _ros1_fields(header: bytes) -> dict[str, bytes]:
    fields, pos = {}, 0
    while pos + 4 <= len(header):
        (size,) = struct.unpack_from('<I', header, pos)
        name, _, value = header[pos + 4:pos + 4 + size].partition(b'=')
        fields[name.decode('ascii', 'replace')] = value
        pos += 4 + size
    return fields


def _ros2_name(ros1_type: str) -> str:
    package, _, name = ros1_type.partition('/')
    return f'{package}/msg/{name}'


class _Ros1File:
    """A ROS 1 bag read from its start, chunk by chunk (no index needed)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def walk(self, scan: _Scan, with_data: bool) -> Iterator[Message]:
        size = self.path.stat().st_size
        with self.path.open('rb') as f:
            if f.read(13) != ROS1_MAGIC:
                raise BagError(f'{self.path}: not a ROS 1 bag')
            while True:
                start = f.tell()
                record = self._record(f)
                if record is None:
                    scan.damage = (f'{self.path.name}: the file ends at byte {size}, before its '
                                   f'index (cut at or after byte {start})')
                    return
                fields, body, cut = record
                op = fields.get('op', b'\x00')[:1]
                if op == b'\x05':
                    yield from self._chunk(fields, body, scan, with_data)
                elif op in (b'\x02', b'\x07'):
                    yield from self._records(self._raw(fields, body), scan, with_data)
                elif op == b'\x06' and not cut:
                    return  # chunk info: the index section, every chunk was read
                if cut:
                    scan.damage = (f'{self.path.name}: the file ends at byte {size}, inside a '
                                   f'record that starts at byte {start}')
                    return

    @staticmethod
    def _record(f: BinaryIO) -> tuple[dict[str, bytes], bytes, bool] | None:
        head = f.read(4)
        if len(head) < 4:
            return None
        (header_size,) = struct.unpack('<I', head)
        header = f.read(header_size)
        size = f.read(4)
        if len(header) < header_size or len(size) < 4:
            return None
        (body_size,) = struct.unpack('<I', size)
        body = f.read(body_size)
        return _ros1_fields(header), body, len(body) < body_size

    @staticmethod
    def _raw(fields: dict[str, bytes], body: bytes) -> bytes:
        header = b''.join(struct.pack('<I', len(k) + 1 + len(v)) + k.encode() + b'=' + v
                          for k, v in fields.items())
        return struct.pack('<I', len(header)) + header + struct.pack('<I', len(body)) + body

    def _chunk(self, fields: dict[str, bytes], body: bytes, scan: _Scan,
               with_data: bool) -> Iterator[Message]:
        compression = fields.get('compression', b'none').decode('ascii', 'replace')
        try:
            if compression == 'bz2':
                data = bz2.BZ2Decompressor().decompress(body)
            elif compression == 'lz4':
                from lz4.frame import LZ4FrameDecompressor  # rosbags' own dependency

                data = LZ4FrameDecompressor().decompress(body)
            else:
                data = body
        except Exception:  # noqa: BLE001 - garbage: nothing of this chunk can be read
            return
        yield from sorted(self._records(data, scan, with_data), key=lambda m: m[1])

    def _records(self, data: bytes, scan: _Scan, with_data: bool) -> Iterator[Message]:
        pos = 0
        while pos + 4 <= len(data):
            (header_size,) = struct.unpack_from('<I', data, pos)
            fields = _ros1_fields(data[pos + 4:pos + 4 + header_size])
            pos += 4 + header_size
            if pos + 4 > len(data):
                body_size, body = 1, b''
            else:
                (body_size,) = struct.unpack_from('<I', data, pos)
                body = data[pos + 4:pos + 4 + body_size]
                pos += 4 + body_size
            op, conn = fields.get('op', b'')[:1], fields.get('conn', b'')
            if len(conn) != 4:
                continue
            (conn_id,) = struct.unpack('<I', conn)
            if op == b'\x07' and len(body) == body_size:
                info = _ros1_fields(body)
                scan.topics.setdefault(conn_id, (
                    fields.get('topic', b'').decode('utf-8', 'replace'),
                    _ros2_name(info.get('type', b'').decode('ascii', 'replace'))))
            elif op == b'\x02':
                if len(body) < body_size or len(fields.get('time', b'')) != 8:
                    scan.lost[conn_id] += 1
                    continue
                sec, nsec = struct.unpack('<II', fields['time'])
                scan.read[conn_id] += 1
                yield conn_id, sec * 10**9 + nsec, body if with_data else b''


# ------------------------------------------------------------------------------------------------
# The reader.
# ------------------------------------------------------------------------------------------------

STORAGE_SUFFIXES = ('.mcap', '.db3')  # the storage files of a rosbag2 folder


def _split_number(path: Path) -> int | None:
    """N of a file named as rosbag2 names a bag's splits, ``<bag folder>_<N>.<storage>``."""
    match = re.fullmatch(re.escape(path.parent.name) + r'_(\d+)', path.stem)
    return int(match.group(1)) if match else None


def split_recording(folder: Path) -> list[Path] | None:
    """The files of a split recording without metadata.yaml, in split order (by number:
    ``rec_2`` before ``rec_10``): a folder holding no folder and several storage files of one
    format, each named ``<folder name>_<N>`` as rosbag2 names splits (``rec/rec_0.mcap``,
    ``rec/rec_1.mcap``). None for anything else (one file, a folder of bags, a rosbag2 folder
    with its metadata.yaml)."""
    if not folder.is_dir() or (folder / 'metadata.yaml').exists():
        return None
    entries = list(folder.iterdir())
    files = [p for p in entries if p.suffix in STORAGE_SUFFIXES]
    if (len(files) < 2 or any(p.is_dir() for p in entries) or len({p.suffix for p in files}) > 1
            or any(_split_number(p) is None for p in files)):
        return None
    return sorted(files, key=lambda p: (_split_number(p), p.name))


def _storage_files(path: Path) -> tuple[list[Path], dict[str, int] | None]:
    """The storage files of a bag (in recording order: as metadata.yaml lists them, else in
    split order) and the message counts per topic of its metadata.yaml (None without a
    readable one)."""
    if path.is_file():
        metadata = path.parent / 'metadata.yaml'
        files = [path]
    else:
        metadata = path / 'metadata.yaml'
        files = sorted((p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES),
                       key=lambda p: (_split_number(p) is None, _split_number(p) or 0, p.name))
    listed = None
    try:
        info = yaml.safe_load(metadata.read_text(encoding='utf-8'))['rosbag2_bagfile_information']
        names = [Path(name).name for name in info['relative_file_paths']]
        if path.is_dir():
            order = {name: i for i, name in enumerate(names)}
            files.sort(key=lambda p: order.get(p.name, len(order)))
        if path.is_dir() or path.name in names:
            listed = {t['topic_metadata']['name']: int(t['message_count'])
                      for t in info['topics_with_message_count']}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError, ValueError):
        pass
    return files, listed


class RecoveredReader:
    """A damaged bag read without its index: ``connections``, ``topics``,
    ``messages(connections=...)``, ``deserialize`` (ROS 1) and ``close`` as rosbags'
    AnyReader. ``damage``: one line per damaged file; ``lost``: topic -> messages known to be
    lost (cut short, or missing against metadata.yaml)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.suffix == '.bag':
            self.files: list[Any] = [_Ros1File(path)]
            self.is2, listed = False, None
        else:
            paths, listed = _storage_files(path)
            self.files = [_McapFile(p) if p.suffix == '.mcap' else _SqliteFile(p)
                          for p in paths]
            self.is2 = True
        if not self.files:
            raise BagError(f'{path}: no .mcap or .db3 file to recover')
        self.scans = [_Scan() for _ in self.files]
        try:
            for file, scan in zip(self.files, self.scans):
                for _ in file.walk(scan, with_data=False):
                    pass
            if not any(scan.topics for scan in self.scans):
                raise BagError(f'{path}: nothing readable (no topic record survived)')
        except BaseException:
            self.close()  # temporary copies (sqlite3 with its write-ahead log)
            raise
        read: Counter[str] = Counter()
        cut: Counter[str] = Counter()
        types: dict[str, str] = {}
        for scan in self.scans:
            for conn_id, (topic, msgtype) in scan.topics.items():
                types.setdefault(topic, msgtype)
                read[topic] += scan.read[conn_id]
                cut[topic] += scan.lost[conn_id]
        self.lost = Counter({topic: max((listed or {}).get(topic, 0) - read[topic], cut[topic])
                             for topic in types})
        self.connections = [
            RecoveredConnection(i, topic, msgtype, read[topic] + self.lost[topic])
            for i, (topic, msgtype) in enumerate(sorted(types.items()))]
        self.topics = {c.topic: TopicInfo(c.msgtype, c.msgcount) for c in self.connections}
        self.damage = [scan.damage for scan in self.scans if scan.damage]
        if path.is_dir() and listed is None and len(self.files) > 1:
            self.damage.insert(0, f'{path.name}: a split recording of {len(self.files)} files '
                                  'without metadata.yaml, read in split order')
        self.listed = listed
        self._typestore: Any = None

    def messages(self, connections: Sequence[RecoveredConnection]
                 ) -> Iterator[tuple[RecoveredConnection, int, bytes]]:
        """The messages of ``connections`` in each file's order (by time within a chunk)."""
        wanted = {c.topic: c for c in connections}
        for file in self.files:
            scan = _Scan()
            for conn_id, log_time, data in file.walk(scan, with_data=True):
                topic = scan.topics.get(conn_id, ('', ''))[0]
                if topic in wanted:
                    yield wanted[topic], log_time, data

    def deserialize(self, raw: bytes, msgtype: str) -> Any:
        """A ROS 1 message (ROS 2 type name) deserialised by rosbags' Noetic typestore."""
        if self._typestore is None:
            from rosbags.typesys import Stores, get_typestore

            self._typestore = get_typestore(Stores.ROS1_NOETIC)
        return self._typestore.deserialize_ros1(raw, msgtype)

    def close(self) -> None:
        """Nothing stays open between passes but temporary copies (an sqlite3 file with its
        write-ahead log applied): removed here."""
        for file in self.files:
            getattr(file, 'close', lambda: None)()

"""Recordings that survive a crash (issue #20): truncated input bags (MCAP, sqlite3, ROS 1)
replayed up to the damage with --allow-partial, an output bag that stays readable when the
disk fills, a double Ctrl-C accounted for, an image topic without messages.

The bags are written into tmp_path with rosbags' writers from random images (every image's
bytes are unique, so where each one lies in the file is known) and cut with plain file
truncation. A stub tracker stands in for the networks: what is tested is the bag handling.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lightglue_ros.features import Features
from lightglue_ros.tracker import ExtractedFrame, FrameResult, KeyframeEvent, TrackerConfig

pytest.importorskip('rclpy')
pytest.importorskip('rosbags')

from rosbags.highlevel import AnyReader  # noqa: E402
from rosbags.rosbag1 import Writer as Writer1  # noqa: E402
from rosbags.rosbag2 import StoragePlugin  # noqa: E402
from rosbags.rosbag2 import Writer as Writer2  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from lightglue_ros.cli.replay import replay_main  # noqa: E402
from lightglue_ros.errors import BagError  # noqa: E402
from lightglue_ros.replay_summary import ReplaySummary  # noqa: E402
from lightglue_ros.ros import replay as replay_module  # noqa: E402
from lightglue_ros.ros.bag_recovery import RecoveredReader  # noqa: E402
from lightglue_ros.ros.replay import replay_bag  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
IMAGE_TOPIC = '/cam/image_raw'
INFO_TOPIC = '/cam/camera_info'
IMAGE = 'sensor_msgs/msg/Image'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
MATCHES_TOPIC = f'{replay_module.DEFAULT_TOPIC_PREFIX}/matches'
N_IMAGES = 10
HEIGHT, WIDTH = 240, 320  # 230 kB a message: four to a 1 MiB MCAP chunk
T0 = 1_700_000_000 * 10**9
FORMATS = ('mcap', 'sqlite3', 'ros1')
FRACTIONS = (0.3, 0.7, 0.995)
TS2 = get_typestore(Stores.ROS2_KILTED)
TS1 = get_typestore(Stores.ROS1_NOETIC)


class StubTracker:
    """Stands in for the networks: one result per frame with eight fixed matches, no pose."""

    def __init__(self) -> None:
        self.config = TrackerConfig(device='cpu')
        self.device = torch.device('cpu')
        self.index = -1
        self.on_process: Any = None  # called before each frame (the double Ctrl-C test)

    def reset(self) -> None:
        self.index = -1

    def warm_up(self) -> None:
        """Nothing to warm up."""

    def extract(self, image: np.ndarray) -> ExtractedFrame:
        """The pipelined replay's first stage: nothing but the image size."""
        height, width = image.shape[:2]
        empty = torch.zeros(0, 2)
        return ExtractedFrame(Features(empty, torch.zeros(0), torch.zeros(0, 128),
                                       (width, height)), None, 0.0)

    def track(self, frame: ExtractedFrame, stamp_ns: int, camera: Any = None) -> FrameResult:
        return self.process(np.zeros((1, 1), np.uint8), stamp_ns, camera)

    def process(self, image: np.ndarray, stamp_ns: int, camera: Any = None) -> FrameResult:
        self.index += 1
        if self.on_process is not None:
            self.on_process(self.index)
        k = 8
        points = np.arange(2 * k, dtype=np.float32).reshape(k, 2)
        first = self.index == 0
        events = (KeyframeEvent(0, stamp_ns, -1, 'first_frame', '', 0),) if first else ()
        return FrameResult(
            index=self.index, stamp_ns=stamp_ns, ok=False,
            reason='first_frame' if first else 'no_calibration', keyframe_index=0,
            keyframe_stamp_ns=T0, num_keypoints=k, points=points, kf_points=points,
            scores=np.ones(k, np.float32), track_ids=np.arange(k), inliers=np.zeros(k, bool),
            points_norm=np.full((k, 2), np.nan, np.float32),
            velocity_norm=np.zeros((k, 2), np.float32), pose=None, R_kf_cam=None,
            t_kf_cam=None, R_world_cam=None, t_world_cam=None, stop_layer=9,
            num_pruned_keyframe=0, num_pruned_current=0, keyframe_events=events)


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> StubTracker:
    tracker = StubTracker()
    monkeypatch.setattr(replay_module, 'Tracker', lambda config: tracker)  # the command line
    return tracker


# ------------------------------------------------------------------------------------------------
# Input bags.
# ------------------------------------------------------------------------------------------------

def _messages(fmt: str, n_images: int, first: int = 0) -> list[tuple[str, str, int, Any]]:
    ts = TS1 if fmt == 'ros1' else TS2
    t = ts.types
    records = []
    rng = np.random.default_rng(7 + first)
    for i in range(first, first + n_images):
        stamp = T0 + i * 10**8
        time = t['builtin_interfaces/msg/Time'](sec=stamp // 10**9, nanosec=stamp % 10**9)
        header = (t['std_msgs/msg/Header'](seq=i, stamp=time, frame_id='cam') if fmt == 'ros1'
                  else t['std_msgs/msg/Header'](stamp=time, frame_id='cam'))
        roi = t['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0, width=0,
                                                    do_rectify=False)
        arrays = {'d': np.zeros(5), 'k': np.array([200.0, 0, 160, 0, 200, 120, 0, 0, 1]),
                  'r': np.eye(3).reshape(-1), 'p': np.zeros(12)}
        if fmt == 'ros1':
            arrays = {key.upper(): value for key, value in arrays.items()}
        records.append((INFO_TOPIC, CAMERA_INFO, stamp, t[CAMERA_INFO](
            header=header, height=HEIGHT, width=WIDTH, distortion_model='plumb_bob',
            binning_x=0, binning_y=0, roi=roi, **arrays)))
        pixels = rng.integers(0, 256, HEIGHT * WIDTH * 3, dtype=np.uint8)
        records.append((IMAGE_TOPIC, IMAGE, stamp, t[IMAGE](
            header=header, height=HEIGHT, width=WIDTH, encoding='rgb8', is_bigendian=0,
            step=WIDTH * 3, data=pixels)))
    return records


def write_bag(root: Path, fmt: str, n_images: int = N_IMAGES, *, empty_image_topic: bool = False,
              first: int = 0) -> tuple[Path, Path, dict[int, bytes]]:
    """(bag, its storage file, image stamp -> serialised image); the images ``first`` to
    ``first + n_images - 1`` of the sequence (stamps T0 + i * 0.1 s)."""
    ts = TS1 if fmt == 'ros1' else TS2
    if fmt == 'ros1':
        bag = root / 'in.bag'
        writer: Any = Writer1(bag)
    else:
        bag = root / 'in'
        writer = Writer2(bag, version=9, storage_plugin=(
            StoragePlugin.MCAP if fmt == 'mcap' else StoragePlugin.SQLITE3))
    images: dict[int, bytes] = {}
    with writer:
        connections = {topic: writer.add_connection(topic, msgtype, typestore=ts)
                       for topic, msgtype in ((INFO_TOPIC, CAMERA_INFO), (IMAGE_TOPIC, IMAGE))}
        for topic, msgtype, stamp, msg in _messages(fmt, n_images, first):
            if empty_image_topic and topic == IMAGE_TOPIC:
                continue
            raw = bytes(ts.serialize_ros1(msg, msgtype) if fmt == 'ros1'
                        else ts.serialize_cdr(msg, msgtype))
            writer.write(connections[topic], stamp, raw)
            if topic == IMAGE_TOPIC:
                images[stamp] = raw
    data_file = bag if fmt == 'ros1' else next(p for p in bag.iterdir()
                                               if p.suffix in ('.mcap', '.db3'))
    return bag, data_file, images


def cut(data_file: Path, fraction: float) -> int:
    data = data_file.read_bytes()
    size = int(len(data) * fraction)
    data_file.write_bytes(data[:size])
    return size


def intact_stamps(original: bytes, images: dict[int, bytes], size: int) -> list[int]:
    """The images whose bytes lie wholly before ``size`` in the original file (MCAP and ROS 1
    store a message's bytes in one piece; uncompressed here)."""
    ends = {stamp: original.find(raw) + len(raw) for stamp, raw in images.items()}
    assert all(end >= len(raw) for end, raw in zip(ends.values(), images.values()))
    return sorted(stamp for stamp, end in ends.items() if end <= size)


def stamps_in(output: Path) -> list[int]:
    with AnyReader([output]) as reader:
        return [t for c, t, _ in reader.messages() if c.topic == MATCHES_TOPIC]


# ------------------------------------------------------------------------------------------------
# Truncated input.
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('fmt', FORMATS)
def test_truncated_bag_without_allow_partial_is_a_one_line_error(tmp_path, stub, capsys, fmt):
    bag, data_file, _ = write_bag(tmp_path, fmt, 3)
    cut(data_file, 0.7)
    output = tmp_path / 'out'
    code = replay_main([str(bag), '--image-topic', IMAGE_TOPIC, '--output', str(output),
                        '--no-progress', '--no-plots'])
    err = capsys.readouterr().err
    assert code == 1 and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f'replay: error: cannot open bag {bag}: ')
    assert 'corrupt, truncated or not a bag; --allow-partial replays the messages before the ' \
           'damage' in err
    assert not output.exists()


@pytest.mark.parametrize('fraction', FRACTIONS)
@pytest.mark.parametrize('fmt', FORMATS)
def test_truncated_bag_replays_every_intact_image(tmp_path, stub, fmt, fraction):
    """Cut anywhere: every image before the damage is replayed, the rest counted as lost
    (rosbag2: against metadata.yaml, so replayed + lost = recorded); the output is readable."""
    bag, data_file, images = write_bag(tmp_path, fmt)
    original = data_file.read_bytes()
    size = cut(data_file, fraction)
    with pytest.raises(BagError, match='cannot open bag'):  # rosbags alone gives up
        replay_bag(bag, tmp_path / 'refused', image_topic=IMAGE_TOPIC, tracker=stub,
                   progress=False, plots_dir=False)
    output = tmp_path / 'out'
    # allow_empty: a cut may leave no readable image at all (sqlite3 at 30 %)
    summary = replay_bag(bag, output, image_topic=IMAGE_TOPIC, camera_info_topic=INFO_TOPIC,
                         tracker=stub, progress=False, plots_dir=False, allow_partial=True,
                         allow_empty=True)
    written = sorted(images)
    replayed = summary.stamp_ns
    assert summary.damage and summary.processed == summary.frames and not summary.complete
    assert stamps_in(output) == replayed  # readable, one matches message per image
    assert ReplaySummary.load(output / 'replay_summary.json').stamp_ns == replayed
    if fmt == 'sqlite3':
        # A row is readable when its b-tree leaf page and its overflow pages survive; the
        # leaf pages are written after the data they point to, so an image that lies before
        # the cut may be lost with its leaf page: counted, never silent.
        assert set(replayed) <= set(written) and replayed == sorted(replayed)
        assert summary.frames + summary.missing_frames == N_IMAGES
        assert summary.expected_frames == N_IMAGES
        if fraction > 0.5:
            assert summary.frames >= 1
        return
    intact = intact_stamps(original, images, size)
    assert replayed == intact and len(intact) < N_IMAGES
    if fmt == 'mcap':  # metadata.yaml survived: the images after the cut are counted too
        assert summary.frames + summary.missing_frames == N_IMAGES == summary.expected_frames
    else:  # ROS 1 keeps its index at the end: only the image cut in two is known
        assert summary.missing_frames == 1 and summary.frames + 1 <= N_IMAGES
        assert 'no metadata.yaml: messages after the damage are not counted' in summary.damage
        assert not summary.expected_frames_known


def test_crashed_recording_without_metadata_yaml(tmp_path, stub, capsys):
    """A recording cut off by a power loss: no metadata.yaml, the MCAP file without its
    summary. Every whole image is replayed; the one cut in two is counted; the final line
    says so."""
    bag, data_file, images = write_bag(tmp_path, 'mcap')
    (bag / 'metadata.yaml').unlink()
    original = data_file.read_bytes()
    size = cut(data_file, 0.55)
    output = tmp_path / 'out'
    argv = [str(bag), '--image-topic', IMAGE_TOPIC, '--output', str(output), '--no-progress',
            '--no-plots']
    assert replay_main(argv) == 1
    err = capsys.readouterr().err
    assert '--allow-partial' in err.strip().splitlines()[-1] and 'Traceback' not in err
    assert replay_main([*argv, '--allow-partial']) == 0
    err = capsys.readouterr().err
    intact = intact_stamps(original, images, size)
    summary = ReplaySummary.load(output / 'replay_summary.json')
    assert summary.stamp_ns == intact == stamps_in(output)
    assert (summary.frames, summary.missing_frames) == (len(intact), 1)
    assert not summary.expected_frames_known
    assert f'replay: {len(intact)}/{len(intact)} frames processed, 1 images known lost ' \
           '(damaged bag, --allow-partial; those recorded after the damage are not counted)' \
           in err


def replay_cli(bag: Path, output: Path, *options: str) -> int:
    """The replay command on ``bag`` with camera_info, no plots, no progress bar."""
    return replay_main([str(bag), '--image-topic', IMAGE_TOPIC, '--camera-info-topic',
                        INFO_TOPIC, '--output', str(output), '--no-progress', '--no-plots',
                        *options])


def files_of(folder: Path) -> dict[str, tuple[int, int]]:
    """name -> (size, mtime) of every file in a bag folder: the input is never written."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.mark.parametrize('fmt', ['mcap', 'sqlite3'])
def test_split_recording_without_metadata_yaml(tmp_path, stub, capsys, fmt):
    """A split recording whose recorder crashed: rec/rec_0 ... rec/rec_11 (one image each, as
    rosbag2 names splits; rec_10 comes after rec_9), no metadata.yaml; MCAP: the last split
    cut short. Without --allow-partial one line; with it every whole image, in split order,
    the one cut in two counted. One bag for a fleet too."""
    from lightglue_ros.ros.fleet import discover_bags, is_fleet_input

    rec = tmp_path / 'bags' / 'rec'
    rec.mkdir(parents=True)
    images: dict[int, bytes] = {}
    for i in range(12):
        _, data_file, written = write_bag(tmp_path / 'parts' / str(i), fmt, 1, first=i)
        data_file.rename(rec / f'rec_{i}{data_file.suffix}')
        images.update(written)
    shutil.rmtree(tmp_path / 'parts')
    if fmt == 'mcap':
        cut(rec / 'rec_11.mcap', 0.6)
    before = files_of(rec)
    output = tmp_path / 'out'
    assert replay_cli(rec, output) == 1
    err = capsys.readouterr().err
    suffix = '.mcap' if fmt == 'mcap' else '.db3'
    assert err == (f'replay: error: cannot open bag {rec}: a split recording without '
                   f'metadata.yaml (12 files, rec_0{suffix} ... rec_11{suffix}); '
                   '--allow-partial reads what it holds\n')
    assert not output.exists()
    assert replay_cli(rec, output, '--allow-partial') == 0
    summary = ReplaySummary.load(output / 'replay_summary.json')
    whole = sorted(images)[:11] if fmt == 'mcap' else sorted(images)
    assert summary.stamp_ns == whole == stamps_in(output)
    assert (summary.frames, summary.missing_frames) == (len(whole), 12 - len(whole))
    assert summary.camera_info_messages == 12  # the last split's camera_info is whole
    assert summary.damage.startswith('rec: a split recording of 12 files without metadata.yaml')
    assert files_of(rec) == before
    assert not is_fleet_input([rec])
    assert [job.name for job in discover_bags([rec.parent], tmp_path / 'fleet')] == ['rec']


WAL_SCRIPT = textwrap.dedent("""
    # A recorder in WAL mode (rosbag2's resilient preset) that dies before its log is
    # checkpointed: it runs the transactions of the plan (each [commit, rows]), the last one
    # maybe never committed, and ends without closing the database.
    import os, pickle, sqlite3, sys
    connection = sqlite3.connect(sys.argv[1], isolation_level=None)
    assert connection.execute('PRAGMA journal_mode=WAL').fetchone() == ('wal',)
    connection.execute('PRAGMA wal_autocheckpoint=0')
    connection.execute('PRAGMA cache_size=8')  # pages: an open transaction spills to the log
    with open(sys.argv[2], 'rb') as plan:
        for commit, rows in pickle.load(plan):
            connection.execute('BEGIN')
            connection.executemany('INSERT INTO messages VALUES (?, ?, ?, ?)', rows)
            if commit:
                connection.execute('COMMIT')
    os._exit(0)  # no close: the log stays as the crash left it
""")


def crash_in_wal_mode(db: Path, plan: list[tuple[bool, list[tuple[int, int, int, bytes]]]]
                      ) -> Path:
    """Run WAL_SCRIPT's transactions on ``db``; returns the write-ahead log left beside it."""
    plan_file = db.parent.parent / 'plan.pickle'
    plan_file.write_bytes(pickle.dumps(plan))
    subprocess.run([sys.executable, '-c', WAL_SCRIPT, str(db), str(plan_file)], check=True,
                   timeout=120)
    plan_file.unlink()
    return db.with_name(db.name + '-wal')


def write_wal_bag(tmp_path: Path) -> tuple[Path, Path, list[int]]:
    """(bag folder, its .db3 file, the stamps of its 8 images): images 0-2 in the database
    file, 3-5 committed in its write-ahead log (a transaction each), 6-7 in the log but never
    committed; the metadata.yaml of the whole recording (8 images) beside it."""
    full, _, images = write_bag(tmp_path / 'full', 'sqlite3', 8)
    bag, db, _ = write_bag(tmp_path / 'crashed', 'sqlite3', 3)
    shutil.copyfile(full / 'metadata.yaml', bag / 'metadata.yaml')
    rows = sqlite3.connect(f'file:{next(full.glob("*.db3"))}?immutable=1', uri=True).execute(
        'SELECT id, topic_id, timestamp, data FROM messages WHERE id > 6 ORDER BY id'
    ).fetchall()  # a camera_info and an image a frame
    crash_in_wal_mode(db, [(True, rows[0:2]), (True, rows[2:4]), (True, rows[4:6]),
                           (False, rows[6:10])])
    return bag, db, sorted(images)


def test_sqlite_write_ahead_log_is_applied(tmp_path, stub, capsys):
    """A sqlite3 bag in WAL mode whose recorder died: x.db3 and x.db3-wal. rosbags reads the
    database file alone and would give 3 of 8 images without a word. Without --allow-partial
    one line; with it SQLite applies the log's committed transactions (to a copy: the bag is
    not written) and the 6 committed images are replayed, the 2 never committed counted as
    lost against metadata.yaml; without it the 6 are replayed all the same."""
    bag, db, stamps = write_wal_bag(tmp_path)
    wal = db.with_name(db.name + '-wal')
    assert wal.stat().st_size > 5 * 230_000  # the uncommitted images are in the log too
    before = files_of(bag)
    output = tmp_path / 'out'
    assert replay_cli(bag, output) == 1
    err = capsys.readouterr().err
    assert err.startswith(f'replay: error: cannot open bag {bag}: {wal.name} holds '
                          f'transactions that are not in {db.name}') and err.count('\n') == 1
    assert replay_cli(bag, output, '--allow-partial') == 0
    summary = ReplaySummary.load(output / 'replay_summary.json')
    assert summary.stamp_ns == stamps[:6] == stamps_in(output)
    assert (summary.frames, summary.missing_frames, summary.expected_frames) == (6, 2, 8)
    assert summary.camera_info_messages == 6 and 'committed transactions applied' in summary.damage
    assert files_of(bag) == before  # the input is read, never written
    (bag / 'metadata.yaml').unlink()  # as a crashed recorder leaves it
    summary = replay_bag(bag, tmp_path / 'again', image_topic=IMAGE_TOPIC, tracker=stub,
                         progress=False, plots_dir=False, allow_partial=True)
    assert summary.stamp_ns == stamps[:6] and not summary.expected_frames_known


def test_rows_of_the_log_that_never_committed_are_counted_as_lost(tmp_path):
    """Without metadata.yaml the rows of a transaction that never committed are known from
    the table pages SQLite spilled into the log (a long transaction spills its full pages):
    counted as lost, not silently dropped; the committed ones are read."""
    bag, db, _ = write_bag(tmp_path, 'sqlite3', 1)
    (bag / 'metadata.yaml').unlink()
    image_topic = sqlite3.connect(db).execute('SELECT id FROM topics WHERE name = ?',
                                              (IMAGE_TOPIC,)).fetchone()[0]
    rows = [(3 + i, image_topic, T0 + (i + 1) * 10**6, os.urandom(100)) for i in range(400)]
    crash_in_wal_mode(db, [(True, rows[:10]), (False, rows[10:])])
    reader = RecoveredReader(bag)
    try:
        lost = reader.lost[IMAGE_TOPIC]
        assert reader.topics[IMAGE_TOPIC].msgcount == 1 + 10 + lost
        assert 0 < lost <= 390
    finally:
        reader.close()


@pytest.mark.parametrize('cut_file, fraction', [('wal', 0.3), ('wal', 0.6), ('wal', 0.9),
                                                ('db3', 0.5), ('db3', 0.2)])
def test_cut_sqlite_write_ahead_log(tmp_path, stub, cut_file, fraction):
    """The same bag with its log or its database file cut short. A cut log: SQLite applies
    the transactions committed before the cut (what it reads from a copy of the two files
    is the reference), the images after it are counted as lost against metadata.yaml. A cut
    database file: the pages the log holds are still applied (the copy is extended to the
    size the log's commits give: SQLite refuses a log longer than its file otherwise), so
    the images committed in the log are replayed; what the cut took is counted."""
    bag, db, stamps = write_wal_bag(tmp_path)
    wal = db.with_name(db.name + '-wal')
    cut(wal if cut_file == 'wal' else db, fraction)
    summary = replay_bag(bag, tmp_path / 'out', image_topic=IMAGE_TOPIC, tracker=stub,
                         progress=False, plots_dir=False, allow_partial=True, allow_empty=True)
    assert summary.frames + summary.missing_frames == 8 == summary.expected_frames
    assert summary.stamp_ns == sorted(summary.stamp_ns) and set(summary.stamp_ns) <= set(stamps)
    if cut_file == 'wal':
        reference = tmp_path / 'reference'
        reference.mkdir()
        shutil.copyfile(db, reference / db.name)
        shutil.copyfile(wal, reference / wal.name)
        connection = sqlite3.connect(reference / db.name)
        image_topic = connection.execute('SELECT id FROM topics WHERE name = ?',
                                         (IMAGE_TOPIC,)).fetchone()[0]
        committed = [t for (t,) in connection.execute(
            'SELECT timestamp FROM messages WHERE topic_id = ? ORDER BY timestamp',
            (image_topic,))]
        connection.close()
        assert summary.stamp_ns == committed and stamps[:3] == committed[:3]
    else:
        assert set(stamps[3:6]) <= set(summary.stamp_ns)  # all of them in the log


def test_garbage_with_allow_partial_is_still_a_one_line_error(tmp_path, stub, capsys):
    garbage = tmp_path / 'garbage.mcap'
    garbage.write_bytes(os.urandom(5000))
    code = replay_main([str(garbage), '--image-topic', IMAGE_TOPIC, '--output',
                        str(tmp_path / 'out'), '--allow-partial', '--no-progress'])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert 'reading it without its index failed too' in err and 'not an MCAP file' in err


# ------------------------------------------------------------------------------------------------
# A full disk under the output.
# ------------------------------------------------------------------------------------------------

FULL_DISK_SCRIPT = textwrap.dedent("""
    import shutil, sys
    sys.path.insert(0, {tests!r})
    import test_bag_recovery as t
    from lightglue_ros.ros import replay as replay_module
    replay_module.Tracker = lambda config: t.StubTracker()
    from lightglue_ros.cli.replay import replay_main
    code = replay_main(sys.argv[1:])
    shutil.copytree({output!r}, {copy!r})  # the tmpfs goes with the mount namespace
    sys.exit(code)
""")


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_full_disk_output_is_one_line_and_stays_readable(tmp_path, storage):
    """The reported case: a 1 MiB tmpfs, --debug-images (230 kB a frame). One error line,
    exit 1; the output bag holds the frames written before the disk filled and rosbags reads
    it; the message says what the bag holds, the summary agrees."""
    unshare = shutil.which('unshare')
    mount_point = tmp_path / 'small'
    mount_point.mkdir()
    prefix = [unshare or 'unshare', '--mount', '--map-root-user', 'sh', '-c',
              'mount -t tmpfs -o size=1m tmpfs "$1" && shift && exec "$@"', 'sh',
              str(mount_point)]
    probe = subprocess.run([*prefix, 'true'], capture_output=True, text=True) if unshare else None
    if probe is None or probe.returncode != 0:
        pytest.skip('cannot mount a 1 MiB tmpfs here (unshare --mount --map-root-user: '
                    f'{probe.stderr.strip() if probe else "not installed"})')
    bag, _, images = write_bag(tmp_path, 'mcap', 8)
    output, copy = mount_point / 'out', tmp_path / 'copy'
    script = tmp_path / 'run.py'
    script.write_text(FULL_DISK_SCRIPT.format(tests=str(PROJECT_ROOT / 'tests'),
                                              output=str(output), copy=str(copy)))
    proc = subprocess.run(
        [*prefix, sys.executable, str(script), str(bag), '--image-topic', IMAGE_TOPIC,
         '--output', str(output), '--storage', storage, '--debug-images', '--no-progress'],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300,
        env={**os.environ, 'PYTHONPATH': str(PROJECT_ROOT)})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith(f'replay: error: writing the output bag {output} failed: '), line
    assert 'No space left on device' in line or 'database or disk is full' in line, line
    assert 'was closed with what was written and is readable' in line, line
    held = stamps_in(copy)  # rosbags opens it: metadata.yaml and a whole file
    assert 1 <= len(held) < len(images)
    assert held == sorted(images)[:len(held)]
    with AnyReader([copy]) as reader:
        debug = [t for c, t, _ in reader.messages() if c.topic.endswith('/debug_image')]
    summary_file = copy / 'replay_summary.json'
    if summary_file.exists():  # written when the salvage freed enough space
        summary = json.loads(summary_file.read_text())
        assert summary['messages_written'][MATCHES_TOPIC] == len(held)
        assert summary['error'] and not summary['complete']
    assert not (copy / 'replay_summary.json.tmp').exists()
    assert debug == held  # whole frames only: the last commit, the last whole chunk


# ------------------------------------------------------------------------------------------------
# A double Ctrl-C; an empty image topic.
# ------------------------------------------------------------------------------------------------

def test_double_sigint_accounts_for_every_frame_read(tmp_path, stub):
    """The second SIGINT arrives while the third frame is being tracked: the frame is
    abandoned and counted (skipped: interrupted), so processed + skipped = frames read."""
    bag, _, images = write_bag(tmp_path, 'mcap', 5)

    def two_signals(index: int) -> None:
        if index == 2:
            os.kill(os.getpid(), signal.SIGINT)  # stop after this frame
            os.kill(os.getpid(), signal.SIGINT)  # no: at once

    stub.on_process = two_signals
    summary = replay_bag(bag, tmp_path / 'out', image_topic=IMAGE_TOPIC, tracker=stub,
                         progress=False, plots_dir=False)
    assert summary.interrupted and not summary.complete
    assert (summary.frames, summary.processed, summary.skipped) == (3, 2, 1)
    assert summary.skipped_by_reason == {'interrupted': 1}
    assert summary.frames == summary.processed + summary.skipped
    assert stamps_in(tmp_path / 'out') == sorted(images)[:2] == summary.stamp_ns


@pytest.mark.parametrize('fmt', ['mcap', 'sqlite3'])
def test_empty_image_topic_is_an_error_unless_allow_empty(tmp_path, stub, capsys, fmt):
    bag, _, _ = write_bag(tmp_path, fmt, 3, empty_image_topic=True)
    output = tmp_path / 'out'
    argv = [str(bag), '--image-topic', IMAGE_TOPIC, '--output', str(output), '--no-progress',
            '--no-plots']
    assert replay_main(argv) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"replay: error: {bag}: topic '{IMAGE_TOPIC}' has no messages; nothing to replay "
        '(--allow-empty accepts an empty replay)'], err
    assert not output.exists()  # refused before any model loads
    assert replay_main([*argv, '--allow-empty']) == 0
    assert 'replay: 0/0 frames processed' in capsys.readouterr().err
    assert stamps_in(output) == []


KILLED_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import test_bag_recovery as t
    from lightglue_ros.ros import replay as replay_module
    tracker = t.StubTracker()
    tracker.on_process = lambda index: index == 4 and os.kill(os.getpid(), signal.SIGKILL)
    replay_module.Tracker = lambda config: tracker
    from lightglue_ros.cli.replay import replay_main
    sys.exit(replay_main(sys.argv[1:]))
""")


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_output_of_a_killed_replay_is_read_back(tmp_path, stub, storage):
    """A replay killed outright (SIGKILL at the fifth frame) leaves an output folder without
    metadata.yaml; replaying its debug images with --allow-partial reads back the four frames
    it finished (sqlite3: committed, MCAP: a chunk each, written and flushed)."""
    bag, _, images = write_bag(tmp_path, 'mcap', 8)
    output = tmp_path / 'out'
    script = tmp_path / 'run.py'
    script.write_text(KILLED_SCRIPT.format(tests=str(PROJECT_ROOT / 'tests')))
    proc = subprocess.run(
        [sys.executable, str(script), str(bag), '--image-topic', IMAGE_TOPIC, '--output',
         str(output), '--storage', storage, '--debug-images', '--no-progress'],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300,
        env={**os.environ, 'PYTHONPATH': str(PROJECT_ROOT)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (output / 'metadata.yaml').exists()
    debug_topic = f'{replay_module.DEFAULT_TOPIC_PREFIX}/debug_image'
    summary = replay_bag(output, tmp_path / 'again', image_topic=debug_topic, tracker=stub,
                         progress=False, plots_dir=False, allow_partial=True)
    assert summary.stamp_ns == sorted(images)[:4]
    assert (summary.frames, summary.processed, summary.missing_frames) == (4, 4, 0)

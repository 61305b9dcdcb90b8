"""Fleet replay (issue #21): many bags in one command, locally (--jobs) and on Ray's local
cluster; each bag's output equal to a single-bag replay of it; damaged bags failing alone;
resume after an interrupted fleet; one-line errors for bad inputs.

The fleet is a folder of small bags written into tmp_path with rosbags' writers from the
half-size freiburg frames (three frames a bag): two MCAP bags and a sqlite3 one (one of them a
folder deeper), a bag whose MCAP file is cut short and a file of random bytes. The models are
ALIKED + LightGlue (256 keypoints, CPU), as the replay tests'.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lightglue_ros.camera import CameraModel
from lightglue_ros.tracker import Tracker, TrackerConfig

pytest.importorskip('rclpy')
pytest.importorskip('rosbags')

from rosbags.highlevel import AnyReader  # noqa: E402
from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from lightglue_ros.cli.replay import (EXIT_ALL_FAILED, EXIT_ERROR, EXIT_INTERRUPTED,  # noqa: E402
                                      EXIT_OK, EXIT_SOME_FAILED, replay_main)
from lightglue_ros.errors import BagError  # noqa: E402
from lightglue_ros.ros import fleet  # noqa: E402
from lightglue_ros.ros.replay import replay_bag  # noqa: E402

IMAGE_TOPIC, INFO_TOPIC = '/cam/image_raw', '/cam/camera_info'
FRAMES_PER_BAG = 3
MAX_KEYPOINTS = 256
TS = get_typestore(Stores.ROS2_KILTED)
GOOD = ('seq1', 'seq2', 'day2__seq3')  # output names of the bags that replay
BAD = ('broken', 'garbage')
# The errors tested happen before any model loads: weights paths that are never read.
UNLOADED = TrackerConfig(extractor='aliked', extractor_weights='unused.pth',
                         matcher_weights='unused.pth')
# Summary keys that differ between two replays of one bag: clocks, and the output path.
TIMING_KEYS = ('wall_s', 'fps', 'latency_ms', 'tracker_ms', 'latency', 'tracker_latency',
               'output')


# ------------------------------------------------------------------------------------------------
# Bags.
# ------------------------------------------------------------------------------------------------

def write_bag(path: Path, frames: list[tuple[np.ndarray, int]], camera: CameraModel,
              storage: str = 'mcap') -> Path:
    """camera_info + rgb8 image per frame, stamped and logged at the frame's stamp."""
    t = TS.types
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    path.parent.mkdir(parents=True, exist_ok=True)
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        info = writer.add_connection(INFO_TOPIC, 'sensor_msgs/msg/CameraInfo', typestore=TS)
        image = writer.add_connection(IMAGE_TOPIC, 'sensor_msgs/msg/Image', typestore=TS)
        for rgb, stamp in frames:
            header = t['std_msgs/msg/Header'](
                stamp=t['builtin_interfaces/msg/Time'](sec=stamp // 10**9,
                                                       nanosec=stamp % 10**9),
                frame_id='camera')
            roi = t['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0,
                                                        width=0, do_rectify=False)
            msg = t['sensor_msgs/msg/CameraInfo'](
                header=header, height=camera.height, width=camera.width,
                distortion_model='plumb_bob', d=np.zeros(5), k=camera.K.reshape(-1).copy(),
                r=np.eye(3).reshape(-1), p=np.hstack([camera.K, np.zeros((3, 1))]).reshape(-1),
                binning_x=0, binning_y=0, roi=roi)
            writer.write(info, stamp, TS.serialize_cdr(msg, 'sensor_msgs/msg/CameraInfo'))
            h, w = rgb.shape[:2]
            msg = t['sensor_msgs/msg/Image'](header=header, height=h, width=w, encoding='rgb8',
                                             is_bigendian=0, step=w * 3,
                                             data=np.ascontiguousarray(rgb).reshape(-1))
            writer.write(image, stamp, TS.serialize_cdr(msg, 'sensor_msgs/msg/Image'))
    return path


@pytest.fixture(scope='module')
def config(weights_dir: Path) -> TrackerConfig:
    return TrackerConfig(extractor='aliked', extractor_weights=str(weights_dir / 'aliked-n16.pth'),
                         matcher_weights=str(weights_dir / 'aliked_lightglue.pth'),
                         max_keypoints=MAX_KEYPOINTS, resize=None, device='cpu')


def write_fleet(root: Path, frames: list[tuple[np.ndarray, int]], camera: CameraModel) -> Path:
    """The fleet's folder: seq1 (MCAP), seq2 (sqlite3), day2/seq3 (MCAP), broken (MCAP cut at
    60 %), garbage.mcap (random bytes)."""
    n = FRAMES_PER_BAG
    write_bag(root / 'seq1', frames[0:n], camera)
    write_bag(root / 'seq2', frames[n:2 * n], camera, 'sqlite3')
    write_bag(root / 'day2' / 'seq3', frames[2 * n:3 * n], camera)
    broken = write_bag(root / 'broken', frames[0:n], camera)
    (data,) = broken.glob('*.mcap')
    os.truncate(data, int(data.stat().st_size * 0.6))
    (root / 'garbage.mcap').write_bytes(np.random.default_rng(0).bytes(5000))
    return root


@pytest.fixture(scope='module')
def bags(tmp_path_factory: pytest.TempPathFactory, small_frames, small_camera) -> Path:
    """The fleet of freiburg frames (half size), for the tests that replay it."""
    return write_fleet(tmp_path_factory.mktemp('fleet_bags'), small_frames, small_camera)


@pytest.fixture(scope='module')
def tiny_bags(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same fleet of tiny random images: the tests that replay nothing need no shared
    data."""
    rng = np.random.default_rng(1)
    frames = [(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (i + 1) * 10**8)
              for i in range(3 * FRAMES_PER_BAG)]
    camera = CameraModel.from_intrinsics(50.0, 50.0, 32.0, 24.0, 64, 48)
    return write_fleet(tmp_path_factory.mktemp('fleet_tiny_bags'), frames, camera)


@pytest.fixture(scope='module')
def references(tmp_path_factory: pytest.TempPathFactory, bags: Path, config: TrackerConfig
               ) -> Path:
    """Single-bag replays of the good bags (one thread, as each of two workers on two cores
    uses), into ref/<name>: what the fleet's outputs must equal."""
    root = tmp_path_factory.mktemp('fleet_reference')
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tracker = Tracker(config)
        for name, path in zip(GOOD, ('seq1', 'seq2', 'day2/seq3')):
            replay_bag(bags / path, root / name, image_topic=IMAGE_TOPIC,
                       camera_info_topic=INFO_TOPIC, tracker=tracker, progress=False)
    finally:
        torch.set_num_threads(threads)
    return root


def cli_args(config: TrackerConfig, *inputs: Any, output: Path, jobs: int | None = 2
             ) -> list[str]:
    args = [str(i) for i in inputs] + [
        '--image-topic', IMAGE_TOPIC, '--camera-info-topic', INFO_TOPIC, '-o', str(output),
        '--extractor', 'aliked', '--extractor-weights', str(config.extractor_weights),
        '--matcher-weights', str(config.matcher_weights), '--max-keypoints', str(MAX_KEYPOINTS),
        '--resize', '0', '--device', 'cpu', '--no-progress']
    return args + (['--jobs', str(jobs)] if jobs else [])


def options() -> dict[str, Any]:
    return dict(image_topic=IMAGE_TOPIC, camera_info_topic=INFO_TOPIC)


# ------------------------------------------------------------------------------------------------
# Comparing outputs.
# ------------------------------------------------------------------------------------------------

def messages(bag: Path) -> dict[str, list[tuple[int, Any]]]:
    """topic -> [(bag time, decoded message as comparable bytes)]: CDR padding bytes are not
    compared (the rmw serialiser leaves them uninitialised; see tests/test_replay.py)."""
    out: dict[str, list[tuple[int, Any]]] = {}
    with AnyReader([bag]) as reader:
        for connection, bag_time, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            out.setdefault(connection.topic, []).append((bag_time, repr(msg)))
    return out


def assert_same_output(output: Path, reference: Path) -> None:
    """What a fleet wrote for a bag equals a single-bag replay of it: the same files, the same
    metadata.yaml, the same messages at the same times, the same summary but for clocks. The
    storage file is named after its folder: a reference under another name counts as equal."""
    def files(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)).replace(root.name, '<name>')
                      for p in root.rglob('*'))

    def metadata(root: Path) -> str:
        return (root / 'metadata.yaml').read_text().replace(root.name, '<name>')

    assert files(output) == files(reference)
    assert metadata(output) == metadata(reference)
    assert messages(output) == messages(reference)

    def summary(root: Path) -> dict[str, Any]:
        values = json.loads((root / 'replay_summary.json').read_text())
        return {k: v for k, v in values.items() if k not in TIMING_KEYS}

    assert summary(output) == summary(reference)


def fleet_summary(root: Path) -> dict[str, Any]:
    return json.loads((root / fleet.FLEET_JSON_NAME).read_text())


def statuses(root: Path) -> dict[str, str]:
    return {b['name']: b['status'] for b in fleet_summary(root)['bags']}


# ------------------------------------------------------------------------------------------------
# Inputs, names, errors (no models).
# ------------------------------------------------------------------------------------------------

def test_a_folder_of_bags_gives_predictable_names(tiny_bags, tmp_path):
    jobs = fleet.discover_bags([tiny_bags], tmp_path / 'out')
    assert [j.name for j in jobs] == ['broken', 'day2__seq3', 'garbage', 'seq1', 'seq2']
    assert [j.output for j in jobs] == [str(tmp_path / 'out' / j.name) for j in jobs]
    # Several paths (one twice): their own names, in the order given, each bag once.
    seq2, seq3 = tiny_bags / 'seq2', tiny_bags / 'day2' / 'seq3'
    jobs = fleet.discover_bags([seq2, seq3, seq2], tmp_path / 'out')
    assert [j.name for j in jobs] == ['seq2', 'seq3']
    # An output root inside the folder of bags is not taken for bags on a second run.
    (tiny_bags / 'out').mkdir()
    try:
        (tiny_bags / 'out' / 'seq1').mkdir()
        (tiny_bags / 'out' / 'seq1' / 'metadata.yaml').write_text('{}')
        assert len(fleet.discover_bags([tiny_bags], tiny_bags / 'out')) == 5
    finally:
        (tiny_bags / 'out' / 'seq1' / 'metadata.yaml').unlink()
        (tiny_bags / 'out' / 'seq1').rmdir()
        (tiny_bags / 'out').rmdir()


def test_a_list_file_names_bags_relative_to_itself(tiny_bags, tmp_path):
    listing = tiny_bags / 'fleet.txt'
    listing.write_text('# regression suite\nseq1\n\n  day2/seq3   # the long one\n')
    try:
        assert fleet.is_fleet_input([listing])
        jobs = fleet.discover_bags([listing], tmp_path / 'out')
        assert [(j.name, j.input) for j in jobs] == [('seq1', str(tiny_bags / 'seq1')),
                                                     ('seq3', str(tiny_bags / 'day2' / 'seq3'))]
    finally:
        listing.unlink()


def test_one_bag_is_not_a_fleet(tiny_bags):
    assert not fleet.is_fleet_input([tiny_bags / 'seq1'])
    assert not fleet.is_fleet_input([tiny_bags / 'garbage.mcap'])
    assert not fleet.is_fleet_input([tiny_bags / 'missing'])
    assert fleet.is_fleet_input([tiny_bags])
    assert fleet.is_fleet_input([tiny_bags / 'seq1', tiny_bags / 'seq2'])


@pytest.mark.parametrize('case', ['empty list', 'missing bag', 'missing in list', 'root is a file',
                                  'empty folder', 'same name'])
def test_bad_fleet_inputs_are_one_line_errors(tiny_bags, tmp_path, capsys, case):
    output = tmp_path / 'out'
    if case == 'empty list':
        (tmp_path / 'bags.txt').write_text('# nothing yet\n\n')
        inputs, expected = [tmp_path / 'bags.txt'], 'names no bag'
    elif case == 'missing bag':
        inputs, expected = [tiny_bags / 'seq1', tmp_path / 'nope.mcap'], 'nope.mcap does not exist'
    elif case == 'missing in list':
        (tmp_path / 'bags.txt').write_text(f'{tiny_bags / "seq1"}\nnope\n')
        inputs, expected = [tmp_path / 'bags.txt'], 'bags.txt:2: bag nope does not exist'
    elif case == 'root is a file':
        output.write_text('not a folder')
        inputs, expected = [tiny_bags / 'seq1', tiny_bags / 'seq2'], 'is not a folder'
    elif case == 'empty folder':
        (tmp_path / 'empty').mkdir()
        (tmp_path / 'empty' / 'notes.md').write_text('no bags here')
        inputs, expected = [tmp_path / 'empty'], 'no bags found'
    else:
        inputs = [tiny_bags / 'day2' / 'seq3', tiny_bags / 'seq1', tmp_path / 'seq1.mcap']
        expected = 'same output'
        (tmp_path / 'seq1.mcap').write_bytes(b'x')
    with pytest.raises(BagError, match=expected):
        fleet.discover_bags(inputs, output)
    assert replay_main(cli_args(UNLOADED, *inputs, output=output)) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and expected in err and err.startswith('replay: error:')


def test_fleet_options_that_do_not_fit_are_one_line_errors(tiny_bags, tmp_path, capsys,
                                                           monkeypatch):
    args = cli_args(UNLOADED, tiny_bags / 'seq1', output=tmp_path / 'out', jobs=2)
    assert replay_main(args) == EXIT_ERROR  # --jobs with one bag
    assert '--jobs and --ray' in capsys.readouterr().err
    args = cli_args(UNLOADED, tiny_bags / 'seq1', tiny_bags / 'seq2', output=tmp_path / 'out')
    assert replay_main(args + ['--summary', str(tmp_path / 's.json')]) == EXIT_ERROR
    assert '--summary names one path' in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, 'ray', None)  # Ray not installed
    assert replay_main(args + ['--ray']) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err == f'replay: error: {fleet.RAY_INSTALL_HINT}\n'
    assert "pip install 'lightglue_ros[fleet]'" in err
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('argv, inputs, address', [
    (['--ray', 'bags', '-o', 'out'], ['bags'], ''),
    (['--ray', 'bags', 'more', '-o', 'out'], ['bags', 'more'], ''),
    (['more', '--ray', 'bags', '-o', 'out'], ['more', 'bags'], ''),
    (['bags', 'more', '-o', 'out', '--ray'], ['bags', 'more'], ''),
    (['bags', 'more', '--ray=auto', '-o', 'out'], ['bags', 'more'], 'auto'),
    (['bags', '--ray', 'auto', '-o', 'out'], ['bags'], 'auto'),
    (['bags', '--ray', 'head.example.org:6379', '-o', 'out'], ['bags'],
     'head.example.org:6379'),
])
def test_a_path_after_ray_is_an_input(tmp_path, monkeypatch, argv, inputs, address):
    """`--ray bags/`: argparse gives --ray the next word; an existing path there is an input
    (where it was written among the inputs) and Ray runs locally. 'auto' and HOST:PORT stay
    addresses, also where a folder of that name exists."""
    from lightglue_ros.cli import replay as replay_cli

    monkeypatch.chdir(tmp_path)
    for name in ('bags', 'more', 'auto'):
        (tmp_path / name).mkdir()
    seen = []
    monkeypatch.setattr(replay_cli, 'fleet_command',
                        lambda args: seen.append((args.input, args.ray)) or EXIT_OK)
    assert replay_main([*argv, '--image-topic', IMAGE_TOPIC]) == EXIT_OK
    assert seen == [(inputs, address)]


def test_ray_with_a_folder_of_bags_runs_the_fleet(tiny_bags, tmp_path, capsys, monkeypatch):
    """`replay --ray bags/ -o out` reaches the fleet (here: Ray is not installed, its one-line
    error); a value after --ray that is neither an address nor a path is refused (exit 2)."""
    monkeypatch.setitem(sys.modules, 'ray', None)
    args = ['--image-topic', IMAGE_TOPIC, '-o', str(tmp_path / 'out'), '--no-progress']
    assert replay_main(['--ray', str(tiny_bags), *args]) == EXIT_ERROR
    assert capsys.readouterr().err == f'replay: error: {fleet.RAY_INSTALL_HINT}\n'
    with pytest.raises(SystemExit) as exit_info:
        replay_main(['--ray', str(tmp_path / 'typo'), *args])
    assert exit_info.value.code == 2
    assert "argument --ray: '" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # no input at all: argparse's own message
        replay_main(args)
    assert 'the following arguments are required: input' in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# Replaying fleets.
# ------------------------------------------------------------------------------------------------

def test_local_fleet_equals_single_replays_and_resumes(bags, references, tmp_path, config,
                                                       capsys):
    """--jobs 2 over the folder: the good bags as single-bag replays, the damaged ones failed
    with one line each (exit 3: some); a second run skips what is complete."""
    output = tmp_path / 'out'
    assert replay_main(cli_args(config, bags, output=output)) == EXIT_SOME_FAILED
    err = capsys.readouterr().err
    for name in GOOD:
        assert_same_output(output / name, references / name)
    assert statuses(output) == {'broken': 'failed', 'day2__seq3': 'done', 'garbage': 'failed',
                                'seq1': 'done', 'seq2': 'done'}
    summary = fleet_summary(output)
    assert summary['workers'] == 2 and summary['model_loads'] == 2  # once per worker
    assert summary['outcome'] == 'some' and summary['frames_processed'] == 3 * FRAMES_PER_BAG
    failed = [line for line in err.splitlines() if line.startswith('replay: failed:')]
    assert len(failed) == 2 and any('broken' in line and 'cannot open bag' in line
                                    for line in failed)
    table = (output / fleet.FLEET_MD_NAME).read_text()
    assert '| seq1 | done | 3 | 0 |' in table and '| garbage | failed |' in table

    # Again: the complete bags are skipped (their numbers kept), the damaged ones fail again.
    mtime = (output / 'seq1' / 'replay_summary.json').stat().st_mtime_ns
    assert replay_main(cli_args(config, bags, output=output)) == EXIT_SOME_FAILED
    assert statuses(output)['seq1'] == 'skipped'
    assert (output / 'seq1' / 'replay_summary.json').stat().st_mtime_ns == mtime
    assert fleet_summary(output)['bags'][3]['frames'] == FRAMES_PER_BAG
    # Only the damaged bags, one worker: none succeeds (exit 4).
    assert replay_main(cli_args(config, bags / 'broken', bags / 'garbage.mcap',
                                output=tmp_path / 'bad', jobs=1)) == EXIT_ALL_FAILED


def test_interrupted_fleet_resumes_where_it_stopped(bags, references, tmp_path, config,
                                                    monkeypatch):
    """A stop on the second bag's second frame (Ctrl-C, raised by the tracker: deterministic)
    ends the fleet: bag 1 done, bag 2 interrupted (its output closed, unfinished), bag 3 not
    run. The next run skips bag 1, replaces bag 2's unfinished output and replays bag 3."""
    jobs = fleet.discover_bags([bags / 'seq1', bags / 'seq2', bags / 'day2' / 'seq3'],
                               tmp_path / 'out')
    calls = {'n': 0}
    process = Tracker.track  # what the (pipelined) replay and Tracker.process call per frame

    def stop_on_fifth_frame(self: Tracker, *args: Any, **kwargs: Any) -> Any:
        calls['n'] += 1
        if calls['n'] == FRAMES_PER_BAG + 2:
            raise KeyboardInterrupt
        return process(self, *args, **kwargs)

    import torch

    monkeypatch.setattr(Tracker, 'track', stop_on_fifth_frame)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first = fleet.run_fleet(jobs, tmp_path / 'out', config=config, options=options(),
                                workers=1, progress=False)
        assert first.interrupted
        assert [b.status for b in first.bags] == ['done', 'interrupted', 'not run']
        assert first.bags[1].frames == 2 and first.bags[1].processed == 1
        assert statuses(tmp_path / 'out') == {'seq1': 'done', 'seq2': 'interrupted',
                                              'seq3': 'not run'}
        monkeypatch.setattr(Tracker, 'track', process)
        second = fleet.run_fleet(jobs, tmp_path / 'out', config=config, options=options(),
                                 workers=1, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert [b.status for b in second.bags] == ['skipped', 'done', 'done']
    assert second.outcome == 'all' and not second.interrupted and second.model_loads == 1
    for name, reference in zip(('seq1', 'seq2', 'seq3'), GOOD):
        assert_same_output(tmp_path / 'out' / name, references / reference)


# A replay killed while it writes (SIGKILL, as the OOM killer or a power loss ends it): its
# output folder holds the storage file and no metadata.yaml or summary.
KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from lightglue_ros.ros.bag_io import OutputBag
from lightglue_ros.ros.replay import output_topics
bag = OutputBag(Path(sys.argv[1]), 'mcap', output_topics(), Path(sys.argv[2]))
bag.end_frame()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_output_of_a_killed_replay_is_replayed_on_resume(bags, references, tmp_path, config):
    """A bag's output left by a killed replay is that bag's unfinished output: the resumed fleet
    replays it (was: 'not a replay output', failed until removed by hand); one left by another
    bag's killed replay is replaced only with --overwrite."""
    import subprocess

    root = tmp_path / 'out'
    jobs = fleet.discover_bags([bags / 'seq1', bags / 'seq2'], root)
    root.mkdir()
    for job, writer_of in zip(jobs, (bags / 'seq1', bags / 'day2' / 'seq3')):
        proc = subprocess.run([sys.executable, '-c', KILLED_WRITER, str(job.output),
                               str(writer_of)], capture_output=True, text=True, timeout=120,
                              env={**os.environ, 'PYTHONPATH': os.pathsep.join(sys.path)})
        assert proc.returncode == -9, proc.stderr
        assert not (Path(job.output) / 'metadata.yaml').exists()
    summary = fleet.run_fleet(jobs, root, config=config, options=options(), workers=1,
                              progress=False)
    assert [b.status for b in summary.bags] == ['done', 'failed']
    assert 'holds the replay of another bag' in summary.bags[1].reason
    assert str((bags / 'day2' / 'seq3').resolve()) in summary.bags[1].reason
    assert_same_output(root / 'seq1', references / 'seq1')
    summary = fleet.run_fleet(jobs[1:], root, config=config, options=options(), workers=1,
                              overwrite=True, progress=False)
    assert summary.bags[0].status == 'done'
    assert_same_output(root / 'seq2', references / 'seq2')


def test_foreign_folder_at_an_output_is_never_replaced(bags, references, tmp_path, config):
    """A folder of one's own is left alone even with --overwrite; another bag's replay output
    under the same name is replaced only with --overwrite."""
    import shutil

    root = tmp_path / 'out'
    (root / 'seq1').mkdir(parents=True)
    (root / 'seq1' / 'notes.txt').write_text('mine')
    shutil.copytree(references / 'day2__seq3', root / 'seq2')  # a replay of another bag
    jobs = fleet.discover_bags([bags / 'seq1', bags / 'seq2', bags / 'garbage.mcap'], root)
    summary = fleet.run_fleet(jobs, root, config=config, options=options(), workers=1,
                              progress=False)
    assert [b.status for b in summary.bags] == ['failed', 'failed', 'failed']
    assert 'is not a replay output' in summary.bags[0].reason
    assert 'holds the replay of another bag' in summary.bags[1].reason
    assert summary.outcome == 'none' and summary.model_loads == 1
    assert (root / 'seq1' / 'notes.txt').read_text() == 'mine'
    assert (root / 'seq2' / 'day2__seq3.mcap').exists()
    summary = fleet.run_fleet(jobs[:1], root, config=config, options=options(), workers=1,
                              overwrite=True, progress=False)
    assert summary.bags[0].status == 'failed' and summary.model_loads == 0
    assert (root / 'seq1' / 'notes.txt').read_text() == 'mine'


@pytest.fixture(scope='module')
def ray_cluster() -> Any:
    """Ray's local cluster of two CPUs for the Ray tests (run_fleet uses an initialised Ray as
    it is). Its processes inherit PYTHONPATH: tests/ on it, for fleet_helpers."""
    ray = pytest.importorskip('ray', reason="Ray is in the test extra (pip install "
                                            "'lightglue_ros[fleet]')")
    previous = os.environ.get('PYTHONPATH')
    os.environ['PYTHONPATH'] = os.pathsep.join([str(Path(__file__).parent), *sys.path])
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        if previous is None:
            del os.environ['PYTHONPATH']
        else:
            os.environ['PYTHONPATH'] = previous
    yield ray
    ray.shutdown()


def test_ray_fleet_equals_single_replays(ray_cluster, bags, references, tmp_path, config):
    """The same per-bag work as Ray actors on a local cluster of two CPUs, from the command
    line as a user writes it: `--ray bags/` (the folder is the input, not the address)."""
    code = replay_main(['--ray', str(bags), *cli_args(config, output=tmp_path / 'out',
                                                      jobs=None)])
    assert code == EXIT_SOME_FAILED
    summary = fleet_summary(tmp_path / 'out')
    assert summary['mode'] == 'ray' and summary['workers'] == 2 and summary['model_loads'] == 2
    assert statuses(tmp_path / 'out') == {
        'broken': 'failed', 'day2__seq3': 'done', 'garbage': 'failed', 'seq1': 'done',
        'seq2': 'done'}
    for name in GOOD:
        assert_same_output(tmp_path / 'out' / name, references / name)


def test_a_ray_actor_that_dies_fails_only_its_bag(ray_cluster, tmp_path, monkeypatch):
    """As test_a_worker_that_dies_fails_only_its_bag, on Ray: the bag whose actor died fails
    once, a new actor replays the bags left."""
    from fleet_helpers import StubWorker, attempts

    from lightglue_ros.ros import fleet_workers

    monkeypatch.setattr(fleet_workers, 'Worker', StubWorker)  # pickled by name for Ray
    names = ('1_ok', '2_kill', '3_ok', '4_exit', '5_ok', '6_ok')
    write_tiny_bags(tmp_path / 'bags', names)
    jobs = fleet.discover_bags([tmp_path / 'bags'], tmp_path / 'out')
    summary = fleet.run_fleet(jobs, tmp_path / 'out', config=UNLOADED, options=options(),
                              ray_address='', progress=False)
    assert {b.name: b.status for b in summary.bags} == {
        name: 'failed' if name in ('2_kill', '4_exit') else 'done' for name in names}
    assert all(b.reason.startswith('the Ray worker failed: ') for b in summary.bags
               if b.status == 'failed')
    tried = attempts(tmp_path / 'out')
    assert sorted(name for name, _ in tried) == sorted(names)  # each bag tried once
    assert len({pid for _, pid in tried}) >= 3  # a new actor after the first death


def test_a_worker_that_dies_fails_only_its_bag(tmp_path, capsys, monkeypatch):
    """Two pool workers (the stub tracker for the networks); one bag kills the process that
    replays it with SIGKILL (the out-of-memory killer's signal), another ends it with exit code
    3. Each of the two fails alone with the reason and is tried once; a new process takes the
    dead one's place and every other bag is replayed (exit 3: some failed)."""
    from fleet_helpers import StubWorker, attempts

    from lightglue_ros.ros import fleet_workers

    monkeypatch.setattr(fleet_workers, 'Worker', StubWorker)  # pickled into the pool by name
    names = ('1_ok', '2_kill', '3_ok', '4_exit', '5_ok', '6_ok', '7_ok')
    write_tiny_bags(tmp_path / 'bags', names)
    output = tmp_path / 'out'
    assert replay_main(cli_args(UNLOADED, tmp_path / 'bags', output=output)) == EXIT_SOME_FAILED
    err = capsys.readouterr().err
    bags = {b['name']: b for b in fleet_summary(output)['bags']}
    assert {name: b['status'] for name, b in bags.items()} == {
        name: 'failed' if name in ('2_kill', '4_exit') else 'done' for name in names}
    assert bags['2_kill']['reason'].startswith('the worker process ')
    assert 'died while replaying this bag (killed by SIGKILL' in bags['2_kill']['reason']
    assert 'died while replaying this bag (exit code 3)' in bags['4_exit']['reason']
    failed = [line for line in err.splitlines() if line.startswith('replay: failed:')]
    assert len(failed) == 2 and 'Traceback' not in err
    for name in names:
        if bags[name]['status'] == 'done':
            summary = json.loads((output / name / 'replay_summary.json').read_text())
            assert summary['complete'] and summary['processed'] == 2
    tried = attempts(output)
    assert sorted(name for name, _ in tried) == sorted(names)  # each bag tried once
    assert len({pid for _, pid in tried}) >= 3  # a new process after the first death


def write_tiny_bags(folder: Path, names: tuple[str, ...]) -> None:
    """A bag of two tiny random images for each name (for the stub worker's tests)."""
    rng = np.random.default_rng(2)
    camera = CameraModel.from_intrinsics(50.0, 50.0, 32.0, 24.0, 64, 48)
    for i, name in enumerate(names):
        write_bag(folder / name,
                  [(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (10 * i + j + 1) * 10**8)
                   for j in range(2)], camera)


def test_ctrl_c_stops_the_pool_and_the_next_run_resumes(tmp_path, capsys, monkeypatch):
    """Ctrl-C (a SIGINT to the fleet's process as the third bag starts) with two pool workers:
    the bags in flight end (done, interrupted with their output closed, or not started), no
    later bag starts, exit 130; the same command again replays the rest (exit 0)."""
    from fleet_helpers import StubWorker, attempts

    from lightglue_ros.ros import fleet_workers

    monkeypatch.setattr(fleet_workers, 'Worker', StubWorker)
    names = ('1_ok', '2_ok', '3_sigint', '4_ok', '5_ok', '6_ok', '7_ok')
    write_tiny_bags(tmp_path / 'bags', names)
    output = tmp_path / 'out'
    args = cli_args(UNLOADED, tmp_path / 'bags', output=output)
    assert replay_main(args) == EXIT_INTERRUPTED
    first = statuses(output)
    assert fleet_summary(output)['interrupted']
    assert set(first.values()) <= {'done', 'interrupted', 'not run'}
    started = [name for name, _ in attempts(output)]  # bags handed to a worker: in order
    assert sorted(started) == list(names[:len(started)]) and len(started) < len(names)
    assert all(first[name] == 'not run' for name in names[len(started):])
    # The stop reaches its worker before the replay starts (not run), during it (interrupted)
    # or, between the two, after the bag was done.
    assert first['3_sigint'] in ('done', 'interrupted', 'not run')
    capsys.readouterr()
    assert replay_main(args) == EXIT_OK
    second = statuses(output)
    assert second == {name: 'skipped' if first[name] == 'done' else 'done' for name in names}


def test_a_bag_done_before_a_stop_cut_off_its_result_is_reported_done(tmp_path, monkeypatch):
    """A stop that ends the workers after a bag's replay finished but before its result came
    back: the bag is reported done from its own summary (was: 'not run', then 'skipped' by the
    next run), its frames counted once."""
    from fleet_helpers import StubWorker

    from lightglue_ros.ros import fleet_workers

    monkeypatch.setattr(fleet_workers, 'Worker', StubWorker)
    write_tiny_bags(tmp_path / 'bags', ('1_ok', '2_ok'))
    jobs = fleet.discover_bags([tmp_path / 'bags'], tmp_path / 'out')

    def finish_then_stop(todo: Any, make_worker: Any, done: Any) -> None:
        job, overwrite = todo[0]
        make_worker().run(job, overwrite)  # the replay finishes and writes its summary ...
        raise KeyboardInterrupt  # ... and the stop comes before its result is handed back

    monkeypatch.setattr(fleet_workers, 'run_here', finish_then_stop)
    summary = fleet.run_fleet(jobs, tmp_path / 'out', config=UNLOADED, options=options(),
                              workers=1, progress=False)
    assert [b.status for b in summary.bags] == ['done', 'not run']
    assert summary.interrupted and summary.bags[0].processed > 0
    assert summary.frames_processed == summary.bags[0].processed


def test_resume_with_allow_partial(tmp_path, monkeypatch):
    """A damaged bag replayed with --allow-partial is complete for that input: the next run
    with --allow-partial skips it and keeps its lost count. A run without --allow-partial
    does not take such an output for a success (a replay without it fails that bag): the bag
    fails with the reason, its output left as it is. Three bags: one cut at 70 % (images
    lost), one whose MCAP summary section is cut off (every image whole, the index gone: the
    summary says complete, and damage), one intact."""
    import test_bag_recovery as recovery

    from lightglue_ros import tracker as tracker_module

    monkeypatch.setattr(tracker_module, 'Tracker', lambda config: recovery.StubTracker())
    bags = tmp_path / 'bags'
    for name in ('cut', 'index_lost', 'intact'):
        (bags / name).mkdir(parents=True)
        recovery.write_bag(bags / name, 'mcap', 4)
    (data,) = (bags / 'cut' / 'in').glob('*.mcap')
    recovery.cut(data, 0.7)
    (data,) = (bags / 'index_lost' / 'in').glob('*.mcap')
    footer = data.read_bytes()[-37:]  # footer record (opcode, length, 20 bytes) and magic
    os.truncate(data, int.from_bytes(footer[9:17], 'little'))  # where the summary starts
    jobs = fleet.discover_bags([bags], tmp_path / 'out')
    names = [job.name for job in jobs]
    assert names == ['cut__in', 'index_lost__in', 'intact__in']

    def run(allow_partial: bool) -> fleet.FleetSummary:
        return fleet.run_fleet(jobs, tmp_path / 'out', config=UNLOADED,
                               options={**options(), 'allow_partial': allow_partial,
                                        'plots_dir': False}, workers=1, progress=False)

    def mtimes() -> list[int]:
        return [(Path(job.output) / 'replay_summary.json').stat().st_mtime_ns for job in jobs]

    first = run(True)
    assert [b.status for b in first.bags] == ['done'] * 3
    lost = first.bags[0].missing_frames
    assert lost >= 1 and first.bags[0].frames + lost == 4
    assert [b.missing_frames for b in first.bags[1:]] == [0, 0]
    before = mtimes()

    second = run(True)  # nothing more can be read from the damaged bags: nothing is replayed
    assert [b.status for b in second.bags] == ['skipped'] * 3 and second.outcome == 'all'
    assert second.bags[0].missing_frames == lost and second.frames_processed == 0
    assert f'damaged bag: {lost} images lost' in second.bags[0].reason
    assert f'| cut__in | skipped | {4 - lost} | 0 | {lost} |' in (
        tmp_path / 'out' / fleet.FLEET_MD_NAME).read_text()

    third = run(False)
    assert [b.status for b in third.bags] == ['failed', 'failed', 'skipped']
    assert third.outcome == 'some' and third.frames_processed == 0
    assert third.bags[0].reason.startswith(f'damaged bag, replayed before with --allow-partial '
                                           f'({lost} images lost); without --allow-partial')
    assert 'no image lost' in third.bags[1].reason
    assert mtimes() == before


def test_exit_codes_are_distinct():
    assert len({EXIT_OK, EXIT_ERROR, EXIT_SOME_FAILED, EXIT_ALL_FAILED, EXIT_INTERRUPTED}) == 5

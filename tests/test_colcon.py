"""The package as a ROS user builds and tests it: the real ``colcon build`` (copy and
``--symlink-install``) and ``colcon test`` from PyPI colcon, and package.xml against the code.

The conftest fixture ``colcon_build`` builds once per variant and session; tests/test_launch.py
launches from the same ``--symlink-install`` build.
"""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import PACKAGE, PROJECT_ROOT, clean_env, run_colcon

EXECUTABLES = ('matcher_node', 'replay', 'lightglue-ros')
# Python (non-ROS) imports of lightglue_ros/ -> the rosdep key package.xml declares them by.
ROSDEP_KEYS = {'numpy': 'python3-numpy', 'cv2': 'python3-opencv', 'yaml': 'python3-yaml',
               'tqdm': 'python3-tqdm', 'matplotlib': 'python3-matplotlib'}
# Imports without a rosdep key (rosdistro rosdep/python.yaml has none for them; an unresolvable
# key breaks `rosdep install`): pip installs them, so setup.py must require them.
PIP_ONLY = {'torch': 'torch', 'kornia': 'kornia', 'rosbags': 'rosbags'}
# Imported only behind a fallback or by optional code paths; not declared, on purpose:
OPTIONAL = {
    'poselib': 'pose estimation falls back to OpenCV without it (the pose extra)',
    'safetensors': 'only for .safetensors weight files; released weights are .pth',
    # rosbags' own dependencies (installed with it); imported only to recover the compressed
    # chunks of a damaged bag (ros/bag_recovery.py)
    'backports': 'backports.zstd, for zstd MCAP chunks of a damaged bag (comes with rosbags)',
    'lz4': 'lz4 MCAP / ROS 1 chunks of a damaged bag (comes with rosbags)',
    'ray': "only for a fleet replay on Ray (--ray; the 'fleet' extra)",
}


# ------------------------------------------------------------------------------------------------
# colcon build
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('symlink', [False, True], ids=['copy', 'symlink_install'])
def test_colcon_build_lays_out_an_ament_python_package(
        colcon_build: Callable[..., SimpleNamespace], symlink: bool) -> None:
    build = colcon_build(symlink=symlink)
    prefix = build.prefix
    for name in EXECUTABLES:
        executable = prefix / 'lib' / PACKAGE / name
        assert executable.is_file() and os.access(executable, os.X_OK), executable
    marker = prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / PACKAGE
    assert marker.is_file(), 'no ament index marker: ament cannot find the package'
    share = prefix / 'share' / PACKAGE
    patterns = ('launch/*.launch.py', 'config/*.yaml', 'config/*.xml')  # setup.py's data_files
    shipped = ['package.xml', *(str(path.relative_to(PROJECT_ROOT)) for pattern in patterns
                                for path in PROJECT_ROOT.glob(pattern))]
    assert 'launch/matcher.launch.py' in shipped and 'config/matcher.yaml' in shipped
    for relative in shipped:
        installed = share / relative
        assert installed.is_file(), f'{relative} is not installed under {share}'
        if symlink:  # edits in the source tree take effect without a rebuild
            assert installed.resolve() == (PROJECT_ROOT / relative).resolve(), relative
        else:
            assert not installed.is_symlink(), relative
            assert installed.read_bytes() == (PROJECT_ROOT / relative).read_bytes(), relative
    assert build.env['AMENT_PREFIX_PATH'].split(os.pathsep)[0] == str(prefix)
    if not symlink:  # development tooling (reference models, runs pip) stays out
        assert not list(prefix.rglob('devtools')), 'devtools/ was installed'
        assert list(prefix.rglob('lightglue_ros/models/lightglue.py'))


@pytest.mark.parametrize('symlink', [False, True], ids=['copy', 'symlink_install'])
def test_the_sourced_workspace_finds_the_installed_package(
        colcon_build: Callable[..., SimpleNamespace], symlink: bool) -> None:
    build = colcon_build(symlink=symlink)
    probe = ('import lightglue_ros\n'
             'from ament_index_python.packages import get_package_share_directory\n'
             f'print(get_package_share_directory({PACKAGE!r}))\n'
             'print(lightglue_ros.__file__)\n')
    done = subprocess.run([sys.executable, '-c', probe], env=build.env, capture_output=True,
                          text=True, timeout=120, cwd=build.workspace)
    assert done.returncode == 0, done.stderr
    share, module = done.stdout.splitlines()
    assert Path(share) == build.prefix / 'share' / PACKAGE
    # The workspace's copy is imported, not the one pip installed into the environment.
    where = build.prefix if not symlink else build.workspace / 'build' / PACKAGE
    assert Path(module).is_relative_to(where), module
    version = subprocess.run([str(build.prefix / 'lib' / PACKAGE / 'lightglue-ros'),
                              '--version'], env=build.env, capture_output=True, text=True,
                             timeout=120)
    assert version.returncode == 0 and version.stdout.startswith('lightglue-ros '), \
        version.stdout + version.stderr


# ------------------------------------------------------------------------------------------------
# colcon test from a workspace elsewhere
# ------------------------------------------------------------------------------------------------

SHARED_TEST = 'tests/test_camera.py::test_from_yaml_freiburg'  # reads ../shared data
SHARED_NAME = SHARED_TEST.rsplit(':', 1)[1]
TRANSFORMERS_TESTS = ('tests/test_lightglue.py::test_equals_transformers_at_full_depth',
                      'tests/test_superpoint.py')


def _ignored() -> list[str]:
    """The .gitignore patterns (and .git): what a clone would not carry into a workspace."""
    lines = (PROJECT_ROOT / '.gitignore').read_text(encoding='utf-8').splitlines()
    return ['.git', *(line.strip().strip('/') for line in lines
                      if line.strip() and not line.startswith('#'))]


def _test_results(build_dir: Path) -> dict[str, tuple[str, str]]:
    """{test id: (outcome, message)} from the junit file colcon test writes."""
    results = {}
    for case in ET.parse(build_dir / 'pytest.xml').getroot().iter('testcase'):
        outcome, message = 'passed', ''
        for kind in ('failure', 'error', 'skipped'):
            element = case.find(kind)
            if element is not None:
                outcome, message = kind, f"{element.get('message', '')} {element.text or ''}"
        results[f"{case.get('classname')}.{case.get('name')}"] = (outcome, message)
    return results


def test_colcon_test_skips_missing_optional_dependencies_and_finds_the_shared_data(
        tmp_path: Path, shared_dir: Path) -> None:
    pytest.importorskip('colcon_core', reason='colcon is in the test extra (make setup-test)')
    # A copy, not a symlink: the package sits in a workspace with no ../shared beside it.
    source = tmp_path / 'ws' / 'src' / PACKAGE
    shutil.copytree(PROJECT_ROOT, source, ignore=shutil.ignore_patterns(*_ignored()))
    workspace = source.parents[1]
    built = run_colcon('build', '--base-paths', 'src', cwd=workspace, env=clean_env())
    assert built.returncode == 0, built.stdout + built.stderr
    # transformers made absent: its import fails as for a package that is not installed.
    blocker = tmp_path / 'no_transformers' / 'transformers'
    blocker.mkdir(parents=True)
    (blocker / '__init__.py').write_text(
        "raise ModuleNotFoundError(\"No module named 'transformers'\", name='transformers')\n")
    env = {**clean_env(), 'PYTHONPATH': os.pathsep.join(
        [str(blocker.parent), *filter(None, [os.environ.get('PYTHONPATH')])])}
    selection = ['--pytest-args', SHARED_TEST, *TRANSFORMERS_TESTS]

    def colcon_test(extra_env: dict[str, str]) -> dict[str, tuple[str, str]]:
        done = run_colcon('test', '--base-paths', 'src', '--return-code-on-test-failure',
                       '--event-handlers', 'console_direct+', *selection, cwd=workspace,
                       env={**env, **extra_env})
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
        return _test_results(workspace / 'build' / PACKAGE)

    results = colcon_test({'LIGHTGLUE_ROS_SHARED': str(shared_dir)})
    shared = [v for k, v in results.items() if k.endswith(SHARED_NAME)]
    assert [outcome for outcome, _ in shared] == ['passed'], results
    optional = {k: v for k, v in results.items() if 'test_lightglue' in k or
                'test_superpoint' in k}
    assert optional, results
    for test, (outcome, message) in optional.items():
        assert outcome == 'skipped' and 'transformers' in message, (test, outcome, message)

    # Without the variable the default ../shared is not beside the workspace: a clear skip.
    env.pop('LIGHTGLUE_ROS_SHARED', None)
    results = colcon_test({})
    (outcome, message), = [v for k, v in results.items()
                           if k.endswith(SHARED_NAME)]
    assert outcome == 'skipped' and 'LIGHTGLUE_ROS_SHARED' in message, (outcome, message)


# ------------------------------------------------------------------------------------------------
# package.xml
# ------------------------------------------------------------------------------------------------

def _declared() -> dict[str, set[str]]:
    root = ET.parse(PROJECT_ROOT / 'package.xml').getroot()
    out: dict[str, set[str]] = {}
    for element in root:
        if element.tag.endswith('depend'):
            out.setdefault(element.tag, set()).add(element.text.strip())
    return out


def _imported_top_level(folder: Path) -> set[str]:
    names = set()
    for path in folder.rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split('.')[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split('.')[0])
    return names


def test_package_xml_declares_every_import_of_the_package() -> None:
    declared = _declared()
    run_time = declared.get('exec_depend', set()) | declared.get('depend', set())
    imported = _imported_top_level(PROJECT_ROOT / PACKAGE) - set(sys.stdlib_module_names)
    imported -= {PACKAGE, '__future__'}
    assert {'rclpy', 'rcl_interfaces', 'builtin_interfaces', 'sensor_msgs'} <= imported
    missing = []
    setup_py = (PROJECT_ROOT / 'setup.py').read_text(encoding='utf-8')
    for name in sorted(imported):
        if name in OPTIONAL:
            continue
        if name in PIP_ONLY:
            assert re.search(rf"'{PIP_ONLY[name]}[<>=!~\[']", setup_py), \
                f'{name} has no rosdep key and is not required by setup.py'
            continue
        key = ROSDEP_KEYS.get(name, name)  # anything else is a ROS package, by its own name
        if key not in run_time:
            missing.append(f'{name} (as {key})')
    assert not missing, f'package.xml lacks exec_depend for: {", ".join(missing)}'
    # Nothing declared that the code does not use (ROS packages and rosdep keys alike).
    used = {ROSDEP_KEYS.get(n, n) for n in imported} | {'launch', 'launch_ros', 'ros2launch'}
    assert run_time <= used, f'declared but not imported: {sorted(run_time - used)}'


def test_package_xml_test_dependencies_are_the_ones_the_tests_use() -> None:
    declared = _declared().get('test_depend', set())
    assert 'python3-pytest' in declared
    # Test scripts run in subprocesses are strings: look for the import statements as text.
    text = '\n'.join(p.read_text(encoding='utf-8') for p in (PROJECT_ROOT / 'tests').glob('*.py'))
    modules = {key: name for name, key in {**ROSDEP_KEYS, 'pytest': 'python3-pytest'}.items()}
    for key in declared:
        module = modules.get(key, key)
        assert re.search(rf'^\s*(from|import) {module}\b', text, re.MULTILINE), \
            f'test_depend {key} is imported by no test'

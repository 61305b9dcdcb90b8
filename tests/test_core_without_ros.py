"""The ROS-free core must import on a machine without ROS (no rclpy, no message packages)."""
from __future__ import annotations

import subprocess
import sys

ROS_MODULES = ('rclpy', 'sensor_msgs', 'geometry_msgs', 'nav_msgs', 'std_msgs',
               'diagnostic_msgs', 'builtin_interfaces', 'rcl_interfaces')
CORE = ('lightglue_ros.models', 'lightglue_ros.tracker', 'lightglue_ros.geometry',
        'lightglue_ros.camera', 'lightglue_ros.image', 'lightglue_ros.weights',
        'lightglue_ros.viz', 'lightglue_ros.synthetic', 'lightglue_ros.pipeline',
        'lightglue_ros.realtime', 'lightglue_ros.cli.report')


def test_core_imports_with_ros_modules_blocked():
    code = ('import sys\n'
            f'for name in {ROS_MODULES!r}:\n'
            '    sys.modules[name] = None  # any import of it raises ImportError\n'
            f'for name in {CORE!r}:\n'
            '    __import__(name)\n'
            'loaded = [m for m in sys.modules if m.split(".")[0] in '
            f'{ROS_MODULES!r} and sys.modules[m] is not None]\n'
            'assert not loaded, loaded\n'
            'print("ok")\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'ok'


def test_blocking_works():
    """The check above can fail: importing a ROS adapter with ROS blocked raises."""
    code = ('import sys\n'
            f'for name in {ROS_MODULES!r}:\n'
            '    sys.modules[name] = None\n'
            'import lightglue_ros.ros.messages\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert 'ModuleNotFoundError' in result.stderr or 'ImportError' in result.stderr

"""What the lightglue-ros commands end with: the program name, the exit codes, ``DemoError``.

Usage and input errors are ``lightglue_ros.errors.LightGlueRosError`` (exit code 2).
"""
from __future__ import annotations

from lightglue_ros import startup

PROG = 'lightglue-ros'
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = startup.EXIT_INTERRUPTED  # 130, for SIGTERM as well


class DemoError(Exception):
    """The demo could not finish (no result in time, ROS graph problems): exit code 1."""

"""The ``matcher_node`` executable (``ros2 run lightglue_ros matcher_node``, see docs/node.md).

Deliberately light: ``main`` installs its SIGINT/SIGTERM handlers first
(``lightglue_ros.startup.interrupt_on_signals``, as the other commands) and only then imports
rclpy, torch and the models (``lightglue_ros.ros.matcher``), which takes seconds, so that a
signal during start-up ends the process cleanly (exit code 0, no traceback) instead of a
KeyboardInterrupt traceback or death by SIGTERM. ``MatcherNode`` and the rest of the node's
module are importable from here as before (loaded on first use).
"""
from __future__ import annotations

import importlib.util
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightglue_ros.ros.matcher import MatcherNode

if importlib.util.find_spec('rclpy') is None:  # pragma: no cover - depends on the install
    # As the node module always did without ROS: importorskip and the CLI's checks see it.
    raise ImportError('lightglue_ros.ros.node needs ROS 2 for Python (rclpy): source a ROS 2 '
                      'install or pip install "lightglue_ros[ros]"')

__all__ = ['MatcherNode', 'main']

_LAZY = frozenset({'MatcherNode', 'OUTPUT_TYPES', 'OUTPUT_DEPTH', 'STOP_TIMEOUT_S',
                   'STATIC_DIAGNOSTICS', 'FRAME_DIAGNOSTICS', 'run'})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from lightglue_ros.ros import matcher

        return getattr(matcher, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def main(args: list[str] | None = None) -> int:
    """Entry point: 0 after SIGINT/SIGTERM (also while importing and loading the models), 1
    when the parameters are invalid or the models cannot be built."""
    from lightglue_ros import startup  # standard library only

    try:
        # SIGINT raises KeyboardInterrupt and SIGTERM startup.Terminated (one of those) from
        # here on; rclpy.init, inside run, installs its own handlers, which chain to these.
        # Only the first signal raises: later ones must not cut the shutdown it starts short.
        with startup.interrupt_on_signals(repeat=False, name='matcher_node'):
            from lightglue_ros.ros import matcher

            return matcher.run(args)
    except KeyboardInterrupt:
        return 0  # SIGINT / SIGTERM before rclpy took over (imports, model loading)


if __name__ == '__main__':
    sys.exit(main())

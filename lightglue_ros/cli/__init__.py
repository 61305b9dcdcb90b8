"""The ``lightglue-ros`` command: match two images, run the ROS 2 demo, manage weights, replay.

Sub-commands:

``match IMAGE0 IMAGE1`` (``match.py``)
    Extract and match two images; print the counts (and the relative pose when intrinsics are
    given) or one JSON object (``--json``); ``--out`` writes a side-by-side picture.
``demo`` (``demo.py``)
    Run the real matcher node (``lightglue_ros.ros.node.MatcherNode``) over ROS 2 inside this
    process (``demo_node.py``): a camera node publishes frames at ``--rate`` to the node in
    latest mode (or lock-step in lossless mode, ``--lossless``), a subscriber node reads the
    node's outputs. Default input: the built-in synthetic room (``lightglue_ros.synthetic``)
    with ground-truth poses; ``--images``, ``--video`` (``demo_inputs.py``) or ``--bag``
    (``demo_bag.py``) run it on your data (a bag goes through the replay library instead of
    the node). Prints one line per processed frame, the frames superseded, the rate and
    latency achieved beside the real-time target, and writes a summary JSON and pictures
    under ``--output`` (``report.py``).
``weights`` / ``replay``
    The commands of ``weights.py`` (for ``lightglue_ros.weights``) and ``replay.py`` (registered
    only when importable, so that a broken optional module never breaks ``match``).

``options.py`` holds the model and calibration options that ``match`` and ``demo`` share.
Building the parser imports no torch, rclpy, numpy or OpenCV (``--help`` answers at once;
tests/test_cli_help.py): a command imports what it needs when it runs; the names and
defaults the help shows come from ``lightglue_ros.defaults``, which imports nothing heavy.

Exit codes (``errors.py``): 0 success, 1 runtime failure (e.g. the node gave no result in
time), 2 usage or input error (bad path, missing weights, invalid calibration: one ``error:``
line on stderr), 130 interrupted (SIGINT or SIGTERM, also while starting). ``replay`` keeps its
own codes (docs/replay.md): 0, 1 error, 130 interrupted; a fleet of bags also 3 (some bags
failed) and 4 (every bag failed).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

# First, before numpy and torch: a clean exit on Ctrl-C / SIGTERM during the imports below
# (the console scripts import this package).
from lightglue_ros import startup

from lightglue_ros import __version__
from lightglue_ros.cli.demo import DEFAULT_DEMO_OUTPUT, add_demo_parser
from lightglue_ros.cli.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, PROG, DemoError
from lightglue_ros.cli.match import add_match_parser
from lightglue_ros.cli.options import apply_profile
from lightglue_ros.errors import LightGlueRosError

__all__ = ['PROG', 'main', 'script', 'replay_main', 'replay_script', 'build_parser',
           'apply_profile', 'DEFAULT_DEMO_OUTPUT', 'DEMO_SUMMARY_NAME']


def __getattr__(name: str) -> Any:
    # DEMO_SUMMARY_NAME lives in report.py, which imports numpy and the tracker: only on use.
    if name == 'DEMO_SUMMARY_NAME':
        from lightglue_ros.cli.report import DEMO_SUMMARY_NAME

        return DEMO_SUMMARY_NAME
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lightglue-ros`` console script; returns the exit code."""
    args = argparse.Namespace()
    try:
        with startup.interrupt_on_signals():  # SIGTERM unwinds like Ctrl-C
            parser = build_parser()
            args = parser.parse_args(list(argv) if argv is not None else None)
            if hasattr(args, 'profile'):
                apply_profile(args)
            return int(args.handler(args))
    except LightGlueRosError as err:
        _error(args, err)
        return EXIT_USAGE
    except DemoError as err:
        _error(args, err)
        return EXIT_FAILURE
    except KeyboardInterrupt as err:
        print(f'{PROG}: interrupted ({startup.signal_name(err)})', file=sys.stderr)
        return EXIT_INTERRUPTED


def replay_main(argv: Sequence[str] | None = None) -> int:
    """``lightglue_ros.cli.replay.replay_main``: the ``replay`` command, returning its exit
    code."""
    # Imported when run: replay needs ROS 2, an optional extra (see _add_optional_parser).
    from lightglue_ros.cli.replay import replay_main as run

    return run(argv)


def script() -> NoReturn:
    """The ``lightglue-ros`` console script: ``main`` in its own process."""
    startup.exit_process(main())


def replay_script() -> NoReturn:
    """The ``replay`` console script: ``replay_main`` in its own process."""
    startup.exit_process(replay_main())


def _error(args: argparse.Namespace, err: BaseException) -> None:
    command = getattr(args, 'command', None)
    print(f'{PROG}{" " + command if command else ""}: error: {err}', file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``lightglue-ros`` (every sub-command sets ``handler``)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description='Learned feature matching for ROS 2: SuperPoint, DISK or ALIKED '
                               '+ LightGlue, XFeat + LighterGlue. Start with: lightglue-ros '
                               'demo')
    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    add_match_parser(commands)
    add_demo_parser(commands)
    _add_optional_parser(commands, 'weights', 'lightglue_ros.cli.weights', 'add_weights_parser',
                         'list, fetch or verify pretrained weights')
    _add_optional_parser(commands, 'replay', 'lightglue_ros.cli.replay', 'add_replay_parser',
                         'run the tracker over a bag and record the outputs')
    return parser


def _add_optional_parser(commands: Any, name: str, module: str, function: str,
                         help_text: str) -> None:
    """Register a sub-command that lives in another module; if that module cannot be
    imported, register a stand-in that reports why (the other commands keep working)."""
    try:
        getattr(importlib.import_module(module), function)(commands)
    except Exception as err:  # noqa: BLE001 - any import-time failure of that module
        reason = f'{type(err).__name__}: {err}'
        stub = commands.add_parser(name, help=f'{help_text} (unavailable: {reason})',
                                   add_help=False)
        stub.add_argument('rest', nargs=argparse.REMAINDER)

        def unavailable(args: argparse.Namespace) -> int:
            print(f'{PROG} {name}: unavailable: cannot import {module}: {reason}',
                  file=sys.stderr)
            return EXIT_FAILURE

        stub.set_defaults(handler=unavailable)

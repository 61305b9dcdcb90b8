"""The ``lightglue-ros`` parser: built without torch, rclpy, numpy or OpenCV (so that ``--help``
answers at once), every option explained, and the values it shows equal to their owners'."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightglue_ros import cli

PROJECT_ROOT = Path(__file__).resolve().parents[1]
HEAVY = ('torch', 'rclpy', 'numpy', 'cv2')

# Builds every parser, asks for each help text as `--help` would, and names the heavy modules
# that got imported on the way.
BUILD_PARSERS = f"""
import argparse, json, sys
from lightglue_ros.cli import build_parser
from lightglue_ros.cli.replay import configure_replay_parser
parser = build_parser()
commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
texts = [parser.format_help()] + [p.format_help() for p in commands.choices.values()]
texts.append(configure_replay_parser(argparse.ArgumentParser(prog='replay')).format_help())
print(json.dumps({{'heavy': [m for m in {HEAVY!r} if m in sys.modules],
                   'commands': sorted(commands.choices)}}))
"""


def test_parser_builds_without_torch_rclpy_numpy_or_opencv():
    done = subprocess.run([sys.executable, '-c', BUILD_PARSERS], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report['heavy'] == []
    # The real commands, not the stand-ins that say a module could not be imported.
    assert report['commands'] == ['demo', 'match', 'replay', 'weights']


def _sub_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f'{name} {k}': v for k, v in _sub_parsers(sub).items()})
    return found


def test_every_option_of_every_command_has_help():
    parsers = _sub_parsers(cli.build_parser())
    assert {'match', 'demo', 'replay', 'weights', 'weights fetch'} <= set(parsers)
    unexplained = [f'{name} {"/".join(action.option_strings) or action.dest}'
                   for name, parser in parsers.items() for action in parser._actions
                   if not action.help and not isinstance(action, argparse._SubParsersAction)]
    assert not unexplained


def test_help_names_every_pipeline(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(['--help'])
    assert info.value.code == 0
    text = ' '.join(capsys.readouterr().out.split())
    for name in ('SuperPoint', 'DISK', 'ALIKED', 'XFeat + LighterGlue'):
        assert name in text


def test_weights_command_runs_as_a_module(tmp_path):
    done = subprocess.run([sys.executable, '-m', 'lightglue_ros.cli.weights', 'list'],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120,
                          env={**os.environ,
                               'LIGHTGLUE_ROS_WEIGHTS_DIR': str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert f'cache dir: {tmp_path}' in done.stdout

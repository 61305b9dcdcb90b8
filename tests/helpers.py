"""Plain helpers shared by several test modules (no ROS imports here: see ros_helpers.py).

Fixtures live in conftest.py; this module holds the functions and constants that tests call
directly. Test modules never import from each other.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TypeVar

import numpy as np
import torch

from lightglue_ros.camera import CameraModel

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = 'lightglue_ros'
SMALL_SIZE = (320, 240)  # in-process node tests run on half-size frames with few keypoints
SCANNET_SIZE = (640, 480)  # the ScanNet pairs are matched at this size
# Match scores of the static LightGlue vs the dynamic one: rounding only (masked instead of
# removed points, kernels over another length); measured <= 1.5e-4 adaptive, 0 at full depth
# (tests/test_lightglue_static.py), the bound the kornia parity uses.
STATIC_SCORE_TOL = 1e-3

T = TypeVar('T')


def wait_until(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """Poll ``predicate`` until it returns something true and return that; AssertionError
    naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout:.0f} s waiting for {what}')
        time.sleep(0.02)


def stamp_ns(path: Path) -> int:
    """The capture time of a freiburg frame, from its file name ('<seconds>.<fraction>.png'),
    in integer nanoseconds (no float rounding)."""
    seconds, fraction = path.stem.split('.')
    return int(seconds) * 1_000_000_000 + int(fraction.ljust(9, '0')[:9])


# -- ScanNet pairs --------------------------------------------------------------------------------

def read_scannet_pairs(folder: Path) -> list[tuple[Path, Path, np.ndarray, np.ndarray,
                                                   np.ndarray]]:
    """(image 0, image 1, K0 [3 x 3], K1 [3 x 3], T_0to1 [4 x 4]) of each line of
    pairs_with_gt.txt."""
    pairs = []
    for line in (folder / 'pairs_with_gt.txt').read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        K0 = np.array(fields[4:13], float).reshape(3, 3)
        K1 = np.array(fields[13:22], float).reshape(3, 3)
        T = np.array(fields[22:38], float).reshape(4, 4)
        pairs.append((folder / fields[0], folder / fields[1], K0, K1, T))
    return pairs


def scannet_camera(K: np.ndarray, original: tuple[int, int]) -> CameraModel:
    """The camera of a ScanNet image of ``original`` (width, height) resized to SCANNET_SIZE."""
    camera = CameraModel.from_intrinsics(K[0, 0], K[1, 1], K[0, 2], K[1, 2], *original)
    return camera.scaled(SCANNET_SIZE[0] / original[0], SCANNET_SIZE[1] / original[1])


# -- colcon ---------------------------------------------------------------------------------------

def run_colcon(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The real colcon (``colcon_core.command.main``) in this interpreter, logs under cwd/log."""
    command = [sys.executable, '-c', 'import sys; from colcon_core.command import main; '
               'sys.exit(main())', '--log-base', 'log', *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def clean_env() -> dict[str, str]:
    """This environment without pytest's, colcon's and a sourced workspace's variables."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(('PYTEST_', 'COLCON_', 'AMENT_PREFIX_PATH'))}


def build_with_colcon(workspace: Path, *, symlink: bool) -> SimpleNamespace:
    """This package built by ``colcon build`` (``--symlink-install`` if symlink) in the fresh
    folder ``workspace``; the conftest fixture ``colcon_build`` caches it per session.

    Returns SimpleNamespace(workspace, prefix, env, output): prefix is install/lightglue_ros
    (colcon's default isolated layout); env is the environment after sourcing
    install/local_setup.sh, as a colcon user's shell has it (AMENT_PREFIX_PATH, PYTHONPATH).
    """
    (workspace / 'src').mkdir()
    (workspace / 'src' / PACKAGE).symlink_to(PROJECT_ROOT, target_is_directory=True)
    done = run_colcon('build', '--base-paths', 'src', '--event-handlers', 'console_direct+',
                      *(['--symlink-install'] * symlink), cwd=workspace, env=clean_env())
    output = done.stdout + done.stderr
    assert done.returncode == 0, f'colcon build failed ({done.returncode}):\n{output}'
    sourced = subprocess.run(['sh', '-c', '. ./install/local_setup.sh && env -0'],
                             cwd=workspace, env=clean_env(), capture_output=True, check=True,
                             timeout=60)
    env = dict(item.split('=', 1) for item in sourced.stdout.decode().split('\0') if item)
    return SimpleNamespace(workspace=workspace, prefix=workspace / 'install' / PACKAGE,
                           env=env, output=output)


def he_normal_superpoint(**conf) -> torch.nn.Module:
    """SuperPoint with seeded He-normal weights (no released weights offline): a peaked
    heatmap like a trained one's."""
    from lightglue_ros.models.superpoint import SuperPoint

    torch.manual_seed(0)
    model = SuperPoint(**conf)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity='relu')
            torch.nn.init.normal_(module.bias, std=0.1)
    return model

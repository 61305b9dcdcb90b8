"""Replay a fleet of bags: many inputs, one output folder each, locally or on a Ray cluster.

People rarely have one bag: a robot's week, a dataset of sequences, a regression suite to re-run
after every change. ``run_fleet`` replays each bag with ``lightglue_ros.ros.replay.replay_bag``
(the same function a single-bag replay calls, so each bag's output is what a single-bag replay
of it writes) into ``<root>/<name>/``, where ``name`` follows from the input path alone
(``output_name``: predictable, stable across runs, so a second run finds the first's outputs).

Workers load the models once and replay bag after bag (``tracker.reset()`` between bags, inside
replay_bag): one in-process worker (``jobs=1``), a pool of ``jobs`` spawned processes, or Ray
actors (``ray_address``), which also run on a cluster (``lightglue_ros.ros.fleet_workers``). A
bag whose output is already complete (its ``replay_summary.json``: written last, after the bag
is closed, with ``complete`` true, no ``error``, not ``interrupted``; with ``allow_partial`` also
a damaged bag read as far as it can be, ``partial_complete``) is skipped unless ``overwrite``;
a damaged bag's partial replay fails the bag in a run without ``allow_partial``. An unfinished
output of a replay (its bag carries the replay's mark) is replaced; anything else at that path
is left alone and the bag fails. A failing bag is recorded with a one-line reason and the
others go on. ``fleet_summary.json`` and ``fleet_summary.md`` in the
root say what happened, bag by bag (``lightglue_ros.ros.fleet_summary``). See docs/replay.md,
Fleet replay.
"""
from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightglue_ros.errors import BagError, ConfigError
from lightglue_ros.ros import fleet_workers
from lightglue_ros.ros.bag_recovery import STORAGE_SUFFIXES, split_recording
from lightglue_ros.ros.fleet_summary import (DONE, FAILED, FLEET_JSON_NAME, FLEET_MD_NAME,
                                             INTERRUPTED, NOT_RUN, SKIPPED, BagJob, BagResult,
                                             FleetSummary)
from lightglue_ros.ros.fleet_workers import RAY_INSTALL_HINT, default_jobs, import_ray

if TYPE_CHECKING:  # imported where used: deciding whether inputs are a fleet stays light
    from lightglue_ros.replay_summary import ReplaySummary
    from lightglue_ros.tracker import TrackerConfig

__all__ = ['BagJob', 'BagResult', 'FleetSummary', 'FLEET_JSON_NAME', 'FLEET_MD_NAME',
           'LIST_SUFFIXES', 'BAG_SUFFIXES', 'RAY_INSTALL_HINT', 'is_fleet_input',
           'discover_bags', 'output_name', 'default_jobs', 'run_fleet', 'output_state',
           'import_ray', 'DONE', 'SKIPPED', 'FAILED', 'INTERRUPTED', 'NOT_RUN']

logger = logging.getLogger(__name__)

LIST_SUFFIXES = ('.txt', '.list')  # a text file naming one bag per line
BAG_SUFFIXES = ('.mcap', '.db3', '.bag')  # bag files found in a folder of bags
NAME_SEPARATOR = '__'  # joins the folders of a bag found below a folder of bags


# ------------------------------------------------------------------------------------------------
# Inputs and output names.
# ------------------------------------------------------------------------------------------------

def _is_bag_folder(path: Path) -> bool:
    """A rosbag2 folder, or one without metadata.yaml holding exactly one storage file and no
    folder (a recording that crashed, which ``bag_io.resolve_input`` reads as one bag) or the
    files of a split recording (``bag_recovery.split_recording``: named ``<folder>_<N>``); a
    folder of bags holds folders, or several files named otherwise."""
    if (path / 'metadata.yaml').exists():
        return True
    entries = list(path.iterdir())
    return ((not any(p.is_dir() for p in entries)
             and sum(p.suffix in STORAGE_SUFFIXES for p in entries) == 1)
            or split_recording(path) is not None)


def is_fleet_input(inputs: Sequence[str | Path]) -> bool:
    """True for several inputs, a folder of bags, or a list file (``LIST_SUFFIXES``); one bag
    (file or bag folder, or a path that does not exist) keeps the single-bag replay."""
    if len(inputs) != 1:
        return True
    path = Path(inputs[0])
    if path.is_file():
        return path.suffix in LIST_SUFFIXES
    return path.is_dir() and not _is_bag_folder(path)


def output_name(bag: Path, below: Path | None = None) -> str:
    """The output folder name of a bag: its file stem or folder name; for a bag found below a
    folder of bags, its path inside that folder with ``NAME_SEPARATOR`` between the parts (so
    that ``seq01/cam0`` and ``seq02/cam0`` do not collide). Depends on the path only: a later
    run gives the same name and finds the output again."""
    parts = list(bag.relative_to(below).parts) if below is not None else [bag.name]
    parts[-1] = Path(parts[-1]).stem if bag.is_file() else parts[-1]
    return NAME_SEPARATOR.join(parts)


def _bags_below(folder: Path, exclude: Path | None) -> Iterator[Path]:
    """Bags below a folder, in sorted order: bag folders (not entered) and bag files; hidden
    entries and ``exclude`` (the output root) are left out."""
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith('.') or (exclude is not None and entry.resolve() == exclude):
            continue
        if entry.is_dir():
            if _is_bag_folder(entry):
                yield entry
            else:
                yield from _bags_below(entry, exclude)
        elif entry.suffix in BAG_SUFFIXES:
            yield entry


def _read_list(path: Path) -> list[Path]:
    """The bags a list file names: one path a line, relative ones to the list's folder; blank
    lines and ``#`` comments are ignored. A missing entry is an error naming its line."""
    try:
        lines = path.read_text(encoding='utf-8').splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise BagError(f'cannot read the bag list {path}: {getattr(err, "strerror", None) or err}'
                       ) from err
    bags = []
    for number, line in enumerate(lines, 1):
        entry = line.split('#', 1)[0].strip()
        if not entry:
            continue
        bag = Path(entry).expanduser()
        bag = bag if bag.is_absolute() else path.parent / bag
        if not bag.exists():
            raise BagError(f'{path}:{number}: bag {entry} does not exist')
        bags.append(bag)
    if not bags:
        raise BagError(f'the bag list {path} names no bag')
    return bags


def discover_bags(inputs: Sequence[str | Path], root: str | Path) -> list[BagJob]:
    """The fleet of ``inputs`` (bag paths, folders of bags, list files) with their outputs
    under ``root``, before anything runs: an empty fleet, a missing path, two bags with the
    same output name and an output root that is not a folder are one-line errors (BagError);
    a bag named twice is replayed once."""
    root_path = Path(root)
    if root_path.exists() and not root_path.is_dir():
        raise BagError(f'output root {root_path} is not a folder')
    exclude = root_path.resolve()
    if not inputs:
        raise BagError('no input bags given')
    found: list[tuple[Path, str]] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise BagError(f'input {path} does not exist')
        if path.is_file() and path.suffix in LIST_SUFFIXES:
            found += [(bag, output_name(bag)) for bag in _read_list(path)]
        elif path.is_dir() and not _is_bag_folder(path):
            below = [(bag, output_name(bag, path)) for bag in _bags_below(path, exclude)]
            if not below:
                raise BagError(f'no bags found in the folder {path} (rosbag2 folders, '
                               f'{", ".join(BAG_SUFFIXES)} files)')
            found += below
        else:
            found.append((path, output_name(path)))
    jobs: list[BagJob] = []
    seen: dict[Path, str] = {}
    names: dict[str, Path] = {}
    for bag, name in found:
        key = bag.resolve()
        if key in seen:
            logger.warning('%s is named twice; replayed once', bag)
            continue
        if name in names:
            raise BagError(f'two bags would write to the same output {root_path / name}: '
                           f'{names[name]} and {bag}; rename one or use separate runs')
        if key == exclude or exclude in key.parents:
            raise BagError(f'input {bag} lies inside the output root {root_path}')
        seen[key], names[name] = name, bag
        jobs.append(BagJob(len(jobs), str(bag), name, str(root_path / name)))
    return jobs


# ------------------------------------------------------------------------------------------------
# Resume.
# ------------------------------------------------------------------------------------------------

def _max_reached(summary: ReplaySummary, max_frames: int | None) -> bool:
    return max_frames is not None and summary.frames >= max_frames


def output_state(job: BagJob, max_frames: int | None = None, allow_partial: bool = False
                 ) -> tuple[str, ReplaySummary | None]:
    """What lies at a bag's output: ('absent', None); ('complete', summary) when a replay of
    this input finished there (its summary: not interrupted, and complete without error, or
    ``max_frames`` images read, or, with ``allow_partial``, a damaged bag read as far as it
    can be: ``partial_complete``); ('partial', summary) for such a finished replay that needed
    --allow-partial (damaged: ``damage`` or ``missing_frames``) when ``allow_partial`` is not
    given, because a replay without it fails that bag; ('unfinished', summary or None) for a
    replay's output that did not finish; ('other input', summary or None: a killed replay's
    output) for a replay of another bag
    (replaced only with overwrite); or ('foreign', None) for anything else (never replaced)."""
    from lightglue_ros.replay_summary import ReplaySummary
    from lightglue_ros.defaults import SUMMARY_NAME
    from lightglue_ros.ros.bag_io import not_our_output, unfinished_input

    out = Path(job.output)
    if not out.exists() and not out.is_symlink():
        return 'absent', None
    if not_our_output(out) is not None:
        return 'foreign', None
    try:
        summary = ReplaySummary.load(out / SUMMARY_NAME)
    except (OSError, ValueError, TypeError):
        writing = unfinished_input(out)  # a replay killed before it wrote its summary
        if writing is not None and Path(writing).resolve() != Path(job.input).resolve():
            return 'other input', None
        return 'unfinished', None
    if Path(summary.input).resolve() != Path(job.input).resolve():
        return 'other input', summary
    finished = not summary.interrupted and (
        summary.partial_complete
        or (summary.error is None and (summary.complete or _max_reached(summary, max_frames))))
    if not finished:
        return 'unfinished', summary
    if not allow_partial and (summary.damage is not None or summary.missing_frames):
        return 'partial', summary
    return 'complete', summary


def _lost(summary: ReplaySummary) -> str:
    """How much of a damaged bag its replay lost, for a note."""
    if not summary.missing_frames:
        return 'no image lost'
    return (f'{summary.missing_frames} images lost' if summary.expected_frames_known
            else f'{summary.missing_frames} images known lost')


# ------------------------------------------------------------------------------------------------
# Fleet.
# ------------------------------------------------------------------------------------------------

def run_fleet(jobs: Sequence[BagJob], root: str | Path, *, config: TrackerConfig,
              options: dict[str, Any], workers: int | None = None, overwrite: bool = False,
              ray_address: str | None = None, progress: bool = True,
              on_result: Callable[[BagResult], None] | None = None) -> FleetSummary:
    """Replay every bag of ``jobs`` (``discover_bags``) into its output folder.

    config: the tracker settings (each worker builds one Tracker from it, once). options:
    replay_bag keywords other than input, output, tracker, overwrite and progress (image_topic,
    storage, max_frames, ...). workers: parallel workers (default ``default_jobs``); 1 replays
    in this process. ray_address: None for local processes; '' for a local Ray instance
    (``ray.init()``; an already initialised Ray is used as it is), 'auto' or an address to join
    a cluster (every node must see the input and output paths). Complete outputs are skipped
    unless ``overwrite`` (``output_state``; ``options['allow_partial']`` decides about a
    damaged bag's partial replay). Writes fleet_summary.json / .md into ``root`` after every bag;
    ``on_result`` sees each result as it comes. Ctrl-C / SIGTERM: the bags in flight finish
    their frame and close their output (interrupted), no new bag starts; the summary says so.
    """
    from lightglue_ros.ros.bag_io import check_writable, not_our_output, unfinished_input

    root_path = Path(root)
    if root_path.exists() and not root_path.is_dir():
        raise BagError(f'output root {root_path} is not a folder')
    check_writable(root_path / 'x', 'the output root')
    root_path.mkdir(parents=True, exist_ok=True)
    if workers is not None and workers < 1:
        raise ConfigError(f'workers must be >= 1, got {workers}')
    max_frames = options.get('max_frames')
    results = {job.index: BagResult.of(job) for job in jobs}
    todo: list[tuple[BagJob, bool]] = []  # (job, overwrite)
    allow_partial = bool(options.get('allow_partial'))
    for job in jobs:
        state, previous = output_state(job, max_frames, allow_partial)
        if state == 'complete' and not overwrite:
            assert previous is not None
            results[job.index].take(previous)
            results[job.index].status = SKIPPED
            results[job.index].reason = 'complete before (--overwrite replays it)' + (
                f'; damaged bag: {_lost(previous)}' if previous.partial_complete
                or previous.damage is not None else '')
        elif state == 'partial' and not overwrite:
            assert previous is not None
            results[job.index].take(previous)
            results[job.index].status = FAILED
            results[job.index].reason = (
                f'damaged bag, replayed before with --allow-partial ({_lost(previous)}); '
                'without --allow-partial it fails (--allow-partial accepts that replay, '
                '--overwrite replays it)')
        elif state == 'other input' and not overwrite:
            other = previous.input if previous else unfinished_input(Path(job.output))
            results[job.index].status = FAILED
            results[job.index].reason = (f'{job.output} holds the replay of another bag, '
                                         f'{other} (--overwrite replaces it)')
        elif state == 'foreign':
            results[job.index].status = FAILED
            results[job.index].reason = (f'{job.output} exists and is not a replay output: '
                                         f'{not_our_output(Path(job.output))}')
        else:  # absent, or a replay's unfinished output (replaced), or --overwrite
            todo.append((job, state != 'absent'))
    n_workers = max(1, min(workers or default_jobs(config.device, len(todo)), len(todo) or 1))
    fleet = FleetSummary(str(root_path), 'ray' if ray_address is not None else 'local',
                         n_workers, bags=[results[job.index] for job in jobs])
    bar = _fleet_bar(progress, len(jobs), len(jobs) - len(todo))
    start = time.perf_counter()

    def done(result: BagResult) -> None:
        results[result.index] = result
        fleet.bags = [results[job.index] for job in jobs]
        fleet.model_loads += result.model_load
        fleet.frames_processed += result.processed
        fleet.wall_s = round(time.perf_counter() - start, 3)
        fleet.fps = round(fleet.frames_processed / fleet.wall_s, 3) if fleet.wall_s else 0.0
        fleet.interrupted = fleet.interrupted or result.status == INTERRUPTED
        if result.status == FAILED:
            logger.info('bag %s failed: %s', result.input, result.reason)
            if progress:  # at once, above the bar (the caller reports every failure at the end)
                bar.write(f'failed: {result.input}: {result.reason}', file=sys.stderr)
        bar.update(1)
        bar.set_postfix_str(f'{fleet.fps:.2f} frames/s, {fleet.count(FAILED)} failed',
                            refresh=False)
        fleet.write(root_path)
        if on_result is not None:
            on_result(result)

    fleet.write(root_path)
    try:
        if not todo:
            pass
        elif ray_address is not None:
            fleet_workers.run_ray(todo, config, options, workers and n_workers, ray_address,
                                  done, fleet)
        elif n_workers == 1:
            fleet_workers.run_here(todo, functools.partial(fleet_workers.Worker, config,
                                                           options), done)
        else:
            fleet_workers.run_pool(todo, fleet_workers.pool_factories(config, options,
                                                                      n_workers), done)
    except KeyboardInterrupt:
        fleet.interrupted = True
    finally:
        bar.close()
    for job, _ in todo:
        if results[job.index].status in (NOT_RUN, INTERRUPTED):
            # A stop can end a worker after its bag's replay finished but before its result
            # came back: the output's own summary decides, so that what was done is not
            # reported as interrupted (and then 'skipped' by the next run).
            state, previous = output_state(job, max_frames, allow_partial)
            if state == 'complete' and previous is not None:
                counted = results[job.index].processed  # by done(), for an interrupted one
                results[job.index].take(previous)
                results[job.index].status, results[job.index].reason = DONE, ''
                fleet.frames_processed += results[job.index].processed - counted
                continue
        if results[job.index].status == NOT_RUN:
            results[job.index].reason = 'the fleet was interrupted before this bag'
    fleet.bags = [results[job.index] for job in jobs]
    fleet.wall_s = round(time.perf_counter() - start, 3)
    fleet.fps = round(fleet.frames_processed / fleet.wall_s, 3) if fleet.wall_s else 0.0
    fleet.write(root_path)
    return fleet


def _fleet_bar(enabled: bool, total: int, initial: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit='bag', disable=not enabled,
                dynamic_ncols=True, desc='fleet', file=sys.stderr, smoothing=0.1)

"""Replay a fleet of bags: many inputs, one output folder each, locally or on a Ray cluster.

People rarely have one bag: a robot's week, a dataset of sequences, a regression suite to re-run
after every change. ``run_fleet`` replays each bag with ``lightglue_ros.ros.replay.replay_bag``
(the same function a single-bag replay calls, so each bag's output is what a single-bag replay
of it writes) into ``<root>/<name>/``, where ``name`` follows from the input path alone
(``output_name``: predictable, stable across runs, so a second run finds the first's outputs).

Workers load the models once and replay bag after bag (``tracker.reset()`` between bags, inside
replay_bag): one in-process worker (``jobs=1``), a pool of ``jobs`` spawned processes, or Ray
actors (``ray_address``), which also run on a cluster. A bag whose output is already complete
(its ``replay_summary.json``: written last, after the bag is closed, with ``complete`` true, no
``error``, not ``interrupted``) is skipped unless ``overwrite``; an unfinished output of a
replay (its bag carries the replay's mark) is replaced; anything else at that path is left
alone and the bag fails. A failing bag is recorded with a one-line reason and the others go on.
``fleet_summary.json`` and ``fleet_summary.md`` in the root say what happened, bag by bag.
See docs/replay.md, Fleet replay. One concept over 500 lines: the fleet replay (its inputs,
names, workers, resume rule and summary belong together).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightglue_ros.errors import BagError, ConfigError, LightGlueRosError

if TYPE_CHECKING:  # imported where used: deciding whether inputs are a fleet stays light
    from lightglue_ros.replay_summary import ReplaySummary
    from lightglue_ros.tracker import Tracker, TrackerConfig

__all__ = ['BagJob', 'BagResult', 'FleetSummary', 'FLEET_JSON_NAME', 'FLEET_MD_NAME',
           'LIST_SUFFIXES', 'BAG_SUFFIXES', 'RAY_INSTALL_HINT', 'is_fleet_input',
           'discover_bags', 'output_name', 'default_jobs', 'run_fleet', 'output_state']

logger = logging.getLogger(__name__)

LIST_SUFFIXES = ('.txt', '.list')  # a text file naming one bag per line
BAG_SUFFIXES = ('.mcap', '.db3', '.bag')  # bag files found in a folder of bags
STORAGE_SUFFIXES = ('.mcap', '.db3')  # what a rosbag2 folder holds (bag_io.resolve_input)
FLEET_JSON_NAME = 'fleet_summary.json'
FLEET_MD_NAME = 'fleet_summary.md'
NAME_SEPARATOR = '__'  # joins the folders of a bag found below a folder of bags
RAY_INSTALL_HINT = "--ray needs Ray: pip install 'lightglue_ros[fleet]'"
# Statuses of a bag in the fleet summary.
DONE, SKIPPED, FAILED, INTERRUPTED, NOT_RUN = 'done', 'skipped', 'failed', 'interrupted', 'not run'


# ------------------------------------------------------------------------------------------------
# Inputs and output names.
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BagJob:
    """One bag of the fleet: its input path and its output folder (``root / name``)."""

    index: int  # position in the fleet (the summary keeps this order)
    input: str
    name: str
    output: str


def _is_bag_folder(path: Path) -> bool:
    """A rosbag2 folder, or one without metadata.yaml holding exactly one storage file and no
    folder (a recording that crashed, which ``bag_io.resolve_input`` reads as one bag; a folder
    of bags holds folders, or several files)."""
    if (path / 'metadata.yaml').exists():
        return True
    entries = list(path.iterdir())
    return (not any(p.is_dir() for p in entries)
            and sum(p.suffix in STORAGE_SUFFIXES for p in entries) == 1)


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
# Results.
# ------------------------------------------------------------------------------------------------

@dataclass
class BagResult:
    """What became of one bag (a row of the fleet summary)."""

    index: int
    name: str
    input: str
    output: str
    status: str = NOT_RUN  # done | skipped (complete before) | failed | interrupted | not run
    reason: str = ''  # one line: why it failed or was skipped
    frames: int = 0
    processed: int = 0
    skipped_frames: int = 0
    missing_frames: int = 0
    keyframes: int = 0
    inliers_mean: float = 0.0  # pose inliers per processed frame
    fps: float = 0.0  # processed frames per second of the bag's frame loop
    wall_s: float = 0.0
    worker: str = ''  # host:pid of the worker that replayed it
    model_load: bool = False  # this bag's worker built its models for it (its first bag)

    def take(self, summary: ReplaySummary) -> None:
        """Copy the counts of a replay summary."""
        self.frames, self.processed = summary.frames, summary.processed
        self.skipped_frames, self.missing_frames = summary.skipped, summary.missing_frames
        self.keyframes, self.fps, self.wall_s = summary.keyframes, summary.fps, summary.wall_s
        inliers = [i for i in summary.inliers if i is not None]
        self.inliers_mean = round(sum(inliers) / len(inliers), 1) if inliers else 0.0


@dataclass
class FleetSummary:
    """The fleet run: totals and one BagResult per bag, in input order."""

    output_root: str
    mode: str  # local | ray
    workers: int
    bags: list[BagResult] = field(default_factory=list)
    model_loads: int = 0  # times a worker built the models (once per worker, not per bag)
    interrupted: bool = False
    wall_s: float = 0.0
    frames_processed: int = 0  # by this run (skipped bags not counted)
    fps: float = 0.0  # frames_processed / wall_s: the fleet's throughput

    def count(self, status: str) -> int:
        return sum(b.status == status for b in self.bags)

    @property
    def outcome(self) -> str:
        """'all' (every bag done or complete before), 'some' or 'none' succeeded."""
        good = self.count(DONE) + self.count(SKIPPED)
        return 'all' if good == len(self.bags) else 'some' if good else 'none'

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values['counts'] = {s: self.count(s) for s in (DONE, SKIPPED, FAILED, INTERRUPTED,
                                                       NOT_RUN)}
        values['outcome'] = self.outcome
        return values

    def markdown(self) -> str:
        """A table a person reads at a glance: one row per bag, failures with their reason."""
        counts = ', '.join(f'{self.count(s)} {s}' for s in (DONE, SKIPPED, FAILED, INTERRUPTED,
                                                           NOT_RUN) if self.count(s))
        lines = [f'# Fleet replay: {len(self.bags)} bags, {counts}', '',
                 f'{self.mode}, {self.workers} workers, {self.model_loads} model loads, '
                 f'{self.frames_processed} frames in {self.wall_s:.1f} s = {self.fps:.2f} '
                 f'frames/s{" (interrupted)" if self.interrupted else ""}', '',
                 '| bag | status | frames | skipped | keyframes | inliers | Hz | note |',
                 '|---|---|---:|---:|---:|---:|---:|---|']
        for b in self.bags:
            note = b.reason.replace('|', '\\|')
            lines.append(f'| {b.name} | {b.status} | {b.frames} | {b.skipped_frames} | '
                         f'{b.keyframes} | {b.inliers_mean:.1f} | {b.fps:.2f} | {note} |')
        return '\n'.join(lines) + '\n'

    def write(self, root: Path) -> None:
        """fleet_summary.json and .md in the root, each replaced whole (never half written)."""
        for name, text in ((FLEET_JSON_NAME, json.dumps(self.to_dict(), indent=1) + '\n'),
                           (FLEET_MD_NAME, self.markdown())):
            path = root / name
            tmp = path.with_name(path.name + '.tmp')
            tmp.write_text(text, encoding='utf-8')
            tmp.replace(path)


def _one_line(err: BaseException) -> str:
    text = ' '.join(str(err).split())
    if isinstance(err, LightGlueRosError) and text:
        return text
    return f'{type(err).__name__}: {text}' if text else type(err).__name__


def _max_reached(summary: ReplaySummary, max_frames: int | None) -> bool:
    return max_frames is not None and summary.frames >= max_frames


def output_state(job: BagJob, max_frames: int | None = None
                 ) -> tuple[str, ReplaySummary | None]:
    """What lies at a bag's output: ('absent', None), ('complete', summary) when a replay of
    this input finished there (its summary: complete, or ``max_frames`` images read; no error,
    not interrupted), ('unfinished', summary or None) for a replay's output that did not,
    ('other input', summary) for a replay of another bag (replaced only with overwrite), or
    ('foreign', None) for anything else (never replaced)."""
    from lightglue_ros.replay_summary import ReplaySummary
    from lightglue_ros.defaults import SUMMARY_NAME
    from lightglue_ros.ros.bag_io import not_our_output

    out = Path(job.output)
    if not out.exists() and not out.is_symlink():
        return 'absent', None
    if not_our_output(out) is not None:
        return 'foreign', None
    try:
        summary = ReplaySummary.load(out / SUMMARY_NAME)
    except (OSError, ValueError, TypeError):
        return 'unfinished', None
    if Path(summary.input).resolve() != Path(job.input).resolve():
        return 'other input', summary
    if (summary.error is None and not summary.interrupted
            and (summary.complete or _max_reached(summary, max_frames))):
        return 'complete', summary
    return 'unfinished', summary


# ------------------------------------------------------------------------------------------------
# The worker: models loaded once, bag after bag.
# ------------------------------------------------------------------------------------------------

class Worker:
    """Replays bags with one Tracker, built on the first bag (so a worker that never gets a
    bag loads nothing). Used in-process, in pool processes and as a Ray actor."""

    def __init__(self, config: TrackerConfig, options: dict[str, Any], *,
                 threads: int | None = None) -> None:
        self.config, self.options = config, dict(options)
        self.tracker: Tracker | None = None
        self.loads = 0
        self.stop = False  # a stop request between bags (pool workers: SIGINT)
        if threads:
            # A share of the cores: the bags are the parallelism. The replay's pipelined stages
            # would put two threads on the share; one stage with all of it instead.
            self.options = {**options, 'pipelined': False, 'threads_per_stage': threads}
            import torch

            torch.set_num_threads(threads)

    def run(self, job: BagJob, overwrite: bool) -> BagResult:
        """Replay one bag; every failure becomes the result's status and one-line reason."""
        from lightglue_ros.ros.replay import IncompleteBagError, replay_bag
        from lightglue_ros.tracker import Tracker

        result = BagResult(job.index, job.name, job.input, job.output,
                           worker=f'{os.uname().nodename}:{os.getpid()}')
        if self.stop:  # the fleet was stopped while this bag waited for the worker
            result.reason = 'the fleet was interrupted before this bag'
            return result
        try:
            if self.tracker is None:
                self.tracker = Tracker(self.config)
                self.loads += 1
                result.model_load = True
            summary = replay_bag(job.input, job.output, tracker=self.tracker,
                                 overwrite=overwrite, progress=False, **self.options)
        except IncompleteBagError as err:
            result.take(err.summary)
            result.status, result.reason = FAILED, _one_line(err)
        except KeyboardInterrupt:  # while the models load: nothing written for this bag
            self.stop = True
            result.status, result.reason = INTERRUPTED, 'stopped before its first frame'
        except Exception as err:  # noqa: BLE001 - one failing bag never stops the others
            logger.debug('bag %s failed', job.input, exc_info=True)
            result.status, result.reason = FAILED, _one_line(err)
        else:
            result.take(summary)
            if summary.interrupted:
                self.stop = True
                result.status, result.reason = INTERRUPTED, 'interrupted (Ctrl-C or SIGTERM)'
            else:
                result.status = DONE
                if summary.missing_frames:
                    result.reason = (f'{summary.missing_frames} images missing (damaged bag, '
                                     'partial replay allowed)')
        return result


# Pool processes: one Worker each (module globals: a process runs one worker).
_WORKER: Worker | None = None


def _stop_worker(signum: int, frame: Any) -> None:
    if _WORKER is not None:
        _WORKER.stop = True


def _init_pool_worker(config: TrackerConfig, options: dict[str, Any], threads: int,
                      devices: Any) -> None:
    """A pool process: its own process group (a terminal's Ctrl-C reaches only the parent,
    which passes one SIGINT on), SIGINT between bags marks it stopped, CUDA device i of the
    list when there are several."""
    global _WORKER
    os.setpgrp()
    if devices is not None:
        device = devices.get()
        config = replace(config, device=device)
    _WORKER = Worker(config, options, threads=threads)
    signal.signal(signal.SIGINT, _stop_worker)
    signal.signal(signal.SIGTERM, _stop_worker)


def _run_in_pool(job: BagJob, overwrite: bool) -> BagResult:
    assert _WORKER is not None
    return _WORKER.run(job, overwrite)


# ------------------------------------------------------------------------------------------------
# Fleet.
# ------------------------------------------------------------------------------------------------

def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cuda_devices(device: str) -> list[str]:
    """The CUDA devices the workers spread over: every GPU for 'cuda' (or 'auto' with CUDA),
    the one named by 'cuda:N', none on a CPU."""
    if device.startswith('cuda:'):
        return [device]
    if device not in ('auto', 'cuda'):
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    return [f'cuda:{i}' for i in range(torch.cuda.device_count())]


def default_jobs(device: str, bags: int) -> int:
    """Workers when ``--jobs`` is not given: one per GPU with CUDA (a second process on one GPU
    mostly waits for the first), else one per CPU core (each with one torch thread: on a small
    CPU, processes scale better than torch's threads inside one); never more than the bags."""
    gpus = _cuda_devices(device)
    return max(1, min(len(gpus) if gpus else _cpu_count(), bags))


def _threads_per_worker(jobs: int) -> int:
    return max(1, _cpu_count() // jobs)


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
    unless ``overwrite``. Writes fleet_summary.json / .md into ``root`` after every bag;
    ``on_result`` sees each result as it comes. Ctrl-C / SIGTERM: the bags in flight finish
    their frame and close their output (interrupted), no new bag starts; the summary says so.
    """
    from lightglue_ros.ros.bag_io import check_writable, not_our_output

    root_path = Path(root)
    if root_path.exists() and not root_path.is_dir():
        raise BagError(f'output root {root_path} is not a folder')
    check_writable(root_path / 'x', 'the output root')
    root_path.mkdir(parents=True, exist_ok=True)
    if workers is not None and workers < 1:
        raise ConfigError(f'workers must be >= 1, got {workers}')
    max_frames = options.get('max_frames')
    results = {job.index: BagResult(job.index, job.name, job.input, job.output) for job in jobs}
    todo: list[tuple[BagJob, bool]] = []  # (job, overwrite)
    for job in jobs:
        state, previous = output_state(job, max_frames)
        if state == 'complete' and not overwrite:
            assert previous is not None
            results[job.index].take(previous)
            results[job.index].status = SKIPPED
            results[job.index].reason = 'complete before (--overwrite replays it)'
        elif state == 'other input' and not overwrite:
            assert previous is not None
            results[job.index].status = FAILED
            results[job.index].reason = (f'{job.output} holds the replay of another bag, '
                                         f'{previous.input} (--overwrite replaces it)')
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
            _run_ray(todo, config, options, workers and n_workers, ray_address, done, fleet)
        elif n_workers == 1:
            _run_here(todo, config, options, done)
        else:
            _run_pool(todo, config, options, n_workers, done)
    except KeyboardInterrupt:
        fleet.interrupted = True
    finally:
        bar.close()
    for job, _ in todo:
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


def _run_here(todo: Iterable[tuple[BagJob, bool]], config: TrackerConfig,
              options: dict[str, Any], done: Callable[[BagResult], None]) -> None:
    """One worker in this process (jobs=1): replay_bag's own Ctrl-C handling applies."""
    worker = Worker(config, options)
    for job, overwrite in todo:
        result = worker.run(job, overwrite)
        done(result)
        if worker.stop:
            raise KeyboardInterrupt


def _run_pool(todo: Sequence[tuple[BagJob, bool]], config: TrackerConfig,
              options: dict[str, Any], n_workers: int,
              done: Callable[[BagResult], None]) -> None:
    """``n_workers`` spawned processes (not forked: torch and rclpy hold threads), each with a
    Worker; bags go to whichever worker is free."""
    import multiprocessing

    context = multiprocessing.get_context('spawn')
    gpus = _cuda_devices(config.device)
    devices = None
    if len(gpus) > 1:
        devices = context.Queue()
        for i in range(n_workers):
            devices.put(gpus[i % len(gpus)])
    threads = 0 if gpus else _threads_per_worker(n_workers)
    pool = ProcessPoolExecutor(n_workers, mp_context=context, initializer=_init_pool_worker,
                               initargs=(config, options, threads, devices))
    futures: dict[Future[BagResult], BagJob] = {}
    try:
        futures = {pool.submit(_run_in_pool, job, overwrite): job for job, overwrite in todo}
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                stop = _collect(finished, futures, done)
                if stop:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            # Workers run in their own process groups: pass the stop on (the bags in flight
            # finish their frame, close their output and return), start no new bag.
            for future in pending:
                future.cancel()
            for process in list(getattr(pool, '_processes', {}).values()):
                try:
                    os.kill(process.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
            _collect([f for f in pending if not f.cancelled()], futures, done, wait_all=True)
            raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _collect(finished: Iterable[Future[BagResult]], futures: dict[Future[BagResult], BagJob],
             done: Callable[[BagResult], None], *, wait_all: bool = False) -> bool:
    """Hand each finished future's result to ``done``; a worker process that died fails its
    bag. Returns True when a bag was interrupted (a stop request)."""
    stop = False
    for future in finished:
        job = futures[future]
        try:
            result = future.result() if wait_all else future.result(timeout=0)
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # noqa: BLE001 - BrokenProcessPool: the process died
            result = BagResult(job.index, job.name, job.input, job.output, status=FAILED,
                               reason=f'the worker process failed: {_one_line(err)}')
        stop = stop or result.status == INTERRUPTED
        done(result)
    return stop


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise ConfigError(RAY_INSTALL_HINT) from err
    return ray


def _run_ray(todo: Sequence[tuple[BagJob, bool]], config: TrackerConfig,
             options: dict[str, Any], n_workers: int | None, address: str,
             done: Callable[[BagResult], None], fleet: FleetSummary) -> None:
    """The same Worker as Ray actors, ``n_workers`` of them, each given the next bag when it
    is free. With CUDA each actor asks for a share of the GPUs (``num_gpus`` fraction: all of
    them divided among the actors, at most one each); Ray then sets the device it may use."""
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
        started = True
    try:
        cluster = ray.cluster_resources()
        gpus, cpus = float(cluster.get('GPU', 0)), int(cluster.get('CPU', 1))
        cuda = config.device.startswith('cuda') or (config.device == 'auto' and gpus > 0)
        if cuda and not gpus:
            raise ConfigError(f'device {config.device!r} but the Ray cluster has no GPU')
        if n_workers is None:  # the cluster's, not this machine's: one per GPU or CPU
            n_workers = max(1, min(int(gpus) if cuda else cpus, len(todo)))
        fleet.workers = n_workers
        # CPU actors share the cluster's CPUs as torch threads (no more than a node has);
        # GPU actors ask for one CPU to feed the GPU.
        node_cpus = max((int(node['Resources'].get('CPU', 0)) for node in ray.nodes()
                         if node.get('Alive')), default=1)
        threads = 0 if cuda else max(1, min(cpus // n_workers, node_cpus))
        resources: dict[str, Any] = {'num_cpus': threads or 1}
        actor_config = config
        if cuda:
            resources['num_gpus'] = min(1.0, gpus / n_workers)
            actor_config = replace(config, device='cuda')  # the GPU Ray gives the actor
        actor_class = ray.remote(**resources)(Worker)
        actors = [actor_class.remote(actor_config, options, threads=threads)
                  for _ in range(n_workers)]
        queue = list(todo)
        running: dict[Any, tuple[Any, BagJob]] = {}
        stop = False

        def submit(actor: Any) -> None:
            job, overwrite = queue.pop(0)
            running[actor.run.remote(job, overwrite)] = (actor, job)

        for actor in actors:
            if queue:
                submit(actor)
        try:
            while running:
                ready, _ = ray.wait(list(running), num_returns=1)
                actor, job = running.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except Exception as err:  # noqa: BLE001 - the actor died (RayActorError)
                    result = BagResult(job.index, job.name, job.input, job.output,
                                       status=FAILED,
                                       reason=f'the Ray worker failed: {_one_line(err)}')
                stop = stop or result.status == INTERRUPTED
                done(result)
                if queue and not stop:
                    submit(actor)
        except KeyboardInterrupt:
            for ref in running:  # a KeyboardInterrupt inside the task: it stops as on Ctrl-C
                ray.cancel(ref)
            for ref, (_, job) in running.items():
                try:
                    done(ray.get(ref, timeout=60))
                except Exception as err:  # noqa: BLE001 - cancelled before it returned
                    done(BagResult(job.index, job.name, job.input, job.output,
                                   status=INTERRUPTED, reason=_one_line(err)))
            raise
        if stop:
            raise KeyboardInterrupt
    finally:
        if started:
            ray.shutdown()

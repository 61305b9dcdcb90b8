"""Where a fleet's bags are replayed: ``Worker`` (models loaded once, bag after bag) in this
process, in a pool of spawned processes, or as Ray actors; and how many workers by default.

``lightglue_ros.ros.fleet.run_fleet`` decides what to replay and hands the bags to one of
``run_here``, ``run_pool`` or ``run_ray``, which call ``done(result)`` with each bag's
BagResult as it comes. See docs/replay.md, Fleet replay.
"""
from __future__ import annotations

import functools
import logging
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from lightglue_ros.errors import ConfigError
from lightglue_ros.ros.fleet_summary import (DONE, FAILED, INTERRUPTED, BagJob, BagResult,
                                             FleetSummary, one_line)

if TYPE_CHECKING:
    from lightglue_ros.tracker import Tracker, TrackerConfig

__all__ = ['Worker', 'default_jobs', 'pool_factories', 'run_here', 'run_pool', 'run_ray',
           'import_ray', 'RAY_INSTALL_HINT']

logger = logging.getLogger(__name__)

RAY_INSTALL_HINT = "--ray needs Ray: pip install 'lightglue_ros[fleet]'"


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

        result = BagResult.of(job, worker=f'{os.uname().nodename}:{os.getpid()}')
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
            result.status, result.reason = FAILED, one_line(err)
        except KeyboardInterrupt:  # while the models load: nothing written for this bag
            self.stop = True
            result.status, result.reason = INTERRUPTED, 'stopped before its first frame'
        except Exception as err:  # noqa: BLE001 - one failing bag never stops the others
            logger.debug('bag %s failed', job.input, exc_info=True)
            result.status, result.reason = FAILED, one_line(err)
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


def run_here(todo: Iterable[tuple[BagJob, bool]], factory: Callable[[], Worker],
             done: Callable[[BagResult], None]) -> None:
    """One worker in this process (jobs=1): replay_bag's own Ctrl-C handling applies."""
    worker = factory()
    for job, overwrite in todo:
        result = worker.run(job, overwrite)
        done(result)
        if worker.stop:
            raise KeyboardInterrupt


def pool_factories(config: TrackerConfig, options: dict[str, Any], n_workers: int
                   ) -> list[Callable[[], Worker]]:
    """One Worker factory per pool process: CUDA devices spread over the processes (one per GPU
    by default), else each process a share of the cores as torch threads."""
    gpus = _cuda_devices(config.device)
    threads = 0 if gpus else _threads_per_worker(n_workers)
    return [functools.partial(Worker, replace(config, device=gpus[i % len(gpus)])
                              if len(gpus) > 1 else config, options, threads=threads)
            for i in range(n_workers)]


def _pool_process(conn: Connection, factory: Callable[[], Worker]) -> None:
    """A pool process: its own process group (a terminal's Ctrl-C reaches only the parent,
    which passes one SIGINT on), SIGINT or SIGTERM between bags marks it stopped; replays the
    bags it is sent until it is sent None or the parent's end of the pipe closes."""
    os.setpgrp()
    worker = factory()

    def stop(signum: int, frame: Any) -> None:
        worker.stop = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while (task := conn.recv()) is not None:
            conn.send(worker.run(*task))
    except (EOFError, OSError):  # the fleet ended without us (its end of the pipe closed)
        pass


class _PoolProcess:
    """A spawned process running one Worker (not forked: torch and rclpy hold threads), and
    the bag it is replaying."""

    def __init__(self, context: Any, factory: Callable[[], Worker]) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_pool_process, args=(child, factory),
                                       name='lightglue_ros-fleet', daemon=True)
        self.process.start()
        child.close()  # the parent keeps one end: EOF when the process dies
        self.job: BagJob | None = None

    def give(self, job: BagJob, overwrite: bool) -> None:
        self.job = job
        try:
            self.conn.send((job, overwrite))
        except OSError:  # it died just now: result() reports it, with this bag
            pass

    def result(self) -> BagResult | None:
        """The bag's result when the process sent it, a failed result when the process died
        (the bag is not given to another: a bag that kills its worker fails once), None while
        it runs."""
        assert self.job is not None
        if not self.conn.poll():
            if self.process.is_alive():
                return None
        else:
            try:
                result: BagResult = self.conn.recv()
            except (EOFError, OSError):  # the process died: EOF on its end of the pipe
                pass
            else:
                self.job = None
                return result
        self.process.join(STOP_JOIN_S)
        code = self.process.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else -code
            how = f'killed by {name}' + (', as the out-of-memory killer does'
                                         if -code == signal.SIGKILL else '')
        else:
            how = f'exit code {code}'
        result = BagResult.of(self.job, status=FAILED,
                              reason=f'the worker process {self.process.pid} died while '
                                     f'replaying this bag ({how}); its output may be unfinished',
                              worker=f'{os.uname().nodename}:{self.process.pid}')
        self.job = None
        return result

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def interrupt(self) -> None:
        """SIGINT: the bag in flight finishes its frame (a second: at once) and closes its
        output."""
        if self.job is not None and self.process.pid is not None:
            try:
                os.kill(self.process.pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Ask the process to end (between bags at once; a bag in flight, left here by an
        error of the fleet's own, is stopped as on Ctrl-C first), and wait for it."""
        try:
            if self.job is None and self.alive:
                self.conn.send(None)
        except OSError:
            pass
        self.interrupt()
        self.conn.close()  # a process still replaying ends after its bag (EOF, or a send error)
        self.process.join(STOP_JOIN_S)
        if self.process.is_alive():
            logger.warning('fleet worker %s did not end; killing it', self.process.pid)
            self.process.kill()
            self.process.join()


STOP_JOIN_S = 60.0  # how long the fleet waits for a worker process to end


def run_pool(todo: Sequence[tuple[BagJob, bool]], factories: Sequence[Callable[[], Worker]],
             done: Callable[[BagResult], None]) -> None:
    """One spawned process per factory (``pool_factories``), each with a Worker; a bag goes
    to whichever process is free. A process that dies (the out-of-memory killer, a crash in a
    native library) fails the bag it was replaying, and a new process takes its place for the
    bags left. Ctrl-C / SIGTERM (KeyboardInterrupt here) or an interrupted bag: one SIGINT to
    each process with a bag (it finishes its frame and closes its output; a second Ctrl-C
    passes a second SIGINT: at once), no new bag starts; then KeyboardInterrupt."""
    import multiprocessing
    from multiprocessing.connection import wait as wait_for

    context = multiprocessing.get_context('spawn')
    queue = deque(todo)
    pool = [_PoolProcess(context, factory) for factory in factories[:len(queue)]]
    stop = False
    try:
        while True:
            for i, slot in enumerate(pool):
                if stop or not queue:
                    break
                if slot.job is None:
                    if not slot.alive:  # it died with its bag: a fresh one for the rest
                        slot.close()
                        pool[i] = slot = _PoolProcess(context, factories[i])
                    slot.give(*queue.popleft())
            busy = [slot for slot in pool if slot.job is not None]
            if not busy:
                break
            try:
                ready = wait_for([s.conn for s in busy] + [s.process.sentinel for s in busy],
                                 timeout=STOP_JOIN_S if stop else None)
                if not ready:  # stopping, and no answer: give up on them (close kills them)
                    for slot in busy:
                        assert slot.job is not None
                        done(BagResult.of(slot.job, status=INTERRUPTED, reason=(
                            f'its worker did not stop within {STOP_JOIN_S:.0f} s')))
                        slot.job = None
                    break
                for slot in busy:
                    result = slot.result()
                    if result is not None:
                        done(result)
                        if result.status == INTERRUPTED and not stop:
                            stop = True  # a worker was stopped: pass the stop on
                            for other in pool:
                                other.interrupt()
            except KeyboardInterrupt:
                stop = True
                for slot in pool:
                    slot.interrupt()
        if stop:
            raise KeyboardInterrupt
    finally:
        for slot in pool:
            slot.close()


def import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise ConfigError(RAY_INSTALL_HINT) from err
    return ray


def run_ray(todo: Sequence[tuple[BagJob, bool]], config: TrackerConfig,
            options: dict[str, Any], n_workers: int | None, address: str,
            done: Callable[[BagResult], None], fleet: FleetSummary) -> None:
    """The same Worker as Ray actors, ``n_workers`` of them, each given the next bag when it
    is free. With CUDA each actor asks for a share of the GPUs (``num_gpus`` fraction: all of
    them divided among the actors, at most one each); Ray then sets the device it may use."""
    ray = import_ray()
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
                    result = BagResult.of(job, status=FAILED,
                                          reason=f'the Ray worker failed: {one_line(err)}')
                    # A fresh actor for the bags left (this bag is not given again).
                    try:
                        ray.kill(actor, no_restart=True)
                    except Exception:  # noqa: BLE001 - already gone
                        pass
                    actor = actor_class.remote(actor_config, options, threads=threads)
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
                    done(BagResult.of(job, status=INTERRUPTED, reason=one_line(err)))
            raise
        if stop:
            raise KeyboardInterrupt
    finally:
        if started:
            ray.shutdown()

"""A fleet Worker for the pool tests of tests/test_fleet.py: test_bag_recovery's stub tracker
stands in for the networks (the bag handling is what is tested), and a bag whose folder name
ends in ``_kill`` or ``_exit`` ends the process replaying it: SIGKILL (what the out-of-memory
killer sends) or ``os._exit(3)``; one ending in ``_sigint`` sends SIGINT to the fleet's process
(a Ctrl-C, once) as its replay starts. Each attempt is logged to ``<output root>/attempts.log``.

A module of its own, so that the pool's spawned processes can import the class (tests/ is on
the sys.path they inherit)."""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from test_bag_recovery import StubTracker

from lightglue_ros.ros.fleet_summary import BagJob, BagResult
from lightglue_ros.ros.fleet_workers import Worker

ATTEMPTS_LOG = 'attempts.log'


def attempts(root: Path) -> list[tuple[str, int]]:
    """(bag name, pid of the process that took it) for each bag a worker started on."""
    lines = (root / ATTEMPTS_LOG).read_text(encoding='utf-8').splitlines()
    return [(name, int(pid)) for name, pid in map(str.split, lines)]


class StubWorker(Worker):
    """A Worker with the stub tracker; *_kill / *_exit bags end its process, *_sigint ones
    interrupt the fleet."""

    def __init__(self, config: Any, options: dict[str, Any], *,
                 threads: int | None = None) -> None:
        super().__init__(config, options, threads=threads)
        self.tracker = StubTracker()  # type: ignore[assignment]

    def run(self, job: BagJob, overwrite: bool) -> BagResult:
        with open(Path(job.output).parent / ATTEMPTS_LOG, 'a', encoding='utf-8') as log:
            log.write(f'{job.name} {os.getpid()}\n')
        name = Path(job.input).name
        if name.endswith('_kill'):
            os.kill(os.getpid(), signal.SIGKILL)
        if name.endswith('_exit'):
            os._exit(3)
        sent = Path(job.output).parent / 'sigint.sent'
        if name.endswith('_sigint') and not sent.exists():
            sent.touch()
            os.kill(os.getppid(), signal.SIGINT)
        return super().run(job, overwrite)

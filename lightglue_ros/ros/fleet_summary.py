"""The bags of a fleet replay and what became of them: BagJob, BagResult, FleetSummary (written
as fleet_summary.json and fleet_summary.md). No ROS, no torch: see lightglue_ros.ros.fleet."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightglue_ros.errors import LightGlueRosError

if TYPE_CHECKING:
    from lightglue_ros.replay_summary import ReplaySummary

__all__ = ['BagJob', 'BagResult', 'FleetSummary', 'FLEET_JSON_NAME', 'FLEET_MD_NAME', 'DONE',
           'SKIPPED', 'FAILED', 'INTERRUPTED', 'NOT_RUN', 'STATUSES', 'one_line']

FLEET_JSON_NAME = 'fleet_summary.json'
FLEET_MD_NAME = 'fleet_summary.md'
# Statuses of a bag in the fleet summary.
DONE, SKIPPED, FAILED, INTERRUPTED, NOT_RUN = 'done', 'skipped', 'failed', 'interrupted', 'not run'
STATUSES = (DONE, SKIPPED, FAILED, INTERRUPTED, NOT_RUN)


@dataclass(frozen=True)
class BagJob:
    """One bag of the fleet: its input path and its output folder (``root / name``)."""

    index: int  # position in the fleet (the summary keeps this order)
    input: str
    name: str
    output: str


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
    missing_frames: int = 0  # images lost to damage (a partial replay, --allow-partial)
    keyframes: int = 0
    inliers_mean: float = 0.0  # pose inliers per processed frame
    fps: float = 0.0  # processed frames per second of the bag's frame loop
    wall_s: float = 0.0
    worker: str = ''  # host:pid of the worker that replayed it
    model_load: bool = False  # this bag's worker built its models for it (its first bag)

    @classmethod
    def of(cls, job: BagJob, **values: Any) -> BagResult:
        return cls(job.index, job.name, job.input, job.output, **values)

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
        values['counts'] = {s: self.count(s) for s in STATUSES}
        values['outcome'] = self.outcome
        return values

    def markdown(self) -> str:
        """A table a person reads at a glance: one row per bag, failures with their reason."""
        counts = ', '.join(f'{self.count(s)} {s}' for s in STATUSES if self.count(s))
        lines = [f'# Fleet replay: {len(self.bags)} bags, {counts}', '',
                 f'{self.mode}, {self.workers} workers, {self.model_loads} model loads, '
                 f'{self.frames_processed} frames in {self.wall_s:.1f} s = {self.fps:.2f} '
                 f'frames/s{" (interrupted)" if self.interrupted else ""}', '',
                 '| bag | status | frames | skipped | lost | keyframes | inliers | Hz | note |',
                 '|---|---|---:|---:|---:|---:|---:|---:|---|']
        for b in self.bags:
            note = b.reason.replace('|', '\\|')
            lines.append(f'| {b.name} | {b.status} | {b.frames} | {b.skipped_frames} | '
                         f'{b.missing_frames} | {b.keyframes} | {b.inliers_mean:.1f} | '
                         f'{b.fps:.2f} | {note} |')
        return '\n'.join(lines) + '\n'

    def write(self, root: Path) -> None:
        """fleet_summary.json and .md in the root, each replaced whole (never half written)."""
        for name, text in ((FLEET_JSON_NAME, json.dumps(self.to_dict(), indent=1) + '\n'),
                           (FLEET_MD_NAME, self.markdown())):
            path = root / name
            tmp = path.with_name(path.name + '.tmp')
            tmp.write_text(text, encoding='utf-8')
            tmp.replace(path)


def one_line(err: BaseException) -> str:
    """An exception as one line: our own errors' message, else its type and message."""
    text = ' '.join(str(err).split())
    if isinstance(err, LightGlueRosError) and text:
        return text
    return f'{type(err).__name__}: {text}' if text else type(err).__name__

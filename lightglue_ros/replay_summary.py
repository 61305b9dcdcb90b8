"""ReplaySummary: what a bag replay did, frame by frame; written as JSON, read by the plots.

ROS-free: the replay (``lightglue_ros.ros.replay``) fills it, ``lightglue_ros.plots`` draws it,
and anyone can ``ReplaySummary.load`` a ``replay_summary.json`` without ROS.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from lightglue_ros.pipeline import Skip
    from lightglue_ros.tracker import FrameResult

logger = logging.getLogger(__name__)
MAX_SKIPPED_FRAMES = 100  # skipped frames recorded with their details (all are counted)


@dataclass
class ReplaySummary:
    """What a replay did. Per-frame lists hold one entry per processed frame, in order."""

    input: str
    output: str
    image_topic: str
    camera_info_topic: str | None
    storage: str
    input_format: str  # rosbag2 | rosbag1
    topic_prefix: str
    frames: int = 0  # image messages read from the bag
    expected_frames: int = 0  # image messages the bag's index lists for the topic
    # False for a damaged bag read without its index and without metadata.yaml: then
    # expected_frames = frames read + those known lost (cut in two), not the number recorded.
    expected_frames_known: bool = True
    missing_frames: int = 0  # listed but never read (damaged bag); 0 when interrupted/limited
    processed: int = 0  # frames the tracker returned a result for (= matches messages)
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    skipped_frames: list[dict[str, Any]] = field(default_factory=list)  # first 100, with details
    interrupted: bool = False
    error: str | None = None
    damage: str | None = None  # a bag read without its index: where its data ends
    complete: bool = False  # every image of the topic was read (not interrupted/limited/failed)
    # allow_partial: a damaged bag read to the end of what can be read (not interrupted or
    # limited), every image replayed or counted in missing_frames: a fleet's resume skips it.
    partial_complete: bool = False
    wall_s: float = 0.0  # the frame loop, from the first read to the last write
    fps: float = 0.0  # processed / wall_s
    keyframes: int = 0  # keyframe events (= keyframe messages), the first keyframe included
    keyframe_switches: int = 0  # keyframe changes after the first keyframe
    tracker_resets: int = 0  # after backwards_reset_frames stamps that went back in time
    camera_info_messages: int = 0  # camera_info messages read
    camera_info_errors: int = 0  # camera_info messages that gave no valid camera model
    camera_info_missing: int = 0  # listed in the bag's index but never read (damaged bag)
    camera_info_read_error: str | None = None  # why reading camera_info stopped early
    messages_written: dict[str, int] = field(default_factory=dict)  # output topic -> count
    latency_ms: dict[str, float] = field(default_factory=dict)  # mean / p50 / p95 / max
    tracker_ms: dict[str, float] = field(default_factory=dict)  # the same, tracker only
    config: dict[str, Any] = field(default_factory=dict)
    # Per processed frame.
    frame_index: list[int] = field(default_factory=list)  # tracker frame index
    stamp_ns: list[int] = field(default_factory=list)  # input header stamp
    bag_time_ns: list[int] = field(default_factory=list)  # input bag (log) time
    keypoints: list[int] = field(default_factory=list)
    matches: list[int] = field(default_factory=list)
    inliers: list[int] = field(default_factory=list)
    stop_layer: list[int] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)  # ms: decode + track + outputs + write
    tracker_latency: list[float] = field(default_factory=list)  # ms: Tracker.process alone
    keyframe_index: list[int] = field(default_factory=list)  # keyframe the matches refer to
    keyframe_event: list[str] = field(default_factory=list)  # reason(s) of a change, else ''
    ok: list[bool] = field(default_factory=list)  # a pose was estimated
    reason: list[str] = field(default_factory=list)  # FrameResult.reason
    position: list[list[float] | None] = field(default_factory=list)  # t_world_cam or None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + '.tmp')
        try:
            tmp.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + '\n',
                           encoding='utf-8')
            tmp.replace(path)
        except BaseException:  # a full disk: no half-written file left behind
            tmp.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ReplaySummary:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def load(cls, path: str | Path) -> ReplaySummary:
        return cls.from_dict(json.loads(Path(path).read_text(encoding='utf-8')))

    # -- bookkeeping --------------------------------------------------------------------------
    def add_frame(self, result: FrameResult, bag_time_ns: int, latency_ms: float) -> None:
        """Record a processed frame."""
        self.processed += 1
        self.frame_index.append(int(result.index))
        self.stamp_ns.append(int(result.stamp_ns))
        self.bag_time_ns.append(int(bag_time_ns))
        self.keypoints.append(int(result.num_keypoints))
        self.matches.append(result.num_matches)
        self.inliers.append(result.num_inliers)
        self.stop_layer.append(int(result.stop_layer))
        self.latency.append(round(float(latency_ms), 3))
        self.tracker_latency.append(round(float(result.timings.total_ms), 3))
        self.keyframe_index.append(int(result.keyframe_index))
        self.keyframe_event.append(','.join(e.reason for e in result.keyframe_events))
        self.ok.append(bool(result.ok))
        self.reason.append(result.reason)
        for event in result.keyframe_events:
            self.keyframes += 1
            self.keyframe_switches += event.previous_index >= 0
        t = result.t_world_cam
        self.position.append([float(v) for v in np.asarray(t).reshape(3)]
                             if t is not None and np.all(np.isfinite(t)) else None)

    def add_skip(self, skip: Skip, bag_time_ns: int) -> None:
        """Record (and log) a frame that gave no result."""
        reason, detail = skip.reason, skip.detail
        self.skipped += 1
        self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + 1
        if len(self.skipped_frames) < MAX_SKIPPED_FRAMES:
            self.skipped_frames.append({'frame': self.frames - 1, 'bag_time_ns': int(bag_time_ns),
                                        'reason': reason, 'detail': detail[:300]})
        logger.warning('skipping image %d (%s): %s', self.frames - 1, reason, detail)

    def finish(self, wall_s: float) -> None:
        """Set the timing totals once the frame loop is over."""
        self.wall_s = round(wall_s, 4)
        self.fps = round(self.processed / wall_s, 4) if wall_s > 0 else 0.0
        self.latency_ms = _stats(self.latency)
        self.tracker_ms = _stats(self.tracker_latency)


def _stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values, dtype=np.float64)
    return {'mean': round(float(a.mean()), 3), 'p50': round(float(np.percentile(a, 50)), 3),
            'p95': round(float(np.percentile(a, 95)), 3), 'max': round(float(a.max()), 3)}

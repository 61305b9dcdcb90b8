"""The demo's report: what the listener saw of each frame (``FrameRecord``), the per-frame table
(``FrameTable``, also the row format of ``demo --bag``), the real-time numbers beside the target
(``play_summary``), the summary (JSON and the printed lines) and the pictures, with their
file names. No ROS: the demo's ROS harness (``demo_node``) fills the records."""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightglue_ros.cli.demo_inputs import DemoInput, GroundTruth
from lightglue_ros.cli.image_files import write_png
from lightglue_ros.geometry import pose_error_deg, rotation_angle_deg
from lightglue_ros.profiles import REALTIME_TARGET
from lightglue_ros.realtime import RateSummary
from lightglue_ros.viz import as_rgb8, draw_matches_side_by_side

DEMO_SUMMARY_NAME = 'demo_summary.json'
DEMO_MATCHES_NAME = 'matches.png'  # keyframe | last frame, side by side
DEMO_DEBUG_NAME = 'debug_image.png'  # the node's ~/debug_image of the last frame
DEMO_MAX_LINES = 200  # match lines drawn in the demo's side-by-side picture (a readable subset)
PICTURE_NOTES = {
    'matches': 'keyframe | last frame side by side: pose inliers green, outliers magenta, '
               'legend below',
    'debug_image': "the node's ~/debug_image of the last frame: tracks from the keyframe, "
                   'inliers green, outliers magenta, legend top left',
}


def _stats(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values, np.float64)
    return {'mean': round(float(a.mean()), 4), 'median': round(float(np.median(a)), 4),
            'p95': round(float(np.percentile(a, 95)), 4), 'min': round(float(a.min()), 4),
            'max': round(float(a.max()), 4)}


@dataclass
class FrameRecord:
    """What the demo's listener saw of one published frame (``matches`` None: no output)."""

    index: int
    stamp_ns: int
    published: float  # time.monotonic() of the publish call
    matches: dict[str, np.ndarray] | None = None  # read_matches_cloud fields
    matches_time: float | None = None  # time.monotonic() when the matches arrived
    pose: tuple[np.ndarray, np.ndarray] | None = None  # (R_kf_cam, t_kf_cam) of ~/relative_pose
    events: list[dict[str, str]] = field(default_factory=list)
    debug_image: np.ndarray | None = None

    @property
    def inliers(self) -> int:
        """Inlier matches (0 before the matches arrived)."""
        if self.matches is None or 'inlier' not in self.matches:
            return 0
        return int(np.count_nonzero(self.matches['inlier']))


@dataclass(frozen=True)
class NodeCounts:
    """The matcher node's own counts at the end of the demo (its /diagnostics counters)."""

    received: int  # images that reached its callback
    processed: int  # frames whose outputs it published
    superseded: int  # latest mode: replaced by a newer frame while the node was busy
    skipped: int  # dropped for another reason (lossless queue overflow) or skipped (bad input)


class FrameTable:
    """Turns records into per-frame entries (printed as they come: a row per processed frame,
    its ``dropped`` column the frames without output since the previous row) and the summary.
    """

    HEADER = (f'{"frame":>5} {"kf":>4} {"matches":>7} {"inliers":>7} {"latency":>9} '
              f'{"rot.err":>8} {"dir.err":>8} {"dropped":>7}  keyframe')

    def __init__(self, ground_truth: GroundTruth | None) -> None:
        self.ground_truth = ground_truth
        self.entries: list[dict[str, Any]] = []
        self.keyframe = -1  # input frame index of the current keyframe
        self.printed_header = False
        self._no_output: list[int] = []  # frames without output since the last printed row

    @staticmethod
    def print_row(index: int, keyframe: int, matches: int, inliers: int,
                  latency_ms: float | None, notes: Sequence[str], *,
                  rotation_error_deg: float | None = None,
                  direction_error_deg: float | None = None, dropped: int | None = None) -> None:
        """One line under HEADER; '-' for what is unknown (no ground truth, no latency, no
        count of frames without output)."""
        def deg(value: float | None) -> str:
            return f'{value:.3f}' if value is not None else '-'

        latency = f'{latency_ms:.0f} ms' if latency_ms is not None else '-'
        print(f'{index:>5} {keyframe:>4} {matches:>7} {inliers:>7} {latency:>9} '
              f'{deg(rotation_error_deg):>8} {deg(direction_error_deg):>8} '
              f'{dropped if dropped is not None else "-":>7}  {"; ".join(notes)}'.rstrip(),
              flush=True)

    def add(self, record: FrameRecord, processed: list[int]) -> None:
        """Add the entry of ``record`` (records come in publishing order, each once it is
        final: its outputs arrived or never will) and print it; ``processed``: the stamps in
        the order the node processed them (a tracker frame index is a position in it)."""
        if not self.printed_header:
            print(self.HEADER)
            self.printed_header = True
        if record.matches is None:
            self.entries.append({
                'index': record.index, 'stamp_ns': record.stamp_ns, 'processed': False,
                'keyframe_index': self.keyframe, 'matches': 0, 'inliers': 0,
                'mean_score': None, 'latency_ms': None, 'keyframe_events': [], 'pose': None,
                'error_vs_ground_truth': None})
            self._no_output.append(record.index)
            return
        dropped, self._no_output = len(self._no_output), []
        stamps = processed  # tracker frame index -> stamp
        frame_of_stamp = {e['stamp_ns']: e['index'] for e in self.entries}
        frame_of_stamp[record.stamp_ns] = record.index

        def frame_of_tracker_index(value: Any) -> int:
            k = int(value)
            if 0 <= k < len(stamps):
                return frame_of_stamp.get(stamps[k], -1)
            return -1

        fields = record.matches or {}
        n = len(fields.get('u', ()))
        inliers = record.inliers
        kf = self.keyframe
        if n:
            kf = frame_of_tracker_index(fields['kf_index'][0])
        events = []
        for event in record.events:
            frame = frame_of_tracker_index(event.get('frame_index', -1))
            events.append({'frame': frame, 'reason': event.get('reason', ''),
                           'detail': event.get('detail', '')})
            self.keyframe = frame
        if not n and events:
            kf = self.keyframe
        elif n:
            self.keyframe = events[-1]['frame'] if events else kf
        latency = ((record.matches_time - record.published) * 1e3
                   if record.matches_time is not None else None)
        entry: dict[str, Any] = {
            'index': record.index, 'stamp_ns': record.stamp_ns,
            'processed': True, 'keyframe_index': kf,
            'matches': n, 'inliers': inliers,
            'mean_score': round(float(np.mean(fields['score'])), 4) if n else None,
            'latency_ms': round(latency, 1) if latency is not None else None,
            'keyframe_events': events, 'pose': None, 'error_vs_ground_truth': None}
        if record.pose is not None:
            R_kf_cam, t_kf_cam = record.pose
            R = R_kf_cam.T  # keyframe -> current, as the tracker's RelativePose
            t = -R_kf_cam.T @ t_kf_cam
            rotation_only = float(np.linalg.norm(t)) < 1e-9
            entry['pose'] = {
                'rotation_deg': round(rotation_angle_deg(R), 4),
                'translation_direction': (None if rotation_only
                                          else [round(float(v), 6) for v in t]),
                'rotation_only': rotation_only}
            if self.ground_truth is not None and 0 <= kf < len(self.ground_truth):
                R_gt, t_gt = self.ground_truth.relative_pose(kf, record.index)
                rot_err, dir_err = pose_error_deg(R, t, R_gt, t_gt)
                entry['error_vs_ground_truth'] = {
                    'rotation_deg': round(rot_err, 4),
                    'translation_direction_deg': None if rotation_only else round(dir_err, 4),
                    'ground_truth_rotation_deg': round(rotation_angle_deg(R_gt), 4),
                    'ground_truth_baseline_m': round(float(np.linalg.norm(t_gt)), 4)}
        self.entries.append(entry)
        self._print(entry, dropped)

    def finish(self) -> None:
        """After the last record: a line for the frames without output after the last row."""
        if self._no_output:
            first, last = self._no_output[0], self._no_output[-1]
            print(f'{first if first == last else f"{first}-{last}":>5}  no output', flush=True)
        self._no_output = []

    @classmethod
    def _print(cls, entry: dict[str, Any], dropped: int) -> None:
        error = entry['error_vs_ground_truth'] or {}
        notes = [f'keyframe -> {e["frame"]} ({e["reason"]}'
                 f'{": " + e["detail"] if e["detail"] else ""})' for e in entry['keyframe_events']]
        if entry['pose'] is not None and entry['pose']['rotation_only']:
            notes.append('rotation-only pose (little parallax)')
        elif entry['pose'] is None and entry['matches'] and not entry['keyframe_events']:
            notes.append('no pose')
        cls.print_row(entry['index'], entry['keyframe_index'], entry['matches'],
                      entry['inliers'], entry['latency_ms'], notes,
                      rotation_error_deg=error.get('rotation_deg'),
                      direction_error_deg=error.get('translation_direction_deg'),
                      dropped=dropped)

    def summary(self, source: DemoInput, setup: dict[str, Any], args: argparse.Namespace,
                wall_s: float, play: dict[str, Any]) -> dict[str, Any]:
        """The demo's summary (written as DEMO_SUMMARY_NAME), its frames included; ``play``:
        the counts and real-time numbers of ``play_summary``."""
        matched = [e for e in self.entries if e['matches'] > 0]
        errors = [e['error_vs_ground_truth'] for e in self.entries
                  if e['error_vs_ground_truth'] is not None]
        latencies = [e['latency_ms'] for e in self.entries if e['latency_ms'] is not None]
        events = [ev for e in self.entries for ev in e['keyframe_events']]
        return {
            'input': source.description,
            'source': ('synthetic' if source.ground_truth is not None else
                       'images' if args.images else 'video'),
            **play,
            'wall_s': round(wall_s, 3),
            'model': {'profile': args.profile, 'extractor': args.extractor,
                      'max_keypoints': args.max_keypoints, 'resize': args.resize,
                      'device': args.device, **args.tracker_options},
            'ros': setup,
            'keyframes': len(events),
            'keyframe_switches': max(0, len(events) - 1),
            'matches': _stats([e['matches'] for e in matched]),
            'inliers': _stats([e['inliers'] for e in matched]),
            'latency_ms': _stats(latencies),
            'poses': sum(e['pose'] is not None for e in self.entries),
            'ground_truth': source.ground_truth is not None,
            'rotation_error_deg': _stats([e['rotation_deg'] for e in errors]),
            'translation_direction_error_deg': _stats(
                [e['translation_direction_deg'] for e in errors
                 if e['translation_direction_deg'] is not None]),
            'frames': self.entries,
        }


def play_summary(records: Sequence[FrameRecord], node: NodeCounts, *, lossless: bool,
                 rate_hz: float, load_average: Sequence[float]) -> dict[str, Any]:
    """The frames' fate and the real-time numbers, beside profiles.REALTIME_TARGET.

    Every published frame is counted once: processed (its output arrived), superseded or
    skipped (the node's own counts) or unfinished (neither when the demo stopped waiting:
    still in flight, or lost), so published = processed + superseded + skipped + unfinished.
    ``rate_hz``: the camera's rate (unused with ``lossless``: each frame goes out after the
    previous one's result); ``load_average``: os.getloadavg() before the run.
    """
    rate = RateSummary.from_times(
        {r.stamp_ns: r.published for r in records},
        {r.stamp_ns: r.matches_time for r in records if r.matches_time is not None})
    sent = sorted(r.published for r in records)
    span = sent[-1] - sent[0] if sent else 0.0
    compared = not lossless and rate_hz == REALTIME_TARGET.camera_hz
    return {
        'frames_published': rate.published,
        'frames_processed': rate.processed,
        'frames_superseded': node.superseded,
        'frames_skipped': node.skipped,
        'frames_unfinished': rate.published - rate.processed - node.superseded - node.skipped,
        'realtime': {
            'mode': 'lossless' if lossless else 'latest',
            'camera_rate_hz': None if lossless else rate_hz,
            'published_hz': round((len(sent) - 1) / span, 2) if span > 0 else None,
            'hz': round(rate.hz, 2),
            'latency_p50_ms': _round(rate.latency_p50_ms, 1),
            'latency_p95_ms': _round(rate.latency_p95_ms, 1),
            'node': asdict(node),
            'target': asdict(REALTIME_TARGET),
            'target_met': (REALTIME_TARGET.met_by(rate.hz, rate.latency_p50_ms) if compared
                           else None),
            'cpus': os.cpu_count(),
            'load_average_before': [round(v, 2) for v in load_average],
        },
    }


def _round(value: float | None, digits: int) -> float | None:
    return round(value, digits) if value is not None else None


def write_pictures(records: list[FrameRecord], table: FrameTable,
                   images: dict[int, np.ndarray], out_dir: Path) -> dict[str, Path]:
    """The side-by-side picture of the last matched frame (when its keyframe's image is still
    in ``images``) and the last debug image, under ``out_dir``; name (PICTURE_NOTES) -> path."""
    pictures: dict[str, Path] = {}
    last = next((r for r in reversed(records) if r.matches is not None
                 and len(r.matches.get('u', ())) > 0), None)
    if last is not None:
        kf = table.entries[last.index]['keyframe_index']
        if kf in images and last.index in images:
            f = last.matches
            kp0 = np.stack([f['kf_u'], f['kf_v']], 1)
            kp1 = np.stack([f['u'], f['v']], 1)
            k = np.arange(len(kp0))
            shown = f', {DEMO_MAX_LINES} drawn' if len(k) > DEMO_MAX_LINES else ''
            picture = draw_matches_side_by_side(
                images[kf], images[last.index], kp0, kp1, np.stack([k, k], 1), f['score'],
                inliers=f['inlier'].astype(bool), max_lines=DEMO_MAX_LINES,
                label=f'keyframe {kf} | frame {last.index}: {len(k)} matches{shown}, '
                      f'{int(f["inlier"].sum())} inliers')
            pictures['matches'] = write_png(out_dir / DEMO_MATCHES_NAME, picture)
    debug = next((r for r in reversed(records) if r.debug_image is not None), None)
    if debug is not None:
        pictures['debug_image'] = write_png(out_dir / DEMO_DEBUG_NAME, as_rgb8(debug.debug_image))
    return pictures


def print_summary(summary: dict[str, Any]) -> None:
    """The summary's printed lines: the frames' fate, matches, the real-time numbers beside
    the target and the errors vs ground truth."""
    matches, inliers = summary['matches'], summary['inliers']
    line = (f'summary: {summary["frames_processed"]} of {summary["frames_published"]} frames '
            f'processed in {summary["wall_s"]:.1f} s; without output (the dropped column): '
            f'{summary["frames_superseded"]} superseded (a newer frame came while the node was '
            f'busy), {summary["frames_skipped"]} skipped, {summary["frames_unfinished"]} '
            f'unfinished; {summary["keyframes"]} keyframe(s) '
            f'({summary["keyframe_switches"]} switch(es))')
    if matches:
        line += (f'; matches mean {matches["mean"]:.0f} (min {matches["min"]:.0f}), inliers '
                 f'mean {inliers["mean"]:.0f}')
    print(line)
    for text in realtime_lines(summary['realtime']):
        print(text)
    rot, trans = summary['rotation_error_deg'], summary['translation_direction_error_deg']
    if rot:
        text = (f'pose vs ground truth ({summary["poses"]} poses, relative to the keyframe): '
                f'rotation error median {rot["median"]:.3f} deg (max {rot["max"]:.3f})')
        if trans:
            text += (f', translation direction error median {trans["median"]:.3f} deg '
                     f'(max {trans["max"]:.3f})')
        print(text)
    elif summary['ground_truth']:
        print('pose vs ground truth: no pose was estimated')


def realtime_lines(realtime: dict[str, Any]) -> list[str]:
    """The achieved rate and latency, and beside them the target, met or not on this machine."""
    p50, p95 = realtime['latency_p50_ms'], realtime['latency_p95_ms']
    if realtime['mode'] == 'lossless':
        how = "lossless mode, each frame sent after the previous one's result"
    else:
        sent = realtime['published_hz']
        how = (f'latest mode, camera at {realtime["camera_rate_hz"]:g} Hz'
               + (f' (sent at {sent:.1f} Hz)' if sent is not None else ''))
    latency = (f'latency p50 {p50:.0f} ms, p95 {p95:.0f} ms' if p50 is not None
               else 'no latency (nothing processed)')
    lines = [f'real time ({how}): {realtime["hz"]:.1f} Hz processed, {latency}']
    target = REALTIME_TARGET
    if realtime['target_met'] is None:
        lines.append(f'target {target.describe()}: not compared (this run: {how})')
    else:
        load = ', '.join(f'{v:.2f}' for v in realtime['load_average_before'])
        verdict = 'met' if realtime['target_met'] else 'NOT met'
        lines.append(f'target {target.describe()}: {verdict} on this machine '
                     f'({realtime["cpus"]} CPUs, load average {load} before the run)')
    return lines

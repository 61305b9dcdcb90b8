"""PNG plots of a replay (``replay_summary.ReplaySummary``), drawn with matplotlib's Agg canvas.

No pyplot: figures are created on an Agg canvas directly, so plotting never opens a window,
never touches the global backend and is safe in threads and headless machines.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from lightglue_ros.replay_summary import ReplaySummary

PLOT_NAMES = ('matches_inliers', 'stop_layer', 'latency', 'keyframes', 'trajectory')
DPI = 100


def _figure(width: float = 8.0, height: float = 4.0, rows: int = 1, cols: int = 1
            ) -> tuple[Figure, list[Axes]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout='constrained')
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _time_axis(summary: ReplaySummary) -> tuple[np.ndarray, str]:
    """Seconds since the first processed frame's stamp, or frame numbers without frames."""
    if not summary.stamp_ns:
        return np.zeros(0), 'time [s]'
    stamps = np.asarray(summary.stamp_ns, dtype=np.int64)
    return (stamps - stamps[0]) * 1e-9, 'time since first frame [s]'


def _switch_times(summary: ReplaySummary, t: np.ndarray) -> np.ndarray:
    """Times of the frames at which the keyframe changed (after the first keyframe)."""
    marks = [i for i, event in enumerate(summary.keyframe_event)
             if event and event != 'first_frame']
    return t[marks] if len(t) else np.zeros(0)


def _mark_switches(ax: Axes, times: np.ndarray) -> None:
    for k, x in enumerate(times):
        ax.axvline(x, color='0.6', linestyle=':', linewidth=1,
                   label='keyframe switch' if k == 0 else None)


def _title(summary: ReplaySummary, what: str) -> str:
    flag = ' (interrupted)' if summary.interrupted else ''
    return f'{what} - {Path(summary.input).name} {summary.image_topic}{flag}'


def plot_matches_inliers(summary: ReplaySummary) -> Figure:
    fig, (ax,) = _figure()
    t, label = _time_axis(summary)
    ax.plot(t, summary.matches, '.-', label='matches')
    ax.plot(t, summary.inliers, '.-', label='pose inliers')
    # The gap between the two curves is the outliers (no pose: every match counts as one).
    ax.fill_between(t, summary.inliers, summary.matches, color='C3', alpha=0.2, linewidth=0,
                    label='outliers (matches - inliers)')
    _mark_switches(ax, _switch_times(summary, t))
    ax.set(xlabel=label, ylabel='count', title=_title(summary, 'Matches and inliers'))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc='best', fontsize='small')
    return fig


def plot_stop_layer(summary: ReplaySummary) -> Figure:
    fig, (ax,) = _figure()
    t, label = _time_axis(summary)
    ax.step(t, summary.stop_layer, where='mid', marker='.')
    _mark_switches(ax, _switch_times(summary, t))
    ax.set(xlabel=label, ylabel='LightGlue layers run',
           title=_title(summary, 'Early-exit stop layer (0: not matched)'))
    ax.set_ylim(bottom=0)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    return fig


def plot_latency(summary: ReplaySummary) -> Figure:
    fig, (ax, hist) = _figure(10.0, 4.0, 1, 2)
    t, label = _time_axis(summary)
    ax.plot(t, summary.latency, '.-', label='per frame (decode + track + write)')
    ax.plot(t, summary.tracker_latency, '.-', label='tracker alone')
    for name, style in (('p50', '--'), ('p95', ':')):
        if name in summary.latency_ms:
            ax.axhline(summary.latency_ms[name], color='C0', linestyle=style, linewidth=1,
                       label=f'{name} {summary.latency_ms[name]:.1f} ms')
    ax.set(xlabel=label, ylabel='ms', title=_title(summary, 'Latency'))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc='best', fontsize='small')
    if summary.latency:
        hist.hist(summary.latency, bins=min(30, max(5, len(summary.latency) // 2)), color='C0')
    hist.set(xlabel='ms', ylabel='frames', title=f'{summary.fps:.2f} frames/s overall')
    return fig


def plot_keyframes(summary: ReplaySummary) -> Figure:
    fig, (ax,) = _figure()
    t, label = _time_axis(summary)
    ax.step(t, summary.keyframe_index, where='post', label='keyframe index')
    switches = _switch_times(summary, t)
    idx = [i for i, e in enumerate(summary.keyframe_event) if e and e != 'first_frame']
    ax.plot(switches, [summary.keyframe_index[i] for i in idx], 'o', color='C3',
            label=f'switches ({summary.keyframe_switches})')
    ax.set(xlabel=label, ylabel='keyframe (frame index)',
           title=_title(summary, 'Keyframe switches'))
    ax.grid(alpha=0.3)
    ax.legend(loc='best', fontsize='small')
    return fig


def plot_trajectory(summary: ReplaySummary) -> Figure:
    """Camera centres in the first keyframe's frame: top view (x right, z forward) and x/y/z
    against time. Monocular scale: each keyframe step has unit length."""
    fig, (top, series) = _figure(10.0, 4.5, 1, 2)
    t, label = _time_axis(summary)
    pts = np.array([p if p is not None else [np.nan] * 3 for p in summary.position],
                   dtype=np.float64).reshape(-1, 3)
    top.plot(pts[:, 0], pts[:, 2], '.-')
    if np.isfinite(pts).any():
        first = pts[np.isfinite(pts).all(1)][0]
        top.plot(first[0], first[2], 'o', color='C2', label='start')
        top.legend(loc='best', fontsize='small')
    top.set(xlabel='x [keyframe units]', ylabel='z (forward) [keyframe units]',
            title=_title(summary, 'Trajectory (top view)'))
    top.set_aspect('equal', adjustable='datalim')
    top.grid(alpha=0.3)
    for axis, name in enumerate('xyz'):
        series.plot(t, pts[:, axis], '.-', label=name)
    series.set(xlabel=label, ylabel='position [keyframe units]',
               title=f'{int(np.isfinite(pts).all(1).sum())}/{len(pts)} frames with a pose')
    series.grid(alpha=0.3)
    series.legend(loc='best', fontsize='small')
    return fig


PLOTTERS = {
    'matches_inliers': plot_matches_inliers,
    'stop_layer': plot_stop_layer,
    'latency': plot_latency,
    'keyframes': plot_keyframes,
    'trajectory': plot_trajectory,
}


def plot_summary(summary: ReplaySummary, out_dir: str | Path) -> list[Path]:
    """Write one PNG per plot (PLOT_NAMES) into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, plot in PLOTTERS.items():
        fig = plot(summary)
        path = out / f'{name}.png'
        fig.savefig(path)
        paths.append(path)
    return paths

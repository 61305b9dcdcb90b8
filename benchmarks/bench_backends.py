"""CPU inference backends for the real-time profile (issue #19, item 4), side by side with
today's torch fp32 path in one process, frame by frame in turns.

    python benchmarks/bench_backends.py [--json] [--threads 1] [--frames 17]

Candidates, each a full tracker (``Tracker.extract`` then ``Tracker.track``: extract + prepare,
match against the cached keyframe, pose, keyframe policy) on the freiburg sequence (640x480)
with the ``realtime`` profile (XFeat + LighterGlue, 448 keypoints, native size):
- ``torch``: today's path (XFeat eager, LighterGlue dynamic with early exit and pruning);
- ``torch_full_depth``: LighterGlue without early exit and pruning (what adaptivity gains);
- ``torch_static``: LighterGlue's padded fixed-shape variant (``models.lightglue_static``, the
  same match sets as the dynamic path), eager: the graph the backends below run;
- ``ort`` / ``openvino``: XFeat's dense network at the fixed input shape and the static
  LighterGlue match, both exported once to ONNX (opset 17) and run by ONNX Runtime / OpenVINO
  (fp32, as many threads as torch); the per-image ``prepare`` and XFeat's sparse detection stay
  in torch;
- ``ort_xfeat`` / ``openvino_xfeat``: the backend for XFeat only, LighterGlue as today;
- ``openvino_bf16_xfeat``: OpenVINO's XFeat in bf16 (its own choice on CPUs with bf16);
- ``torch_int8``: LighterGlue's linear layers in int8 (torch's dynamic quantisation: the
  ``nn.Linear`` heads through ``quantize_dynamic``, the fused attention/feed-forward GEMMs
  through the same quantised ``Linear``), XFeat as today;
- ``ort_int8``: ONNX Runtime's dynamic int8 quantisation of the exported static LighterGlue,
  with the ONNX Runtime XFeat.
Parity against ``torch`` per frame, under the bounds the parity tests use (PARITY_BOUNDS;
END_TO_END_BOUNDS where the extractor's arithmetic differs, reported beside).
The first part profiles today's match (torch.profiler): where its milliseconds go; with
``--threads 1`` the last part runs every candidate through the node's two-stage pipeline.
The candidates themselves (exports, runtimes, int8) are in backend_candidates.py; results and
the verdict in docs/cpu_backends.md.
Needs ``onnx``, ``onnxruntime`` and ``openvino`` (pip); a missing one skips its candidates.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backend_candidates import (CANDIDATES, PACKAGES, Runtime, build_candidates,  # noqa: E402
                                build_runtimes, version)
from common import interleaved, machine, print_table, shared_dir  # noqa: E402

from lightglue_ros.camera import CameraModel  # noqa: E402
from lightglue_ros.geometry import pose_error_deg  # noqa: E402
from lightglue_ros.image import image_to_tensor, read_image  # noqa: E402
from lightglue_ros.pipeline import use_threads  # noqa: E402
from lightglue_ros.profiles import PROFILES  # noqa: E402
from lightglue_ros.tracker import FrameResult, Tracker, TrackerConfig, build_models  # noqa: E402

# The fp32 parity bounds of the tests: XFeat against its reference (tests/test_xfeat.py:
# identical keypoints, descriptors within DESCRIPTOR_TOL), LightGlue on another device or path
# with the same features (tests/test_cuda.py: MATCH_AGREEMENT of the matches shared, scores of
# shared matches within SCORE_TOL, FREIBURG_POSE_TOL_DEG between the poses).
PARITY_BOUNDS = {'keypoints_max_abs_diff': 0.0, 'descriptors_max_abs_diff': 1e-5,
                 'match_agreement': 0.99, 'score_max_abs_diff': 1e-3, 'pose_deg_max': 0.5}
# Where the extractor's arithmetic differs too (tests/test_cuda.py, fp32 tracker on CUDA, whose
# convolutions run in TF32, against the CPU): the same keyframes, END_TO_END_AGREEMENT of the
# matches with both points within MATCH_PX, END_TO_END_POSE_TOL_DEG. Reported, not the bar.
END_TO_END_BOUNDS = {'match_agreement_px': 0.95, 'pose_deg_max': 1.0}
MATCH_PX = 0.5
KEEP_SPEEDUP = 1.3  # the bar: end-to-end frame time, torch / backend


@dataclass
class FrameRecord:
    frame_ms: float
    result: FrameResult
    keypoints: torch.Tensor
    descriptors: torch.Tensor


def run_in_turns(trackers: dict[str, Tracker], images: list[np.ndarray], stamps: list[int],
                 camera: CameraModel) -> dict[str, list[FrameRecord]]:
    """Every tracker on every frame, in turns; frame 0 (extraction only) is not recorded."""
    for tracker in trackers.values():
        for i in (0, 1):
            tracker.process(images[i], stamps[i], camera)
        tracker.reset()
    records: dict[str, list[FrameRecord]] = {name: [] for name in trackers}
    for i, image in enumerate(images):
        for name, tracker in trackers.items():
            start = time.perf_counter()
            frame = tracker.extract(image)
            result = tracker.track(frame, stamps[i], camera)
            elapsed = (time.perf_counter() - start) * 1e3
            if i > 0:
                records[name].append(FrameRecord(elapsed, result, frame.features.keypoints,
                                                 frame.features.descriptors))
    return records


# -- parity ----------------------------------------------------------------------------------
def _pairs(result: FrameResult) -> dict[tuple, float]:
    """Match pairs keyed by their pixel positions (keyframe point, frame point) -> score."""
    keys = np.round(np.concatenate([result.kf_points, result.points], 1), 3)
    return {tuple(k): float(s) for k, s in zip(keys.tolist(), result.scores)}


def _agreeing(a: FrameResult, b: FrameResult) -> int:
    """Matches of ``a`` with a match of ``b`` whose two points both lie within MATCH_PX."""
    close = ((np.abs(a.kf_points[:, None] - b.kf_points[None]).max(-1, initial=0) <= MATCH_PX)
             & (np.abs(a.points[:, None] - b.points[None]).max(-1, initial=0) <= MATCH_PX))
    return int(close.any(1).sum()) if close.size else 0


def parity(records: list[FrameRecord], baseline: list[FrameRecord]) -> dict[str, Any]:
    """The candidate's frames against torch's: features, matches, inliers, poses."""
    kp_diff = desc_diff = score_diff = rot = trans = 0.0
    ious, kp_shared = [], []
    shared_total = close_total = larger_total = inlier_diff = keyframe_mismatch = 0
    for ours, base in zip(records, baseline):
        if ours.keypoints.shape != base.keypoints.shape:
            kp_diff = desc_diff = float('inf')
        else:
            kp_diff = max(kp_diff, float((ours.keypoints - base.keypoints).abs().max()))
            desc_diff = max(desc_diff, float((ours.descriptors - base.descriptors).abs().max()))
        positions = {tuple(k) for k in ours.keypoints.numpy().round(3).tolist()}
        kp_shared.append(statistics.fmean(tuple(k) in positions
                                          for k in base.keypoints.numpy().round(3).tolist()))
        a, b = ours.result, base.result
        if a.keyframe_index != b.keyframe_index:
            keyframe_mismatch += 1
            continue
        pa, pb = _pairs(a), _pairs(b)
        shared = pa.keys() & pb.keys()
        ious.append(len(shared) / max(len(pa.keys() | pb.keys()), 1))
        shared_total += len(shared)
        close_total += _agreeing(a, b)
        larger_total += max(len(pa), len(pb))
        score_diff = max([score_diff, *(abs(pa[k] - pb[k]) for k in shared)])
        inlier_diff = max(inlier_diff, abs(a.num_inliers - b.num_inliers))
        if a.ok and b.ok and a.pose is not None and b.pose is not None:
            r, t = pose_error_deg(a.pose.R_kf_to_cur, a.pose.t_kf_to_cur, b.pose.R_kf_to_cur,
                                  b.pose.t_kf_to_cur)
            rot, trans = max(rot, r), max(trans, t)
        elif a.ok != b.ok:
            rot = trans = float('inf')
    pose_deg = max(rot, trans)
    inliers = [r.result.num_inliers for r in records]
    out = {'keypoints_max_abs_diff': kp_diff, 'keypoints_shared_min': min(kp_shared),
           'descriptors_max_abs_diff': desc_diff,
           'match_iou_min': min(ious, default=float('nan')),
           'match_iou_mean': statistics.fmean(ious) if ious else float('nan'),
           'match_agreement': shared_total / max(larger_total, 1),
           'match_agreement_px': close_total / max(larger_total, 1),
           'score_max_abs_diff': score_diff, 'inliers_min': min(inliers),
           'inliers_median': statistics.median(inliers), 'inliers_max_abs_diff': inlier_diff,
           'pose_rot_deg_max': rot, 'pose_trans_deg_max': trans,
           'keyframe_mismatch_frames': keyframe_mismatch}
    same, other = PARITY_BOUNDS, END_TO_END_BOUNDS
    out['within_parity'] = bool(
        keyframe_mismatch == 0 and kp_diff <= same['keypoints_max_abs_diff']
        and desc_diff <= same['descriptors_max_abs_diff']
        and out['match_agreement'] >= same['match_agreement']
        and score_diff <= same['score_max_abs_diff'] and pose_deg <= same['pose_deg_max'])
    out['within_end_to_end_bounds'] = bool(
        keyframe_mismatch == 0 and out['match_agreement_px'] >= other['match_agreement_px']
        and pose_deg <= other['pose_deg_max'])
    return out


def summarise(records: dict[str, list[FrameRecord]]) -> dict[str, dict[str, Any]]:
    """Metric -> candidate -> value."""
    med = statistics.median
    out: dict[str, dict[str, Any]] = {}
    base_ms = med(r.frame_ms for r in records['torch'])
    for name, recs in records.items():
        row: dict[str, Any] = {
            'frame_ms_p50': med(r.frame_ms for r in recs),
            'extract_ms_p50': med(r.result.timings.extract_ms for r in recs),
            'match_ms_p50': med(r.result.timings.match_ms for r in recs),
            'pose_ms_p50': med(r.result.timings.pose_ms for r in recs),
            'matches_median': med(r.result.num_matches for r in recs),
            'stop_layer_median': med(r.result.stop_layer for r in recs)}
        row['speedup_vs_torch'] = base_ms / row['frame_ms_p50']
        # The pipelined node runs extraction beside matching + pose: its frame rate follows
        # the slower stage (an estimate from the sequential timings).
        row['stage_max_ms_p50'] = max(row['extract_ms_p50'],
                                      row['match_ms_p50'] + row['pose_ms_p50'])
        row.update(parity(recs, records['torch']))
        row['kept'] = bool(row['speedup_vs_torch'] >= KEEP_SPEEDUP and row['within_parity'])
        for key, value in row.items():
            out.setdefault(key, {})[name] = value
    base_stage = out['stage_max_ms_p50']['torch']
    out['stage_speedup_vs_torch'] = {name: base_stage / value
                                     for name, value in out['stage_max_ms_p50'].items()}
    return out


def network_times(net: nn.Module, runtimes: dict[str, Runtime], x: torch.Tensor
                  ) -> dict[str, float]:
    """XFeat's dense network alone at the exported shape: median ms per backend, in turns."""
    channels_last = x.contiguous(memory_format=torch.channels_last)
    array = x.contiguous().numpy()
    candidates = {'torch': lambda: net(channels_last)}
    for name, runtime in runtimes.items():
        if name.startswith('xfeat_'):
            candidates[name[len('xfeat_'):]] = (lambda r=runtime: r(array))
    with torch.inference_mode():
        return interleaved(candidates, repeats=15, warmup=2)


def pipelined_ms(trackers: dict[str, Tracker], images: list[np.ndarray], stamps: list[int],
                 camera: CameraModel, passes: int = 2) -> dict[str, float]:
    """Wall ms per frame with the node's pipeline: extraction of frame t+1 on a second thread
    while frame t is tracked, one torch thread each; candidates take whole passes in turns
    (best pass)."""
    from concurrent.futures import ThreadPoolExecutor

    out: dict[str, list[float]] = {name: [] for name in trackers}
    previous = use_threads(1)
    try:
        with ThreadPoolExecutor(1, initializer=use_threads, initargs=(1,)) as pool:
            for _ in range(passes):
                for name, tracker in trackers.items():
                    tracker.reset()
                    start = time.perf_counter()
                    pending = pool.submit(tracker.extract, images[0])
                    for i in range(len(images)):
                        frame = pending.result()
                        if i + 1 < len(images):
                            pending = pool.submit(tracker.extract, images[i + 1])
                        tracker.track(frame, stamps[i], camera)
                    out[name].append((time.perf_counter() - start) * 1e3 / len(images))
    finally:
        use_threads(previous)
    return {name: min(values) for name, values in out.items()}


# -- where the match time goes ---------------------------------------------------------------
def match_profile(tracker: Tracker, images: list[np.ndarray], stamps: list[int],
                  camera: CameraModel) -> dict[str, Any]:
    """torch.profiler over today's track() (match + pose): the largest aten ops, ms per frame,
    against the wall time of the matches."""
    from torch.profiler import ProfilerActivity, profile

    tracker.reset()
    frames = [tracker.extract(image) for image in images]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        results = [tracker.track(f, s, camera) for f, s in zip(frames, stamps)]
    tracker.reset()
    count = len(results) - 1  # the first frame is not matched
    events = [e for e in prof.key_averages() if e.key.startswith('aten::')]
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    match_ms = sum(r.timings.match_ms for r in results) / count
    return {'match_ms_mean_profiled': match_ms,
            'aten_self_ms_per_frame': sum(e.self_cpu_time_total for e in events) / 1e3 / count,
            'aten_calls_per_frame': sum(e.count for e in events) / count,
            'top_ops_ms_per_frame': {e.key: e.self_cpu_time_total / 1e3 / count
                                     for e in events[:6]}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch / ORT / OpenVINO intra-op threads (the node: 1 per stage)')
    parser.add_argument('--frames', type=int, default=17, help='freiburg frames (<= 17)')
    parser.add_argument('--candidates', default=','.join(CANDIDATES),
                        help='comma-separated subset (torch, the baseline, always runs): with '
                             'more than one thread each runtime model keeps a thread pool that '
                             'slows the others, so compare one runtime group against torch')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = shared_dir() / 'data' / 'freiburg_sequence'
    paths = sorted(folder.glob('*.png'))[:args.frames]
    images = [read_image(p) for p in paths]
    stamps = [int(round(float(p.stem) * 1e9)) for p in paths]
    camera = CameraModel.from_yaml(folder / 'camera_info.yaml')
    config = TrackerConfig(**PROFILES['realtime'], device='cpu')
    models = build_models(config)
    missing = {kind: [p for p in packages if version(p) is None]
               for kind, packages in PACKAGES.items()}
    asked = ['torch', *(n for n in args.candidates.split(',') if n != 'torch')]
    unknown = [n for n in asked if n not in CANDIDATES]
    if unknown:
        parser.error(f'unknown candidate(s) {", ".join(unknown)}; choose from '
                     f'{", ".join(CANDIDATES)}')
    skipped = {n: 'missing ' + ', '.join(sorted({p for kind in CANDIDATES[n]
                                                 for p in missing.get(kind, [])}))
               for n in asked if any(missing.get(kind) for kind in CANDIDATES[n])}
    names = [n for n in asked if n not in skipped]
    profile = match_profile(Tracker(config, extractor=models.extractor, matcher=models.matcher),
                            images, stamps, camera)
    with tempfile.TemporaryDirectory() as tmp:
        runtimes, shape, export_seconds = build_runtimes(names, models, config, images[0],
                                                         Path(tmp), args.threads)
        with torch.inference_mode():
            x = models.extractor._network_input(image_to_tensor(images[0]))[0]
        network_ms = network_times(models.extractor.net, runtimes, x)
        trackers = build_candidates(names, models, config, runtimes, shape)
        records = run_in_turns(trackers, images, stamps, camera)
        # The node's pipeline gives each stage one thread (2 cores): measured at --threads 1.
        pipelined = pipelined_ms(trackers, images, stamps, camera) if args.threads == 1 else {}
    results = summarise(records)
    if pipelined:
        results['pipelined_frame_ms'] = pipelined
        results['pipelined_speedup_vs_torch'] = {name: pipelined['torch'] / value
                                                 for name, value in pipelined.items()}
    report = {'machine': machine(), 'threads': args.threads, 'frames': len(images),
              'versions': {p: version(p) for p in ('torch', 'onnx', 'onnxruntime', 'openvino')},
              'candidates': {n: {'extractor': CANDIDATES[n][0], 'matcher': CANDIDATES[n][1]}
                             for n in names},
              'skipped': skipped, 'parity_bounds': PARITY_BOUNDS, 'keep_speedup': KEEP_SPEEDUP,
              'export_s': export_seconds, 'match_profile': profile,
              'xfeat_network_ms_p50': network_ms, **results}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(report['machine'], '| versions', report['versions'])
    print(f"today's match, profiled: {profile['match_ms_mean_profiled']:.1f} ms a frame, "
          f"{profile['aten_calls_per_frame']:.0f} aten calls, "
          f"{profile['aten_self_ms_per_frame']:.1f} ms inside them; largest: " + ', '.join(
              f'{k} {v:.1f}' for k, v in profile['top_ops_ms_per_frame'].items()))
    print('XFeat dense network alone, ms: ' + ', '.join(
        f'{k} {v:.1f}' for k, v in network_ms.items()))
    keys = ['frame_ms_p50', 'speedup_vs_torch', 'extract_ms_p50', 'match_ms_p50', 'pose_ms_p50',
            'stage_speedup_vs_torch', 'pipelined_frame_ms', 'pipelined_speedup_vs_torch',
            'stop_layer_median', 'keypoints_shared_min', 'descriptors_max_abs_diff',
            'match_agreement', 'match_agreement_px', 'match_iou_min', 'score_max_abs_diff',
            'inliers_min', 'inliers_max_abs_diff', 'pose_rot_deg_max', 'pose_trans_deg_max',
            'keyframe_mismatch_frames', 'within_parity', 'within_end_to_end_bounds', 'kept']
    keys = [k for k in keys if k in results]
    print_table(['candidate', *keys],
                [[n, *(_fmt(results[k][n]) for k in keys)] for n in names])
    for name, reason in skipped.items():
        print(f'skipped {name}: {reason}')
    return 0


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f'{value:.3g}' if abs(value) < 10 else f'{value:.1f}'
    return str(value)


if __name__ == '__main__':
    sys.exit(main())

"""How VINS would read ~/features: ids that vanish and return, misattributed observations,
outliers among the published points.

Usage:
    python benchmarks/bench_vins_tracks.py [--json] [--shared-dir ../shared]
        [--synthetic-frames 60] [--xfeat-weights DIR] [--checkout DIR]

Each scene runs through the tracker and the node's own message builder
(``lightglue_ros.ros.outputs.frame_outputs``, both ``features_layout`` values); the published
~/features messages are then read as VINS-Mono / VINS-Fusion do (``feature_manager.cpp``: the
j-th observation of an id belongs to the j-th frame after its first, ``tracks.check_runs``).
Scenes: the 18 freiburg frames (camera_info.yaml) with XFeat (the realtime profile) and ALIKED
(1024 keypoints), and the synthetic room at 30 fps with XFeat. ``--checkout`` measures another
checkout's package (e.g. one before ``lightglue_ros.tracks``, whose builder published every
match under the tracker's own track ids); the reading is always this checkout's ``check_runs``.
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _check_runs() -> Any:
    """This checkout's tracks.check_runs, whichever package is measured."""
    spec = importlib.util.spec_from_file_location(
        '_bench_tracks', PROJECT_ROOT / 'lightglue_ros' / 'tracks.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.check_runs


def _features_ids(msg: Any) -> np.ndarray:
    return np.asarray(msg.channels[0].values, dtype=np.float32).astype(np.int64)


def _scene_frames(name: str, shared: Path, synthetic_frames: int
                  ) -> tuple[list[np.ndarray], list[int], Any]:
    from lightglue_ros.camera import CameraModel
    from lightglue_ros.image import read_image
    from lightglue_ros.synthetic import make_sequence

    if name == 'synthetic':
        sequence = make_sequence(synthetic_frames, fps=30.0)
        return sequence.images, sequence.stamps_ns, sequence.camera
    folder = shared / 'data' / 'freiburg_sequence'
    paths = sorted(folder.glob('*.png'))
    return ([read_image(p) for p in paths], [int(round(float(p.stem) * 1e9)) for p in paths],
            CameraModel.from_yaml(folder / 'camera_info.yaml'))


def _config(extractor: str, shared: Path, xfeat_weights: Path | None) -> Any:
    from lightglue_ros.profiles import PROFILES
    from lightglue_ros.tracker import TrackerConfig

    if extractor == 'aliked':
        weights = shared / 'weights'
        return TrackerConfig(extractor='aliked', device='cpu', max_keypoints=1024, resize=None,
                             extractor_weights=str(weights / 'aliked-n16.pth'),
                             matcher_weights=str(weights / 'aliked_lightglue.pth'))
    options = dict(PROFILES['realtime'], device='cpu')
    if xfeat_weights is not None:
        options.update(extractor_weights=str(xfeat_weights / 'xfeat.pt'),
                       matcher_weights=str(xfeat_weights / 'xfeat-lighterglue.pt'))
    return TrackerConfig(**options)


def measure(scene: str, extractor: str, shared: Path, synthetic_frames: int,
            xfeat_weights: Path | None) -> dict[str, Any]:
    from std_msgs.msg import Header

    from lightglue_ros.ros.messages import ns_to_stamp, read_matches_cloud
    from lightglue_ros.ros.outputs import frame_outputs
    from lightglue_ros.tracker import Tracker

    images, stamps, camera = _scene_frames(scene, shared, synthetic_frames)
    tracker = Tracker(_config(extractor, shared, xfeat_weights))
    tracker.warm_up()
    results = [tracker.process(image, stamp, camera) for image, stamp in zip(images, stamps)]
    has_tracks = 'tracks' in inspect.signature(frame_outputs).parameters
    row: dict[str, Any] = {'scene': scene, 'extractor': extractor, 'frames': len(results),
                           'keyframe_changes': sum(len(r.keyframe_events) for r in results) - 1}
    for layout in ('vins_mono', 'vins_fusion'):
        extra: dict[str, Any] = {}
        if has_tracks:
            from lightglue_ros.tracks import PublishedTracks
            extra['tracks'] = PublishedTracks()
        frame_ids, published, outliers = [], 0, 0
        for result, stamp in zip(results, stamps):
            header = Header(stamp=ns_to_stamp(stamp), frame_id='camera')
            out = frame_outputs(result, header, odom_frame_id='odom', features_layout=layout,
                                **extra)
            if out.features is None:
                continue
            frame_ids.append(_features_ids(out.features))
            matches = read_matches_cloud(out.matches)
            inlier_pixels = {(float(u), float(v)) for u, v, ok in
                             zip(matches['u'], matches['v'], matches['inlier']) if ok}
            u_channel = 1 if layout == 'vins_mono' else 2
            pixels = zip(out.features.channels[u_channel].values,
                         out.features.channels[u_channel + 1].values)
            for u, v in pixels:
                published += 1
                outliers += (float(u), float(v)) not in inlier_pixels
        check = _check_runs()(frame_ids)
        row[layout] = {'ids': check.ids, 'returning_ids_pct': 100 * check.returning_fraction,
                       'observations': check.observations,
                       'misattributed_pct': 100 * check.misattributed_fraction,
                       'outliers_published_pct': 100 * outliers / max(published, 1)}
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--shared-dir', type=Path,
                        default=Path(os.environ.get('LIGHTGLUE_ROS_SHARED',
                                                    PROJECT_ROOT.parent / 'shared')))
    parser.add_argument('--synthetic-frames', type=int, default=60)
    parser.add_argument('--xfeat-weights', type=Path, help='folder with xfeat.pt and '
                        'xfeat-lighterglue.pt (default: resolved by name)')
    parser.add_argument('--checkout', type=Path, default=PROJECT_ROOT,
                        help='project folder whose lightglue_ros is measured')
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.checkout.resolve()))
    rows = [measure(scene, extractor, args.shared_dir, args.synthetic_frames, args.xfeat_weights)
            for scene, extractor in (('freiburg', 'xfeat'), ('freiburg', 'aliked'),
                                     ('synthetic', 'xfeat'))]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        for layout in ('vins_mono', 'vins_fusion'):
            r = row[layout]
            print(f"{row['scene']:9s} {row['extractor']:6s} {layout:11s} "
                  f"frames {row['frames']:3d} kf changes {row['keyframe_changes']:2d}  "
                  f"ids {r['ids']:5d} returning {r['returning_ids_pct']:5.1f} %  "
                  f"misattributed {r['misattributed_pct']:5.1f} % of {r['observations']:6d}  "
                  f"outliers published {r['outliers_published_pct']:5.1f} %")
    return 0


if __name__ == '__main__':
    sys.exit(main())

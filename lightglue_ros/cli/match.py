"""``lightglue-ros match IMAGE0 IMAGE1``: its parser and command (counts, pose, JSON, picture).

The parser imports nothing heavy (``lightglue-ros --help``); the command imports the models,
OpenCV and the geometry when it runs.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightglue_ros.cli.errors import EXIT_OK
from lightglue_ros.cli.options import (add_calibration_options, add_model_options, build_models,
                                       camera_from_options)
from lightglue_ros.profiles import pipeline_name

if TYPE_CHECKING:
    from lightglue_ros.geometry import RelativePose


def add_match_parser(commands: Any) -> None:
    """Register ``match`` on the sub-parsers ``commands``."""
    parser = commands.add_parser(
        'match', help='match two images',
        description='Extract keypoints in two images, match them with LightGlue and print the '
                    'counts; with intrinsics also the relative pose of image1 w.r.t. image0.')
    parser.add_argument('image0', help='first image file')
    parser.add_argument('image1', help='second image file')
    parser.add_argument('--out', metavar='PNG',
                        help='write the two images side by side with keypoints and matches '
                             '(with intrinsics: pose inliers green, outliers red; without: '
                             'lines coloured by score, red low to green high; a legend says '
                             'which)')
    parser.add_argument('--json', action='store_true',
                        help='print one JSON object instead of text')
    add_calibration_options(parser)
    add_model_options(parser)
    parser.set_defaults(handler=match_command)


def match_command(args: argparse.Namespace) -> int:
    """``lightglue-ros match``: see the sub-command's help."""
    from lightglue_ros.cli.image_files import read_image_file, write_png
    from lightglue_ros.geometry import estimate_relative_pose
    from lightglue_ros.image import image_to_tensor
    from lightglue_ros.tracker import TrackerConfig
    from lightglue_ros.viz import draw_matches_side_by_side

    images = [read_image_file(args.image0), read_image_file(args.image1)]
    cameras = [camera_from_options(args, im.shape[1], im.shape[0]) for im in images]
    models = build_models(args)
    t0 = time.perf_counter()
    features = [models.extractor.extract(image_to_tensor(im, device=models.device))
                for im in images]
    extract_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    result = models.matcher.match(*features)
    match_ms = (time.perf_counter() - t0) * 1e3
    pairs = result.matches.cpu().numpy()
    scores = result.scores.cpu().numpy()
    kp = [f.keypoints.cpu().numpy() for f in features]
    pose = None
    if cameras[0] is not None:
        defaults = TrackerConfig()
        pose = estimate_relative_pose(
            kp[0][pairs[:, 0]], kp[1][pairs[:, 1]], cameras[0], cameras[1],
            method=defaults.pose_method, threshold_px=defaults.ransac_threshold_px,
            confidence=defaults.ransac_confidence, min_matches=defaults.min_pose_matches,
            min_parallax_deg=defaults.min_parallax_deg)

    out_path = None
    if args.out:
        label = (f'{pipeline_name(args.extractor)}: {len(pairs)} matches'
                 + (f', {pose.num_inliers} inliers' if pose is not None and pose.success
                    else ''))
        picture = draw_matches_side_by_side(
            images[0], images[1], kp[0], kp[1], pairs, scores,
            inliers=pose.inlier_mask if pose is not None and pose.success else None,
            label=label)
        out_path = write_png(Path(args.out), picture)

    report = {
        'image0': str(args.image0), 'image1': str(args.image1),
        'image0_size': [int(images[0].shape[1]), int(images[0].shape[0])],
        'image1_size': [int(images[1].shape[1]), int(images[1].shape[0])],
        'extractor': args.extractor, 'device': str(models.device),
        'max_keypoints': args.max_keypoints,
        'keypoints0': len(features[0]), 'keypoints1': len(features[1]),
        'matches': len(pairs),
        'mean_score': round(float(scores.mean()), 4) if len(scores) else None,
        'stop_layer': int(result.stop_layer),
        'pruned0': result.num_pruned0, 'pruned1': result.num_pruned1,
        'timings_ms': {'extract': round(extract_ms, 1), 'match': round(match_ms, 1)},
        'pose': _pose_dict(pose) if pose is not None else None,
        'output': str(out_path) if out_path is not None else None,
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return EXIT_OK
    n_layers = models.matcher.conf['n_layers']
    print(f'image0: {args.image0} ({report["image0_size"][0]}x{report["image0_size"][1]}), '
          f'{report["keypoints0"]} keypoints')
    print(f'image1: {args.image1} ({report["image1_size"][0]}x{report["image1_size"][1]}), '
          f'{report["keypoints1"]} keypoints')
    mean = f', mean score {report["mean_score"]:.2f}' if report['mean_score'] is not None else ''
    print(f'matches: {report["matches"]}{mean} ({pipeline_name(args.extractor)} on '
          f'{models.device}, stopped after layer {result.stop_layer}/{n_layers}, pruned '
          f'{result.num_pruned0} + {result.num_pruned1} points; extract {extract_ms:.0f} ms, '
          f'match {match_ms:.0f} ms)')
    if pose is not None:
        print('pose:', _describe_pose(pose))
    if out_path is not None:
        print(f'wrote {out_path}')
    return EXIT_OK


def _pose_dict(pose: RelativePose) -> dict[str, Any]:
    import numpy as np

    from lightglue_ros.geometry import rotation_angle_deg

    t = np.asarray(pose.t_kf_to_cur, np.float64)
    return {
        'success': bool(pose.success), 'reason': pose.reason,
        'rotation_deg': round(rotation_angle_deg(pose.R_kf_to_cur), 4),
        'translation_direction': ([round(float(v), 6) for v in t]
                                  if pose.success and not pose.rotation_only else None),
        'rotation_only': bool(pose.rotation_only),
        'inliers': int(pose.num_inliers), 'matches_used': int(pose.num_matches),
        'inlier_ratio': round(float(pose.inlier_ratio), 4),
        'median_parallax_deg': (round(float(pose.median_parallax_deg), 4)
                                if math.isfinite(pose.median_parallax_deg) else None),
        'R': [[round(float(v), 8) for v in row] for row in np.asarray(pose.R_kf_to_cur)],
        'method': pose.method,
    }


def _describe_pose(pose: RelativePose) -> str:
    from lightglue_ros.geometry import rotation_angle_deg

    if not pose.success:
        return f'failed ({pose.reason}; {pose.num_matches} matches)'
    text = f'rotation {rotation_angle_deg(pose.R_kf_to_cur):.2f} deg, '
    if pose.rotation_only:
        text += (f'translation not observable (parallax {pose.median_parallax_deg:.2f} deg: '
                 'rotation-only estimate), ')
    else:
        t = pose.t_kf_to_cur
        text += (f'translation direction ({t[0]:+.3f}, {t[1]:+.3f}, {t[2]:+.3f}) '
                 f'(x1 = R x0 + t, camera 0 -> camera 1), ')
    return text + (f'{pose.num_inliers}/{pose.num_matches} inliers '
                   f'({100 * pose.inlier_ratio:.0f}%)')

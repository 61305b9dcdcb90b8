"""LightGlue: parity with kornia (real weights) and transformers (random weights), edge cases."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from devtools import reference_models
from lightglue_ros.errors import (CheckpointError, ConfigError, InvalidFeaturesError,
                                  InvalidImageError)
from lightglue_ros.features import Features
from lightglue_ros.image import image_to_tensor, read_image
from lightglue_ros.models.extractors import build_extractor
from lightglue_ros.models.lightglue import LightGlue
from lightglue_ros.models.lightglue_checkpoints import convert_state_dict

# Scores vs kornia with the same real weights. The parity proof is in fp64 (both models and the
# features .double()): the same algorithm agrees to FP64_SCORE_TOL (measured <= 3.0e-8 on
# freiburg 0/4 and three ScanNet pairs, ALIKED 2048, adaptive and full). In fp32 each side's
# kernels round differently: measured 1e-6..4e-5 here, up to 1.75e-4 on other real images
# (issue #20), so the fp32 scores are only held to FP32_SCORE_TOL, which rounding stays under
# and a wrong computation does not (zeroing any one bias of the last layer moved the scores of
# the common matches by 5e-3 to 0.47; ALIKED 1024, freiburg 0/4, full depth).
FP64_SCORE_TOL = 1e-6
FP32_SCORE_TOL = 1e-3
HF_SCORE_TOL = 1e-5  # vs transformers with random weights (scores are small and well separated)
MODES = {'adaptive': {'depth_confidence': 0.95, 'width_confidence': 0.99},
         'full': {'depth_confidence': -1, 'width_confidence': -1}}
EXTRACTOR_WEIGHTS = {'aliked': 'aliked-n16.pth', 'disk': 'disk-depth-save.pth'}


@pytest.fixture(scope='module')
def real_features(weights_dir: Path, freiburg_frames: list[Path]):
    """{(extractor, max_keypoints): (features of frame 0, features of frame 4)}."""
    images = [image_to_tensor(read_image(freiburg_frames[i])) for i in (0, 4)]
    cache = {}

    def get(extractor: str, max_keypoints: int) -> tuple[Features, Features]:
        key = (extractor, max_keypoints)
        if key not in cache:
            model = build_extractor(extractor, weights=weights_dir / EXTRACTOR_WEIGHTS[extractor],
                                    max_keypoints=max_keypoints)
            cache[key] = tuple(model.extract(image) for image in images)
        return cache[key]

    return get


@pytest.mark.parametrize('extractor', ['aliked', 'disk'])
@pytest.mark.parametrize('max_keypoints', [512, 1024, 2048])
@pytest.mark.parametrize('mode', list(MODES))
def test_equals_kornia_with_real_weights(real_features, weights_dir, extractor, max_keypoints,
                                         mode):
    f0, f1 = real_features(extractor, max_keypoints)
    # DISK may find fewer maxima than asked for at 2048 on 640x480 frames.
    assert max_keypoints * 0.8 <= min(len(f0), len(f1)) <= max(len(f0), len(f1)) <= max_keypoints
    weights = weights_dir / f'{extractor}_lightglue.pth'
    ours = LightGlue(extractor, weights=weights, **MODES[mode])
    theirs = reference_models.build_kornia_lightglue(extractor, weights, **MODES[mode])
    result = ours.match(f0, f1)
    matches, scores, stop, raw = reference_models.kornia_match(theirs, f0, f1)
    assert len(result) > 100
    assert torch.equal(result.matches, matches)
    assert result.stop_layer == stop
    assert torch.allclose(result.scores, scores, atol=FP32_SCORE_TOL, rtol=0)
    if mode == 'adaptive':
        assert torch.equal(result.layers0, raw['prune0'][0])
        assert torch.equal(result.layers1, raw['prune1'][0])
        assert result.stop_layer < 9 and result.num_pruned0 + result.num_pruned1 > 0
    else:
        assert result.stop_layer == 9
    # fp64 on both sides: the same algorithm, up to rounding (the parity proof, see above).
    ours64, theirs64 = ours.double(), theirs.double()
    ours64.fuse()
    result64 = ours64.match(_double(f0), _double(f1))
    matches64, scores64, stop64, raw64 = reference_models.kornia_match(
        theirs64, _double(f0), _double(f1))
    assert torch.equal(result64.matches, matches64) and result64.stop_layer == stop64
    assert torch.allclose(result64.scores.double(), scores64, atol=FP64_SCORE_TOL, rtol=0)
    if mode == 'adaptive':
        assert torch.equal(result64.layers0, raw64['prune0'][0])
        assert torch.equal(result64.layers1, raw64['prune1'][0])


def _double(f: Features) -> Features:
    return Features(f.keypoints.double(), f.scores.double(), f.descriptors.double(),
                    f.image_size)


def test_real_weights_consecutive_frames_match_well(weights_dir, freiburg_frames):
    extractor = build_extractor('aliked', weights=weights_dir / 'aliked-n16.pth',
                                max_keypoints=1024)
    matcher = LightGlue('aliked', weights=weights_dir / 'aliked_lightglue.pth')
    f0, f1 = (extractor.extract(image_to_tensor(read_image(p))) for p in freiburg_frames[:2])
    result = matcher.match(f0, f1)
    assert len(result) >= 500
    # Consecutive frames of a slow hand-held sequence: matched points move little.
    shift = (f0.keypoints[result.matches[:, 0]] - f1.keypoints[result.matches[:, 1]]).norm(dim=1)
    assert shift.median() < 40


def _random_hf_model(seed: int = 0, **conf) -> torch.nn.Module:
    # An optional test dependency: colcon users without it get a skip, not a failure.
    pytest.importorskip('transformers', reason='transformers (the test extra) is not installed')
    torch.manual_seed(seed)
    model = reference_models.build_transformers_lightglue(256, None, **conf)
    with torch.no_grad():  # LightGlue shares one projection for cross-attention queries/keys
        for layer in model.transformer_layers:
            layer.cross_attention.k_proj.weight.copy_(layer.cross_attention.q_proj.weight)
            layer.cross_attention.k_proj.bias.copy_(layer.cross_attention.q_proj.bias)
    return model


def _random_features(seed: int, n: int, size=(640, 480)) -> Features:
    g = torch.Generator().manual_seed(seed)
    keypoints = torch.rand(n, 2, generator=g) * torch.tensor(size)
    descriptors = torch.nn.functional.normalize(torch.randn(n, 256, generator=g), dim=-1)
    return Features(keypoints, torch.rand(n, generator=g), descriptors, size)


@pytest.mark.parametrize('layout', ['hugging_face', 'cvg', 'cvg_legacy'])
def test_equals_transformers_at_full_depth(layout):
    hf = _random_hf_model(depth_confidence=-1.0, width_confidence=-1.0, filter_threshold=0.0)
    hf_state = {k: v for k, v in hf.state_dict().items() if not k.startswith('keypoint_detector')}
    ours_layout = convert_state_dict(hf_state)
    state = {'hugging_face': hf_state, 'cvg': ours_layout,
             'cvg_legacy': reference_models.to_legacy_cvg_state_dict(ours_layout)}[layout]
    ours = LightGlue('superpoint', depth_confidence=-1, width_confidence=-1, filter_threshold=0.0)
    ours.load_weights(state)
    f0, f1 = _random_features(1, 700), _random_features(2, 650)
    result = ours.match(f0, f1)
    matches, scores = reference_models.transformers_match(hf, f0, f1)
    assert len(result) > 50
    assert torch.equal(result.matches, matches)
    assert torch.allclose(result.scores, scores, atol=HF_SCORE_TOL, rtol=0)


def test_export_to_hugging_face_round_trips(weights_dir):
    ours = LightGlue('aliked', weights=weights_dir / 'aliked_lightglue.pth')
    exported = reference_models.to_hugging_face_state_dict(ours.state_dict())
    back = convert_state_dict(exported)
    assert back.keys() == ours.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in ours.state_dict().items())


def test_keyframe_cache_gives_the_same_matches(real_features, weights_dir):
    f0, f1 = real_features('aliked', 512)
    matcher = LightGlue('aliked', weights=weights_dir / 'aliked_lightglue.pth')
    keyframe = matcher.prepare_features(f0)
    direct = matcher.match(f0, f1)
    for _ in range(2):  # the cache is not modified by matching against it
        cached = matcher.match_prepared(keyframe, matcher.prepare_features(f1))
        assert torch.equal(cached.matches, direct.matches)
        assert torch.equal(cached.scores, direct.scores)


@pytest.mark.parametrize('sizes', [(0, 300), (300, 0), (0, 0), (1, 1), (1, 300), (3, 2)])
def test_few_or_no_keypoints_never_raise(sizes):
    matcher = LightGlue('superpoint')
    f0, f1 = _random_features(3, sizes[0]), _random_features(4, sizes[1])
    result = matcher.match(f0, f1)
    assert result.matches.shape[1] == 2 and result.matches.dtype == torch.long
    assert len(result) <= min(sizes)
    assert result.layers0.shape == (sizes[0],) and result.layers1.shape == (sizes[1],)
    if 0 in sizes:
        assert len(result) == 0 and result.stop_layer == 0


def test_pruning_every_point_returns_empty_matches():
    matcher = LightGlue('superpoint', depth_confidence=-1, width_confidence=1e-9)
    matcher.confidence_thresholds = [-1.0] * 9  # no point counts as low-confidence
    result = matcher.match(_random_features(5, 400), _random_features(6, 400))
    assert len(result) == 0
    assert result.stop_layer == 1
    assert int((result.layers0 == 1).sum()) == 400


def test_rejects_wrong_descriptor_size_and_options():
    with pytest.raises(ConfigError, match='expects 256'):
        LightGlue('superpoint').match(
            Features(torch.rand(5, 2), torch.rand(5), torch.rand(5, 128), (10, 10)),
            _random_features(0, 5))
    with pytest.raises(ConfigError, match='unknown LightGlue option'):
        LightGlue('superpoint', depth_confidance=0.9)
    with pytest.raises(ConfigError, match='unknown features'):
        LightGlue('sift2')


def test_bad_checkpoints_are_named(tmp_path, weights_dir):
    state = torch.load(weights_dir / 'aliked_lightglue.pth', weights_only=True)
    bad = dict(state)
    bad['transformers.0.self_attn.Wqkv.weight'] = torch.zeros(3, 3)
    del bad['posenc.Wr.weight']
    path = tmp_path / 'bad.pth'
    torch.save(bad, path)
    with pytest.raises(CheckpointError, match=r'missing keys: posenc\.Wr\.weight') as err:
        LightGlue('aliked', weights=path)
    assert 'transformers.0.self_attn.Wqkv.weight (file (3, 3), model (768, 256))' in str(err.value)
    with pytest.raises(CheckpointError, match='input_proj'):  # a 256-d config has no projection
        LightGlue('superpoint', weights=weights_dir / 'aliked_lightglue.pth')


def test_malformed_features_get_a_clear_error():
    matcher = LightGlue('superpoint')
    good = _random_features(1, 50)
    with pytest.raises(InvalidFeaturesError, match='50 keypoints but descriptors of shape '
                                                   '\\(1, 49, 256\\)'):
        matcher.match(Features(good.keypoints, good.scores, good.descriptors[:49],
                               good.image_size), good)
    nan = good.keypoints.clone()
    nan[7, 1] = float('nan')
    with pytest.raises(InvalidFeaturesError, match='NaN or infinite'):
        matcher.match(good, Features(nan, good.scores, good.descriptors, good.image_size))
    with pytest.raises(InvalidFeaturesError, match='keypoints must be'):
        matcher.prepare(torch.rand(50, 3), good.descriptors, good.image_size)


@pytest.mark.parametrize('size', [(8, 8), (16, 16), (12, 16)])
def test_disk_on_tiny_images_raises_our_error(weights_dir, size):
    disk = build_extractor('disk', weights=weights_dir / 'disk-depth-save.pth')
    with pytest.raises(InvalidImageError, match='longer than 16 px'):
        disk.extract(torch.rand(3, *size))
    assert disk.extract(torch.rand(3, 16, 17)).image_size == (17, 16)  # one side longer: runs

"""Our SuperPoint against transformers' on a real frame, its options, and its weight loading."""
from __future__ import annotations

import os
import shlex
from pathlib import Path

import cv2
import pytest
import torch
import torch.nn.functional as F

from lightglue_ros.errors import CheckpointError, ConfigError, InvalidImageError
from lightglue_ros.models.superpoint import (SuperPoint, _nms_mask_torch, convert_hf_state_dict,
                                             is_hf_layout, max_pool, nms_mask)

transformers = pytest.importorskip('transformers')

FRAME = 'data/freiburg_sequence/1341847980.722988.png'
THRESHOLD, NMS_RADIUS = 0.0005, 4


def hf_superpoint(max_keypoints: int = -1, seed: int = 0) -> torch.nn.Module:
    """transformers' model with seeded He-normal weights.

    He-normal keeps the activations' scale through the 8 encoder layers, so the heatmap is
    peaked like a trained one (HF's own std-0.02 init gives a flat 1/65 heatmap where every
    score is a near tie). Borders are 0 on both sides: transformers compares the bottom/right
    border with 8x the heatmap size, so it never removes keypoints there.
    """
    config = transformers.SuperPointConfig(
        keypoint_threshold=THRESHOLD, max_keypoints=max_keypoints, nms_radius=NMS_RADIUS,
        border_removal_distance=0)
    torch.manual_seed(seed)
    model = transformers.SuperPointForKeypointDetection(config).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity='relu')
            torch.nn.init.normal_(module.bias, std=0.1)
    return model


def run_hf(model: torch.nn.Module, image: torch.Tensor, max_keypoints: int
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[1 x H x W] gray -> keypoints [N x 2] (x, y) pixels, scores [N], descriptors [N x 256]."""
    model.keypoint_decoder.max_keypoints = max_keypoints
    with torch.inference_mode():
        out = model(image[None])
    n = int(out.mask[0].sum())
    h, w = image.shape[-2:]
    keypoints = (out.keypoints[0, :n] * torch.tensor([w, h])).round()  # relative -> pixels
    return keypoints, out.scores[0, :n], out.descriptors[0, :n]


def by_yx(keypoints: torch.Tensor) -> torch.Tensor:
    """Order that sorts [N x 2] (x, y) integer pixels by (y, x): robust to tie order."""
    return torch.argsort(keypoints[:, 1] * 100_000 + keypoints[:, 0])


@pytest.fixture(scope='module')
def gray(shared_dir: Path) -> torch.Tensor:
    path = shared_dir / FRAME
    if not path.is_file():
        pytest.skip(f'{path} is missing')
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert image is not None and image.shape == (480, 640)
    return torch.from_numpy(image).float().div(255)[None]  # [1 x 480 x 640]


@pytest.fixture(scope='module')
def rgb(shared_dir: Path) -> torch.Tensor:
    image = cv2.cvtColor(cv2.imread(str(shared_dir / FRAME), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return torch.from_numpy(image).float().div(255).permute(2, 0, 1).contiguous()


@pytest.fixture(scope='module')
def hf_model() -> torch.nn.Module:
    return hf_superpoint()


@pytest.fixture(scope='module')
def hf_outputs(hf_model: torch.nn.Module, gray: torch.Tensor) -> dict:
    return {k: run_hf(hf_model, gray, k) for k in (-1, 1024)}


def ours(hf_model: torch.nn.Module, **conf) -> SuperPoint:
    """Our SuperPoint with transformers' weights, at native size keeping every keypoint
    (as the reference does) unless ``conf`` says otherwise."""
    conf = {'detection_threshold': THRESHOLD, 'nms_radius': NMS_RADIUS, 'remove_borders': 0,
            'max_keypoints': None, 'resize': None, **conf}
    model = SuperPoint(**conf)
    model.load_weights(convert_hf_state_dict(hf_model.state_dict()))
    return model


@pytest.mark.parametrize('radius', [0, 1, 2, 4, 7])
def test_max_pool_and_nms_equal_the_reference(radius):
    from transformers.models.superpoint.modeling_superpoint import simple_nms

    torch.manual_seed(radius)
    scores = torch.rand(2, 61, 83) ** 3
    scores[0, 10:20, 30:45] = 0.5  # a plateau: ties everywhere
    scores[1, :, :7] = 0.0
    size = 2 * radius + 1
    assert torch.equal(max_pool(scores, radius), F.max_pool2d(scores, size, 1, radius))
    mask = scores > 0.9
    assert torch.equal(max_pool(mask, radius),
                       F.max_pool2d(mask.float(), size, 1, radius) > 0)
    # simple_nms returns kept scores, so its zeros hide kept zero-score points: compare > 0.
    expected = simple_nms(scores, radius) > 0
    assert torch.equal(nms_mask(scores, radius) & (scores > 0), expected)  # numpy on CPU
    assert torch.equal(_nms_mask_torch(scores, radius) & (scores > 0), expected)  # GPU path
    half = scores.half()  # a dtype numpy cannot take from torch on every platform: torch path
    assert torch.equal(nms_mask(half, radius) & (half > 0), simple_nms(half, radius) > 0)


@pytest.mark.parametrize(('layout', 'max_keypoints', 'channels_last'), [
    ('official', -1, True), ('official', 1024, True), ('official', -1, False),
    ('official', 1024, False), ('hf', 1024, True), ('hf-prefixed', 1024, True)])
def test_equals_transformers(hf_model, hf_outputs, gray, layout, max_keypoints, channels_last):
    state = hf_model.state_dict()
    if layout == 'official':
        state = convert_hf_state_dict(state)
        assert 'conv1a.weight' in state and not is_hf_layout(state)
    elif layout == 'hf-prefixed':
        state = {f'superpoint.{k}': v for k, v in state.items()}
    model = SuperPoint(max_keypoints=max_keypoints, detection_threshold=THRESHOLD,
                       nms_radius=NMS_RADIUS, remove_borders=0, channels_last=channels_last)
    model.load_weights(state)
    feats = model.extract(gray)
    kp_hf, scores_hf, desc_hf = hf_outputs[max_keypoints]
    # Enough keypoints for the comparison to mean something (the top-k cut is exercised).
    assert len(kp_hf) == 1024 if max_keypoints == 1024 else len(kp_hf) > 3000
    assert feats.keypoints.shape == (len(kp_hf), 2) and feats.image_size == (640, 480)
    a, b = by_yx(feats.keypoints), by_yx(kp_hf)
    assert torch.equal(feats.keypoints[a], kp_hf[b])
    torch.testing.assert_close(feats.scores[a], scores_hf[b], atol=1e-5, rtol=0)
    torch.testing.assert_close(feats.descriptors[a], desc_hf[b], atol=1e-5, rtol=0)


@pytest.mark.parametrize('channels_last', [True, False])
def test_first_block_in_strips_equals_whole_image(hf_model, gray, channels_last):
    model = ours(hf_model, channels_last=channels_last)
    image = torch.stack([gray[:, :202, :301], gray[:, 7:209, 11:312]])  # 202 x 301, batch of 2
    with torch.inference_mode():
        model.strip_rows = 32
        strips = model._encode(image)
        model.strip_rows = None
        whole = model._encode(image)
    assert strips.shape == whole.shape == (2, 128, 25, 37)
    torch.testing.assert_close(strips, whole, atol=1e-6, rtol=1e-6)


def test_descriptors_unit_norm_and_dtypes(hf_model, gray):
    feats = ours(hf_model, max_keypoints=512).extract(gray)
    assert len(feats) == 512
    assert feats.keypoints.dtype == feats.scores.dtype == feats.descriptors.dtype == torch.float32
    assert feats.descriptors.shape == (512, SuperPoint.descriptor_dim)
    torch.testing.assert_close(feats.descriptors.norm(dim=1), torch.ones(512), atol=1e-5, rtol=0)


def test_max_keypoints_keeps_the_best(hf_model, gray):
    every = ours(hf_model).extract(gray)
    best = ours(hf_model, max_keypoints=100).extract(gray)
    assert len(best) == 100 < len(every)
    assert best.scores.min() >= torch.topk(every.scores, 100).values.min()
    kept = {tuple(p) for p in every.keypoints.tolist()}
    assert all(tuple(p) in kept for p in best.keypoints.tolist())


def test_remove_borders_on_all_sides(hf_model, gray):
    every = ours(hf_model).extract(gray)
    inner = ours(hf_model, remove_borders=16).extract(gray)
    x, y = every.keypoints.unbind(1)
    inside = (x >= 16) & (x < 640 - 16) & (y >= 16) & (y < 480 - 16)
    assert (~inside).sum() > 20  # the border did hold keypoints
    assert torch.equal(inner.keypoints[by_yx(inner.keypoints)],
                       every.keypoints[inside][by_yx(every.keypoints[inside])])


def test_resize_returns_input_pixels(hf_model, gray):
    feats = ours(hf_model, resize=500).extract(gray)
    assert feats.image_size == (640, 480)
    small = F.interpolate(gray[None], size=(375, 500), mode='bilinear', align_corners=False,
                          antialias=True)[0]
    ref = ours(hf_model).extract(small)
    assert len(feats) == len(ref) > 500
    expected = (ref.keypoints + 0.5) * torch.tensor([640 / 500, 480 / 375]) - 0.5
    torch.testing.assert_close(feats.keypoints, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(feats.descriptors, ref.descriptors)
    assert feats.keypoints[:, 0].max() < 640 and feats.keypoints[:, 1].max() < 480
    # Upscaling is never done: a smaller image than `resize` runs at its own size.
    assert torch.equal(ours(hf_model, resize=1024).extract(gray).keypoints,
                       ours(hf_model).extract(gray).keypoints)


def test_rgb_uses_bt601_gray(hf_model, rgb):
    kornia = pytest.importorskip('kornia')
    model = ours(hf_model, max_keypoints=1024)
    from_rgb = model.extract(rgb)
    from_gray = model.extract(kornia.color.rgb_to_grayscale(rgb))
    assert torch.equal(from_rgb.keypoints, from_gray.keypoints)
    torch.testing.assert_close(from_rgb.descriptors, from_gray.descriptors)


def test_batched_forward_equals_extract(hf_model, gray):
    model = ours(hf_model, max_keypoints=300)
    crops = torch.stack([gray[:, :240, :320], gray[:, 240:, 320:]])  # [2 x 1 x 240 x 320]
    with torch.inference_mode():
        pred = model(crops)
    for i in range(2):
        single = model.extract(crops[i])
        assert torch.equal(pred['keypoints'][i], single.keypoints)
        torch.testing.assert_close(pred['descriptors'][i], single.descriptors)


def test_no_keypoints_gives_empty_features(hf_model):
    model = ours(hf_model)
    with torch.no_grad():
        model.convPb.bias[-1] = 50.0  # the 'no keypoint' bin wins everywhere, as on a blank wall
    for image in (torch.full((480, 640), 0.5), torch.zeros(3, 5, 7)):
        feats = model.extract(image)
        w, h = image.shape[-1], image.shape[-2]
        assert len(feats) == 0 and feats.image_size == (w, h)
        assert feats.keypoints.shape == (0, 2) and feats.scores.shape == (0,)
        assert feats.descriptors.shape == (0, 256)


def test_rejects_bad_images_and_options():
    model = SuperPoint()
    with pytest.raises(InvalidImageError, match='float'):
        model.extract(torch.zeros(1, 64, 64, dtype=torch.uint8))
    with pytest.raises(InvalidImageError, match='got \\(2, 64, 64\\)'):
        model.extract(torch.zeros(2, 64, 64))
    with pytest.raises(ConfigError, match='max_keypoint'):
        SuperPoint(max_keypoint=10)
    with pytest.raises(ConfigError, match='max_keypoints'):
        SuperPoint(max_keypoints=0)


# -- checkpoints ---------------------------------------------------------------------------

@pytest.fixture()
def official_state(hf_model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in convert_hf_state_dict(hf_model.state_dict()).items()}


def test_official_file_loads(tmp_path, official_state):
    path = tmp_path / 'superpoint_v1.pth'
    torch.save(official_state, path)
    model = SuperPoint()
    model.load_weights(path)
    loaded = model.state_dict()
    assert loaded.keys() == official_state.keys()
    assert all(torch.equal(loaded[k], v) for k, v in official_state.items())


@pytest.mark.parametrize('fmt', ['pth', 'safetensors'])
def test_hf_file_loads(tmp_path, hf_model, official_state, fmt):
    state = {f'superpoint.{k}': v.contiguous() for k, v in hf_model.state_dict().items()}
    path = tmp_path / f'model.{fmt}'
    if fmt == 'pth':
        torch.save(state, path)
    else:
        pytest.importorskip('safetensors').torch.save_file(state, str(path))
    model = SuperPoint()
    model.load_weights(path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in official_state.items())


def test_renamed_key_is_named(tmp_path, official_state):
    official_state['conv3b.wieght'] = official_state.pop('conv3b.weight')
    path = tmp_path / 'renamed.pth'
    torch.save(official_state, path)
    model = SuperPoint()
    before = model.conv3a.weight.clone()
    with pytest.raises(CheckpointError, match=r'missing keys: conv3b\.weight') as err:
        model.load_weights(path)
    assert 'unexpected keys: conv3b.wieght' in str(err.value)
    assert torch.equal(model.conv3a.weight, before)  # nothing was half-loaded


def test_renamed_hf_key_is_named(hf_model):
    state = dict(hf_model.state_dict())
    state['keypoint_decoder.conv_score_x.bias'] = state.pop('keypoint_decoder.conv_score_a.bias')
    with pytest.raises(CheckpointError, match=r'convPa\.bias') as err:
        SuperPoint().load_weights(state)
    assert 'keypoint_decoder.conv_score_x.bias' in str(err.value)


def test_misshaped_key_is_named(tmp_path, official_state):
    official_state['convDb.weight'] = torch.zeros(128, 256, 1, 1)
    path = tmp_path / 'misshaped.pth'
    torch.save(official_state, path)
    with pytest.raises(CheckpointError, match=r'mis-shaped keys: convDb\.weight \(file '
                                              r'\(128, 256, 1, 1\), model \(256, 256, 1, 1\)\)'):
        SuperPoint().load_weights(path)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {shlex.quote(str(self.marker))}',)


def test_pickle_with_code_is_refused(tmp_path, official_state):
    marker = tmp_path / 'payload_ran'
    official_state['conv1a.weight'] = _Payload(marker)
    path = tmp_path / 'evil.pth'
    torch.save(official_state, path)
    with pytest.raises(CheckpointError, match='refusing'):
        SuperPoint().load_weights(path)
    assert not marker.exists()


def test_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match='not found'):
        SuperPoint().load_weights(tmp_path / 'nope.pth')
    with pytest.raises(CheckpointError, match='not found'):
        SuperPoint().load_weights(tmp_path / 'nope.safetensors')


def test_corrupt_safetensors_is_a_checkpoint_error(tmp_path):
    path = tmp_path / 'broken.safetensors'
    path.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00not json at all')
    pytest.importorskip('safetensors')
    with pytest.raises(CheckpointError, match='cannot read'):
        SuperPoint().load_weights(path)

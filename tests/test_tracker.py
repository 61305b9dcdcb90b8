"""Keyframe tracker on the real freiburg sequence, image handling and bad input."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lightglue_ros.camera import CameraModel
from lightglue_ros.errors import CalibrationError, ConfigError, InvalidImageError, TimestampError
from lightglue_ros.geometry import estimate_relative_pose, rotation_angle_deg
from lightglue_ros.image import read_image
from lightglue_ros.models.extractors import build_extractor
from lightglue_ros.models.lightglue import LightGlue
from lightglue_ros.tracker import UNMATCHED, Tracker, TrackerConfig

MIN_INLIERS = 150  # every frame keeps this many inliers to its keyframe (issue target)
CHAIN_ROTATION_TOL_DEG = 1.5  # kf->i composed with i->j vs kf->j (measured worst ~0.4 deg)


def stamp_of(path: Path) -> int:
    return int(round(float(path.stem) * 1e9))


@pytest.fixture(scope='module')
def models(weights_dir):
    extractor = build_extractor('aliked', weights=weights_dir / 'aliked-n16.pth',
                                max_keypoints=1024)
    matcher = LightGlue('aliked', weights=weights_dir / 'aliked_lightglue.pth')
    return extractor, matcher


def make_tracker(models, **options) -> Tracker:
    extractor, matcher = models
    return Tracker(TrackerConfig(extractor='aliked', device='cpu', **options),
                   extractor=extractor, matcher=matcher)


@pytest.fixture(scope='module')
def sequence(models, camera, freiburg_frames):
    """The tracker run over all frames, with call counts of the two networks.

    calls['match_sizes'][i]: the number of matches of each LightGlue call made for frame i, in
    order (first against the keyframe the frame came to, then against a newly promoted one).
    """
    extractor, matcher = models
    calls = {'extract': 0, 'match': 0, 'match_sizes': []}
    original_extract, original_match = extractor.extract, matcher.match_prepared

    def counted_extract(image):
        calls['extract'] += 1
        return original_extract(image)

    def counted_match(*args):
        calls['match'] += 1
        match = original_match(*args)
        calls['match_sizes'][-1].append(len(match))
        return match

    extractor.extract, matcher.match_prepared = counted_extract, counted_match
    try:
        tracker = make_tracker(models)
        results = []
        for path in freiburg_frames:
            calls['match_sizes'].append([])
            results.append(tracker.process(read_image(path), stamp_of(path), camera))
    finally:
        del extractor.extract, matcher.match_prepared
    return results, calls


def test_every_frame_gives_a_result_and_keeps_enough_inliers(sequence, freiburg_frames):
    results, _ = sequence
    assert [r.index for r in results] == list(range(len(freiburg_frames)))
    assert [r.stamp_ns for r in results] == [stamp_of(p) for p in freiburg_frames]
    assert results[0].keyframe_events[0].reason == 'first_frame'
    for r in results[1:]:
        assert r.ok, (r.index, r.reason)
        assert r.num_inliers >= MIN_INLIERS, (r.index, r.num_inliers)
        assert r.pose is not None and r.pose.success and not r.pose.rotation_only
        assert 1 <= r.stop_layer <= 9
        assert r.timings.total_ms >= r.timings.extract_ms + r.timings.match_ms


def test_one_extractor_pass_per_frame_and_one_match_per_frame_between_switches(sequence):
    results, calls = sequence
    switches = sum(len(r.keyframe_events) for r in results[1:])
    assert calls['extract'] == len(results)  # the keyframe is never extracted again
    # one match per frame after the first, plus one re-match per promoted keyframe
    assert calls['match'] == len(results) - 1 + switches


def test_keyframe_switches_where_matches_drop(sequence):
    """Against one keyframe the match count falls as the camera moves away; the first frame
    whose count falls below keyframe_min_matches ends the keyframe, and the last frame that
    tracked well (at keyframe_hysteresis times the minimums) takes its place."""
    results, calls = sequence
    config = TrackerConfig()  # the thresholds make_tracker runs with
    min_matches, min_inliers = config.keyframe_min_matches, config.keyframe_min_inliers
    well = config.keyframe_hysteresis  # tracking well: this multiple of both minimums
    # matches of each frame against the keyframe it arrived at (the first LightGlue call)
    arrived = [sizes[0] if sizes else None for sizes in calls['match_sizes']]
    switch_frames = [r for r in results[1:] if r.keyframe_events]
    assert len(switch_frames) >= 2, 'the sequence leaves several views behind'
    for r in switch_frames:
        event, = r.keyframe_events
        assert event.reason == 'low_matches', event  # all this sequence's switches
        assert results[r.index - 1].keyframe_index == event.previous_index
        assert event.previous_index < event.frame_index < r.index
        assert r.keyframe_index == event.frame_index
        # The frames tracked against the old keyframe (a switch frame counts as tracked
        # against the keyframe it switched to: its matches are those of the second call).
        span = [i for i in range(event.previous_index + 1, r.index)
                if results[i].keyframe_index == event.previous_index]
        assert span == list(range(span[0], r.index)), span
        counts = [results[i].num_matches for i in span]
        # The count fell from right after the previous switch to below the minimum...
        assert arrived[r.index] < min_matches <= min(counts), \
            (r.index, counts, arrived[r.index])
        # ...and the new keyframe is the last frame of the span that tracked well.
        tracked_well = [i for i in span if results[i].num_matches >= min_matches * well
                        and results[i].num_inliers >= min_inliers * well]
        assert tracked_well and tracked_well[-1] == event.frame_index, (r.index, tracked_well)
        # Matched once more against it, the frame tracks again.
        assert calls['match_sizes'][r.index] == [arrived[r.index], r.num_matches]
        assert r.num_matches >= min_matches and r.ok
    # Frames without a switch stay with their keyframe, and keyframes only move forward.
    kf_indices = [r.keyframe_index for r in results]
    assert all(b >= a for a, b in zip(kf_indices, kf_indices[1:]))
    for r in results[1:]:
        if not r.keyframe_events:
            assert r.keyframe_index == results[r.index - 1].keyframe_index
            assert arrived[r.index] == r.num_matches >= min_matches


def test_track_ids_persist_across_a_switch(sequence):
    results, _ = sequence
    r = next(r for r in results[1:] if r.keyframe_events)
    new_kf = results[r.keyframe_events[0].frame_index]
    # Track ids that the new keyframe's inlier matches carried before its promotion...
    before = {tuple(np.round(p, 3)): tid for p, tid, inl in
              zip(new_kf.points, new_kf.track_ids, new_kf.inliers) if inl}
    # ...are the ids reported for matches against it afterwards.
    same = [before[key] == tid for key, tid in
            ((tuple(np.round(p, 3)), tid) for p, tid in zip(r.kf_points, r.track_ids))
            if key in before]
    assert len(same) >= 100 and all(same)
    assert (r.track_ids != UNMATCHED).all()
    assert len(np.unique(r.track_ids)) == r.num_matches


def test_relative_poses_compose_consistently(sequence, models, camera, freiburg_frames):
    results, _ = sequence
    extractor, matcher = models
    checked = 0
    for ri, rj in zip(results[1:], results[2:]):
        if ri.keyframe_index != rj.keyframe_index or rj.keyframe_events:
            continue
        fi, fj = (extractor.extract(_tensor(read_image(freiburg_frames[r.index])))
                  for r in (ri, rj))
        m = matcher.match(fi, fj).matches.numpy()
        pose_ij = estimate_relative_pose(fi.keypoints.numpy()[m[:, 0]],
                                         fj.keypoints.numpy()[m[:, 1]], camera, camera)
        assert pose_ij.success
        R_kf_j = pose_ij.R_kf_to_cur @ ri.pose.R_kf_to_cur
        error = rotation_angle_deg(R_kf_j @ rj.pose.R_kf_to_cur.T)
        assert error < CHAIN_ROTATION_TOL_DEG, (ri.index, rj.index, error)
        checked += 1
        if checked == 3:
            break
    assert checked == 3


def test_trajectory_chains_through_keyframes(sequence):
    results, _ = sequence
    positions = np.array([r.t_world_cam for r in results])
    assert np.isfinite(positions).all()
    np.testing.assert_allclose(positions[0], 0.0)
    for r in results[1:]:
        kf = results[r.keyframe_index]
        # each frame sits at unit distance from its keyframe (monocular scale convention)
        assert np.linalg.norm(r.t_world_cam - kf.t_world_cam) == pytest.approx(1.0, abs=1e-6)


def _tensor(image):
    from lightglue_ros.image import image_to_tensor

    return image_to_tensor(image)


def test_images_of_any_type_and_size(models, camera, freiburg_frames):
    rgb0, rgb1 = (read_image(p) for p in freiburg_frames[:2])
    reference = make_tracker(models)
    reference.process(rgb0, 1, camera)
    expected = reference.process(rgb1, 2, camera)

    gray = [cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in (rgb0, rgb1)]
    for images in (gray, [g.astype(np.uint16) * 257 for g in gray]):
        tracker = make_tracker(models)
        tracker.process(images[0], 1, camera)
        result = tracker.process(images[1], 2, camera)
        assert result.num_matches > 0.8 * expected.num_matches

    # Twice the size, with the network resized to the original 640: keypoints in big pixels.
    big = [cv2.resize(im, (1280, 960), interpolation=cv2.INTER_LINEAR) for im in (rgb0, rgb1)]
    extractor, matcher = models
    tracker = Tracker(TrackerConfig(extractor='aliked', device='cpu', resize=640),
                      extractor=build_extractor('aliked', weights=None, max_keypoints=1024,
                                                resize=640), matcher=matcher)
    tracker.extractor.net.load_state_dict(extractor.net.state_dict())
    big_camera = camera.scaled(2.0, 2.0)
    tracker.process(big[0], 1, big_camera)
    result = tracker.process(big[1], 2, big_camera)
    assert result.num_matches > 0.8 * expected.num_matches
    assert result.points[:, 0].max() > 700 and result.points[:, 1].max() > 500
    angle = rotation_angle_deg(result.pose.R_kf_to_cur @ expected.pose.R_kf_to_cur.T)
    assert angle < 0.5


def test_bad_input_is_refused_and_the_next_good_frame_works(models, camera, freiburg_frames):
    tracker = make_tracker(models)
    good = [read_image(p) for p in freiburg_frames[:3]]
    assert tracker.process(good[0], 10, camera).keyframe_events
    bad_images = {
        'empty': np.zeros((0, 0), np.uint8),
        'zero width': np.zeros((480, 0, 3), np.uint8),
        'dtype': np.zeros((480, 640), np.int32),
        'shape': np.zeros((480, 640, 2), np.uint8),
        'nan': np.full((480, 640), np.nan, np.float32),
        'not an array': [[1, 2], [3, 4]],
    }
    stamp = 11
    for image in bad_images.values():
        with pytest.raises(InvalidImageError):
            tracker.process(image, stamp, camera)
        stamp += 1
    with pytest.raises(TimestampError, match='does not increase'):
        tracker.process(good[1], 10, camera)
    with pytest.raises(CalibrationError, match='640x480'):
        tracker.process(good[1], stamp, camera.scaled(2.0, 2.0))
    for fx in (0.0, float('nan')):
        with pytest.raises(CalibrationError):
            CameraModel.from_intrinsics(fx, 500.0, 320.0, 240.0, 640, 480)
    textureless = tracker.process(np.full((480, 640, 3), 128, np.uint8), stamp, camera)
    assert textureless.reason == 'too_few_keypoints' and not textureless.ok
    assert textureless.num_matches == 0 and not textureless.keyframe_events
    result = tracker.process(good[1], stamp + 1, camera)
    assert result.ok and result.keyframe_index == 0 and result.num_inliers >= MIN_INLIERS
    # without calibration: matches but no pose
    result = tracker.process(good[2], stamp + 2, None)
    assert result.reason == 'no_calibration' and result.pose is None
    assert result.num_matches > 200 and np.isnan(result.points_norm).all()


def test_textureless_first_frame_does_not_become_keyframe(models, camera, freiburg_frames):
    tracker = make_tracker(models)
    blank = tracker.process(np.full((480, 640), 128, np.uint8), 1, camera)
    assert blank.reason == 'too_few_keypoints' and tracker.keyframe_index == -1
    first = tracker.process(read_image(freiburg_frames[0]), 2, camera)
    assert first.keyframe_events[0].reason == 'first_frame' and tracker.keyframe_index == 1


def test_image_size_change_starts_a_new_keyframe(models, camera, freiburg_frames):
    tracker = make_tracker(models)
    tracker.process(read_image(freiburg_frames[0]), 1, camera)
    small = cv2.resize(read_image(freiburg_frames[1]), (320, 240))
    result = tracker.process(small, 2, camera.scaled(0.5, 0.5))
    assert [e.reason for e in result.keyframe_events] == ['image_size_changed']


def test_config_is_strict_and_validated(models):
    with pytest.raises(ConfigError, match='unknown tracker option'):
        TrackerConfig.from_dict({'max_keypoint': 5})
    with pytest.raises(ConfigError, match='min_pose_matches'):
        TrackerConfig(min_pose_matches=4)
    tracker = make_tracker(models)
    with pytest.raises(ConfigError, match='filter_threshold'):
        tracker.update_thresholds(filter_threshold=1.5)
    tracker.update_thresholds(filter_threshold=0.2, keyframe_min_inliers=100)
    assert tracker.matcher.conf['filter_threshold'] == 0.2
    tracker.update_thresholds(filter_threshold=0.1)


def test_warm_up_runs_both_networks_and_leaves_the_state_untouched(models, camera,
                                                                  freiburg_frames):
    extractor, matcher = models
    seen: list[tuple[int, ...]] = []
    original_extract, original_match = extractor.extract, matcher.match
    extractor.extract = lambda image: seen.append(tuple(image.shape)) or original_extract(image)
    matcher.match = lambda f0, f1: seen.append(('match',)) or original_match(f0, f1)
    try:
        warmed = make_tracker(models)
        warmed.warm_up()
    finally:
        del extractor.extract, matcher.match
    assert seen == [(1, 64, 64), ('match',)]  # one small grey image, then LightGlue on it
    cold = make_tracker(models)
    for path in freiburg_frames[:3]:
        a = warmed.process(read_image(path), stamp_of(path), camera)
        b = cold.process(read_image(path), stamp_of(path), camera)
        assert (a.index, a.keyframe_index, a.num_matches) == (b.index, b.keyframe_index,
                                                              b.num_matches)
        np.testing.assert_array_equal(a.track_ids, b.track_ids)


def test_extract_then_track_gives_what_process_gives(models, camera, freiburg_frames):
    """The two halves that the pipelined node and replay run on two threads (``extract``
    touches no tracking state) give exactly ``process``'s results, keyframe switches included,
    even when every frame is extracted before the first one is tracked."""
    images = [(read_image(p), stamp_of(p)) for p in freiburg_frames[:8]]
    strict = {'keyframe_min_matches': 450, 'keyframe_min_inliers': 350}  # switches early
    whole = make_tracker(models, **strict)
    expected = [whole.process(image, stamp, camera) for image, stamp in images]
    halves = make_tracker(models, **strict)
    extracted = [halves.extract(image) for image, _ in images]
    got = [halves.track(frame, stamp, camera) for frame, (_, stamp) in zip(extracted, images)]
    assert [r.keyframe_index for r in got] == [r.keyframe_index for r in expected]
    assert any(r.keyframe_events for r in expected[1:])  # a switch happened on the way
    for a, b in zip(got, expected, strict=True):
        assert np.array_equal(a.points, b.points) and np.array_equal(a.kf_points, b.kf_points)
        assert np.array_equal(a.scores, b.scores) and np.array_equal(a.inliers, b.inliers)
        assert np.array_equal(a.track_ids, b.track_ids)
        assert (a.R_world_cam is None) == (b.R_world_cam is None)
        if a.R_world_cam is not None:
            assert np.array_equal(a.R_world_cam, b.R_world_cam)


def test_track_refuses_a_stamp_going_back_before_any_state_changes(models, camera,
                                                                   freiburg_frames):
    tracker = make_tracker(models)
    (image0, stamp0), (image1, _) = [(read_image(p), stamp_of(p)) for p in freiburg_frames[:2]]
    tracker.track(tracker.extract(image0), stamp0, camera)
    frame = tracker.extract(image1)
    with pytest.raises(TimestampError):
        tracker.track(frame, stamp0, camera)
    assert tracker.track(frame, stamp0 + 1, camera).index == 1  # the same frame, tracked later

"""~/features ids follow VINS's contract: every id is one contiguous run of published frames.

VINS-Mono / VINS-Fusion attach the j-th observation of an id to the j-th frame after the id's
first (feature_manager.cpp). The unit tests feed hand-made FrameResults to PublishedTracks;
the scene tests run the tracker over freiburg and the synthetic room (with keyframe switches)
through the node's message builder in both layouts; the replay test reads the ids back from a
replayed bag.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lightglue_ros.camera import CameraModel
from lightglue_ros.image import read_image
from lightglue_ros.synthetic import make_sequence
from lightglue_ros.tracker import UNMATCHED, FrameResult, KeyframeEvent, Tracker, TrackerConfig
from lightglue_ros.tracks import ID_LIMIT, PublishedTracks, check_runs

STAMP0_NS = 1_000_000_000
FRAME_NS = 33_000_000
REPLAY_FRAMES = 8  # freiburg frames replayed through a bag (CPU time)


def _result(index: int, track_ids: list[int], inliers: list[bool] | None = None, *,
            velocity: float = 1.0, first_frame: bool = False,
            calibrated: bool = True) -> FrameResult:
    """A frame whose matches carry the tracker ids ``track_ids`` (point i at (i, i))."""
    k = len(track_ids)
    points = np.stack([np.arange(k), np.arange(k)], axis=1).astype(np.float32)
    norm = points / 500.0 if calibrated else np.full((k, 2), np.nan, np.float32)
    events = (KeyframeEvent(index, STAMP0_NS + index * FRAME_NS, -1, 'first_frame', '', 0),
              ) if first_frame else ()
    return FrameResult(
        index=index, stamp_ns=STAMP0_NS + index * FRAME_NS, ok=True, reason='',
        keyframe_index=0, keyframe_stamp_ns=STAMP0_NS, num_keypoints=k, points=points,
        kf_points=points.copy(), scores=np.ones(k, np.float32),
        track_ids=np.asarray(track_ids, np.int64),
        inliers=np.ones(k, bool) if inliers is None else np.asarray(inliers, bool),
        points_norm=norm, velocity_norm=np.full((k, 2), velocity, np.float32), pose=None,
        R_kf_cam=None, t_kf_cam=None, R_world_cam=None, t_world_cam=None, stop_layer=9,
        num_pruned_keyframe=0, num_pruned_current=0, keyframe_events=events)


def _ids(tracks: PublishedTracks, result: FrameResult) -> dict[int, int]:
    """tracker id -> published id of the frame's published observations."""
    published = tracks.publish(result)
    return dict(zip(result.track_ids[published.rows].tolist(), published.ids.tolist()))


# ------------------------------------------------------------------------------------------------
# PublishedTracks on hand-made frames.
# ------------------------------------------------------------------------------------------------

def test_an_id_that_leaves_a_published_frame_comes_back_as_a_new_id():
    tracks = PublishedTracks()
    first = _ids(tracks, _result(0, [10, 11, 12]))
    second = _ids(tracks, _result(1, [10, 12]))  # 11 is not matched in this frame
    third = _ids(tracks, _result(2, [10, 11, 12]))  # ... and is matched again here
    assert second == {10: first[10], 12: first[12]}  # seen in every frame: same id
    assert third[10] == first[10] and third[12] == first[12]
    assert third[11] not in first.values() and third[11] not in second.values()
    assert check_runs([np.array(list(f.values())) for f in (first, second, third)]
                      ).misattributed == 0


def test_an_outlier_frame_breaks_the_run_and_the_outlier_is_not_published():
    """Inlier at t, outlier at t+1 (left out by default), inlier at t+2: a new id at t+2."""
    tracks = PublishedTracks()
    first = _ids(tracks, _result(0, [1, 2]))
    outlier = _result(1, [1, 2], [True, False])
    published = tracks.publish(outlier)
    assert published.rows.tolist() == [0]
    assert published.match_ids.tolist() == [first[1], UNMATCHED]  # the matches cloud's ids
    third = _ids(tracks, _result(2, [1, 2]))
    assert third[1] == first[1] and third[2] != first[2]


def test_every_match_is_published_when_outliers_are_kept():
    tracks = PublishedTracks(inliers_only=False)
    first = _ids(tracks, _result(0, [1, 2]))
    assert _ids(tracks, _result(1, [1, 2], [True, False])) == first


def test_a_frame_without_features_message_breaks_no_run_but_an_empty_one_breaks_all():
    tracks = PublishedTracks()
    first = _ids(tracks, _result(0, [1, 2]))
    uncalibrated = _result(1, [1], calibrated=False)
    assert tracks.unpublished(uncalibrated).tolist() == [UNMATCHED]
    assert _ids(tracks, _result(2, [1, 2])) == first  # VINS never saw frame 1
    assert _ids(tracks, _result(3, [])) == {}  # a published frame without points
    fourth = _ids(tracks, _result(4, [1, 2]))
    assert not set(fourth.values()) & set(first.values())


def test_velocity_is_zero_for_a_new_id_and_the_trackers_for_a_continued_one():
    tracks = PublishedTracks()
    assert (tracks.publish(_result(0, [1], velocity=3.0)).velocity == 0).all()
    continued = tracks.publish(_result(1, [1, 2], velocity=3.0))
    assert continued.velocity.tolist() == [[3.0, 3.0], [0.0, 0.0]]
    assert continued.velocity.dtype == np.float32


def test_a_tracker_reset_starts_new_ids_although_the_tracker_ids_restart():
    """After Tracker.reset the tracker's ids count from 0 again; the published ones do not.
    The restart's first frame has no ~/features (e.g. no calibration yet): ids must still not
    continue through it."""
    tracks = PublishedTracks()
    before = _ids(tracks, _result(0, [0, 1]))
    tracks.unpublished(_result(0, [], first_frame=True, calibrated=False))
    after = _ids(tracks, _result(1, [0, 1]))
    assert not set(after.values()) & set(before.values())


def test_published_ids_stay_exact_in_float32():
    tracks = PublishedTracks()
    tracks._next_id = ID_LIMIT - 1
    ids = tracks.publish(_result(0, [5, 6])).ids
    assert ids.tolist() == [ID_LIMIT - 1, 0]


def test_check_runs_counts_what_vins_attaches_to_the_wrong_frame():
    check = check_runs([np.array([1, 2]), np.array([2]), np.array([1, 2]), np.array([], int)])
    # id 1: frames 0, 2 -> VINS reads 0, 1: one observation misattributed.
    assert (check.ids, check.returning_ids, check.observations, check.misattributed) == (
        2, 1, 5, 1)


# ------------------------------------------------------------------------------------------------
# The tracker over real and synthetic frames, through the node's message builder.
# ------------------------------------------------------------------------------------------------

def _freiburg(freiburg_dir: Path) -> tuple[list[np.ndarray], list[int], CameraModel]:
    paths = sorted(freiburg_dir.glob('*.png'))
    return ([read_image(p) for p in paths], [int(round(float(p.stem) * 1e9)) for p in paths],
            CameraModel.from_yaml(freiburg_dir / 'camera_info.yaml'))


@pytest.fixture(scope='module')
def aliked(weights_dir: Path) -> TrackerConfig:
    return TrackerConfig(extractor='aliked', device='cpu', max_keypoints=512, resize=480,
                         extractor_weights=str(weights_dir / 'aliked-n16.pth'),
                         matcher_weights=str(weights_dir / 'aliked_lightglue.pth'))


@pytest.fixture(scope='module')
def freiburg_tracker(aliked: TrackerConfig) -> Tracker:
    return Tracker(aliked)


@pytest.fixture(scope='module')
def scenes(aliked: TrackerConfig, freiburg_tracker: Tracker, freiburg_dir: Path
           ) -> dict[str, list[FrameResult]]:
    """scene -> the tracker's results: freiburg (17 frames, 1 s apart) and the synthetic room
    at 30 fps; the synthetic run keeps fewer keypoints so that its keyframe switches often."""
    runs: dict[str, list[FrameResult]] = {}
    synthetic = make_sequence(40, fps=30.0)
    for name, config, (images, stamps, camera) in (
            ('freiburg', aliked, _freiburg(freiburg_dir)),
            ('synthetic', replace(aliked, max_keypoints=256, keyframe_min_matches=100,
                                  keyframe_min_inliers=80),
             (synthetic.images, synthetic.stamps_ns, synthetic.camera))):
        tracker = freiburg_tracker if config is aliked else Tracker(config)
        tracker.reset()
        tracker.warm_up()
        runs[name] = [tracker.process(image, stamp, camera)
                      for image, stamp in zip(images, stamps)]
    return runs


def _published(results: list[FrameResult], layout: str, **options: Any
               ) -> list[tuple[FrameResult, Any]]:
    """(result, FrameOutputs) per result, through frame_outputs as the node calls it."""
    from std_msgs.msg import Header

    from lightglue_ros.ros.messages import frame_outputs, ns_to_stamp

    tracks = PublishedTracks(**options)
    return [(r, frame_outputs(r, Header(stamp=ns_to_stamp(r.stamp_ns), frame_id='cam'),
                              odom_frame_id='odom', tracks=tracks, features_layout=layout))
            for r in results]


def _features_ids(msg: Any) -> np.ndarray:
    return np.asarray(msg.channels[0].values, np.float32).astype(np.int64)


@pytest.mark.parametrize('scene', ['freiburg', 'synthetic'])
@pytest.mark.parametrize('layout', ['vins_mono', 'vins_fusion'])
def test_every_published_id_is_one_contiguous_run(scenes, scene, layout):
    pytest.importorskip('rclpy')
    from lightglue_ros.ros.messages import read_matches_cloud

    results = scenes[scene]
    switches = [e for r in results for e in r.keyframe_events if e.reason != 'first_frame']
    assert switches, 'the scene must switch keyframes'
    # Without renumbering, the tracker's own ids vanish and return in this scene.
    assert check_runs([r.track_ids for r in results]).returning_ids > 0
    outputs = _published(results, layout)
    frames = [_features_ids(out.features) for _, out in outputs]
    check = check_runs(frames)
    assert check.observations > 0 and check.returning_ids == 0 and check.misattributed == 0
    seen: dict[int, int] = {}  # tracker id -> published id in the previous frame
    carried_across_switch = 0
    for (result, out), ids in zip(outputs, frames):
        matches = read_matches_cloud(out.matches)
        # ~/features carries the pose inliers, under the ids of the matches cloud.
        assert len(ids) == result.num_inliers
        assert (matches['track_id'] >= 0).tolist() == result.inliers.tolist()
        assert matches['track_id'][result.inliers].tolist() == ids.tolist()
        tracker_ids = result.track_ids[result.inliers].tolist()
        # A point seen in consecutive frames keeps its id, keyframe switches included.
        kept = [seen[t] == i for t, i in zip(tracker_ids, ids.tolist()) if t in seen]
        assert all(kept)
        if any(e.reason != 'first_frame' for e in result.keyframe_events):
            carried_across_switch += len(kept)
        # A new id starts with zero velocity.
        new = np.array([t not in seen for t in tracker_ids], bool)
        velocity = np.stack([out.features.channels[c].values for c in
                             ((3, 4) if layout == 'vins_mono' else (4, 5))], axis=1)
        assert (velocity[new] == 0).all()
        seen = dict(zip(tracker_ids, ids.tolist()))
    assert carried_across_switch > 0


def test_outliers_are_published_on_request(scenes):
    pytest.importorskip('rclpy')
    results = scenes['freiburg']
    outputs = _published(results, 'vins_mono', inliers_only=False)
    assert [len(out.features.points) for _, out in outputs] == [r.num_matches for r in results]
    assert sum(r.num_matches - r.num_inliers for r in results) > 0
    assert check_runs([_features_ids(out.features) for _, out in outputs]).misattributed == 0


@pytest.mark.parametrize('layout', ['vins_mono', 'vins_fusion'])
def test_the_replay_publishes_the_ids_of_the_core(tmp_path, scenes, freiburg_tracker,
                                                  freiburg_dir, layout):
    """The replay (and the node, through the same frame_outputs) keeps one PublishedTracks per
    stream: the bag's ~/features ids are the core's, one contiguous run each."""
    pytest.importorskip('rosbags')
    from bag_helpers import (IMAGE_TOPIC, INFO_TOPIC, TS2, frame_records, read_raw, topic,
                             write_bag)

    from lightglue_ros.ros.replay import output_topics, replay_bag

    images, stamps, camera = _freiburg(freiburg_dir)
    n = REPLAY_FRAMES  # the core's ids are causal: its first n frames are these n frames'
    images, stamps = images[:n], stamps[:n]
    source = write_bag(tmp_path / 'in', 'mcap',
                       frame_records('mcap', list(zip(stamps, images)), camera))
    replay_bag(source, tmp_path / 'out', image_topic=IMAGE_TOPIC, camera_info_topic=INFO_TOPIC,
               tracker=freiburg_tracker, progress=False, plots_dir=False,
               features_layout=layout)
    msgtype = output_topics()[topic('features')]
    replayed = [_features_ids(TS2.deserialize_cdr(raw, msgtype))
                for _, raw in read_raw(tmp_path / 'out')[topic('features')]]
    core = [_features_ids(out.features)
            for _, out in _published(scenes['freiburg'][:n], layout)]
    assert [ids.tolist() for ids in replayed] == [ids.tolist() for ids in core]
    check = check_runs(replayed)
    assert check.observations > 0 and check.misattributed == 0


def test_the_vins_remap_of_the_private_features_topic():
    """The remap rule docs/node.md gives for VINS (~/features to /feature_tracker/feature)."""
    rclpy = pytest.importorskip('rclpy')
    from sensor_msgs.msg import PointCloud

    from lightglue_ros.ros.params import NODE_NAME

    context = rclpy.Context()
    rclpy.init(context=context)  # ROS_DOMAIN_ID from the environment
    try:
        node = rclpy.create_node(NODE_NAME, context=context, cli_args=[
            '--ros-args', '-r', '~/features:=/feature_tracker/feature'])
        publisher = node.create_publisher(PointCloud, '~/features', 10)
        assert publisher.topic_name == '/feature_tracker/feature'
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)

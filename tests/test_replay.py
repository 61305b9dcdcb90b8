"""Bag replay: rosbag2 (sqlite3, MCAP) and ROS 1 input, outputs, summary, bad input, Ctrl-C and
equality with the live node.

Input bags are written into tmp_path from the freiburg frames with rosbags' own writers. The
ALIKED + LightGlue models (512 keypoints, CPU) are built once for the module and shared by every
replay and by the node, so all sides run the same settings.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from lightglue_ros.camera import CameraModel
from lightglue_ros.errors import BagError, ConfigError
from lightglue_ros.image import read_image
from lightglue_ros.pipeline import FramePipeline
from lightglue_ros.tracker import Tracker, TrackerConfig

pytest.importorskip('rclpy')
pytest.importorskip('rosbags')

from rclpy.serialization import deserialize_message  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402

from bag_helpers import (  # noqa: E402
    CAMERA_INFO, COMPRESSED, COMPRESSED_TOPIC, FORMATS, IMAGE, IMAGE_TOPIC,
    INFO_TOPIC, TS2, Record, bag_path, chunk_records, compressed_msg,
    contents, frame_records, image_msg, info_msg, mcap_chunks, rclpy_type,
    read_raw, stamp_ns_of, stamp_of, topic, write_bag, write_previous_output
)
from helpers import wait_until  # noqa: E402

from lightglue_ros.cli import replay as replay_cli  # noqa: E402
from lightglue_ros.plots import PLOT_NAMES, plot_summary  # noqa: E402
from lightglue_ros.ros import bag_io  # noqa: E402
from lightglue_ros.ros import replay as replay_module  # noqa: E402
from lightglue_ros.cli.replay import add_replay_parser, replay_main  # noqa: E402
from lightglue_ros.replay_summary import ReplaySummary  # noqa: E402
from lightglue_ros.ros.messages import read_matches_cloud  # noqa: E402
from lightglue_ros.ros.replay import OutputExistsError, output_topics, replay_bag  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
N_FRAMES = 5
MAX_KEYPOINTS = 512
RESIZE = 480  # longer side the extractor sees: ~40 % less CPU than the native 640
# ------------------------------------------------------------------------------------------------
# Fixtures.
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def config(weights_dir: Path) -> TrackerConfig:
    return TrackerConfig(extractor='aliked', extractor_weights=str(weights_dir / 'aliked-n16.pth'),
                         matcher_weights=str(weights_dir / 'aliked_lightglue.pth'),
                         max_keypoints=MAX_KEYPOINTS, resize=RESIZE, device='cpu')


@pytest.fixture(scope='module')
def tracker(config: TrackerConfig) -> Tracker:
    """One set of models for the module; replay_bag resets the tracker before each bag."""
    return Tracker(config)


@pytest.fixture(scope='module')
def frames(freiburg_frames: list[Path]) -> list[tuple[int, np.ndarray]]:
    return [(stamp_of(p), read_image(p)) for p in freiburg_frames[:N_FRAMES]]


@pytest.fixture(scope='module')
def replayed(tmp_path_factory: pytest.TempPathFactory, frames, camera, tracker
             ) -> Callable[[str], tuple[Path, Path, ReplaySummary]]:
    """fmt -> (input bag, output bag, summary), each replayed once for the module.

    sqlite3 input is replayed into sqlite3 over an older output (overwrite=True), the others
    into MCAP; the MCAP run also writes debug images (compared with the node's).
    """
    root = tmp_path_factory.mktemp('replay_formats')
    done: dict[str, tuple[Path, Path, ReplaySummary]] = {}

    def get(fmt: str) -> tuple[Path, Path, ReplaySummary]:
        if fmt not in done:
            source = write_bag(bag_path(root, fmt, f'in_{fmt}'), fmt,
                               frame_records(fmt, frames, camera))
            output = root / f'out_{fmt}'
            if fmt == 'sqlite3':  # a previous replay's output: replaced with overwrite=True
                write_previous_output(output)
                with pytest.raises(OutputExistsError, match='--overwrite'):
                    replay_bag(source, output, image_topic=IMAGE_TOPIC, tracker=tracker)
            summary = replay_bag(source, output, image_topic=IMAGE_TOPIC,
                                 camera_info_topic=INFO_TOPIC,
                                 storage='sqlite3' if fmt == 'sqlite3' else 'mcap',
                                 tracker=tracker, overwrite=fmt == 'sqlite3',
                                 debug_images=fmt == 'mcap', progress=False)
            done[fmt] = (source, output, summary)
        return done[fmt]

    return get


# ------------------------------------------------------------------------------------------------
# Each input format.
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('fmt', FORMATS)
def test_replay_reads_each_format_one_result_per_frame(replayed, frames, fmt):
    source, output, summary = replayed(fmt)
    stamps = [s for s, _ in frames]
    assert summary.input_format == ('rosbag1' if fmt == 'ros1' else 'rosbag2')
    assert (summary.frames, summary.processed, summary.skipped) == (N_FRAMES, N_FRAMES, 0)
    assert summary.complete and not summary.interrupted and summary.error is None
    assert summary.stamp_ns == stamps and summary.bag_time_ns == stamps
    assert summary.camera_info_messages == N_FRAMES and summary.camera_info_errors == 0

    # The output bag: valid metadata, the node's topics and types, readable by rosbags.
    assert (output / 'metadata.yaml').is_file()
    expected_storage = '.db3' if fmt == 'sqlite3' else '.mcap'
    assert [p.suffix for p in output.iterdir() if p.suffix in ('.db3', '.mcap')] == \
        [expected_storage]
    with AnyReader([output]) as reader:
        types = {name: info.msgtype for name, info in reader.topics.items()}
        assert types == output_topics(debug_images=fmt == 'mcap')
        for connection, _, raw in reader.messages():  # rosbags decodes every message ...
            reader.deserialize(raw, connection.msgtype)
    raw = read_raw(output)
    # ... and so does rclpy, with the Kilted definitions the bag declares.
    for name, messages in raw.items():
        for _, data in messages:
            deserialize_message(data, rclpy_type(types[name]))

    # Exactly one result per input frame, stamped with the input stamps (header and bag time).
    matches = [deserialize_message(d, rclpy_type('sensor_msgs/msg/PointCloud2'))
               for _, d in raw[topic('matches')]]
    assert [stamp_ns_of(m) for m in matches] == stamps
    assert [t for t, _ in raw[topic('matches')]] == stamps
    assert all(m.header.frame_id == 'camera' for m in matches)
    assert summary.messages_written == {name: len(msgs) for name, msgs in raw.items()}
    if fmt == 'mcap':
        assert len(raw[topic('debug_image')]) == N_FRAMES

    # Summary JSON and plots next to the bag.
    assert ReplaySummary.load(output / 'replay_summary.json') == summary
    for name in PLOT_NAMES:
        assert (output / 'plots' / f'{name}.png').stat().st_size > 1000


@pytest.mark.parametrize('fmt', FORMATS)
def test_summary_numbers_agree_with_the_messages(replayed, fmt):
    _, output, summary = replayed(fmt)
    raw = read_raw(output)
    PointCloud2 = rclpy_type('sensor_msgs/msg/PointCloud2')
    Odometry = rclpy_type('nav_msgs/msg/Odometry')
    DiagnosticArray = rclpy_type('diagnostic_msgs/msg/DiagnosticArray')
    clouds = [read_matches_cloud(deserialize_message(d, PointCloud2))
              for _, d in raw[topic('matches')]]
    assert summary.matches == [len(c['u']) for c in clouds]
    assert summary.inliers == [int(c['inlier'].sum()) for c in clouds]
    for cloud, kf in zip(clouds, summary.keyframe_index):
        assert set(cloud['kf_index'].tolist()) <= {kf}
    assert sum(summary.matches[1:]) > 0 and summary.stop_layer[0] == 0
    assert all(layer >= 1 for layer in summary.stop_layer[1:])

    keyframes = [deserialize_message(d, DiagnosticArray) for _, d in raw[topic('keyframe')]]
    assert summary.keyframes == len(keyframes) >= 1
    reasons = [kv.value for k in keyframes for kv in k.status[0].values if kv.key == 'reason']
    assert reasons == [r for event in summary.keyframe_event if event
                       for r in event.split(',')]
    assert summary.keyframe_switches == sum(r != 'first_frame' for r in reasons)

    odometry = {stamp_ns_of(m): m for m in (deserialize_message(d, Odometry)
                                            for _, d in raw[topic('odometry')])}
    with_pose = {s: p for s, p in zip(summary.stamp_ns, summary.position) if p is not None}
    assert set(odometry) == set(with_pose)
    for stamp, position in with_pose.items():
        p = odometry[stamp].pose.pose.position
        np.testing.assert_allclose([p.x, p.y, p.z], position, rtol=0, atol=1e-9)
    with_relative_pose = [s for s, ok, why in zip(summary.stamp_ns, summary.ok, summary.reason)
                          if ok and not why]  # 'first_frame' is ok without a relative pose
    assert [stamp_ns_of(deserialize_message(d, rclpy_type(
        'geometry_msgs/msg/PoseWithCovarianceStamped'))) for _, d in raw[topic('relative_pose')]
            ] == with_relative_pose

    # Totals from the per-frame arrays.
    assert summary.processed == len(summary.matches) == len(summary.latency)
    assert summary.fps == pytest.approx(summary.processed / summary.wall_s, rel=1e-3)
    assert summary.latency_ms['p50'] == pytest.approx(np.median(summary.latency), abs=1e-3)
    assert summary.latency_ms['mean'] == pytest.approx(np.mean(summary.latency), abs=1e-3)
    assert all(lat >= trk for lat, trk in zip(summary.latency, summary.tracker_latency))


def test_all_formats_give_identical_outputs(replayed):
    """rgb8 in rosbag2 and bgr8 in ROS 1 decode to the same pixels: equal outputs."""
    outputs = {fmt: read_raw(replayed(fmt)[1]) for fmt in FORMATS}
    types = output_topics()
    for name, msgtype in types.items():
        reference = contents((d for _, d in outputs['mcap'][name]), msgtype)
        assert len(reference) >= 1
        for fmt in ('sqlite3', 'ros1'):
            assert [t for t, _ in outputs[fmt][name]] == [t for t, _ in outputs['mcap'][name]]
            assert contents((d for _, d in outputs[fmt][name]), msgtype) == reference, \
                (fmt, name)


def test_pipelined_replay_writes_what_one_thread_writes(tmp_path, frames, camera, tracker):
    """Reading and extracting the next image on a second thread changes nothing in the output
    (at the same thread count per stage: the count changes float rounding), damage-free or
    with an image that does not decode in the middle."""
    bad = image_msg(TS2, frames[2][0] + 1, frames[2][1])
    bad.encoding = 'yuv9'  # unknown: a counted skip between good frames
    records = frame_records('mcap', frames, camera) + [(IMAGE_TOPIC, IMAGE, frames[2][0] + 1,
                                                        bad)]
    source = write_bag(tmp_path / 'in', 'mcap', sorted(records, key=lambda r: r[2]))
    written, summaries = {}, {}
    for pipelined in (False, True):
        out = tmp_path / f'out_{pipelined}'
        summaries[pipelined] = replay_bag(
            source, out, image_topic=IMAGE_TOPIC, camera_info_topic=INFO_TOPIC,
            tracker=tracker, progress=False, plots_dir=False, pipelined=pipelined,
            threads_per_stage=1)
        written[pipelined] = read_raw(out)
    assert summaries[True].processed == summaries[False].processed == len(frames)
    assert dict(summaries[True].skipped_by_reason) == dict(summaries[False].skipped_by_reason) \
        == {'invalid_image': 1}
    for name, msgtype in output_topics().items():
        assert [t for t, _ in written[True][name]] == [t for t, _ in written[False][name]]
        assert contents((d for _, d in written[True][name]), msgtype) == \
            contents((d for _, d in written[False][name]), msgtype), name


# ------------------------------------------------------------------------------------------------
# Bad input.
# ------------------------------------------------------------------------------------------------

def test_missing_topic_lists_the_image_topics(tmp_path, frames, camera, tracker):
    stamp, rgb = frames[0]
    ok, png = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    source = write_bag(tmp_path / 'in', 'mcap', [
        (INFO_TOPIC, CAMERA_INFO, stamp, info_msg(TS2, stamp, camera)),
        (IMAGE_TOPIC, IMAGE, stamp, image_msg(TS2, stamp, rgb)),
        (COMPRESSED_TOPIC, COMPRESSED, stamp, compressed_msg(TS2, stamp, png.tobytes())),
    ])
    output = tmp_path / 'out'
    with pytest.raises(BagError, match='/cam/image_raw_typo') as info:
        replay_bag(source, output, image_topic='/cam/image_raw_typo', tracker=tracker)
    message = str(info.value)
    assert IMAGE_TOPIC in message and COMPRESSED_TOPIC in message
    assert INFO_TOPIC not in message  # only the topics that could be tracked
    with pytest.raises(BagError, match=f'camera_info topics in the bag: {INFO_TOPIC}'):
        replay_bag(source, output, image_topic=IMAGE_TOPIC, camera_info_topic='/nope',
                   tracker=tracker)
    with pytest.raises(BagError, match='expected sensor_msgs/msg/Image or'):
        replay_bag(source, output, image_topic=INFO_TOPIC, tracker=tracker)
    assert not output.exists()


def test_cli_reports_errors_with_exit_code_1(tmp_path, frames, camera, capsys):
    stamp, rgb = frames[0]
    source = write_bag(tmp_path / 'in', 'sqlite3', [(IMAGE_TOPIC, IMAGE, stamp,
                                                     image_msg(TS2, stamp, rgb))])
    assert replay_main([str(source), '--image-topic', '/x', '--output',
                        str(tmp_path / 'out')]) == 1
    err = capsys.readouterr().err
    assert "topic '/x' not found" in err and f'{IMAGE_TOPIC} (Image, 1 msgs)' in err
    (tmp_path / 'exists').mkdir()
    assert replay_main([str(source), '--image-topic', IMAGE_TOPIC, '--output',
                        str(tmp_path / 'exists')]) == 1
    assert '--overwrite' in capsys.readouterr().err
    # --overwrite never deletes a folder that is not a bag / replay output.
    (tmp_path / 'exists' / 'notes.txt').write_text('keep me')
    assert replay_main([str(source), '--image-topic', IMAGE_TOPIC, '--output',
                        str(tmp_path / 'exists'), '--overwrite']) == 1
    assert 'refusing to overwrite' in capsys.readouterr().err
    assert (tmp_path / 'exists' / 'notes.txt').read_text() == 'keep me'
    with pytest.raises(SystemExit):  # argparse: --image-topic is required
        replay_main([str(source), '--output', str(tmp_path / 'o')])


def test_add_replay_parser_registers_the_subcommand():
    import argparse

    parser = argparse.ArgumentParser(prog='lightglue-ros')
    add_replay_parser(parser.add_subparsers(dest='command', required=True))
    args = parser.parse_args(['replay', 'in.mcap', '--image-topic', '/a', '--output', 'o',
                              '--storage', 'sqlite3', '--fallback-intrinsics', '500,500,320,240',
                              '--max-keypoints', '256'])
    assert args.command == 'replay' and args.storage == 'sqlite3'
    assert args.fallback_intrinsics == (500.0, 500.0, 320.0, 240.0)
    assert callable(args.handler)
    with pytest.raises(SystemExit):
        parser.parse_args(['replay', 'in', '--image-topic', '/a', '--output', 'o',
                           '--fallback-intrinsics', '1,2,3'])


def test_node_params_file_gives_the_node_settings(tmp_path):
    """--params-file reads the node's ROS params file; explicit options win."""
    params = tmp_path / 'matcher.yaml'
    params.write_text('/**:\n  ros__parameters:\n    extractor: aliked\n    max_keypoints: 300\n'
                      '    resize: 0\n    fallback_intrinsics: [500.0, 501.0, 320.0, 240.0]\n'
                      '    odom_frame_id: world\n    backwards_reset_frames: 0\n'
                      'lightglue_matcher:\n  ros__parameters:\n    keyframe_min_matches: 90\n')
    parser = replay_cli.configure_replay_parser(__import__('argparse').ArgumentParser())
    args = parser.parse_args(['in', '--image-topic', '/a', '--output', 'o', '--params-file',
                              str(params), '--max-keypoints', '256'])
    settings = replay_cli._settings(args)
    config = settings['config']
    assert (config.extractor, config.max_keypoints, config.resize) == ('aliked', 256, None)
    assert config.keyframe_min_matches == 90
    assert settings['fallback_camera'] == (500.0, 501.0, 320.0, 240.0)
    assert (settings['odom_frame_id'], settings['backwards_reset_frames']) == ('world', 0)
    params.write_text('/**:\n  ros__parameters:\n    max_keypoints: -3\n')
    with pytest.raises(ConfigError, match='max_keypoints'):
        replay_cli._settings(parser.parse_args(['in', '--image-topic', '/a', '--output', 'o',
                                                   '--params-file', str(params)]))


@pytest.mark.parametrize('fmt', FORMATS)
def test_truncated_or_garbage_bag_raises_a_clear_error(tmp_path, frames, camera, tracker, fmt):
    records = frame_records(fmt, frames[:2], camera)
    source = write_bag(bag_path(tmp_path, fmt), fmt, records)
    data_file = source if fmt == 'ros1' else next(
        p for p in source.iterdir() if p.suffix in ('.mcap', '.db3'))
    data_file.write_bytes(data_file.read_bytes()[:data_file.stat().st_size // 2])
    output = tmp_path / 'out'
    with pytest.raises(BagError, match=r'cannot open bag .*corrupt, truncated or not a bag'):
        replay_bag(source, output, image_topic=IMAGE_TOPIC, tracker=tracker)
    assert not output.exists()
    garbage = bag_path(tmp_path, fmt, 'garbage')
    if fmt == 'ros1':
        garbage.write_bytes(os.urandom(5000))
    else:
        garbage.mkdir()
        (garbage / 'metadata.yaml').write_text((source / 'metadata.yaml').read_text())
        (garbage / data_file.name).write_bytes(os.urandom(5000))
    with pytest.raises(BagError, match='cannot open bag'):
        replay_bag(garbage, output, image_topic=IMAGE_TOPIC, tracker=tracker)
    with pytest.raises(BagError, match='does not exist'):
        replay_bag(tmp_path / 'missing', output, image_topic=IMAGE_TOPIC, tracker=tracker)


def test_bag_corrupt_midway_keeps_what_was_written_readable(tmp_path, frames, camera, tracker):
    """A ROS 1 bag whose third message record is damaged: two frames are processed, then a
    BagError; the output bag is closed, readable and holds those two frames."""
    source = write_bag(tmp_path / 'in.bag', 'ros1', frame_records('ros1', frames[:3], camera,
                                                                  info=False),
                       chunk_threshold=64 << 20)  # one chunk: the damage is met while reading
    data = bytearray(source.read_bytes())
    records = [m.start() for m in re.finditer(re.escape(b'op=\x02'), data)]
    assert len(records) == 3
    data[records[2] - 40:records[2] + 8] = b'\xff' * 48
    source.write_bytes(bytes(data))
    output = tmp_path / 'out'
    with pytest.raises(BagError, match=r'reading failed after 2 images.*2 frames processed'):
        replay_bag(source, output, image_topic=IMAGE_TOPIC, tracker=tracker, progress=False)
    raw = read_raw(output)
    assert [t for t, _ in raw[topic('matches')]] == [s for s, _ in frames[:2]]
    summary = json.loads((output / 'replay_summary.json').read_text())
    assert summary['processed'] == 2 and summary['error'] and not summary['complete']
    assert summary['matches'][1] > 0 and summary['reason'][1] == 'no_calibration'


def test_params_file_features_layout_reaches_the_features_messages(tmp_path, frames, camera,
                                                                  tracker):
    """The replay writes ~/features in the layout the node would publish (the node's
    features_layout parameter); it used to write vins_mono whatever the params file said."""
    from lightglue_ros.ros.messages import VINS_FUSION_CHANNELS

    params = tmp_path / 'matcher.yaml'
    params.write_text('/**:\n  ros__parameters:\n    features_layout: vins_fusion\n')
    parser = replay_cli.configure_replay_parser(__import__('argparse').ArgumentParser())
    settings = replay_cli._settings(parser.parse_args(
        ['in', '--image-topic', '/a', '--output', 'o', '--params-file', str(params)]))
    assert settings['features_layout'] == 'vins_fusion'
    source = write_bag(tmp_path / 'in', 'mcap', frame_records('mcap', frames[:2], camera))
    replay_bag(source, tmp_path / 'out', image_topic=IMAGE_TOPIC, camera_info_topic=INFO_TOPIC,
               tracker=tracker, progress=False, plots_dir=False,
               features_layout=settings['features_layout'])
    raw = read_raw(tmp_path / 'out')
    features = [TS2.deserialize_cdr(d, output_topics()[topic('features')])
                for _, d in raw[topic('features')]]
    assert features and all([c.name for c in msg.channels] == list(VINS_FUSION_CHANNELS)
                            for msg in features)


def test_fallback_intrinsics_that_do_not_fit_the_images_are_counted_skips(tmp_path, frames,
                                                                         tracker):
    """As in the node: a fallback camera that is implausible for the image size skips the
    frame (calibration_mismatch); the replay used to stop with an exception."""
    source = write_bag(tmp_path / 'in', 'mcap', [
        (IMAGE_TOPIC, IMAGE, stamp, image_msg(TS2, stamp, rgb)) for stamp, rgb in frames[:2]])
    summary = replay_bag(source, tmp_path / 'out', image_topic=IMAGE_TOPIC, tracker=tracker,
                         progress=False, plots_dir=False,
                         fallback_camera=(500.0, 500.0, 1e5, 1e5))
    assert (summary.frames, summary.processed) == (2, 0)
    assert summary.skipped_by_reason == {'calibration_mismatch': 2} and summary.complete


def test_undecodable_frames_are_skipped_and_counted(tmp_path, frames, camera, replayed,
                                                    tracker):
    """CompressedImage input with bad frames between good ones; the good frames give the same
    outputs as the clean replay (the bad ones leave no trace in the tracker)."""
    (s0, _), (s1, f1), (s2, _) = frames[:3]

    def png(rgb: np.ndarray) -> bytes:
        return cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()

    good = [compressed_msg(TS2, s, png(f)) for s, f in frames[:3]]
    bad_cdr = bytes(TS2.serialize_cdr(good[1], COMPRESSED))[:40]  # cut inside the data
    records: list[Record] = [
        (COMPRESSED_TOPIC, COMPRESSED, s0, good[0]),
        (COMPRESSED_TOPIC, COMPRESSED, s0 + 1, compressed_msg(TS2, s0 + 1, b'\xff\xd8 not a jpeg',
                                                              fmt='jpeg')),
        (COMPRESSED_TOPIC, COMPRESSED, s0 + 2, bad_cdr),
        (COMPRESSED_TOPIC, COMPRESSED, s0 + 3, compressed_msg(TS2, s0 + 3, b'', fmt='png')),
        (COMPRESSED_TOPIC, COMPRESSED, s1, good[1]),
        (COMPRESSED_TOPIC, COMPRESSED, s1 + 1, compressed_msg(TS2, s0, png(f1))),  # old stamp
        (COMPRESSED_TOPIC, COMPRESSED, s2, good[2]),
    ]
    _, clean_output, _ = replayed('mcap')
    source = write_bag(tmp_path / 'in', 'mcap', records)
    summary = replay_bag(source, tmp_path / 'out', image_topic=COMPRESSED_TOPIC,
                         tracker=tracker, progress=False,
                         fallback_camera=(camera.fx, camera.fy, camera.cx, camera.cy))
    assert (summary.frames, summary.processed, summary.skipped) == (7, 3, 4)
    assert summary.skipped_by_reason == {'invalid_image': 2, 'deserialize_error': 1,
                                         'non_increasing_stamp': 1}
    assert [f['reason'] for f in summary.skipped_frames] == [
        'invalid_image', 'deserialize_error', 'invalid_image', 'non_increasing_stamp']
    assert summary.complete and summary.stamp_ns == [s0, s1, s2]
    raw = read_raw(tmp_path / 'out')
    clean = read_raw(clean_output)
    assert len(raw[topic('matches')]) == 3
    # Same pixels and intrinsics as the clean bag: identical messages for the good frames.
    types = output_topics()
    for name in ('matches', 'relative_pose', 'odometry'):
        assert contents((d for _, d in raw[topic(name)]), types[topic(name)]) == \
            contents((d for t, d in clean[topic(name)] if t <= s2), types[topic(name)]), name


def damage_middle(bag: Path, fmt: str, stamps: list[int]) -> list[int]:
    """Damage six frames' bag in place in its middle, in a way rosbags reads past without a
    word; returns the image stamps that stay readable.

    mcap: three chunks of two frames (a 640x480 rgb8 image is 0.9 MB, rosbags closes a chunk
    above 1 MiB); in the middle one bit 7 of every message record's opcode is flipped, which
    makes it an unknown opcode, and readers skip unknown records (MCAP spec).
    sqlite3: the topic id of the middle two image rows becomes one that no topic has, so
    rosbags' JOIN with the topics table drops those rows.
    """
    if fmt == 'mcap':
        path, chunks = mcap_chunks(bag)
        assert len(chunks) == 3
        data = bytearray(path.read_bytes())
        records = [r for r in chunk_records(data, chunks[1]) if r[1] == 0x05]
        assert len(records) == 4  # two camera_info, two images
        for pos, _, _ in records:
            data[pos] |= 0x80
        gone = stamps[2:4]
    else:
        (path,) = bag.glob('*.db3')
        data = bytearray(path.read_bytes())
        gone = stamps[2:4]
        for stamp in gone:
            # An image row's record: topic id 2 (one byte), then the stamp in the fewest of
            # SQLite's integer sizes that hold it (big-endian, signed).
            size = next(n for n in (1, 2, 3, 4, 6, 8) if stamp < 1 << (8 * n - 1))
            value = b'\x02' + stamp.to_bytes(size, 'big')
            assert data.count(value) == 1
            data[data.find(value)] = 0x07
    path.write_bytes(bytes(data))
    return [s for s in stamps if s not in gone]


@pytest.mark.parametrize('fmt', ['mcap', 'sqlite3'])
def test_damaged_bag_is_an_error_unless_allow_partial(tmp_path, freiburg_frames, camera,
                                                      tracker, monkeypatch, capsys, fmt):
    """Images that rosbags skips without a word are counted against the bag's index: exit 1
    and one error line, or with --allow-partial exit 0; either way the output is readable and
    the summary says how many images are missing."""
    frames6 = [(stamp_of(p), read_image(p)) for p in freiburg_frames[:6]]
    stamps = [s for s, _ in frames6]
    source = write_bag(tmp_path / 'in', fmt, frame_records(fmt, frames6, camera))
    readable = damage_middle(source, fmt, stamps)
    assert len(readable) == 4
    monkeypatch.setattr(replay_module, 'Tracker', lambda config: tracker)  # the module's models
    output = tmp_path / 'out'
    argv = [str(source), '--image-topic', IMAGE_TOPIC, '--camera-info-topic', INFO_TOPIC,
            '--output', str(output), '--no-progress', '--no-plots']

    assert replay_main(argv) == 1
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f'replay: error: {source}: damaged bag: 4 of 6 images on '
                           f'{IMAGE_TOPIC} could be read (4 frames processed, 2 of 6 images '
                           'the bag index lists were not read; the output bag'), line
    assert '--allow-partial' in line
    summary = ReplaySummary.load(output / 'replay_summary.json')
    assert (summary.expected_frames, summary.frames, summary.missing_frames) == (6, 4, 2)
    assert summary.processed == 4 and not summary.complete and summary.error is None
    # The mcap damage took the chunk's camera_info with it; the sqlite3 one only image rows.
    assert summary.camera_info_missing == (2 if fmt == 'mcap' else 0)
    assert summary.camera_info_messages == (4 if fmt == 'mcap' else 6)
    assert [t for t, _ in read_raw(output)[topic('matches')]] == readable

    # Accepted: exit 0, and the earlier output (ours) may be replaced.
    assert replay_main([*argv, '--overwrite', '--allow-partial']) == 0
    err = capsys.readouterr().err
    assert 'replay: 4/4 frames processed, 2 of 6 images missing' in err
    summary = ReplaySummary.load(output / 'replay_summary.json')
    assert (summary.expected_frames, summary.frames, summary.missing_frames) == (6, 4, 2)
    assert not summary.complete and summary.ok == [True] * 4
    assert [t for t, _ in read_raw(output)[topic('matches')]] == readable

    # The Python API raises (with the summary) unless allow_partial.
    with pytest.raises(replay_module.IncompleteBagError, match='4 of 6 images') as info:
        replay_bag(source, output, image_topic=IMAGE_TOPIC, tracker=tracker, overwrite=True,
                   progress=False, plots_dir=False, max_frames=5)
    assert info.value.summary.missing_frames == 2


def test_damaged_camera_info_does_not_stop_the_replay(tmp_path, frames, camera, tracker):
    """The camera_info pre-read meets a damaged chunk (which holds no image): the camera_info
    read before it calibrates the images, the loss is counted, the replay completes."""
    (s0, f0), (s1, f1) = frames[:2]
    records: list[Record] = [
        (IMAGE_TOPIC, IMAGE, s0, image_msg(TS2, s0, f0)),
        (INFO_TOPIC, CAMERA_INFO, s0, info_msg(TS2, s0, camera)),
        (INFO_TOPIC, CAMERA_INFO, s0 + 1,  # undecodable: cut inside the message
         bytes(TS2.serialize_cdr(info_msg(TS2, s0 + 1, camera), CAMERA_INFO))[:30]),
        (IMAGE_TOPIC, IMAGE, s1, image_msg(TS2, s1, f1)),  # > 1 MiB: closes the first chunk
        (INFO_TOPIC, CAMERA_INFO, s1, info_msg(TS2, s1, camera)),  # the second chunk
        (INFO_TOPIC, CAMERA_INFO, s1 + 1, info_msg(TS2, s1 + 1, camera)),
    ]
    source = write_bag(tmp_path / 'in', 'mcap', records)
    path, chunks = mcap_chunks(source)
    assert len(chunks) == 2
    data = bytearray(path.read_bytes())
    pos, op, _ = chunk_records(data, chunks[1])[0]
    assert op == 0x05
    data[pos + 1:pos + 9] = (10**9).to_bytes(8, 'little')  # a record length past the chunk
    path.write_bytes(bytes(data))
    with AnyReader([source]) as reader:  # the damage really fails the camera_info read
        with pytest.raises(Exception, match='Truncated record'):
            list(reader.messages(connections=[c for c in reader.connections
                                              if c.topic == INFO_TOPIC]))

    summary = replay_bag(source, tmp_path / 'out', image_topic=IMAGE_TOPIC,
                         camera_info_topic=INFO_TOPIC, tracker=tracker, progress=False,
                         plots_dir=False)
    assert summary.complete and summary.processed == 2 and summary.missing_frames == 0
    assert (summary.camera_info_messages, summary.camera_info_errors,
            summary.camera_info_missing) == (2, 1, 2)
    assert 'Truncated record' in summary.camera_info_read_error
    assert summary.ok == [True, True] and summary.reason == ['first_frame', '']
    assert len(read_raw(tmp_path / 'out')[topic('features')]) == 2  # calibrated outputs


def _tree(path: Path) -> Any:
    """The content of a file, a folder (recursively) or a link, for before/after checks."""
    if path.is_symlink():
        return ('link', os.readlink(path))
    if path.is_dir():
        return sorted((str(p.relative_to(path)), p.read_bytes() if p.is_file() else None)
                      for p in path.rglob('*'))
    return path.read_bytes()


def test_overwrite_replaces_only_an_earlier_replay_output(tmp_path, frames, capsys):
    stamp, rgb = frames[0]
    source = write_bag(tmp_path / 'in', 'mcap', [(IMAGE_TOPIC, IMAGE, stamp,
                                                  image_msg(TS2, stamp, rgb))])
    plain = tmp_path / 'notes.txt'
    plain.write_text('keep me')
    folder = tmp_path / 'folder'
    folder.mkdir()
    (folder / 'data.csv').write_text('1,2\n')
    recording = write_bag(tmp_path / 'recording', 'mcap', [(IMAGE_TOPIC, IMAGE, stamp,
                                                            image_msg(TS2, stamp, rgb))])
    ours_and_more = write_previous_output(tmp_path / 'ours_and_more', 'mcap')
    (ours_and_more / 'notes.txt').write_text('mine')
    link = tmp_path / 'link'
    link.symlink_to(write_previous_output(tmp_path / 'target'))
    refused = {plain: 'it is not a folder', folder: 'not a rosbag2 folder (no metadata.yaml)',
               recording: 'a rosbag2 that was not written by a replay',
               ours_and_more: 'not from a replay (notes.txt)', link: 'a symbolic link'}
    for path, reason in refused.items():
        before = _tree(path)
        code = replay_main([str(source), '--image-topic', IMAGE_TOPIC, '--output', str(path),
                            '--overwrite'])
        err = capsys.readouterr().err
        assert code == 1, path
        assert err.startswith(f'replay: error: refusing to overwrite {path}: ') and reason in err
        assert len(err.strip().splitlines()) == 1
        assert _tree(path) == before, path  # untouched
    # What the replay writes carries the marker; an earlier output is replaced (in
    # test_damaged_bag_is_an_error_unless_allow_partial and the sqlite3 fixture).
    assert bag_io.not_our_output(write_previous_output(tmp_path / 'ours')) is None


def _read_only_mount(mount_point: Path) -> list[str]:
    """A command prefix that runs the rest in a mount namespace of its own where
    ``mount_point`` is a read-only tmpfs (root passes every permission check, so only a
    read-only mount makes a folder unwritable to it)."""
    unshare = shutil.which('unshare')
    prefix = [unshare or 'unshare', '--mount', '--map-root-user', 'sh', '-c',
              'mount -t tmpfs -o ro tmpfs "$1" && shift && exec "$@"', 'sh', str(mount_point)]
    probe = subprocess.run([*prefix, 'true'], capture_output=True, text=True) if unshare else None
    if probe is None or probe.returncode != 0:
        pytest.skip('cannot mount a read-only tmpfs here (unshare --mount --map-root-user: '
                    f'{probe.stderr.strip() if probe else "not installed"})')
    return prefix


@pytest.mark.parametrize('what', ['output', 'summary'])
@pytest.mark.parametrize('where', ['below_a_file', 'procfs', 'read_only_mount'])
def test_unwritable_output_or_summary_is_a_one_line_error(tmp_path, frames, capsys, what,
                                                          where):
    """Refused before the models load, in one line: a path below a regular file (ENOTDIR),
    in /proc (ENOENT, even for root) and on a read-only file system (EROFS)."""
    stamp, rgb = frames[0]
    source = write_bag(tmp_path / 'in', 'mcap', [(IMAGE_TOPIC, IMAGE, stamp,
                                                  image_msg(TS2, stamp, rgb))])
    name = 'out' if what == 'output' else 'summary.json'
    if where == 'below_a_file':
        (tmp_path / 'a_file').write_text('x')
        target, expected = tmp_path / 'a_file' / 'sub' / name, f'{tmp_path / "a_file"} is not a'
    elif where == 'procfs':
        target, expected = Path('/proc/self') / name, 'No such file or directory (/proc/self)'
    else:
        (tmp_path / 'ro').mkdir()
        target, expected = tmp_path / 'ro' / name, 'Read-only file system'
    output = target if what == 'output' else tmp_path / 'out'
    argv = [str(source), '--image-topic', IMAGE_TOPIC, '--output', str(output)]
    if what == 'summary':
        argv += ['--summary', str(target)]
    if where == 'read_only_mount':
        proc = subprocess.run([*_read_only_mount(tmp_path / 'ro'), sys.executable, '-m',
                               'lightglue_ros.cli.replay', *argv], cwd=PROJECT_ROOT,
                              capture_output=True, text=True, timeout=300)
        code, err = proc.returncode, proc.stderr
    else:
        code, err = replay_main(argv), capsys.readouterr().err
    assert code == 1, err
    assert 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    kind = 'output bag' if what == 'output' else 'summary'
    assert err.startswith(f'replay: error: cannot write the {kind} {target}: '), err
    assert expected in err
    assert not (tmp_path / 'out').exists()  # refused before anything was written


def test_summary_unwritable_at_the_end_keeps_the_bag(tmp_path, frames, tracker, monkeypatch,
                                                     capsys):
    """The summary's folder becomes unwritable during the replay: one error line, exit 1, and
    the output bag is closed and readable."""
    stamp, rgb = frames[0]
    source = write_bag(tmp_path / 'in', 'mcap', [(IMAGE_TOPIC, IMAGE, stamp,
                                                  image_msg(TS2, stamp, rgb))])
    (tmp_path / 'a_file').write_text('x')
    summary = tmp_path / 'a_file' / 'summary.json'
    monkeypatch.setattr(replay_module, 'check_writable', lambda path, what: None)  # as if
    monkeypatch.setattr(replay_module, 'Tracker', lambda config: tracker)  # writable at first
    code = replay_main([str(source), '--image-topic', IMAGE_TOPIC, '--output',
                        str(tmp_path / 'out'), '--summary', str(summary), '--no-progress',
                        '--no-plots'])
    err = capsys.readouterr().err
    assert code == 1 and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f'replay: error: cannot write the summary {summary}: ')
    assert f'the output bag {tmp_path / "out"} is closed and readable' in err
    assert [t for t, _ in read_raw(tmp_path / 'out')[topic('matches')]] == [stamp]


@pytest.mark.parametrize('option', ['--params-file', '--config'])
@pytest.mark.parametrize('content, expected', [
    (b'\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR', 'not a UTF-8 text file (byte 0x89 at offset 0)'),
    ('extractor: caf\xe9\n'.encode('latin-1'),
     'not a UTF-8 text file (byte 0xe9 at offset 14)'),
    (b'max_keypoints: 10\x00\x01\x02', 'not valid YAML: character #x00 at offset 17'),
    (b'a: [1, 2\n', "not valid YAML: line 2, column 1: expected ',' or ']'"),
    (None, 'cannot read it: Is a directory'),
])
def test_unreadable_settings_file_is_a_one_line_error(tmp_path, capsys, option, content,
                                                      expected):
    path = tmp_path / 'settings.yaml'
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    code = replay_main([str(tmp_path / 'in.mcap'), '--image-topic', '/a', '--output',
                        str(tmp_path / 'out'), option, str(path)])
    err = capsys.readouterr().err
    assert code == 1
    assert 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f'replay: error: {option} {path}: {expected}'), err


# ------------------------------------------------------------------------------------------------
# Ctrl-C.
# ------------------------------------------------------------------------------------------------

def _replay_command(entry: str) -> list[str]:
    if entry == 'module':
        return [sys.executable, '-m', 'lightglue_ros.cli.replay']
    script = Path(sys.executable).parent / 'replay'  # the console script (setup.py)
    if not script.is_file():
        pytest.skip(f'the replay console script is not installed beside {sys.executable}')
    return [str(script)]


@pytest.mark.parametrize('entry', ['module', 'console_script'])
@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize('delay_s', [0.3, 0.8])
def test_signal_while_importing_exits_130_in_one_line(tmp_path, frames, camera, weights_dir,
                                                      entry, signum, delay_s):
    """SIGINT / SIGTERM while torch & co. are being imported: exit code 130, one line."""
    source = write_bag(tmp_path / 'in', 'mcap', frame_records('mcap', frames[:1], camera))
    output = tmp_path / 'out'
    proc = subprocess.Popen(
        [*_replay_command(entry), str(source), '--image-topic', IMAGE_TOPIC, '--output',
         str(output), '--extractor', 'aliked', '--extractor-weights',
         str(weights_dir / 'aliked-n16.pth'), '--matcher-weights',
         str(weights_dir / 'aliked_lightglue.pth'), '--device', 'cpu', '--no-progress'],
        cwd=PROJECT_ROOT, stderr=subprocess.PIPE, text=True)
    time.sleep(delay_s)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert 'Traceback' not in err
    name = signal.Signals(signum).name
    # While importing the start-up guard answers; on a fast machine the imports may be over
    # and the command's own handler answers (models loading: the test below). One line either.
    assert err.strip().splitlines() in ([f'replay: interrupted ({name}) while starting'],
                                        [f'replay: interrupted ({name})']), err
    assert not output.exists()


@pytest.mark.parametrize('interrupt, name', [(KeyboardInterrupt(), 'SIGINT'),
                                             ('terminated', 'SIGTERM')])
def test_signal_between_imports_and_the_command_names_the_signal(monkeypatch, capsys,
                                                                interrupt, name):
    """A signal after the start-up guard is gone but before the command's own handler (the
    command line being parsed, the command's imports): the same one line as everywhere else,
    naming the signal. It said 'replay: interrupted' without the name, which failed the test
    above on a slow machine (the signal at 0.3 s landed in that window)."""
    from lightglue_ros import startup

    error = startup.Terminated('SIGTERM') if interrupt == 'terminated' else interrupt

    def parse_args(self, args=None, namespace=None):  # noqa: ANN001, ANN202
        raise error

    monkeypatch.setattr('argparse.ArgumentParser.parse_args', parse_args)
    code = replay_main(['in.mcap', '--image-topic', '/a', '--output', 'out'])
    assert code == 130
    assert capsys.readouterr().err.strip().splitlines() == [f'replay: interrupted ({name})']


def test_signal_tests_hold_when_pytest_starts_with_sigint_ignored(tmp_path: Path,
                                                                  shared_dir: Path) -> None:
    """A pytest started in the background by a shell without job control (``pytest &`` in a
    script, nohup) inherits SIGINT ignored and passed it on to every child: 12 signal tests
    failed and a launch test left its nodes running. conftest.pytest_configure gives the
    children a SIGINT they act on; the test above, run that way, must still pass."""
    test = ('tests/test_replay.py::test_signal_while_importing_exits_130_in_one_line'
            f'[0.3-{int(signal.SIGINT)}-module]')
    run = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', test, '--shared-dir', str(shared_dir),
         '--basetemp', str(tmp_path / 'basetemp')],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert run.returncode == 0 and '1 passed' in run.stdout, run.stdout[-3000:]


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_signal_while_loading_models_exits_130_in_one_line(tmp_path, frames, camera,
                                                           weights_dir, signum):
    """The signal comes once the input bag is open, i.e. while the networks are built."""
    source = write_bag(tmp_path / 'in', 'mcap', frame_records('mcap', frames[:1], camera))
    (data_file,) = source.glob('*.mcap')
    output = tmp_path / 'out'
    proc = subprocess.Popen(
        [sys.executable, '-m', 'lightglue_ros.cli.replay', str(source), '--image-topic',
         IMAGE_TOPIC, '--output', str(output), '--extractor', 'aliked', '--extractor-weights',
         str(weights_dir / 'aliked-n16.pth'), '--matcher-weights',
         str(weights_dir / 'aliked_lightglue.pth'), '--device', 'cpu', '--no-progress'],
        cwd=PROJECT_ROOT, stderr=subprocess.PIPE, text=True)
    fds = Path(f'/proc/{proc.pid}/fd')
    deadline = time.monotonic() + 300

    def input_open() -> bool:
        try:
            return any(os.readlink(fd) == str(data_file.resolve()) for fd in fds.iterdir())
        except OSError:  # an fd closed while listing
            return False

    while proc.poll() is None and not input_open():
        assert time.monotonic() < deadline, 'the replay never opened its input'
        time.sleep(0.005)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    name = signal.Signals(signum).name
    assert 'Traceback' not in err
    assert err.strip().splitlines() == [f'replay: interrupted ({name})'], err
    assert not output.exists()  # the models were still loading

def test_sigint_mid_run_leaves_a_readable_bag(tmp_path, freiburg_frames, camera, weights_dir):
    frames = [(stamp_of(p), read_image(p)) for p in freiburg_frames]
    source = write_bag(tmp_path / 'in', 'mcap', frame_records('mcap', frames, camera))
    output = tmp_path / 'out'
    env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'OMP_NUM_THREADS': '2'}
    cmd = [sys.executable, '-m', 'lightglue_ros.cli.replay', str(source),
           '--image-topic', IMAGE_TOPIC, '--camera-info-topic', INFO_TOPIC, '--output',
           str(output), '--storage', 'mcap', '--extractor', 'aliked',
           '--extractor-weights', str(weights_dir / 'aliked-n16.pth'),
           '--matcher-weights', str(weights_dir / 'aliked_lightglue.pth'),
           '--max-keypoints', str(MAX_KEYPOINTS), '--resize', str(RESIZE), '--device', 'cpu']
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    stderr = bytearray()
    reader = threading.Thread(target=lambda: [stderr.extend(chunk) for chunk in
                                              iter(lambda: proc.stderr.read1(4096), b'')],
                              daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            done = [int(n) for n in re.findall(rb'(\d+)/%d \[' % len(frames), bytes(stderr))]
            if done and max(done) >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, bytes(stderr).decode(errors='replace')[-2000:]
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    log = bytes(stderr).decode(errors='replace')
    assert rc == 130, log[-2000:]
    assert 'interrupted' in log
    summary = ReplaySummary.load(output / 'replay_summary.json')
    assert summary.interrupted and not summary.complete and summary.error is None
    assert 1 <= summary.processed < len(frames)
    assert summary.frames == summary.processed  # the frame in flight was finished
    raw = read_raw(output)  # metadata.yaml written on close: a valid bag
    assert [t for t, _ in raw[topic('matches')]] == summary.stamp_ns
    assert (output / 'plots' / 'matches_inliers.png').is_file()


# ------------------------------------------------------------------------------------------------
# Plots and camera pairing (no tracking).
# ------------------------------------------------------------------------------------------------

def test_plots_from_a_summary_with_gaps(tmp_path):
    summary = ReplaySummary(input='in', output='out', image_topic='/image',
                            camera_info_topic=None, storage='mcap', input_format='rosbag2',
                            topic_prefix='/x', interrupted=True)
    assert len(plot_summary(summary, tmp_path / 'empty')) == len(PLOT_NAMES)
    summary.stamp_ns = [0, 10**8, 2 * 10**8, 3 * 10**8]
    summary.matches, summary.inliers = [0, 300, 120, 280], [0, 290, 100, 260]
    summary.stop_layer, summary.keyframe_index = [0, 4, 9, 5], [0, 0, 1, 1]
    summary.keyframe_event = ['first_frame', '', 'low_inliers', '']
    summary.latency, summary.tracker_latency = [50.0, 80.0, 90.0, 70.0], [40.0, 60.0, 75.0, 55.0]
    summary.position = [[0.0, 0.0, 0.0], [0.1, 0.0, 0.9], None, [0.2, 0.0, 1.9]]
    summary.keyframe_switches, summary.fps = 1, 12.5
    summary.finish(0.32)
    paths = plot_summary(summary, tmp_path / 'plots')
    assert [p.stem for p in paths] == list(PLOT_NAMES)
    # Each PNG decodes to its figure's size (inches x DPI) and holds a drawing, not a blank
    # canvas; the data plots differ from the empty ones.
    sizes = {'matches_inliers': (400, 800), 'stop_layer': (400, 800), 'latency': (400, 1000),
             'keyframes': (400, 800), 'trajectory': (450, 1000)}
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == (*sizes[path.stem], 3), path
        assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20 and image.std() > 5, path
        empty = cv2.imread(str(tmp_path / 'empty' / path.name), cv2.IMREAD_COLOR)
        assert empty.shape == image.shape and not np.array_equal(empty, image), path
    # The plotted data are the summary's: the curves' values, the switch marks and the start.
    from lightglue_ros import plots

    (ax,) = plots.plot_matches_inliers(summary).axes
    t = [0.0, 0.1, 0.2, 0.3]
    np.testing.assert_allclose(ax.lines[0].get_xdata(), t)
    assert list(ax.lines[0].get_ydata()) == summary.matches
    assert list(ax.lines[1].get_ydata()) == summary.inliers
    np.testing.assert_allclose(ax.lines[2].get_xdata(), [0.2, 0.2])  # the low_inliers switch
    assert len(ax.lines) == 3
    (ax,) = plots.plot_stop_layer(summary).axes
    np.testing.assert_allclose(ax.lines[0].get_xdata(), t)
    assert list(ax.lines[0].get_ydata()) == summary.stop_layer
    np.testing.assert_allclose(ax.lines[1].get_xdata(), [0.2, 0.2])
    ax, hist = plots.plot_latency(summary).axes
    np.testing.assert_allclose(ax.lines[0].get_xdata(), t)
    assert list(ax.lines[0].get_ydata()) == summary.latency
    assert list(ax.lines[1].get_ydata()) == summary.tracker_latency
    assert [list(line.get_ydata()) for line in ax.lines[2:]] == \
        [[summary.latency_ms['p50']] * 2, [summary.latency_ms['p95']] * 2]
    assert sum(bar.get_height() for bar in hist.patches) == len(summary.latency)
    (ax,) = plots.plot_keyframes(summary).axes
    assert list(ax.lines[0].get_ydata()) == summary.keyframe_index
    np.testing.assert_allclose(ax.lines[1].get_xdata(), [0.2])
    assert list(ax.lines[1].get_ydata()) == [1]
    top, _ = plots.plot_trajectory(summary).axes
    np.testing.assert_allclose(top.lines[0].get_xdata(), [0.0, 0.1, np.nan, 0.2])
    np.testing.assert_allclose(top.lines[0].get_ydata(), [0.0, 0.9, np.nan, 1.9])
    assert (list(top.lines[1].get_xdata()), list(top.lines[1].get_ydata())) == ([0.0], [0.0])
    _, series = plots.plot_trajectory(summary).axes
    positions = [[np.nan] * 3 if p is None else p for p in summary.position]
    for axis, line in enumerate(series.lines):
        np.testing.assert_allclose(line.get_xdata(), t)
        np.testing.assert_allclose(line.get_ydata(), [p[axis] for p in positions])
    assert len(series.lines) == 3


def test_camera_info_pairing_by_stamp(tmp_path, camera):
    """Latest valid camera_info at or before the image; the first one before it; invalid ones
    ignored; the fallback only without any valid camera_info."""
    other = CameraModel.from_intrinsics(600.0, 600.0, 320.0, 240.0, 640, 480)
    bad = CameraModel.from_intrinsics(1.0, 1.0, 1.0, 1.0, 640, 480)
    source = write_bag(tmp_path / 'in', 'sqlite3', [
        (INFO_TOPIC, CAMERA_INFO, 100, info_msg(TS2, 100, camera)),
        (INFO_TOPIC, CAMERA_INFO, 200, info_msg(TS2, 200, other)),
        (INFO_TOPIC, CAMERA_INFO, 300, _zero_k(info_msg(TS2, 300, bad))),
    ])
    bag = bag_io.InputBag(source)
    try:
        summary = ReplaySummary(input='', output='', image_topic='', camera_info_topic=INFO_TOPIC,
                                storage='mcap', input_format='rosbag2', topic_prefix='')
        cameras = replay_module._Cameras()
        cameras.load(bag, bag.connections(INFO_TOPIC, (CAMERA_INFO,), 'camera_info'), summary,
                     has_fallback=True)
    finally:
        bag.close()
    assert (summary.camera_info_messages, summary.camera_info_errors) == (3, 1)
    def K(model: CameraModel | None) -> list[float]:
        assert model is not None
        return model.K.tolist()

    assert K(cameras.lookup(50)) == K(camera)
    assert K(cameras.lookup(150)) == K(camera)
    assert K(cameras.lookup(200)) == K(other)
    assert K(cameras.lookup(10**12)) == K(other)  # the invalid one is ignored
    # Without camera_info the pipeline's fallback applies (the node's rule).
    assert replay_module._Cameras().lookup(0) is None
    fallback = FramePipeline(Tracker.__new__(Tracker), fallback=(500.0, 500.0, 100.0, 100.0))
    assert fallback.camera_for(None, 320, 240) == CameraModel.from_intrinsics(
        500.0, 500.0, 100.0, 100.0, 320, 240)
    assert FramePipeline(Tracker.__new__(Tracker)).camera_for(None, 640, 480) is None


def _zero_k(msg: Any) -> Any:
    msg.k = np.zeros(9)  # an uncalibrated camera publishes K = 0
    return msg


# ------------------------------------------------------------------------------------------------
# Replay == live node (lossless mode).
# ------------------------------------------------------------------------------------------------

def test_replay_equals_live_node_in_lossless_mode(replayed, tracker, weights_dir, monkeypatch):
    """The same image and camera_info messages (the bag's raw CDR) published to MatcherNode in
    lossless mode give identical messages on every output topic, debug images included."""
    node_module = pytest.importorskip('lightglue_ros.ros.node')
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from ros_helpers import PublishCounter

    from devtools.ros_spin import BackgroundSpinner

    source, output, summary = replayed('mcap')
    inputs = read_raw(source)
    expected = read_raw(output)
    domain = 60 + os.getpid() % 40
    monkeypatch.setenv('ROS_DOMAIN_ID', str(domain))
    monkeypatch.setenv('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain,
               signal_handler_options=SignalHandlerOptions.NO)
    executor = node = io = spinner = None
    try:
        parameters = {
            'processing_mode': 'lossless', 'qos_reliability': 'reliable', 'qos_depth': 50,
            'extractor': 'aliked', 'extractor_weights': str(weights_dir / 'aliked-n16.pth'),
            'matcher_weights': str(weights_dir / 'aliked_lightglue.pth'),
            'max_keypoints': MAX_KEYPOINTS, 'resize': RESIZE, 'device': 'cpu'}
        node = node_module.MatcherNode(
            context=context, models=(tracker.extractor, tracker.matcher),
            parameter_overrides=[Parameter(k, value=v) for k, v in parameters.items()])
        assert node.tracker.config == tracker.config  # the same settings on both sides
        io = rclpy.create_node('replay_equality_io', context=context)
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                         history=HistoryPolicy.KEEP_LAST)
        image_pub = io.create_publisher(rclpy_type(IMAGE), '/image', qos)
        info_pub = io.create_publisher(rclpy_type(CAMERA_INFO), '/camera_info', qos)
        received: dict[str, list[bytes]] = {name: [] for name in expected}
        subscriptions = [
            io.create_subscription(rclpy_type(msgtype), name,
                                   lambda data, name=name: received[name].append(data), qos,
                                   raw=True)
            for name, msgtype in output_topics(debug_images=True).items()]
        sent = PublishCounter(node)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        executor.add_node(io)
        spinner = BackgroundSpinner(executor).start()

        wait_until(lambda: image_pub.get_subscription_count() >= 1
                   and info_pub.get_subscription_count() >= 1
                   and all(s.get_publisher_count() >= 1 for s in subscriptions),
                   30, 'discovery')
        info_pub.publish(inputs[INFO_TOPIC][0][1])
        wait_until(lambda: node.stats.camera_info_received >= 1, 30, 'camera_info')
        for _, data in inputs[IMAGE_TOPIC]:
            image_pub.publish(data)
        # Every image reached the node (reliable) and every frame is finished: the node has
        # published all it will. It published exactly the replay's counts, so once those
        # arrived nothing more can (no other publisher; DDS delivers each message once).
        wait_until(lambda: node.stats.received == len(inputs[IMAGE_TOPIC]), 60, 'the images')
        assert node.wait_idle(600)
        assert node.stats.processed == N_FRAMES and not node.stats.skipped
        expected_counts = {name: len(msgs) for name, msgs in expected.items()}
        assert {name: sent[name] for name in expected} == expected_counts
        wait_until(lambda: all(len(received[n]) >= c for n, c in expected_counts.items()),
                   60, f'the node outputs ({expected_counts})')
        assert {n: len(m) for n, m in received.items()} == expected_counts
        types = output_topics(debug_images=True)
        for name, messages in expected.items():
            assert contents(received[name], types[name]) == \
                contents((data for _, data in messages), types[name]), name
    finally:
        if spinner is not None:
            spinner.stop()
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        if io is not None:
            io.destroy_node()
        rclpy.try_shutdown(context=context)

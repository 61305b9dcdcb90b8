"""Feature ids as VINS reads them: one contiguous run of published frames per id.

VINS-Mono and VINS-Fusion (``feature_manager.cpp``) attach the j-th observation of a feature id
to the j-th frame after the id's first frame: they assume that an id, once missing from a
frame, never comes back. The tracker's own track ids do come back (a keyframe keypoint keeps its
id whenever it is matched again, and a match that is an outlier in one frame may be an inlier
in the next). ``PublishedTracks`` renumbers them for ``~/features``: a tracker id keeps its
published id only while it is in every published frame, and a tracker id that returns after a
gap starts a new published id (with zero velocity). It also chooses what ``~/features`` carries:
the frame's pose inliers by default, as VINS-Mono's own tracker removes its RANSAC outliers.

A frame is *published* when the caller builds a ``~/features`` message for it (``publish``),
an empty one included; a frame that gets no such message (skipped, no calibration) is a frame
VINS never sees and breaks no run. No ROS here; the node and the bag replay share one instance
per stream through ``lightglue_ros.ros.outputs.frame_outputs``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lightglue_ros.defaults import DEFAULT_FEATURES_INLIERS_ONLY
from lightglue_ros.tracker import UNMATCHED, FrameResult

# Published ids count modulo this: VINS reads ids as float32, exact below 2**24 (an id wraps
# only after 2**24 newer ones, long after it left VINS's sliding window).
ID_LIMIT = 1 << 24


@dataclass(frozen=True)
class PublishedFeatures:
    """The observations one frame publishes, rows of its FrameResult (K matches -> M <= K).

    rows:        [M] int64 indices into the result's match arrays, in increasing order.
    ids:         [M] int64 published feature ids in [0, ID_LIMIT), unique within the frame.
    velocity:    [M x 2] float32 normalised-coordinate velocity per second; zero for an id
                 that starts at this frame.
    match_ids:   [K] int64 the published id of every match, UNMATCHED for matches left out.
    """

    rows: np.ndarray
    ids: np.ndarray
    velocity: np.ndarray
    match_ids: np.ndarray


class PublishedTracks:
    """Published feature ids for one stream of tracker results (see the module docstring).

    inliers_only: publish only the matches the frame's relative pose kept (a frame without a
        pose then publishes no observations); False: every match.
    """

    def __init__(self, *, inliers_only: bool = DEFAULT_FEATURES_INLIERS_ONLY) -> None:
        self.inliers_only = inliers_only
        self._next_id = 0  # never reset: no id returns within VINS's window
        self._live: dict[int, int] = {}  # tracker track id -> published id, last published frame

    def reset(self) -> None:
        """Forget which ids are alive (published ids keep counting up, so none is reused)."""
        self._live = {}

    def unpublished(self, result: FrameResult) -> np.ndarray:
        """[K] int64 match ids of a frame without a ``~/features`` message: all UNMATCHED.

        The frame is not one VINS sees, so the live ids stay alive across it.
        """
        self._forget_old_map(result)
        return np.full(result.num_matches, UNMATCHED, dtype=np.int64)

    def publish(self, result: FrameResult) -> PublishedFeatures:
        """The observations of a frame that gets a ``~/features`` message, with their ids.

        Every id alive before this frame and absent from it dies for good.
        """
        self._forget_old_map(result)
        keep = result.inliers if self.inliers_only else np.ones(result.num_matches, bool)
        rows = np.flatnonzero(keep)
        tracks = result.track_ids[rows]
        ids = np.empty(len(rows), dtype=np.int64)
        continued = np.zeros(len(rows), dtype=bool)
        live: dict[int, int] = {}
        for i, track in enumerate(tracks.tolist()):
            published = self._live.get(track)
            if published is None:
                published, self._next_id = self._next_id, (self._next_id + 1) % ID_LIMIT
            else:
                continued[i] = True
            ids[i] = live[track] = published
        self._live = live
        # The tracker's velocity compares with the track's point in the previous result; a
        # continued id was published there (a result without ~/features has no calibration, and
        # the tracker gives zero velocity after it). A new id has no previous observation.
        velocity = np.where(continued[:, None], result.velocity_norm[rows],
                            np.float32(0)).astype(np.float32)
        match_ids = np.full(result.num_matches, UNMATCHED, dtype=np.int64)
        match_ids[rows] = ids
        return PublishedFeatures(rows, ids, velocity, match_ids)

    def _forget_old_map(self, result: FrameResult) -> None:
        # After Tracker.reset the track ids count from 0 again: the old ones mean nothing now.
        if any(event.reason == 'first_frame' for event in result.keyframe_events):
            self.reset()


@dataclass(frozen=True)
class RunCheck:
    """How a stream of published frames reads under VINS's contiguous-run assumption."""

    ids: int  # distinct ids published
    returning_ids: int  # ids that are absent from a published frame and then published again
    observations: int  # (id, frame) observations published
    misattributed: int  # observations VINS attaches to another frame than their own

    @property
    def returning_fraction(self) -> float:
        return self.returning_ids / self.ids if self.ids else 0.0

    @property
    def misattributed_fraction(self) -> float:
        return self.misattributed / self.observations if self.observations else 0.0


def check_runs(frame_ids: list[np.ndarray]) -> RunCheck:
    """Read published frames as VINS does: the j-th observation of an id belongs to the j-th
    frame after the id's first one (``feature_manager.cpp``, ``start_frame``).

    frame_ids: per published frame, in order, its [M] feature ids (an empty array for a frame
    published without points).
    """
    seen: dict[int, list[int]] = {}
    for frame, ids in enumerate(frame_ids):
        for feature in np.asarray(ids).tolist():
            seen.setdefault(int(feature), []).append(frame)
    returning = misattributed = observations = 0
    for frames in seen.values():
        expected = np.arange(frames[0], frames[0] + len(frames))
        wrong = int((np.asarray(frames) != expected).sum())
        returning += wrong > 0
        misattributed += wrong
        observations += len(frames)
    return RunCheck(len(seen), returning, observations, misattributed)

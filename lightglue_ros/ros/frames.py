"""One image message -> the output messages of its frame, or a counted skip: the one path that
the live node (``matcher.MatcherNode``) and the bag replay (``replay.replay_bag``) share.

``MessagePipeline.process(msg, camera)`` decodes the message (``images.message_to_array``),
tracks the frame under the shared per-frame rules (``pipeline.FramePipeline.process``, which
calls ``tracker.Tracker.process``) and builds its messages (``messages.frame_outputs``); the
debug picture (``viz.draw_tracks``) is drawn only when the caller asks for it. A pipelined caller
runs the same path in two halves on two threads: ``extract(msg)`` (decode, features) for the
next frame while ``track(extracted, camera)`` handles the current one. What the callers
keep is theirs alone: the node publishes, counts, warns (throttled) and measures latency; the
replay deserialises bag records, writes the output bag and keeps the summary.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from lightglue_ros.camera import CameraModel
from lightglue_ros.errors import InvalidImageError
from lightglue_ros.pipeline import FrameOutcome, FramePipeline, Skip
from lightglue_ros.ros.images import DEFAULT_MAX_IMAGE_PIXELS, array_to_image_msg, message_to_array
from lightglue_ros.ros.messages import (DEFAULT_FEATURES_LAYOUT, FrameOutputs, frame_outputs,
                                        stamp_to_ns)
from lightglue_ros.tracks import DEFAULT_FEATURES_INLIERS_ONLY, PublishedTracks
from lightglue_ros.viz import draw_tracks

if TYPE_CHECKING:
    from lightglue_ros.tracker import ExtractedFrame, FrameResult

__all__ = ['MessagePipeline', 'FrameMessages', 'ExtractedMessage']


@dataclass(frozen=True)
class ExtractedMessage:
    """An image message after the first stage (``MessagePipeline.extract``): decoded, its
    features extracted (``extracted``, or the Skip of a failed extraction); ``skip`` is set
    instead when it did not decode."""

    header: Header
    stamp_ns: int
    image: np.ndarray | None
    extracted: ExtractedFrame | Skip | None = None
    skip: Skip | None = None


@dataclass(frozen=True)
class FrameMessages:
    """What one image message became: output messages or a skip, never both.

    ``image`` is the decoded (H, W[, 3]) uint8/uint16 array (None when decoding failed);
    ``result`` and ``outputs`` are set exactly when ``skip`` is None.
    """

    header: Header  # the input image's header: every output carries its stamp and frame_id
    stamp_ns: int
    image: np.ndarray | None
    result: FrameResult | None
    outputs: FrameOutputs | None
    skip: Skip | None
    reset: int = 0  # frames back in time after which the tracker restarted at this frame

    def debug_image(self) -> Image:
        """The debug picture (matches over the image, ``viz.draw_tracks``) as an rgb8 Image
        with the input's header; drawn on each call, so only when someone wants it."""
        if self.image is None or self.result is None:
            raise ValueError(f'a skipped frame has no debug image ({self.skip})')
        return array_to_image_msg(draw_tracks(self.image, self.result), header=self.header)


class MessagePipeline:
    """The ``FramePipeline`` between image messages and output messages.

    pipeline: the tracker and its per-frame rules (fallback camera, stamps going back).
    odom_frame_id, features_layout, features_inliers_only: as the node's parameters of those
        names; the ~/features ids (``tracks.PublishedTracks``) are this stream's own.
    max_image_pixels: larger images are skipped before decoding (None: no limit).
    on_decoder_warning: receives libjpeg/libpng warnings about compressed images that still
        decoded (default: ``images``' logger at debug level).
    The attributes may be changed between frames (the node's run-time parameters).
    """

    def __init__(self, pipeline: FramePipeline, *, odom_frame_id: str,
                 features_layout: str = DEFAULT_FEATURES_LAYOUT,
                 features_inliers_only: bool = DEFAULT_FEATURES_INLIERS_ONLY,
                 max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
                 on_decoder_warning: Callable[[str], None] | None = None) -> None:
        self.pipeline = pipeline
        self.odom_frame_id = odom_frame_id
        self.features_layout = features_layout
        self.tracks = PublishedTracks(inliers_only=features_inliers_only)
        self.max_image_pixels = max_image_pixels
        self.on_decoder_warning = on_decoder_warning

    def process(self, msg: Image | CompressedImage, camera: CameraModel | None
                ) -> FrameMessages:
        """Decode, track and convert one image message; ``camera``: the calibration known for
        it (None: the pipeline's fallback, else matches without a pose). Bad images and
        tracking failures come back as ``FrameMessages.skip``; building the messages raises
        (ValueError) only for a result they cannot hold."""
        decoded = self._decode(msg)
        if decoded.image is None:
            return self._messages(decoded, None)
        return self._messages(decoded, self.pipeline.process(decoded.image, decoded.stamp_ns,
                                                             camera))

    def extract(self, msg: Image | CompressedImage) -> ExtractedMessage:
        """The first stage of a pipelined frame: decode and extract (``FramePipeline.extract``;
        no tracking state is touched, so it may run while ``track`` handles the frame before).
        """
        decoded = self._decode(msg)
        if decoded.image is None:
            return decoded
        return replace(decoded, extracted=self.pipeline.extract(decoded.image))

    def track(self, frame: ExtractedMessage, camera: CameraModel | None) -> FrameMessages:
        """The second stage: track an extracted frame and convert it, as ``process`` does."""
        if frame.image is None or frame.extracted is None:
            return self._messages(frame, None)
        return self._messages(frame, self.pipeline.track(frame.extracted, frame.stamp_ns,
                                                         camera))

    def _decode(self, msg: Image | CompressedImage) -> ExtractedMessage:
        header = msg.header
        stamp_ns = stamp_to_ns(header.stamp)
        try:
            image = message_to_array(msg, max_pixels=self.max_image_pixels,
                                     on_warning=self.on_decoder_warning)
        except InvalidImageError as err:  # ImageTooLargeError included
            return ExtractedMessage(header, stamp_ns, None, None, Skip.of(err))
        return ExtractedMessage(header, stamp_ns, image)

    def _messages(self, frame: ExtractedMessage, outcome: FrameOutcome | None
                  ) -> FrameMessages:
        if outcome is None:  # not decoded
            return FrameMessages(frame.header, frame.stamp_ns, None, None, None, frame.skip)
        if outcome.result is None:
            return FrameMessages(frame.header, frame.stamp_ns, frame.image, None, None,
                                 outcome.skip, outcome.reset)
        outputs = frame_outputs(outcome.result, frame.header, odom_frame_id=self.odom_frame_id,
                                tracks=self.tracks, features_layout=self.features_layout)
        return FrameMessages(frame.header, frame.stamp_ns, frame.image, outcome.result,
                             outputs, None, outcome.reset)

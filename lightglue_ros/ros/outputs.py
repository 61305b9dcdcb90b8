"""Tracker results -> the node's output messages; the live node and the bag replay share it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import PointCloud, PointCloud2
from std_msgs.msg import Header

from lightglue_ros.geometry import RelativePose
from lightglue_ros.ros.messages import (DEFAULT_FEATURES_LAYOUT, make_matches_cloud, make_odometry,
                                        make_pose_with_covariance, make_vins_features,
                                        ns_to_stamp)
from lightglue_ros.tracker import FrameResult, KeyframeEvent

# Output topics (relative to the node's private namespace) and their message types.
OUTPUT_TOPICS: dict[str, str] = {
    'matches': 'sensor_msgs/msg/PointCloud2',
    'features': 'sensor_msgs/msg/PointCloud',
    'relative_pose': 'geometry_msgs/msg/PoseWithCovarianceStamped',
    'odometry': 'nav_msgs/msg/Odometry',
    'keyframe': 'diagnostic_msgs/msg/DiagnosticArray',
}
UNKNOWN_VARIANCE = 1e6  # variance (m^2 or rad^2) of a quantity the estimate does not observe


@dataclass(frozen=True)
class FrameOutputs:
    """The messages one frame produces; None where that output has nothing to say."""

    matches: PointCloud2
    features: PointCloud | None  # needs calibration (normalised coordinates)
    relative_pose: PoseWithCovarianceStamped | None  # needs a successful pose
    odometry: Odometry | None  # needs a successful pose
    keyframes: tuple[DiagnosticArray, ...]

    def items(self) -> list[tuple[str, Any]]:
        """(topic, message) pairs in publishing order, skipping absent outputs."""
        pairs: list[tuple[str, Any]] = [('matches', self.matches)]
        pairs += [(name, msg) for name, msg in (('features', self.features),
                                                 ('relative_pose', self.relative_pose),
                                                 ('odometry', self.odometry)) if msg is not None]
        pairs += [('keyframe', msg) for msg in self.keyframes]
        return pairs


def pose_covariance(pose: RelativePose | None) -> np.ndarray | None:
    """6x6 covariance (x, y, z, roll, pitch, yaw) of the relative pose, or None (unknown).

    A first-order model of the estimate's quality: the rotation's standard deviation is the
    inlier threshold's angle (``pose.threshold_rad``) averaged over the inliers
    (/ sqrt(inliers)); the unit translation direction is that angle divided by the median
    parallax (a small baseline makes the direction uncertain). Without parallax the translation
    is unobserved (UNKNOWN_VARIANCE).
    """
    if pose is None or not pose.success or pose.num_inliers == 0:
        return None
    sigma_rot = pose.threshold_rad / np.sqrt(pose.num_inliers)
    if pose.rotation_only or not np.isfinite(pose.median_parallax_deg):
        var_trans = UNKNOWN_VARIANCE
    else:
        parallax = max(np.deg2rad(pose.median_parallax_deg), 1e-3)
        var_trans = float(min((sigma_rot / parallax) ** 2, UNKNOWN_VARIANCE))
    return np.diag([var_trans] * 3 + [sigma_rot ** 2] * 3)


def keyframe_message(event: KeyframeEvent, frame_id: str) -> DiagnosticArray:
    """A keyframe change as a stamped key-value message (stamp = the new keyframe's stamp)."""
    status = DiagnosticStatus(
        level=DiagnosticStatus.OK, name='lightglue_ros/keyframe', hardware_id=frame_id,
        message=f'keyframe {event.previous_index} -> {event.frame_index}: {event.reason}')
    status.values = [KeyValue(key=k, value=str(v)) for k, v in (
        ('frame_index', event.frame_index), ('previous_index', event.previous_index),
        ('reason', event.reason), ('detail', event.detail),
        ('inherited_tracks', event.inherited_tracks), ('stamp_ns', event.stamp_ns))]
    return DiagnosticArray(header=Header(stamp=ns_to_stamp(event.stamp_ns), frame_id=frame_id),
                           status=[status])


def frame_outputs(result: FrameResult, header: Header, *, odom_frame_id: str,
                  features_layout: str = DEFAULT_FEATURES_LAYOUT) -> FrameOutputs:
    """All output messages of one frame; ``header`` is the input image's header.
    ``features_layout``: the channels of ``features`` (messages.VINS_LAYOUTS)."""
    matches = make_matches_cloud(
        header, u_cur=result.points[:, 0], v_cur=result.points[:, 1],
        u_kf=result.kf_points[:, 0], v_kf=result.kf_points[:, 1], score=result.scores,
        track_id=result.track_ids, kf_index=result.keyframe_index,
        inlier=result.inliers.astype(np.uint8))
    features = None
    if np.isfinite(result.points_norm).all():
        features = make_vins_features(
            header, track_id=result.track_ids, x_norm=result.points_norm[:, 0],
            y_norm=result.points_norm[:, 1], u=result.points[:, 0], v=result.points[:, 1],
            velocity_x=result.velocity_norm[:, 0], velocity_y=result.velocity_norm[:, 1],
            layout=features_layout)
    relative_pose = odometry = None
    covariance = pose_covariance(result.pose)
    if result.R_kf_cam is not None and result.t_kf_cam is not None:
        # The pose of the current camera in the keyframe camera's frame.
        relative_pose = make_pose_with_covariance(header, R=result.R_kf_cam, t=result.t_kf_cam,
                                                  covariance=covariance)
    if result.R_world_cam is not None and result.t_world_cam is not None:
        odom_header = Header(stamp=header.stamp, frame_id=odom_frame_id)
        odometry = make_odometry(odom_header, header.frame_id, R=result.R_world_cam,
                                 t=result.t_world_cam,
                                 covariance=covariance if relative_pose is not None else None)
    keyframes = tuple(keyframe_message(e, header.frame_id) for e in result.keyframe_events)
    return FrameOutputs(matches, features, relative_pose, odometry, keyframes)

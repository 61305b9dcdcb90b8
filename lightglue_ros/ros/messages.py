"""The node's output messages: one frame's ``FrameResult`` -> its messages (``frame_outputs``,
shared by the live node and the bag replay), then the builders (and readers) they are made of:
matches cloud, VINS features, pose, odometry, keyframe and diagnostics, and stamp conversions.
"""
from __future__ import annotations

import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point32, Pose, PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import ChannelFloat32, PointCloud, PointCloud2, PointField
from std_msgs.msg import Header

from lightglue_ros.defaults import DEFAULT_FEATURES_LAYOUT, FEATURES_LAYOUTS
from lightglue_ros.geometry import rotation_to_quaternion

if TYPE_CHECKING:  # the tracker (and torch) load with the models, not with the messages
    from lightglue_ros.geometry import RelativePose
    from lightglue_ros.tracker import FrameResult, KeyframeEvent
    from lightglue_ros.tracks import PublishedTracks

# Output topics (relative to the node's private namespace) and their message types, in
# publishing order.
OUTPUT_TYPES: dict[str, type] = {
    'matches': PointCloud2,
    'features': PointCloud,
    'relative_pose': PoseWithCovarianceStamped,
    'odometry': Odometry,
    'keyframe': DiagnosticArray,
}


def message_type_name(kind: type) -> str:
    """The ROS type name of a message class, as a bag records it: 'sensor_msgs/msg/Image'."""
    return f'{kind.__module__.split(".")[0]}/msg/{kind.__name__}'


# The same as type names (the replay's output bag).
OUTPUT_TOPICS: dict[str, str] = {name: message_type_name(kind)
                                 for name, kind in OUTPUT_TYPES.items()}

# Channel layouts of ~/features, read by index by the two estimators (docs/node.md cites the
# code). VINS-Mono (vins_estimator/src/estimator_node.cpp, process()): channels[0] = id
# (feature_id * NUM_OF_CAM + camera_id), [1] u, [2] v, [3] velocity_x, [4] velocity_y; the
# names are those of its feature_tracker_node.cpp. VINS-Fusion (vins_estimator/src/
# rosNodeTest.cpp, feature_callback()): [0] feature_id, [1] camera_id, [2] u, [3] v,
# [4] velocity_x, [5] velocity_y and, because it then has more than 5 channels, [6..8] a
# ground-truth point (gx, gy, gz) it keeps for debugging only (pts_gt): written as zeros.
VINS_MONO_CHANNELS: tuple[str, ...] = (
    'id_of_point', 'u_of_point', 'v_of_point', 'velocity_x', 'velocity_y')
VINS_FUSION_CHANNELS: tuple[str, ...] = (
    'feature_id', 'camera_id', 'u_of_point', 'v_of_point', 'velocity_x', 'velocity_y',
    'gt_x', 'gt_y', 'gt_z')
VINS_LAYOUTS: dict[str, tuple[str, ...]] = dict(zip(
    FEATURES_LAYOUTS, (VINS_MONO_CHANNELS, VINS_FUSION_CHANNELS), strict=True))
VINS_CHANNELS = VINS_LAYOUTS[DEFAULT_FEATURES_LAYOUT]

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
                  tracks: PublishedTracks,
                  features_layout: str = DEFAULT_FEATURES_LAYOUT) -> FrameOutputs:
    """All output messages of one frame; ``header`` is the input image's header.

    ``tracks``: the stream's published feature ids (one instance per stream, fed every result
    in order); it picks the observations of ``features`` and their ids, and the matches
    cloud's ``track_id`` is the same id (UNMATCHED for matches that ``features`` leaves out).
    ``features_layout``: the channels of ``features`` (messages.VINS_LAYOUTS).
    """
    features = None
    if np.isfinite(result.points_norm).all():
        published = tracks.publish(result)
        rows = published.rows
        features = make_vins_features(
            header, track_id=published.ids, x_norm=result.points_norm[rows, 0],
            y_norm=result.points_norm[rows, 1], u=result.points[rows, 0],
            v=result.points[rows, 1], velocity_x=published.velocity[:, 0],
            velocity_y=published.velocity[:, 1], layout=features_layout)
        match_ids = published.match_ids
    else:
        match_ids = tracks.unpublished(result)
    matches = make_matches_cloud(
        header, u_cur=result.points[:, 0], v_cur=result.points[:, 1],
        u_kf=result.kf_points[:, 0], v_kf=result.kf_points[:, 1], score=result.scores,
        track_id=match_ids, kf_index=result.keyframe_index,
        inlier=result.inliers.astype(np.uint8))
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


# ------------------------------------------------------------------------------------------------
# The builders and readers of single messages.
# ------------------------------------------------------------------------------------------------

# Layout of the matches cloud: field -> dtype; offsets follow in this order, padded to 32 bytes.
MATCH_FIELDS: tuple[tuple[str, str], ...] = (
    ('u', '<f4'),         # current image, pixels
    ('v', '<f4'),
    ('kf_u', '<f4'),      # matched keypoint in the keyframe, pixels
    ('kf_v', '<f4'),
    ('score', '<f4'),     # match confidence
    ('track_id', '<i4'),
    ('kf_index', '<i4'),  # which keyframe the match is against
    ('inlier', 'u1'),     # 1 if geometric verification kept it
)
_MATCH_DTYPE = np.dtype({
    'names': [name for name, _ in MATCH_FIELDS],
    'formats': [fmt for _, fmt in MATCH_FIELDS],
    'offsets': [0, 4, 8, 12, 16, 20, 24, 28],
    # Padded to a multiple of 4 so that every point starts aligned for readers that cast.
    'itemsize': 32,
})

_POINTFIELD_TYPES: dict[int, str] = {
    PointField.INT8: 'i1', PointField.UINT8: 'u1',
    PointField.INT16: 'i2', PointField.UINT16: 'u2',
    PointField.INT32: 'i4', PointField.UINT32: 'u4',
    PointField.FLOAT32: 'f4', PointField.FLOAT64: 'f8',
}
_NUMPY_TO_POINTFIELD: dict[str, int] = {v: k for k, v in _POINTFIELD_TYPES.items()}


def _column(name: str, values: object, dtype: str, n: int | None) -> np.ndarray:
    column = np.asarray(values)
    if column.ndim != 1:
        raise ValueError(f'{name} must be one-dimensional, got shape {column.shape}')
    if n is not None and column.shape[0] != n:
        raise ValueError(f'{name} has {column.shape[0]} entries, expected {n}')
    if np.dtype(dtype).kind == 'i' and column.size:
        if column.dtype.kind not in 'iub':
            raise ValueError(f'{name} must be integer, got dtype {column.dtype}')
        info = np.iinfo(dtype)
        if column.min() < info.min or column.max() > info.max:
            raise ValueError(f'{name} does not fit {np.dtype(dtype)}')
    return column


def make_matches_cloud(header: Header, *, u_cur: np.ndarray, v_cur: np.ndarray,
                       u_kf: np.ndarray, v_kf: np.ndarray, score: np.ndarray,
                       track_id: np.ndarray, kf_index: np.ndarray | int,
                       inlier: np.ndarray) -> PointCloud2:
    """Pack N matches into an unordered (height 1, width N) little-endian PointCloud2.

    Fields (see MATCH_FIELDS): u, v, kf_u, kf_v, score (float32), track_id, kf_index (int32),
    inlier (uint8 0/1). `kf_index` may be a single int for all matches. is_dense is True
    unless a float field holds NaN/inf. Raises ValueError for mismatched lengths or ints
    that do not fit int32.
    """
    u = _column('u_cur', u_cur, '<f4', None)
    n = u.shape[0]
    if np.ndim(kf_index) == 0:
        kf_index = np.full(n, int(kf_index), dtype=np.int64)
    columns = {
        'u': u,
        'v': _column('v_cur', v_cur, '<f4', n),
        'kf_u': _column('u_kf', u_kf, '<f4', n),
        'kf_v': _column('v_kf', v_kf, '<f4', n),
        'score': _column('score', score, '<f4', n),
        'track_id': _column('track_id', track_id, '<i4', n),
        'kf_index': _column('kf_index', kf_index, '<i4', n),
        'inlier': _column('inlier', inlier, 'u1', n) != 0,
    }
    points = np.zeros(n, dtype=_MATCH_DTYPE)
    for name, column in columns.items():
        points[name] = column
    msg = PointCloud2()
    msg.header = copy_header(header)
    msg.height, msg.width = 1, n
    msg.fields = [
        PointField(name=name, offset=_MATCH_DTYPE.fields[name][1],
                   datatype=_NUMPY_TO_POINTFIELD[np.dtype(fmt).str[1:]], count=1)
        for name, fmt in MATCH_FIELDS]
    msg.is_bigendian = False
    msg.point_step = _MATCH_DTYPE.itemsize
    msg.row_step = _MATCH_DTYPE.itemsize * n
    msg.is_dense = bool(all(np.all(np.isfinite(points[name]))
                            for name in ('u', 'v', 'kf_u', 'kf_v', 'score')))
    msg.data = points.tobytes()
    return msg


def read_matches_cloud(msg: PointCloud2) -> dict[str, np.ndarray]:
    """Read every field of a PointCloud2 into {name: array of shape (height * width,)}.

    Works for any cloud with the standard PointField types (not only make_matches_cloud's
    layout); honours point_step, row_step padding and is_bigendian. A field with count > 1
    becomes shape (N, count). Arrays are native-endian copies. Raises ValueError for a
    malformed cloud.
    """
    endian = '>' if msg.is_bigendian else '<'
    names, formats, offsets = [], [], []
    for field in msg.fields:
        if field.datatype not in _POINTFIELD_TYPES:
            raise ValueError(f'field {field.name!r} has unknown datatype {field.datatype}')
        base = np.dtype(endian + _POINTFIELD_TYPES[field.datatype])
        count = max(int(field.count), 1)
        if field.offset + base.itemsize * count > msg.point_step:
            raise ValueError(f'field {field.name!r} does not fit point_step {msg.point_step}')
        names.append(field.name)
        formats.append(base if count == 1 else (base, (count,)))
        offsets.append(int(field.offset))
    height, width = int(msg.height), int(msg.width)
    if height * width == 0:
        return {name: np.zeros((0,) + np.dtype(fmt).shape, np.dtype(fmt).base.newbyteorder('='))
                for name, fmt in zip(names, formats)}
    row_bytes = width * int(msg.point_step)
    if msg.row_step < row_bytes:
        raise ValueError(f'row_step {msg.row_step} < width * point_step = {row_bytes}')
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    if buffer.size < msg.row_step * height:
        raise ValueError(f'truncated cloud: {buffer.size} bytes, expected '
                         f'{msg.row_step * height}')
    rows = buffer[:msg.row_step * height].reshape(height, msg.row_step)[:, :row_bytes]
    dtype = np.dtype({'names': names, 'formats': formats, 'offsets': offsets,
                      'itemsize': int(msg.point_step)})
    points = np.ascontiguousarray(rows).view(dtype).reshape(-1)
    return {name: points[name].astype(points[name].dtype.base.newbyteorder('='))
            for name in names}


# Float32 represents every integer below 2**24 exactly; larger ids would silently merge.
_VINS_MAX_ID = 1 << 24


def make_vins_features(header: Header, *, track_id: np.ndarray, x_norm: np.ndarray,
                       y_norm: np.ndarray, u: np.ndarray, v: np.ndarray,
                       velocity_x: np.ndarray, velocity_y: np.ndarray,
                       layout: str = DEFAULT_FEATURES_LAYOUT, camera_id: int = 0) -> PointCloud:
    """Build the sensor_msgs/PointCloud of external features that VINS reads.

    points[i] = (x_norm, y_norm, 1): undistorted normalised coordinates. Channels in the order
    of ``VINS_LAYOUTS[layout]``: 'vins_mono' (5 channels, what VINS-Mono's feature_tracker
    publishes): id, u and v (pixels), velocity_x and velocity_y (normalised coordinates per
    second); VINS-Mono decodes id as feature_id * NUM_OF_CAM + camera_id, so pass such ids
    for a multi-camera setup. 'vins_fusion' (9 channels): id, camera_id, u, v, velocity_x,
    velocity_y, then three zeros for the ground-truth point VINS-Fusion reads whenever there
    are more than 5 channels. Ids are taken modulo 2**24 to stay exact in float32; VINS only
    associates ids within its sliding window, where a wrap cannot collide.
    Raises ValueError for mismatched lengths, negative ids or an unknown layout.
    """
    if layout not in VINS_LAYOUTS:
        raise ValueError(f'unknown features layout {layout!r}; one of: '
                         f'{", ".join(VINS_LAYOUTS)}')
    ids = _column('track_id', track_id, '<i8', None)
    n = ids.shape[0]
    if n and ids.min() < 0:
        raise ValueError('track_id must be non-negative')
    x = _column('x_norm', x_norm, '<f4', n).astype(np.float64)
    y = _column('y_norm', y_norm, '<f4', n).astype(np.float64)
    ids = ids % _VINS_MAX_ID
    pixels_and_velocity = [
        _column('u', u, '<f4', n),
        _column('v', v, '<f4', n),
        _column('velocity_x', velocity_x, '<f4', n),
        _column('velocity_y', velocity_y, '<f4', n),
    ]
    if layout == 'vins_mono':
        values = [ids, *pixels_and_velocity]
    else:
        zeros = np.zeros(n, np.float32)
        values = [ids, np.full(n, camera_id, np.float32), *pixels_and_velocity,
                  zeros, zeros, zeros]
    msg = PointCloud()
    msg.header = copy_header(header)
    msg.points = [Point32(x=px, y=py, z=1.0) for px, py in zip(x.tolist(), y.tolist())]
    channels = []
    for name, column in zip(VINS_LAYOUTS[layout], values):
        # array('f') built from raw float32 bytes avoids a Python float per value.
        channels.append(ChannelFloat32(
            name=name, values=array.array('f', column.astype(np.float32).tobytes())))
    msg.channels = channels
    return msg


def copy_header(header: Header | None) -> Header:
    """A copy of ``header`` (an empty one for None).

    A copy, so that messages built from one header never alias each other's stamp.
    """
    if header is None:
        return Header()
    return Header(stamp=Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec),
                  frame_id=header.frame_id)


def _covariance_6x6(covariance: np.ndarray | None) -> np.ndarray:
    # ROS has no 'unknown' flag for a pose covariance; by the convention that sensor_msgs/Imu
    # documents (and REP-145 follows) covariance[0] = -1 marks it unknown, the rest stays 0.
    if covariance is None:
        flat = np.zeros(36)
        flat[0] = -1.0
        return flat
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.shape != (6, 6):
        raise ValueError(f'covariance must be 6x6, got shape {cov.shape}')
    if not np.all(np.isfinite(cov)):
        raise ValueError('covariance holds NaN or inf')
    return cov.reshape(36).copy()


def _set_pose(pose: Pose, R: np.ndarray, t: np.ndarray) -> None:
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    if t.shape != (3,) or not np.all(np.isfinite(t)):
        raise ValueError(f't must be a finite 3-vector, got {t.tolist()}')
    qx, qy, qz, qw = rotation_to_quaternion(R).tolist()
    pose.position.x, pose.position.y, pose.position.z = t.tolist()
    pose.orientation.x, pose.orientation.y = qx, qy
    pose.orientation.z, pose.orientation.w = qz, qw


def make_pose_with_covariance(header: Header, *, R: np.ndarray, t: np.ndarray,
                              covariance: np.ndarray | None) -> PoseWithCovarianceStamped:
    """Pose (R, t) expressed in header.frame_id, with a 6x6 covariance.

    The covariance is in ROS order (x, y, z, rotation about x, y, z), row-major. None marks
    it unknown: covariance[0] = -1 and all else 0 (the sensor_msgs/Imu convention).
    """
    msg = PoseWithCovarianceStamped()
    msg.header = copy_header(header)
    _set_pose(msg.pose.pose, R, t)
    msg.pose.covariance = _covariance_6x6(covariance)
    return msg


def make_odometry(header: Header, child_frame_id: str, *, R: np.ndarray, t: np.ndarray,
                  covariance: np.ndarray | None) -> Odometry:
    """Odometry: the pose of child_frame_id in header.frame_id, covariance as in
    make_pose_with_covariance. The twist is not estimated: zero, with covariance unknown."""
    msg = Odometry()
    msg.header = copy_header(header)
    msg.child_frame_id = child_frame_id
    _set_pose(msg.pose.pose, R, t)
    msg.pose.covariance = _covariance_6x6(covariance)
    msg.twist.covariance = _covariance_6x6(None)
    return msg


def _format_value(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return f'{float(value):.6g}'
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def make_diagnostic_array(stamp: Time | int, *, name: str, hardware_id: str, level: int | bytes,
                          message: str, values: Mapping[str, object]) -> DiagnosticArray:
    """A DiagnosticArray with one status. `level` is 0 OK, 1 WARN, 2 ERROR, 3 STALE (an int or
    DiagnosticStatus' byte constants); `stamp` a builtin_interfaces/Time or nanoseconds.
    Values are stringified, floats with 6 significant digits."""
    level_int = level[0] if isinstance(level, (bytes, bytearray)) and len(level) == 1 \
        else int(level)
    if level_int not in (0, 1, 2, 3):
        raise ValueError(f'diagnostic level must be 0..3, got {level!r}')
    msg = DiagnosticArray()
    msg.header.stamp = ns_to_stamp(stamp) if isinstance(stamp, int) else \
        Time(sec=stamp.sec, nanosec=stamp.nanosec)
    msg.status = [DiagnosticStatus(
        level=bytes([level_int]), name=name, message=message, hardware_id=hardware_id,
        values=[KeyValue(key=str(key), value=_format_value(value))
                for key, value in values.items()])]
    return msg


def stamp_to_ns(stamp: Time) -> int:
    """Nanoseconds of a builtin_interfaces/Time (or anything with .nanoseconds, e.g. an
    rclpy Time)."""
    if hasattr(stamp, 'sec') and hasattr(stamp, 'nanosec'):
        return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    return int(stamp.nanoseconds)


def ns_to_stamp(ns: int) -> Time:
    """builtin_interfaces/Time of a nanosecond count; nanosec is always in [0, 1e9), so a
    negative time has a negative sec (the ROS convention). Raises ValueError outside int32
    seconds."""
    sec, nanosec = divmod(int(ns), 1_000_000_000)
    if not -(1 << 31) <= sec < (1 << 31):
        raise ValueError(f'{ns} ns does not fit builtin_interfaces/Time')
    return Time(sec=sec, nanosec=nanosec)

"""A built-in example sequence, generated at run time: a textured box room seen by a moving camera.

Nothing is shipped: every texture is drawn from a seeded random generator (multi-scale noise,
blobs, checker patches and text-like strings), and every frame is ray cast through the room's
planes (each plane is a homography of its texture; a depth buffer resolves occlusions), rendered
at twice the resolution and averaged down so that fine texture does not alias.

Conventions. World frame: x right, y down, z forward (the camera at rest looks along +z);
camera frame: the optical frame (x right, y down, z forward). A pose (R_world_cam, t_world_cam)
maps camera coordinates to world coordinates, x_world = R_world_cam @ x_cam + t_world_cam, so
t_world_cam is the camera centre. ``SyntheticSequence.relative_pose(i, j)`` is the tracker's
convention: x_j = R @ x_i + t.
"""
from __future__ import annotations

import math
import string
from dataclasses import dataclass

import cv2
import numpy as np

from lightglue_ros.camera import CameraModel
from lightglue_ros.errors import ConfigError

DEFAULT_NUM_FRAMES = 20  # make_sequence's; the demo asks for its own number
DEFAULT_FPS = 5.0
DEFAULT_STAMP0_NS = 1_700_000_000_000_000_000  # the first frame's stamp (an arbitrary epoch)
TEXELS_PER_METRE = 220.0  # texture resolution on every plane
SUPERSAMPLING = 2  # frames are ray cast at this multiple of the output size, then averaged
NOISE_SIGMA = 1.5  # per-frame sensor noise (grey levels, uint8 scale)

# The room (metres, world frame): the camera starts near the middle of the front half.
ROOM_MIN = np.array([-3.0, -1.4, -2.0])  # x left wall, y ceiling, z front wall
ROOM_MAX = np.array([3.0, 1.5, 6.0])  # x right wall, y floor, z back wall
# Boxes standing on the floor (min corner, max corner): near structure for parallax.
BOXES = (
    (np.array([-1.5, 0.6, 1.8]), np.array([-0.7, 1.5, 2.6])),
    (np.array([0.5, 0.2, 2.8]), np.array([1.6, 1.5, 3.6])),
    (np.array([-0.6, 0.9, 4.2]), np.array([0.3, 1.5, 4.9])),
)


@dataclass(frozen=True)
class Plane:
    """A textured rectangle: X = origin + u * axis_u + v * axis_v for (u, v) in [0, 1]^2.

    texture: (H, W, 3) uint8 RGB; texture pixel (x, y) = (u * (W - 1), v * (H - 1)).
    """

    origin: np.ndarray
    axis_u: np.ndarray
    axis_v: np.ndarray
    normal: np.ndarray  # unit normal on the side the plane is seen from
    texture: np.ndarray


def _look_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R_world_cam for a camera turned by yaw (about world y), then pitch (x), then roll (z)."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    Ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    Rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    Rz = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return Ry @ Rx @ Rz


def camera_path(time_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(R_world_cam, t_world_cam) of the camera at ``time_s`` seconds on the built-in path.

    A smooth, bounded walk through the room: the camera moves sideways (0.9 m/s at the start)
    and forward (0.7 m/s), bobs, tilts and rolls a little, and pans to the left (24 deg/s at
    the start, up to 76 deg), so consecutive frames have both rotation and parallax and, after
    about 3 s, little overlap with the first frame (the default 20 frames at 5 fps end with a
    keyframe switch in the tracker).
    """
    w = 0.55  # rad/s
    s = time_s
    centre = np.array([1.6 * math.sin(w * s) - 0.4,
                       0.12 * math.sin(2.1 * w * s),
                       1.5 * math.sin(0.8 * w * s)])
    yaw = math.radians(-80.0 * math.sin(0.3 * s) + 4.0)
    pitch = math.radians(4.0 * math.sin(1.3 * w * s) - 6.0)
    roll = math.radians(3.0 * math.sin(0.9 * w * s))
    return _look_rotation(yaw, pitch, roll), centre


def default_camera(width: int = 640, height: int = 480) -> CameraModel:
    """The built-in pinhole camera (no distortion), about 62 x 49 deg at 640 x 480."""
    f = 525.0 * width / 640.0
    return CameraModel.from_intrinsics(f, f, (width - 1) / 2.0, (height - 1) / 2.0, width, height)


# ------------------------------------------------------------------------------ textures
def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise normalised to zero mean and unit std (float32)."""
    field = rng.standard_normal(shape).astype(np.float32)
    field = cv2.GaussianBlur(field, (0, 0), sigma)
    return (field - field.mean()) / (field.std() + 1e-6)


def _random_text(rng: np.random.Generator) -> str:
    alphabet = string.ascii_uppercase + string.digits + '#%&@+-=/'
    return ''.join(rng.choice(list(alphabet), size=int(rng.integers(3, 10))))


def make_texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A colourful high-frequency texture: noise at three scales, blobs, checkers and text.

    Returns (height, width, 3) uint8 RGB.
    """
    shape = (height, width)
    base = rng.uniform(60, 200, size=3).astype(np.float32)
    tint = rng.uniform(-1.0, 1.0, size=(3, 3)).astype(np.float32)
    noise = np.stack([_smooth_noise(rng, shape, s) for s in (1.2, 4.0, 14.0)], -1)
    weights = np.array([18.0, 22.0, 30.0], np.float32)
    image = base + (noise * weights) @ tint.T
    canvas = np.clip(image, 0, 255).astype(np.uint8)
    area_m2 = width * height / TEXELS_PER_METRE ** 2

    def colour() -> tuple[int, int, int]:
        return tuple(int(c) for c in rng.integers(0, 256, size=3))

    for _ in range(int(18 * area_m2)):  # blobs: ellipses, rectangles, polygons
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        size = float(rng.uniform(4, 40))
        kind = rng.integers(0, 3)
        if kind == 0:
            axes = (int(size), int(size * rng.uniform(0.3, 1.0)))
            cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour(), -1,
                        cv2.LINE_AA)
        elif kind == 1:
            corner = (centre[0] + int(size * rng.uniform(0.5, 2)),
                      centre[1] + int(size * rng.uniform(0.5, 2)))
            cv2.rectangle(canvas, centre, corner, colour(), -1)
        else:
            points = np.array(centre) + rng.uniform(-size, size, size=(int(rng.integers(3, 7)), 2))
            cv2.fillPoly(canvas, [points.astype(np.int32)], colour(), cv2.LINE_AA)
    for _ in range(max(1, int(1.5 * area_m2))):  # checker patches
        cell = int(rng.integers(5, 16))
        nx, ny = int(rng.integers(3, 9)), int(rng.integers(3, 9))
        x0 = int(rng.integers(0, max(1, width - cell)))
        y0 = int(rng.integers(0, max(1, height - cell)))
        dark, light = colour(), colour()
        for j in range(ny):
            for i in range(nx):
                tl = (x0 + i * cell, y0 + j * cell)
                cv2.rectangle(canvas, tl, (tl[0] + cell - 1, tl[1] + cell - 1),
                              dark if (i + j) % 2 else light, -1)
    fonts = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
             cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_PLAIN)
    for _ in range(int(10 * area_m2)):  # text-like strings
        origin = (int(rng.integers(-20, width)), int(rng.integers(10, height + 20)))
        cv2.putText(canvas, _random_text(rng), origin, fonts[int(rng.integers(0, len(fonts)))],
                    float(rng.uniform(0.5, 1.8)), colour(), int(rng.integers(1, 4)), cv2.LINE_AA)
    return canvas


# ------------------------------------------------------------------------------ scene
def _box_planes(lo: np.ndarray, hi: np.ndarray, *, inside: bool
                ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The six faces of an axis-aligned box as (origin, axis_u, axis_v, visible normal).

    The visible normal points to the side the face is seen from: into the box for a room
    (inside=True), out of it for a solid box.
    """
    dx, dy, dz = np.diag(hi - lo)
    faces = []
    for axis, (a, b) in enumerate(((dy, dz), (dx, dz), (dx, dy))):
        for sign, side in ((-1.0, lo), (1.0, hi)):
            origin = lo.copy()
            origin[axis] = side[axis]
            normal = np.zeros(3)
            normal[axis] = -sign if inside else sign
            faces.append((origin, a, b, normal))
    return faces


def _clip_near(points: np.ndarray, near: float) -> np.ndarray:
    """Clip a convex polygon [N x 3] (camera frame) to z >= near (Sutherland-Hodgman)."""
    out = []
    for k in range(len(points)):
        a, b = points[k], points[(k + 1) % len(points)]
        a_in, b_in = a[2] >= near, b[2] >= near
        if a_in:
            out.append(a)
        if a_in != b_in:
            s = (near - a[2]) / (b[2] - a[2])
            out.append(a + s * (b - a))
    return np.array(out).reshape(-1, 3)


class SyntheticScene:
    """A box room with boxes on the floor, every plane with its own seeded random texture."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        geometry = _box_planes(ROOM_MIN, ROOM_MAX, inside=True)
        for lo, hi in BOXES:
            geometry += _box_planes(lo, hi, inside=False)
        self.planes: list[Plane] = []
        for origin, axis_u, axis_v, normal in geometry:
            w = max(16, round(np.linalg.norm(axis_u) * TEXELS_PER_METRE))
            h = max(16, round(np.linalg.norm(axis_v) * TEXELS_PER_METRE))
            texture = make_texture(rng, w, h)
            self.planes.append(Plane(origin.astype(np.float64), axis_u.astype(np.float64),
                                     axis_v.astype(np.float64), normal, texture))

    def render(self, R_world_cam: np.ndarray, t_world_cam: np.ndarray, camera: CameraModel,
               *, noise_seed: int | None = None) -> np.ndarray:
        """The view of a pinhole ``camera`` at the given pose: (H, W, 3) uint8 RGB.

        noise_seed: adds Gaussian sensor noise (NOISE_SIGMA) drawn from this seed; None = none.
        """
        big = self._supersampled(camera)
        depth, owner, coords = self._raycast(R_world_cam, t_world_cam, big)
        out = np.zeros((big.height, big.width, 3), np.uint8)
        for index, ((x0, y0, x1, y1), u, v) in coords.items():
            mask = owner[y0:y1, x0:x1] == index
            if not mask.any():
                continue
            texture = self.planes[index].texture
            th, tw = texture.shape[:2]
            map_x = np.where(mask, u * (tw - 1), -1.0).astype(np.float32)
            map_y = np.where(mask, v * (th - 1), -1.0).astype(np.float32)
            sampled = cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
            out[y0:y1, x0:x1][mask] = sampled[mask]
        image = cv2.resize(out.astype(np.float32), (camera.width, camera.height),
                           interpolation=cv2.INTER_AREA)
        if noise_seed is not None:
            noise_rng = np.random.default_rng([self.seed, int(noise_seed)])
            image += noise_rng.normal(0.0, NOISE_SIGMA, size=image.shape).astype(np.float32)
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)

    def depth_map(self, R_world_cam: np.ndarray, t_world_cam: np.ndarray,
                  camera: CameraModel) -> np.ndarray:
        """(H, W) float32 depth (z in the camera frame, metres) of each pixel of ``render``:
        the mean over the pixel's supersamples (mixed at occlusion edges)."""
        big = self._supersampled(camera)
        depth, _, _ = self._raycast(R_world_cam, t_world_cam, big)
        return cv2.resize(depth, (camera.width, camera.height), interpolation=cv2.INTER_AREA)

    @staticmethod
    def _supersampled(camera: CameraModel) -> CameraModel:
        if camera.is_distorted:
            raise ConfigError('the synthetic renderer supports undistorted cameras only')
        return camera.scaled(SUPERSAMPLING, SUPERSAMPLING)

    def _raycast(self, R_world_cam: np.ndarray, t_world_cam: np.ndarray, big: CameraModel
                 ) -> tuple[np.ndarray, np.ndarray,
                            dict[int, tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]]]:
        """Depth buffer, index of the visible plane per pixel (-1: none) and, per plane that
        was tested, its window (x0, y0, x1, y1) with the texture coordinates u, v there."""
        width, height = big.width, big.height
        R_cam_world = np.asarray(R_world_cam, np.float64).T
        centre = np.asarray(t_world_cam, np.float64).reshape(3)
        depth = np.full((height, width), np.inf, np.float32)
        owner = np.full((height, width), -1, np.int16)
        coords: dict[int, tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]] = {}
        for index, plane in enumerate(self.planes):
            if float(plane.normal @ (centre - plane.origin)) <= 1e-9:
                continue  # seen from behind or edge-on
            corners = plane.origin + np.array([[0, 0], [1, 0], [1, 1], [0, 1]]) @ np.stack(
                [plane.axis_u, plane.axis_v])
            polygon = _clip_near((corners - centre) @ R_cam_world.T, 1e-3)
            if len(polygon) < 3:
                continue  # behind the camera
            px = polygon[:, :2] / polygon[:, 2:] * [big.fx, big.fy] + [big.cx, big.cy]
            x0, y0 = np.maximum(np.floor(px.min(0)).astype(int) - 1, 0)
            x1 = min(int(np.ceil(px[:, 0].max())) + 2, width)
            y1 = min(int(np.ceil(px[:, 1].max())) + 2, height)
            if x0 >= x1 or y0 >= y1:
                continue  # outside the field of view
            # Texture (u, v, 1) -> pixel: H = K R_cw [axis_u, axis_v, origin - C]; its inverse
            # maps a pixel to (u, v, 1) / z, z the depth of the point along the optical axis.
            M = R_cam_world @ np.c_[plane.axis_u, plane.axis_v, plane.origin - centre]
            Hinv = np.linalg.inv(big.K @ M).astype(np.float32)
            xs = np.arange(x0, x1, dtype=np.float32)[None]
            ys = np.arange(y0, y1, dtype=np.float32)[:, None]
            q = [Hinv[r, 0] * xs + Hinv[r, 1] * ys + Hinv[r, 2] for r in range(3)]
            with np.errstate(divide='ignore', invalid='ignore'):
                z = 1.0 / q[2]
                u, v = q[0] * z, q[1] * z
            window = depth[y0:y1, x0:x1]
            hit = (z > 1e-3) & (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1) & (z < window)
            window[hit] = z[hit]
            owner[y0:y1, x0:x1][hit] = index
            coords[index] = ((int(x0), int(y0), x1, y1), u, v)
        return depth, owner, coords


@dataclass(frozen=True, eq=False)
class SyntheticSequence:
    """Frames of the synthetic room with their ground truth.

    images:       N x (height, width, 3) uint8 RGB.
    stamps_ns:    N capture times in nanoseconds, strictly increasing (1 / fps apart).
    camera:       the pinhole camera of every frame.
    R_world_cam:  [N x 3 x 3] float64, x_world = R_world_cam[i] @ x_cam + t_world_cam[i].
    t_world_cam:  [N x 3] float64 camera centres in metres.
    """

    images: list[np.ndarray]
    stamps_ns: list[int]
    camera: CameraModel
    R_world_cam: np.ndarray
    t_world_cam: np.ndarray
    seed: int

    def __len__(self) -> int:
        return len(self.images)

    def relative_pose(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Ground truth (R, t) with x_j = R @ x_i + t (camera i -> camera j; t in metres)."""
        R_i, C_i = self.R_world_cam[i], self.t_world_cam[i]
        R_j, C_j = self.R_world_cam[j], self.t_world_cam[j]
        return R_j.T @ R_i, R_j.T @ (C_i - C_j)


def make_sequence(num_frames: int = DEFAULT_NUM_FRAMES, *, seed: int = 0, width: int = 640,
                  height: int = 480, fps: float = DEFAULT_FPS,
                  stamp0_ns: int = DEFAULT_STAMP0_NS, noise: bool = True,
                  scene: SyntheticScene | None = None) -> SyntheticSequence:
    """Render ``num_frames`` frames of the built-in path (deterministic given ``seed``).

    Frame i is taken at i / fps seconds along ``camera_path``; a shorter sequence is the
    beginning of a longer one. ``scene`` reuses an already built scene (its seed wins).
    """
    if num_frames < 1:
        raise ConfigError(f'num_frames must be >= 1, got {num_frames}')
    if not fps > 0:
        raise ConfigError(f'fps must be > 0, got {fps}')
    scene = scene if scene is not None else SyntheticScene(seed)
    camera = default_camera(width, height)
    images, stamps, rotations, centres = [], [], [], []
    for i in range(num_frames):
        R, C = camera_path(i / fps)
        images.append(scene.render(R, C, camera, noise_seed=i if noise else None))
        stamps.append(int(stamp0_ns + round(i * 1e9 / fps)))
        rotations.append(R)
        centres.append(C)
    return SyntheticSequence(images, stamps, camera, np.array(rotations), np.array(centres),
                             scene.seed)

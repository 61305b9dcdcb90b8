"""Pictures of tracking results: keypoints and match lines drawn with OpenCV."""
from __future__ import annotations

import cv2
import numpy as np

from lightglue_ros.tracker import FrameResult


def score_colours(scores: np.ndarray) -> np.ndarray:
    """[K] scores in [0, 1] -> [K x 3] uint8 RGB, red (low) through yellow to green (high)."""
    s = np.clip(np.asarray(scores, dtype=np.float32), 0.0, 1.0)
    red = np.clip(2.0 * (1.0 - s), 0.0, 1.0)
    green = np.clip(2.0 * s, 0.0, 1.0)
    return (np.stack([red, green, np.zeros_like(s)], -1) * 255).astype(np.uint8)


def as_rgb8(image: np.ndarray) -> np.ndarray:
    """Any canonical image (mono/RGB, uint8/uint16) -> (H, W, 3) uint8 RGB copy."""
    if image.dtype == np.uint16:
        image = (image / 257.0).round().astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(image[..., :3])


def draw_tracks(image: np.ndarray, result: FrameResult) -> np.ndarray:
    """The current image with each match drawn as a line from its keyframe position.

    Lines are coloured by match score; inliers get a filled dot, outliers a hollow one.
    Returns a new (H, W, 3) uint8 RGB image.
    """
    canvas = as_rgb8(image).copy()
    colours = score_colours(result.scores)
    for (x0, y0), (x1, y1), colour, inlier in zip(result.kf_points, result.points, colours,
                                                  result.inliers):
        c = tuple(int(v) for v in colour)
        cv2.line(canvas, (round(x0), round(y0)), (round(x1), round(y1)), c, 1, cv2.LINE_AA)
        cv2.circle(canvas, (round(x1), round(y1)), 2, c, -1 if inlier else 1, cv2.LINE_AA)
    label = (f'kf {result.keyframe_index}  matches {result.num_matches}  '
             f'inliers {result.num_inliers}  layers {result.stop_layer}')
    cv2.putText(canvas, label, (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                cv2.LINE_AA)
    return canvas


def draw_matches_side_by_side(image0: np.ndarray, image1: np.ndarray, keypoints0: np.ndarray,
                              keypoints1: np.ndarray, matches: np.ndarray, scores: np.ndarray,
                              *, inliers: np.ndarray | None = None,
                              label: str | None = None,
                              max_lines: int | None = None) -> np.ndarray:
    """Two images side by side with their keypoints and one line per match.

    image0, image1: (H, W[, C]) mono or RGB, uint8 or uint16 (any sizes; the shorter one is
        padded with black at the bottom).
    keypoints0: [M x 2], keypoints1: [N x 2] pixels (x, y) of each image (numpy or CPU tensors).
    matches: [K x 2] int, (index into keypoints0, index into keypoints1).
    scores: [K] match confidence in [0, 1]: lines go red (low) through yellow to green (high),
        as transformers' ``visualize_keypoint_matching``.
    inliers: optional [K] bool; the ends of outlier matches are hollow circles.
    label: optional text drawn in the top-left corner.
    max_lines: draw at most this many match lines, evenly spread over the matches (a readable
        picture for thousands of matches); None: all.
    Every keypoint is a small grey dot (matched or not). Returns a new
    (max(H0, H1), W0 + W1, 3) uint8 RGB image.
    """
    left, right = as_rgb8(np.asarray(image0)), as_rgb8(np.asarray(image1))
    h0, w0 = left.shape[:2]
    h1, w1 = right.shape[:2]
    canvas = np.zeros((max(h0, h1), w0 + w1, 3), np.uint8)
    canvas[:h0, :w0] = left
    canvas[:h1, w0:] = right
    kp0 = np.asarray(keypoints0, dtype=np.float64).reshape(-1, 2)
    kp1 = np.asarray(keypoints1, dtype=np.float64).reshape(-1, 2)
    pairs = np.asarray(matches, dtype=np.int64).reshape(-1, 2)
    conf = np.asarray(scores, dtype=np.float32).reshape(-1)
    if len(conf) != len(pairs):
        raise ValueError(f'{len(pairs)} matches but {len(conf)} scores')
    if len(pairs) and (pairs.min() < 0 or pairs[:, 0].max() >= len(kp0)
                       or pairs[:, 1].max() >= len(kp1)):
        raise ValueError('match indices out of range of the keypoints')
    keep = (np.ones(len(pairs), bool) if inliers is None
            else np.asarray(inliers, dtype=bool).reshape(-1))
    if len(keep) != len(pairs):
        raise ValueError(f'{len(pairs)} matches but {len(keep)} inlier flags')

    def pixel(x: float, y: float, dx: int = 0) -> tuple[int, int]:
        return int(round(x)) + dx, int(round(y))

    grey = (170, 170, 170)
    for x, y in kp0:
        cv2.circle(canvas, pixel(x, y), 1, grey, -1, cv2.LINE_AA)
    for x, y in kp1:
        cv2.circle(canvas, pixel(x, y, w0), 1, grey, -1, cv2.LINE_AA)
    shown = np.arange(len(pairs))
    if max_lines is not None and len(pairs) > max_lines:
        shown = np.unique(np.linspace(0, len(pairs) - 1, max(0, max_lines)).round().astype(int))
    # Low scores first, so that the confident (green) matches end up on top.
    for k in shown[np.argsort(conf[shown], kind='stable')]:
        i, j = pairs[k]
        colour = tuple(int(v) for v in score_colours(conf[k:k + 1])[0])
        a, b = pixel(*kp0[i]), pixel(*kp1[j], w0)
        cv2.line(canvas, a, b, colour, 1, cv2.LINE_AA)
        cv2.circle(canvas, a, 2, colour, -1 if keep[k] else 1, cv2.LINE_AA)
        cv2.circle(canvas, b, 2, colour, -1 if keep[k] else 1, cv2.LINE_AA)
    if label:
        font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.55
        (width, height), baseline = cv2.getTextSize(label, font, scale, 1)
        canvas[:height + baseline + 10, :width + 12] //= 3  # darken behind the text
        cv2.putText(canvas, label, (6, height + 5), font, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return canvas

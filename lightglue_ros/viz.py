"""Pictures of tracking results: keypoints and match lines drawn with OpenCV.

Every picture says what its colours mean: with a pose, pose inliers are green and outliers
magenta (magenta is not on the score scale, and tells from green without red-green vision);
without one, lines go by match score, red (low) through yellow to green (high). A legend and the
label sit on a filled box (LABEL_BOX_COLOUR), legible on any image.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from lightglue_ros.tracker import FrameResult

Colour = tuple[int, int, int]  # RGB, 0-255
INLIER_COLOUR: Colour = (40, 220, 40)
OUTLIER_COLOUR: Colour = (255, 40, 255)
LABEL_BOX_COLOUR: Colour = (24, 24, 24)
LABEL_TEXT_COLOUR: Colour = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_SWATCH_PX = 18  # length of a legend row's colour sample


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


def match_colours(scores: np.ndarray, inliers: np.ndarray | None
                  ) -> tuple[np.ndarray, list[tuple[str, Colour | None]]]:
    """The [K x 3] uint8 RGB colour of each match and the legend rows that explain them.

    inliers: [K] bool pose inlier flags, or None where no pose was estimated: then the colours
    go by the [K] scores (``score_colours``).
    """
    if inliers is None:
        legend = [('match score high', tuple(int(v) for v in score_colours(np.ones(1))[0])),
                  ('match score low', tuple(int(v) for v in score_colours(np.zeros(1))[0]))]
        return score_colours(scores), legend
    keep = np.asarray(inliers, dtype=bool).reshape(-1)
    colours = np.where(keep[:, None], np.uint8(INLIER_COLOUR), np.uint8(OUTLIER_COLOUR))
    legend = [(f'pose inliers {int(keep.sum())}', INLIER_COLOUR),
              (f'outliers {int((~keep).sum())}', OUTLIER_COLOUR)]
    return colours.astype(np.uint8).reshape(-1, 3), legend


def text_scale(image_height: int) -> float:
    """OpenCV font scale for labels on an image this tall: 0.45 up to 360 px, 0.6 at 480."""
    return float(np.clip(image_height / 800.0, 0.45, 1.2))


def draw_label_box(canvas: np.ndarray, rows: Sequence[tuple[str, Colour | None]], *,
                   origin: tuple[int, int] = (0, 0), scale: float | None = None
                   ) -> tuple[int, int, int, int]:
    """Draw text rows on a filled LABEL_BOX_COLOUR box whose top-left corner is ``origin``, in
    place; a row with a colour starts with a sample line of it (a legend entry).

    scale: font scale (default: ``text_scale`` of the canvas height). Returns the box
    (x0, y0, x1, y1), x1 and y1 exclusive, clipped to the canvas.
    """
    height = canvas.shape[0]
    scale = text_scale(height) if scale is None else scale
    thickness = 1 if scale < 0.9 else 2
    pad = max(4, round(8 * scale))
    sizes = [cv2.getTextSize(text, _FONT, scale, thickness) for text, _ in rows]
    line_h = max((h + base for (_, h), base in sizes), default=0) + pad // 2
    swatch = round(_SWATCH_PX * scale / 0.6)
    width = max((w + (swatch + pad if colour is not None else 0)
                 for ((w, _), _), (_, colour) in zip(sizes, rows)), default=0)
    x0, y0 = origin
    x1 = min(canvas.shape[1], x0 + width + 2 * pad)
    y1 = min(height, y0 + line_h * len(rows) + pad)
    cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), LABEL_BOX_COLOUR, -1)
    for k, ((text, colour), ((_, text_h), _)) in enumerate(zip(rows, sizes)):
        baseline_y = y0 + pad + k * line_h + text_h
        x = x0 + pad
        if colour is not None:
            mid = baseline_y - text_h // 2
            cv2.line(canvas, (x, mid), (x + swatch, mid), colour, max(2, 2 * thickness),
                     cv2.LINE_AA)
            x += swatch + pad
        cv2.putText(canvas, text, (x, baseline_y), _FONT, scale, LABEL_TEXT_COLOUR, thickness,
                    cv2.LINE_AA)
    return x0, y0, x1, y1


def draw_tracks(image: np.ndarray, result: FrameResult) -> np.ndarray:
    """The current image with each match drawn as a line from its keyframe position.

    With a pose, inliers are green lines ending in a filled dot and outliers magenta ones ending
    in a hollow dot; without one, lines are coloured by match score (``match_colours``). The
    top-left box holds the label (keyframe, counts, stop layer) and the legend.
    Returns a new (H, W, 3) uint8 RGB image.
    """
    canvas = as_rgb8(image).copy()
    posed = result.pose is not None and result.pose.success
    colours, legend = match_colours(result.scores, result.inliers if posed else None)
    for (x0, y0), (x1, y1), colour, inlier in zip(result.kf_points, result.points, colours,
                                                  result.inliers):
        c = tuple(int(v) for v in colour)
        cv2.line(canvas, (round(x0), round(y0)), (round(x1), round(y1)), c, 1, cv2.LINE_AA)
        cv2.circle(canvas, (round(x1), round(y1)), 2, c, -1 if inlier else 1, cv2.LINE_AA)
    label = (f'kf {result.keyframe_index}  matches {result.num_matches}  '
             f'inliers {result.num_inliers}  layers {result.stop_layer}')
    draw_label_box(canvas, [(label, None), *legend])
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
    scores: [K] match confidence in [0, 1]: without ``inliers``, lines go red (low) through
        yellow to green (high), as transformers' ``visualize_keypoint_matching``.
    inliers: optional [K] bool pose inlier flags: inliers green, outliers magenta with hollow
        ends (``match_colours``).
    label: optional text, shown with the legend of the colours in a strip below the images
        (LABEL_BOX_COLOUR), so that no match is hidden under it.
    max_lines: draw at most this many match lines, evenly spread over the matches (a readable
        picture for thousands of matches); None: all.
    Every keypoint is a small grey dot (matched or not). Returns a new
    (max(H0, H1) + strip, W0 + W1, 3) uint8 RGB image; the images fill the first max(H0, H1)
    rows.
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
    colours, legend = match_colours(conf, inliers)
    # Low scores first (outliers first with a pose), so that the good matches end up on top.
    rank = conf[shown] if inliers is None else keep[shown].astype(np.float32)
    for k in shown[np.argsort(rank, kind='stable')]:
        i, j = pairs[k]
        colour = tuple(int(v) for v in colours[k])
        a, b = pixel(*kp0[i]), pixel(*kp1[j], w0)
        cv2.line(canvas, a, b, colour, 1, cv2.LINE_AA)
        cv2.circle(canvas, a, 2, colour, -1 if keep[k] else 1, cv2.LINE_AA)
        cv2.circle(canvas, b, 2, colour, -1 if keep[k] else 1, cv2.LINE_AA)
    rows = [*([(label, None)] if label else []), *legend]
    scale = text_scale(canvas.shape[0])
    strip = np.empty((len(rows) * round(80 * scale) + 40, canvas.shape[1], 3), np.uint8)
    strip[:] = LABEL_BOX_COLOUR
    _, _, _, strip_height = draw_label_box(strip, rows, scale=scale)
    return np.concatenate([canvas, strip[:strip_height]])

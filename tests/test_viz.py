"""The pictures (lightglue_ros.viz): pose inliers and outliers in different colours, a legend,
and labels on a filled box, checked on the drawn pixels."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from lightglue_ros.viz import (INLIER_COLOUR, LABEL_BOX_COLOUR, LABEL_TEXT_COLOUR,
                               OUTLIER_COLOUR, draw_matches_side_by_side, draw_tracks,
                               score_colours)

GREY = 128
H, W = 240, 320


def _close(pixel: np.ndarray, colour: tuple[int, int, int], tolerance: int = 24) -> bool:
    # 24: anti-aliased lines blend a little of the background into their pixels.
    return bool(np.abs(pixel.astype(int) - np.array(colour)).max() <= tolerance)


def _tracks(*, posed: bool) -> SimpleNamespace:
    """What draw_tracks reads of a FrameResult: two horizontal tracks with equal scores, the
    upper one a pose inlier, the lower one an outlier."""
    return SimpleNamespace(
        kf_points=np.array([[100.0, 150.0], [100.0, 200.0]], np.float32),
        points=np.array([[220.0, 150.0], [220.0, 200.0]], np.float32),
        scores=np.array([0.9, 0.9], np.float32), inliers=np.array([posed, False]),
        pose=SimpleNamespace(success=posed) if posed else None, keyframe_index=3,
        num_matches=2, num_inliers=int(posed), stop_layer=4)


def test_debug_image_tells_inliers_from_outliers_on_a_label_box():
    image = np.full((H, W), GREY, np.uint8)
    picture = draw_tracks(image, _tracks(posed=True))
    assert picture.shape == (H, W, 3)
    # Mid-points of the two tracks: equal scores, but inlier green and outlier magenta.
    assert _close(picture[150, 160], INLIER_COLOUR)
    assert _close(picture[200, 160], OUTLIER_COLOUR)
    # The label and legend sit on a filled box in the top-left corner (it was grey image there,
    # with thin white text straight on it), and the text on it is white.
    box = picture[:40, :120]
    assert _close(picture[1, 1], LABEL_BOX_COLOUR, 0)
    assert (box == LABEL_BOX_COLOUR).all(axis=2).mean() > 0.5
    assert (box == LABEL_TEXT_COLOUR).all(axis=2).any()
    # The legend shows both colours as samples.
    legend = picture[:100, :60]
    assert any(_close(p, INLIER_COLOUR, 0) for p in legend.reshape(-1, 3))
    assert any(_close(p, OUTLIER_COLOUR, 0) for p in legend.reshape(-1, 3))
    assert (image == GREY).all()  # input untouched


def test_debug_image_without_a_pose_colours_by_score():
    picture = draw_tracks(np.full((H, W), GREY, np.uint8), _tracks(posed=False))
    expected = tuple(int(v) for v in score_colours(np.array([0.9]))[0])
    # No pose: not "outliers", so both lines take their score's colour.
    assert _close(picture[150, 160], expected) and _close(picture[200, 160], expected)


def test_side_by_side_colours_inliers_and_keeps_the_legend_off_the_images():
    left = np.full((H, W), GREY, np.uint8)
    right = np.full((H, W), GREY, np.uint8)
    kp0 = np.array([[20.0, 150.0], [20.0, 200.0]])
    kp1 = np.array([[280.0, 150.0], [280.0, 200.0]])
    matches = np.array([[0, 0], [1, 1]])
    scores = np.array([0.9, 0.9])
    picture = draw_matches_side_by_side(left, right, kp0, kp1, matches, scores,
                                        inliers=np.array([True, False]), label='2 matches')
    assert picture.shape[1:] == (2 * W, 3) and picture.shape[0] > H
    assert _close(picture[150, W], INLIER_COLOUR)
    assert _close(picture[200, W], OUTLIER_COLOUR)
    # Nothing is drawn over the images' top-left corner; the strip below has the box colour,
    # white text and both legend colours.
    assert (picture[:100, :W] == GREY).all()
    strip = picture[H:]
    assert _close(strip[0, 0], LABEL_BOX_COLOUR, 0) and _close(strip[-1, -1], LABEL_BOX_COLOUR, 0)
    assert (strip == LABEL_TEXT_COLOUR).all(axis=2).any()
    for colour in (INLIER_COLOUR, OUTLIER_COLOUR):
        assert (strip == colour).all(axis=2).any()

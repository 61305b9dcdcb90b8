"""Image files in and out for the commands: read one with a clear error, write a PNG."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from lightglue_ros.errors import InvalidImageError
from lightglue_ros.image import read_image


def read_image_file(path: str | Path) -> np.ndarray:
    """The image at ``path`` (``lightglue_ros.image.read_image``); InvalidImageError for a
    missing file or a folder."""
    path = Path(path)
    if not path.exists():
        raise InvalidImageError(f'no such file: {path}')
    if path.is_dir():
        raise InvalidImageError(f'{path} is a folder, not an image file')
    return read_image(path)


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """Write an RGB picture (creating its folder); InvalidImageError when it cannot be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    try:
        ok = cv2.imwrite(str(path), bgr)
    except cv2.error as err:
        raise InvalidImageError(f'cannot write {path}: {err}') from err
    if not ok:
        raise InvalidImageError(f'cannot write {path} (unknown image format or no permission)')
    return path

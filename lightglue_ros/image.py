"""Image arrays in, network-ready tensors out: validation, scaling to [0, 1] and resizing."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from lightglue_ros.errors import InvalidImageError

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, as the reference extractors use


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) RGB or (H, W) mono, keeping 16-bit depth."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise InvalidImageError(f'cannot read an image from {path}')
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def validate_image(image: object) -> np.ndarray:
    """Check an (H, W) or (H, W, 1|3|4) uint8/uint16/float image and return it as an array."""
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f'image must be a numpy array, got {type(image).__name__}')
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise InvalidImageError(f'image must be (H, W) or (H, W, 1|3|4), got shape {image.shape}')
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidImageError(f'image is empty (shape {image.shape})')
    if image.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise InvalidImageError(f'unsupported image dtype {image.dtype}; '
                                'use uint8, uint16 or float in [0, 1]')
    if image.dtype.kind == 'f' and not np.isfinite(image).all():
        raise InvalidImageError('image contains NaN or infinite values')
    return image


def image_to_tensor(image: np.ndarray, *, device: torch.device | str = 'cpu') -> torch.Tensor:
    """(H, W[, C]) array (RGB order for colour) -> [C x H x W] float32 in [0, 1], C in {1, 3}.

    The pixels travel in their own dtype (uint8: a quarter of the float bytes) and are scaled
    on ``device``. On CUDA the upload is queued from page-locked memory (``upload``), so the
    host does not wait for the GPU.
    """
    image = validate_image(image)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    scale = {np.dtype(np.uint8): 1 / 255, np.dtype(np.uint16): 1 / 65535}.get(image.dtype, 1.0)
    device = torch.device(device)
    if device.type == 'cuda':
        tensor = upload(image, device)
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    # float() copies integer pixels, so scaling that copy in place is safe (and one pass).
    tensor = tensor.float().mul_(scale) if scale != 1.0 else tensor.float()
    return tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)


def upload(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """Copy a host array to a CUDA device without making the host wait (same dtype and shape).

    A copy from pageable memory synchronises the host with the GPU; this one goes through a
    page-locked block of torch's caching host allocator, which hands the block out again only
    once the copy that reads it has finished, so the caller may reuse ``array`` at once.
    """
    pinned = torch.empty(array.shape, dtype=torch.from_numpy(array[:0]).dtype, pin_memory=True)
    pinned.copy_(torch.from_numpy(array))
    return pinned.to(device, non_blocking=True)


def constant_like(values: float | Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """``like.new_tensor(values)`` (same values, dtype and device) without a host wait on CUDA.

    ``new_tensor`` copies from pageable memory, a synchronisation per call; the per-frame path
    makes its small constants with this instead.
    """
    if like.device.type != 'cuda':
        return like.new_tensor(values)
    if isinstance(values, (int, float)):
        return like.new_full((), values)  # a fill kernel, no copy at all
    pinned = torch.tensor(values, dtype=like.dtype).pin_memory()
    return pinned.to(like.device, non_blocking=True)


def to_grayscale(image: torch.Tensor) -> torch.Tensor:
    """[C x H x W] -> [1 x H x W]."""
    if image.shape[0] == 1:
        return image
    weights = constant_like(_GRAY_WEIGHTS, image).view(3, 1, 1)
    return (image * weights).sum(0, keepdim=True)


def to_rgb(image: torch.Tensor) -> torch.Tensor:
    """[C x H x W] -> [3 x H x W]."""
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


def resize_max_edge(image: torch.Tensor, max_edge: int | None
                    ) -> tuple[torch.Tensor, tuple[float, float]]:
    """Downscale [C x H x W] so that its longer side is at most ``max_edge`` (never upscale).

    Returns the image and the (sx, sy) factors that map its pixels back to the input's:
    x_input = (x_resized + 0.5) * sx - 0.5 (pixel-centre convention).
    """
    h, w = image.shape[-2:]
    if not max_edge or max(h, w) <= max_edge:
        return image, (1.0, 1.0)
    scale = max_edge / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = F.interpolate(image[None], size=(new_h, new_w), mode='bilinear',
                            align_corners=False, antialias=True)[0]
    return resized, (w / new_w, h / new_h)


def scale_keypoints(keypoints: torch.Tensor, factors: tuple[float, float]) -> torch.Tensor:
    """Map [N x 2] pixels of a resized image back to the original (pixel-centre convention)."""
    if factors == (1.0, 1.0):
        return keypoints
    return (keypoints + 0.5) * constant_like(factors, keypoints) - 0.5

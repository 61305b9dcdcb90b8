"""Local features of one image: the currency between extractors, the matcher and the tracker."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Features:
    """Keypoints and descriptors of one image.

    keypoints:   [N x 2] float32, pixels (x, y) of the image given to the extractor
                 (original resolution, even when the network saw a resized copy).
    scores:      [N] float32 detection scores, best first is not guaranteed.
    descriptors: [N x D] float32, L2-normalised.
    image_size:  (width, height) of the original image in pixels.
    """

    keypoints: torch.Tensor
    scores: torch.Tensor
    descriptors: torch.Tensor
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    def to(self, device: torch.device | str) -> Features:
        return Features(self.keypoints.to(device), self.scores.to(device),
                        self.descriptors.to(device), self.image_size)

    @staticmethod
    def empty(descriptor_dim: int, image_size: tuple[int, int],
              device: torch.device | str = 'cpu') -> Features:
        return Features(torch.zeros(0, 2, device=device), torch.zeros(0, device=device),
                        torch.zeros(0, descriptor_dim, device=device), image_size)


@dataclass(frozen=True)
class FixedFeatures:
    """Keypoints of one image at a fixed count K (the keypoint budget), so that every shape
    depends on K and the image size alone (the static path, issue 18; no host read made them).

    keypoints:   [K x 2] float32 pixels (x, y) of the original image; 0 in invalid slots.
    scores:      [K] float32; 0 in invalid slots.
    descriptors: [K x D] float32, L2-normalised; 0 in invalid slots.
    valid:       [K] bool; the valid slots come first, in ``extract``'s order (see
                 ``fixed_slots``), so the image's keypoints are the first ``valid.sum()`` slots.
    image_size:  (width, height) of the original image in pixels.
    """

    keypoints: torch.Tensor
    scores: torch.Tensor
    descriptors: torch.Tensor
    valid: torch.Tensor
    image_size: tuple[int, int]

    @property
    def budget(self) -> int:
        return int(self.keypoints.shape[0])

    def compact(self, count: int | None = None) -> Features:
        """The valid slots as Features. ``count`` (known on the host, e.g. from the frame's
        one copy) avoids reading the valid count back from the device."""
        if count is None:
            count = int(self.valid.sum())  # a host read
        return Features(self.keypoints[:count], self.scores[:count],
                        self.descriptors[:count], self.image_size)


def fixed_slots(candidates: torch.Tensor, k: int, *, minimum: float = float('-inf'),
                row_major_when_all_fit: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k best of a flat candidate score vector at a fixed count, no host read.

    candidates: [M] float, -inf (or <= ``minimum``) where no keypoint may be.
    row_major_when_all_fit: the order of a reference that lists its candidates row-major
        (``nonzero``) and sorts them by score only when it must choose k of them (SuperPoint,
        ALIKED's threshold mode): then the valid slots come in index order when at most k
        candidates exist, best first otherwise. The order is the published order (track ids,
        the pose's sample order), so the static path keeps it (issue 18 item 6).
    Returns (indices [k] long into candidates, values [k], valid [k] bool): the valid ones
    before the others (best first unless reordered as above); when M < k the tail is invalid
    (index 0).
    """
    # One more than k: whether the (k+1)-th best is a candidate says if all of them fit.
    values, indices = torch.topk(candidates, min(k + 1, candidates.numel()))
    if values.shape[0] <= k:
        missing = k + 1 - values.shape[0]
        values = torch.cat([values, values.new_full((missing,), float('-inf'))])
        indices = torch.cat([indices, indices.new_zeros(missing)])
    all_fit = values[k] <= minimum  # a device tensor: decided without a read
    values, indices = values[:k], indices[:k]
    valid = values > minimum
    if row_major_when_all_fit:
        slots = torch.arange(k, device=indices.device)
        row_major = torch.where(valid, indices, candidates.numel() + slots)  # invalid last
        order = torch.where(all_fit, row_major, slots).argsort()
        indices, values, valid = indices[order], values[order], valid[order]
    return indices, values, valid


def device_pair(a: float, b: float, like: torch.Tensor) -> torch.Tensor:
    """[2] tensor (a, b) in ``like``'s dtype and device, made by fills: no host copy, so a CUDA
    graph may capture it (the values equal ``like.new_tensor((a, b))``)."""
    return torch.stack([like.new_full((), a), like.new_full((), b)])

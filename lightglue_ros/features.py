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

"""SuperPoint keypoint detector and descriptor in torch (DeTone et al., CVPRW 2018).

Licence note: the SuperPoint architecture and its released weights (``superpoint_v1.pth`` and
the Hugging Face ``magic-leap-community/superpoint`` copy of them) are Magic Leap's and are
licensed for NON-COMMERCIAL research use only. This file holds code only; no weights ship
with the package. Check the weights' licence before any commercial use.

Both weight layouts load: Magic Leap's (``conv1a.weight`` ... ``convDb.bias``, the names used
here) and Hugging Face's (``encoder.conv_blocks.*``, ``keypoint_decoder.*``,
``descriptor_decoder.*``, optionally under ``superpoint.``). With equal weights the output is
that of transformers' ``SuperPointForKeypointDetection``: the same non-maximum suppression,
thresholding, top-k and descriptor sampling, done with less work per call. One difference:
``remove_borders`` applies to all four sides as in Magic Leap's and cvg's code, whereas
transformers compares the bottom/right border with 8x the heatmap size and keeps those points.
Where the time goes on CPU (640x480): the first conv block runs in row strips that stay in cache,
convolutions run channels-last, and the non-maximum suppression is separable (numpy on CPU);
descriptors are sampled only at the kept keypoints. No ROS imports; numpy is the only other need.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lightglue_ros.defaults import DEFAULT_MAX_KEYPOINTS, DEFAULT_RESIZE
from lightglue_ros.errors import CheckpointError, ConfigError, InvalidImageError
from lightglue_ros.features import Features, FixedFeatures, device_pair, fixed_slots
from lightglue_ros.image import constant_like, resize_max_edge, scale_keypoints
from lightglue_ros.models.checkpoints import as_state_dict, load_into, load_state_dict_file
from lightglue_ros.models.extractors import fixed_budget, merge_conf

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 RGB -> gray, as kornia/cvg LightGlue use
HF_PREFIXES = ('encoder.', 'keypoint_decoder.', 'descriptor_decoder.')

# Hugging Face module names -> Magic Leap module names (the weight/bias suffix is kept).
_HF_TO_OFFICIAL = {
    **{f'encoder.conv_blocks.{i}.conv_{ab}': f'conv{i + 1}{ab}' for i in range(4) for ab in 'ab'},
    'keypoint_decoder.conv_score_a': 'convPa',
    'keypoint_decoder.conv_score_b': 'convPb',
    'descriptor_decoder.conv_descriptor_a': 'convDa',
    'descriptor_decoder.conv_descriptor_b': 'convDb',
}


def is_hf_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True when the keys use transformers' names (with or without a ``superpoint.`` prefix)."""
    return any(k.removeprefix('superpoint.').startswith(HF_PREFIXES) for k in state_dict)


def convert_hf_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face SuperPoint state dict to Magic Leap's layout (``conv1a.weight`` ...).

    A leading ``superpoint.`` is dropped. Keys that are not SuperPoint weights are kept as they
    are, so that a strict load names them.
    """
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix('superpoint.')
        module, _, param = key.rpartition('.')
        out[f'{_HF_TO_OFFICIAL[module]}.{param}' if module in _HF_TO_OFFICIAL else key] = value
    return out


def max_pool(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Max (logical or, for bool) over (2r+1) x (2r+1) windows, stride 1, same size.

    x: [B x H x W] float or bool. Equal to ``max_pool2d(x, 2r + 1, 1, r)`` (implicit -inf
    padding), computed separably: along W with log2(2r+1) element-wise maxima of shifted views,
    along H with one reduction over unfolded windows (contiguous rows, so it vectorises).
    About 0.3 ms instead of 25 ms for a 640x480 map and r = 4 on one CPU core, in few kernels.
    """
    if radius == 0:
        return x
    size, width = 2 * radius + 1, x.shape[-1]
    y = F.pad(x, (radius,) * 4, value=False if x.dtype == torch.bool else float('-inf'))
    span = 1  # invariant: y[..., i] = max(padded[..., i : i + span])
    while 2 * span <= size:
        length = y.shape[-1] - span
        y = torch.maximum(y[..., :length], y[..., span:span + length])
        span *= 2
    y = torch.maximum(y[..., :width], y[..., size - span:size - span + width])
    return y.unfold(-2, size, 1).amax(-1)


def nms_mask(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """Mask of the points kept by SuperPoint's max-pool non-maximum suppression.

    scores: [B x H x W] float heatmap -> [B x H x W] bool. Same result as ``simple_nms`` of the
    reference implementations (``simple_nms(scores) > 0`` for positive scores), with separable
    pooling and boolean dilations. CPU tensors go through numpy: ~3 ms single-threaded for a
    640x480 map, and no intra-op thread has to be scheduled for each of its ~40 small steps
    (on a loaded machine each such step can wait a whole time slice).
    """
    if radius < 0:
        raise ConfigError(f'nms_radius must be >= 0, got {radius}')
    compiling = torch.compiler.is_compiling()  # torch.compile traces torch, not numpy
    if (scores.device.type == 'cpu' and scores.dtype in (torch.float32, torch.float64)
            and not compiling):
        return torch.from_numpy(_nms_mask_numpy(scores.detach().numpy(), radius))
    if scores.device.type == 'cuda' or compiling:  # one pooling kernel each (fused by inductor)
        return _nms_mask_torch(scores, radius, pool=_max_pool_kernel)
    return _nms_mask_torch(scores, radius)


def _nms_mask_torch(scores: torch.Tensor, radius: int, *,
                    pool: Callable[[torch.Tensor, int], torch.Tensor] = max_pool
                    ) -> torch.Tensor:
    """``nms_mask`` in torch (GPU tensors, and CPU dtypes numpy lacks); no host sync."""
    max_mask = scores == pool(scores, radius)
    for _ in range(2):
        supp_mask = pool(max_mask, radius)
        supp_scores = torch.where(supp_mask, 0.0, scores)
        max_mask |= (supp_scores == pool(supp_scores, radius)) > supp_mask  # new & ~supp
    return max_mask


def _max_pool_kernel(x: torch.Tensor, radius: int) -> torch.Tensor:
    """``max_pool`` as one ``max_pool2d`` kernel (bool through float, exact): on a GPU a window
    of 81 reads per pixel costs less than the separable version's ~6 kernel launches."""
    if radius == 0:
        return x
    y = F.max_pool2d((x.float() if x.dtype == torch.bool else x)[:, None], 2 * radius + 1,
                     stride=1, padding=radius)[:, 0]
    return y > 0 if x.dtype == torch.bool else y


def _nms_mask_numpy(scores: np.ndarray, radius: int) -> np.ndarray:
    """``nms_mask`` on a [B x H x W] float array (numpy runs it on the calling thread)."""
    max_mask = scores == _max_pool_numpy(scores, radius)
    for _ in range(2):
        supp_mask = _max_pool_numpy(max_mask, radius)
        supp_scores = np.where(supp_mask, scores.dtype.type(0), scores)
        max_mask |= (supp_scores == _max_pool_numpy(supp_scores, radius)) > supp_mask
    return max_mask


def _max_pool_numpy(x: np.ndarray, radius: int) -> np.ndarray:
    """``max_pool`` for a [B x H x W] float or bool array."""
    if radius == 0:
        return x
    size, (b, h, w) = 2 * radius + 1, x.shape
    y = np.full((b, h + 2 * radius, w + 2 * radius), False if x.dtype == bool else -np.inf,
                dtype=x.dtype)
    y[:, radius:radius + h, radius:radius + w] = x
    for axis, n in ((2, w), (1, h)):
        span = 1  # invariant: y[i] = max(padded[i : i + span]) along axis
        while 2 * span <= size:
            length = y.shape[axis] - span
            y = np.maximum(_window(y, axis, 0, length), _window(y, axis, span, length))
            span *= 2
        y = np.maximum(_window(y, axis, 0, n), _window(y, axis, size - span, n))
    return y


def _window(x: np.ndarray, axis: int, start: int, length: int) -> np.ndarray:
    """View of ``x[start:start + length]`` along ``axis`` (1 or 2) of a 3-d array."""
    return x[:, start:start + length] if axis == 1 else x[:, :, start:start + length]


def sample_descriptors(keypoints: torch.Tensor, descriptors: torch.Tensor,
                       s: int = 8) -> torch.Tensor:
    """Bilinear interpolation of a dense descriptor map at keypoints, then L2 normalisation.

    keypoints: [B x N x 2] float, pixels (x, y) of the image the map was computed on.
    descriptors: [B x D x h x w] map at stride ``s`` (L2-normalised per cell).
    Returns [B x N x D].
    """
    b, c, h, w = descriptors.shape
    keypoints = keypoints - s / 2 + 0.5
    keypoints = keypoints / constant_like((w * s - s / 2 - 0.5, h * s - s / 2 - 0.5), keypoints)
    keypoints = keypoints * 2 - 1  # to (-1, 1)
    desc = F.grid_sample(descriptors, keypoints.view(b, 1, -1, 2), mode='bilinear',
                         align_corners=True)  # [B x D x 1 x N]
    return F.normalize(desc.reshape(b, c, -1), p=2, dim=1).transpose(1, 2)


class SuperPoint(nn.Module):
    """SuperPoint: shared VGG encoder, 65-way keypoint head and 256-d descriptor head.

    ``SuperPoint(**conf)`` with keys of ``default_conf`` (unknown keys raise ConfigError), then
    ``load_weights(path_or_state_dict)`` and ``extract(image) -> Features``.
    """

    name = 'superpoint'
    descriptor_dim = 256
    # On CPU the first block runs in strips of this many rows (None: whole image at once).
    # Measured at 640x480: the block ~1.9x faster with 48-96 rows; fewer, taller strips launch
    # fewer kernels, which matters when other processes compete for the cores.
    strip_rows: int | None = 96
    default_conf: dict[str, Any] = {
        'max_keypoints': DEFAULT_MAX_KEYPOINTS,  # keep the N best-scoring (None or -1 = all)
        'detection_threshold': 0.0005,  # heatmap probability a keypoint must exceed (>= 0)
        'nms_radius': 4,  # non-maximum suppression radius in network pixels (0 = none)
        'remove_borders': 4,  # drop keypoints closer than this to the heatmap border (pixels)
        'resize': DEFAULT_RESIZE,  # longer image side the network sees at most (downscale
                                   # only; None = native); keypoints in input-image pixels
        'channels_last': True,  # NHWC convolutions (encoder ~1.4x faster on CPU with oneDNN)
    }

    def __init__(self, **conf: Any) -> None:
        super().__init__()
        self.conf = merge_conf(self.default_conf, conf, self.name)
        self._check_conf()
        c1, c2, c3, c4, c5 = 64, 64, 128, 128, 256
        self.conv1a = nn.Conv2d(1, c1, 3, padding=1)
        self.conv1b = nn.Conv2d(c1, c1, 3, padding=1)
        self.conv2a = nn.Conv2d(c1, c2, 3, padding=1)
        self.conv2b = nn.Conv2d(c2, c2, 3, padding=1)
        self.conv3a = nn.Conv2d(c2, c3, 3, padding=1)
        self.conv3b = nn.Conv2d(c3, c3, 3, padding=1)
        self.conv4a = nn.Conv2d(c3, c4, 3, padding=1)
        self.conv4b = nn.Conv2d(c4, c4, 3, padding=1)
        self.convPa = nn.Conv2d(c4, c5, 3, padding=1)
        self.convPb = nn.Conv2d(c5, 65, 1)  # 64 cells of an 8x8 block + 1 'no keypoint' bin
        self.convDa = nn.Conv2d(c4, c5, 3, padding=1)
        self.convDb = nn.Conv2d(c5, self.descriptor_dim, 1)
        self._set_layout()
        self.eval()

    def _check_conf(self) -> None:
        conf = self.conf
        if not isinstance(conf['detection_threshold'], (int, float)) or \
                not conf['detection_threshold'] >= 0:
            raise ConfigError('detection_threshold must be >= 0, '
                              f'got {conf["detection_threshold"]!r}')
        for key in ('nms_radius', 'remove_borders'):
            if type(conf[key]) is not int or conf[key] < 0:
                raise ConfigError(f'{key} must be an int >= 0, got {conf[key]!r}')
        r = conf['resize']
        if r is not None and (type(r) is not int or r < 8):
            raise ConfigError(f'resize must be None or an int >= 8, got {r!r}')

    def _set_layout(self) -> None:
        self.to(memory_format=torch.channels_last if self.conf['channels_last']
                else torch.contiguous_format)

    def load_weights(self, source: str | Path | Mapping[str, torch.Tensor]) -> None:
        """Load Magic Leap or Hugging Face weights from a file or a state dict (strict).

        Files are read without executing code (``.safetensors`` with safetensors, anything else
        with ``torch.load(weights_only=True)``). Raises CheckpointError naming missing,
        unexpected and mis-shaped keys.
        """
        if isinstance(source, (str, Path)):
            name = str(source)
            state = _read_weights_file(Path(source))
        elif isinstance(source, Mapping):
            name = 'superpoint state dict'
            state = as_state_dict(source, source=name)
        else:
            raise CheckpointError(f'cannot load SuperPoint weights from a {type(source).__name__}')
        if state and all(k.startswith('module.') for k in state):  # saved from DataParallel
            state = {k.removeprefix('module.'): v for k, v in state.items()}
        if is_hf_layout(state):
            state = convert_hf_state_dict(state)
        load_into(self, state, source=name)
        self._set_layout()

    def _encode(self, image: torch.Tensor) -> torch.Tensor:
        """[B x 1 x H x W] -> [B x 128 x H/8 x W/8] shared features."""
        x = image.contiguous()
        if self.conf['channels_last']:  # with 1 channel, .contiguous(channels_last) is a no-op
            b, _, h, w = x.shape
            x = x.as_strided((b, 1, h, w), (h * w, 1, w, 1))
        rows = self.strip_rows
        if rows and x.device.type == 'cpu' and x.shape[-2] > rows:
            x = self._block1_in_strips(x, rows)
        else:
            x = F.relu(self.conv1a(x), inplace=True)
            x = F.max_pool2d(F.relu(self.conv1b(x), inplace=True), 2, 2)
        for i, (conv_a, conv_b) in enumerate(((self.conv2a, self.conv2b),
                                              (self.conv3a, self.conv3b),
                                              (self.conv4a, self.conv4b))):
            x = F.relu(conv_a(x), inplace=True)
            x = F.relu(conv_b(x), inplace=True)
            if i < 2:
                x = F.max_pool2d(x, 2, 2)
        return x

    def _block1_in_strips(self, x: torch.Tensor, rows: int) -> torch.Tensor:
        """conv1a, conv1b (+ ReLU) and 2x2 max-pool, ``rows`` output rows at a time.

        x: [B x 1 x H x W] -> [B x 64 x H/2 x W/2], the same numbers as the whole-image layers.
        The two full-resolution 64-channel maps are the largest tensors of the network (78 MB
        each at 640x480); a strip of them stays in the CPU cache and is never page-faulted in.
        """
        h = x.shape[-2]
        rows -= rows % 2  # strips start on even rows so that the 2x2 pooling windows align
        padded = F.pad(x, (1, 1, 2, 2))  # conv1a's zero padding plus one halo row for conv1b
        pooled = []
        for top in range(0, h - 1, rows):
            bottom = min(top + rows, h)
            # conv1a on image rows top-1 .. bottom (padded rows top .. bottom+3)
            a = F.relu(F.conv2d(padded[:, :, top:bottom + 4], self.conv1a.weight,
                                self.conv1a.bias), inplace=True)
            if top == 0:
                a[:, :, 0] = 0  # conv1b's zero padding above the image
            if bottom == h:
                a[:, :, -1] = 0  # ... and below it
            a = F.relu(F.conv2d(a, self.conv1b.weight, self.conv1b.bias, padding=(0, 1)),
                       inplace=True)
            pooled.append(F.max_pool2d(a, 2, 2))
        return torch.cat(pooled, 2)

    def _heatmap(self, features: torch.Tensor) -> torch.Tensor:
        """[B x 128 x h x w] -> [B x 8h x 8w] keypoint probabilities."""
        logits = self.convPb(F.relu(self.convPa(features), inplace=True))
        prob = F.softmax(logits, 1)[:, :-1]  # drop the dustbin
        b, _, h, w = prob.shape
        prob = prob.permute(0, 2, 3, 1).reshape(b, h, w, 8, 8)
        return prob.permute(0, 1, 3, 2, 4).reshape(b, h * 8, w * 8)

    def _candidates(self, heatmap: torch.Tensor) -> torch.Tensor:
        """[B x H x W] heatmap -> [B x H x W] bool: NMS maxima above the threshold, away from
        the border."""
        conf = self.conf
        keep = nms_mask(heatmap, conf['nms_radius'])
        keep &= heatmap > conf['detection_threshold']
        _, h, w = heatmap.shape
        r = conf['remove_borders']
        if r > 0:
            if h <= 2 * r or w <= 2 * r:
                keep.zero_()
            else:
                keep[:, :r] = False
                keep[:, h - r:] = False
                keep[:, :, :r] = False
                keep[:, :, w - r:] = False
        return keep

    def _select(self, heatmap: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[B x H x W] heatmap -> per image ([N x 2] float (x, y), [N] scores)."""
        conf = self.conf
        keep = self._candidates(heatmap)
        b = heatmap.shape[0]
        idx = keep.nonzero()  # [M x 3] (b, y, x), row-major like the reference
        scores = heatmap[idx[:, 0], idx[:, 1], idx[:, 2]]
        counts = torch.bincount(idx[:, 0], minlength=b).tolist() if b > 1 else [len(idx)]
        k = conf['max_keypoints']
        out = []
        for yx, s in zip(idx[:, 1:].split(counts), scores.split(counts)):
            if k is not None and k != -1 and k < len(s):
                s, top = torch.topk(s, k, dim=0)
                yx = yx[top]
            out.append((yx.flip(1).to(s.dtype), s))
        return out

    def _describe(self, features: torch.Tensor) -> torch.Tensor:
        """[B x 128 x h x w] -> [B x 256 x h x w] L2-normalised dense descriptors."""
        desc = self.convDb(F.relu(self.convDa(features), inplace=True))
        return F.normalize(desc, p=2, dim=1)

    def forward(self, image: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """Detect and describe on a batch at native resolution.

        image: [B x 1 x H x W] gray or [B x 3 x H x W] RGB, float in [0, 1].
        Returns lists (one entry per image, N_i varies) of 'keypoints' [N_i x 2] float pixels
        (x, y) of the input, 'scores' [N_i] and 'descriptors' [N_i x 256] (unit norm).
        Keypoints lie in the top-left (H // 8 * 8) x (W // 8 * 8) part of the image.
        """
        if image.shape[1] == 3:
            image = _rgb_to_gray(image)
        features = self._encode(image)
        selected = self._select(self._heatmap(features))
        if all(len(s) == 0 for _, s in selected):
            empty = features.new_zeros(0, self.descriptor_dim)
            descriptors = [empty for _ in selected]
        else:
            dense = self._describe(features)
            descriptors = [sample_descriptors(kp[None], dense[i:i + 1])[0]
                           for i, (kp, _) in enumerate(selected)]
        return {'keypoints': [kp for kp, _ in selected], 'scores': [s for _, s in selected],
                'descriptors': descriptors}

    @torch.inference_mode()
    def extract(self, image: torch.Tensor) -> Features:
        """Keypoints and descriptors of one image.

        image: [H x W], [1 x H x W] or [3 x H x W] (RGB) float in [0, 1] on the model's device.
        Returns Features in the pixels of ``image`` even when ``resize`` shrank it; an image
        without keypoints (or smaller than 8 pixels) gives empty Features.
        """
        if not torch.is_tensor(image) or not image.is_floating_point():
            raise InvalidImageError('SuperPoint.extract needs a float tensor in [0, 1], got '
                                    f'{getattr(image, "dtype", type(image).__name__)}')
        if image.dim() == 2:
            image = image[None]
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise InvalidImageError(f'image must be [H x W], [1 x H x W] or [3 x H x W], '
                                    f'got {tuple(image.shape)}')
        h, w = image.shape[-2:]
        image = image.to(self.conv1a.weight)  # the model's device and dtype
        if image.shape[0] == 3:
            image = _rgb_to_gray(image[None])[0]
        image, (sx, sy) = resize_max_edge(image, self.conf['resize'])
        if min(image.shape[-2:]) < 8:
            return Features.empty(self.descriptor_dim, (w, h), image.device)
        pred = self(image[None])
        keypoints = pred['keypoints'][0]
        if len(keypoints) == 0:
            return Features.empty(self.descriptor_dim, (w, h), image.device)
        return Features(scale_keypoints(keypoints.float(), (sx, sy)), pred['scores'][0].float(),
                        pred['descriptors'][0].float(), (w, h))


    @torch.inference_mode()
    def extract_fixed(self, image: torch.Tensor) -> FixedFeatures:
        """``extract`` at a fixed count K = max_keypoints, with no host read (a CUDA graph
        captures it per image size): the same keypoints, scores and descriptors in the same
        order (row-major, by score when the budget must choose), unused slots masked
        (tests/test_fixed_keypoints.py).

        image: [C x H x W] float in [0, 1] (C = 1 or 3) on the model's device.
        """
        k = fixed_budget(self.conf, self.name)
        h, w = image.shape[-2:]
        image = image.to(self.conv1a.weight)
        if image.shape[0] == 3:
            image = _rgb_to_gray(image[None])[0]
        image, factors = resize_max_edge(image, self.conf['resize'])
        if min(image.shape[-2:]) < 8:
            return _no_keypoints(k, self.descriptor_dim, (w, h), image)
        features = self._encode(image[None])
        heatmap = self._heatmap(features)
        keep = self._candidates(heatmap)[0]
        indices, values, valid = fixed_slots(heatmap[0].masked_fill(~keep, -torch.inf)
                                             .reshape(-1), k, row_major_when_all_fit=True)
        width = heatmap.shape[-1]
        keypoints = torch.stack([indices % width, indices // width], -1).to(heatmap.dtype)
        descriptors = sample_descriptors(keypoints[None], self._describe(features))[0]
        if factors != (1.0, 1.0):
            keypoints = (keypoints + 0.5) * device_pair(*factors, keypoints) - 0.5
        return FixedFeatures(keypoints.float() * valid[:, None],
                             torch.where(valid, values, 0.0).float(),
                             descriptors.float() * valid[:, None], valid, (w, h))


def _no_keypoints(k: int, dim: int, image_size: tuple[int, int], like: torch.Tensor
                  ) -> FixedFeatures:
    return FixedFeatures(like.new_zeros(k, 2), like.new_zeros(k), like.new_zeros(k, dim),
                         torch.zeros(k, dtype=torch.bool, device=like.device), image_size)


def _rgb_to_gray(image: torch.Tensor) -> torch.Tensor:
    """[B x 3 x H x W] RGB -> [B x 1 x H x W] gray (same arithmetic as kornia)."""
    r, g, b = image.unbind(1)
    gray = r * GRAY_WEIGHTS[0]
    # 0-d weights made by a fill, not copied from the host (new_tensor would sync a GPU)
    gray = torch.addcmul(gray, g, image.new_full((), GRAY_WEIGHTS[1]))
    gray = torch.addcmul(gray, b, image.new_full((), GRAY_WEIGHTS[2]))
    return gray[:, None]


def _read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file without executing code from it."""
    if path.suffix != '.safetensors':
        return load_state_dict_file(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint not found: {path}')
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError as err:
        raise CheckpointError(f'reading {path} needs the safetensors package') from err
    try:
        return as_state_dict(load_file(str(path), device='cpu'), source=str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f'cannot read checkpoint {path}: {err}') from err

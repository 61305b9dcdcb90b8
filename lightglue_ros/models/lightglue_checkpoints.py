"""LightGlue checkpoint layouts: every released key layout converted to ``models.lightglue``'s.

- cvg/LightGlue, current: ``transformers.N.self_attn.*`` / ``transformers.N.cross_attn.*`` (ours);
- cvg/LightGlue, early releases: ``self_attn.N.*`` / ``cross_attn.N.*`` (plus an unused
  training scalar ``log_assignment.N.r``);
- verlab's ``xfeat-lighterglue.pt`` bundle: the matcher under ``matcher.*``;
- Hugging Face transformers ``LightGlueForKeypointMatching`` (``ETH-CVG/lightglue_*``): separate
  q/k/v projections, MLPs named ``fc1``/``layer_norm``/``fc2``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from lightglue_ros.errors import CheckpointError
from lightglue_ros.models.checkpoints import StateDict


def _rename_layer_keys(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Older cvg releases name layers ``self_attn.N.*`` / ``cross_attn.N.*``."""
    pattern = re.compile(r'^(self_attn|cross_attn)\.(\d+)\.')
    return {pattern.sub(r'transformers.\2.\1.', k): v for k, v in state_dict.items()}


def _from_hugging_face(state_dict: Mapping[str, torch.Tensor], num_heads: int) -> StateDict:
    """Convert the transformers ``LightGlueForKeypointMatching`` layout to ours."""
    out: StateDict = {}
    sd = {k.removeprefix('lightglue.'): v for k, v in state_dict.items()
          if not k.startswith('keypoint_detector.')}
    renames = [
        (r'^input_projection\.', 'input_proj.'),
        (r'^positional_encoder\.projector\.', 'posenc.Wr.'),
        (r'^transformer_layers\.(\d+)\.self_attention\.o_proj\.',
         r'transformers.\1.self_attn.out_proj.'),
        (r'^transformer_layers\.(\d+)\.cross_attention\.v_proj\.',
         r'transformers.\1.cross_attn.to_v.'),
        (r'^transformer_layers\.(\d+)\.cross_attention\.o_proj\.',
         r'transformers.\1.cross_attn.to_out.'),
        (r'^transformer_layers\.(\d+)\.self_mlp\.', r'transformers.\1.self_attn.ffn.'),
        (r'^transformer_layers\.(\d+)\.cross_mlp\.', r'transformers.\1.cross_attn.ffn.'),
        (r'^match_assignment_layers\.(\d+)\.final_projection\.', r'log_assignment.\1.final_proj.'),
        (r'^match_assignment_layers\.(\d+)\.matchability\.', r'log_assignment.\1.matchability.'),
        (r'^token_confidence\.(\d+)\.token\.', r'token_confidence.\1.token.0.'),
    ]
    mlp = {'fc1.': '0.', 'layer_norm.': '1.', 'fc2.': '3.'}
    for key, value in sd.items():
        new = key
        for pattern, repl in renames:
            new = re.sub(pattern, repl, new)
        if '.ffn.' in new:
            head, _, tail = new.partition('.ffn.')
            for old, idx in mlp.items():
                if tail.startswith(old):
                    new = f'{head}.ffn.{idx}{tail[len(old):]}'
        out[new] = value
    layers = sorted({int(m.group(1)) for k in sd
                     if (m := re.match(r'^transformer_layers\.(\d+)\.', k))})
    for i in layers:
        prefix = f'transformer_layers.{i}.'
        for suffix in ('weight', 'bias'):
            q, k, v = (sd.get(f'{prefix}self_attention.{p}_proj.{suffix}') for p in 'qkv')
            if q is not None and k is not None and v is not None:
                # ours: rows ordered (head, channel, q|k|v); theirs: three (head, channel) blocks.
                stacked = torch.stack([t.unflatten(0, (num_heads, -1)) for t in (q, k, v)], 2)
                out[f'transformers.{i}.self_attn.Wqkv.{suffix}'] = stacked.flatten(0, 2)
            for p in 'qkv':
                out.pop(f'{prefix}self_attention.{p}_proj.{suffix}', None)
            q, k = (sd.get(f'{prefix}cross_attention.{p}_proj.{suffix}') for p in 'qk')
            if q is not None and k is not None:
                if not torch.equal(q, k):
                    raise CheckpointError(
                        f'{prefix}cross_attention: q_proj and k_proj differ, but LightGlue shares '
                        'one projection for cross-attention queries and keys')
                out[f'transformers.{i}.cross_attn.to_qk.{suffix}'] = q
            for p in 'qk':
                out.pop(f'{prefix}cross_attention.{p}_proj.{suffix}', None)
    return out


def _hugging_face_heads(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Head count of a transformers checkpoint: token size / head size (from the encoding)."""
    sd = {k.removeprefix('lightglue.'): v for k, v in state_dict.items()}
    try:
        dim = sd['transformer_layers.0.self_attention.o_proj.weight'].shape[0]
        head_dim = 2 * sd['positional_encoder.projector.weight'].shape[0]
    except KeyError as err:
        raise CheckpointError(f'LightGlue checkpoint lacks {err}') from err
    return dim // head_dim


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], num_heads: int | None = None
                       ) -> StateDict:
    """Bring any released LightGlue key layout to this module's layout.

    num_heads: needed only to split transformers' separate q/k/v projections; None = read it
    from the checkpoint.
    """
    if any(k.startswith(('transformer_layers.', 'lightglue.transformer_layers.'))
           for k in state_dict):
        heads = num_heads if num_heads is not None else _hugging_face_heads(state_dict)
        return _from_hugging_face(state_dict, heads)
    # Extractor + matcher bundles (xfeat-lighterglue.pt: ``extractor.*`` and ``matcher.*``)
    # hold the matcher under 'matcher.'; early releases carry an unused training scalar
    # `log_assignment.N.r` that no inference code reads.
    if any(k.startswith('matcher.') for k in state_dict):
        state_dict = {k.removeprefix('matcher.'): v for k, v in state_dict.items()
                      if k.startswith('matcher.')}
    sd = {k: v for k, v in state_dict.items() if not re.fullmatch(r'log_assignment\.\d+\.r', k)}
    return _rename_layer_keys(sd)


def architecture_of(state_dict: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """input_dim, descriptor_dim, n_layers and num_heads of a state dict in our layout; sizes
    whose keys are missing are left out (the strict load names those keys)."""
    out: dict[str, int] = {}
    out_proj = state_dict.get('transformers.0.self_attn.out_proj.weight')
    if out_proj is None:
        return out
    out['descriptor_dim'] = dim = int(out_proj.shape[0])
    projection = state_dict.get('input_proj.weight')
    out['input_dim'] = int(projection.shape[1]) if projection is not None else dim
    out['n_layers'] = 1 + max(int(m.group(1)) for k in state_dict
                              if (m := re.match(r'transformers\.(\d+)\.', k)))
    encoding = state_dict.get('posenc.Wr.weight')
    if encoding is not None:
        out['num_heads'] = dim // (2 * int(encoding.shape[0]))
    return out

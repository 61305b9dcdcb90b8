"""Safe loading of checkpoint files into plain state dicts, with errors that name the bad keys."""
from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from lightglue_ros.errors import CheckpointError

StateDict = dict[str, torch.Tensor]


def load_state_dict_file(path: str | Path, *, nested_key: str | None = None) -> StateDict:
    """Load a checkpoint with ``weights_only=True`` and return its tensors by name.

    nested_key: some releases wrap the weights (DISK's ``{'extractor': ...}``,
    Lightning's ``{'state_dict': ...}``); name the wrapper key to unwrap it.
    Raises CheckpointError when the file is missing, unreadable, carries code (anything
    a weights-only unpickler refuses) or is not a mapping of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint not found: {path}')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f'refusing {path}: it is not a plain tensor checkpoint (weights-only load failed: '
            f'{str(err).splitlines()[0]})') from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise CheckpointError(f'cannot read checkpoint {path}: {err}') from err
    if nested_key is not None and isinstance(obj, Mapping) and nested_key in obj:
        obj = obj[nested_key]
    return as_state_dict(obj, source=str(path))


def as_state_dict(obj: object, *, source: str = 'checkpoint') -> StateDict:
    """Check that ``obj`` maps string names to tensors and return it as a dict."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f'{source} holds a {type(obj).__name__}, not a state dict')
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f'{source} is not a plain state dict of tensors; '
                              f'non-tensor entries: {", ".join(bad[:8])}')
    return dict(obj)


def load_into(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *,
              source: str = 'checkpoint', ignore: tuple[str, ...] = ()) -> None:
    """Load ``state_dict`` strictly; on mismatch raise CheckpointError naming the keys.

    ignore: key prefixes/suffixes that may be present in or absent from the file (buffers
    that the model recomputes).
    """
    expected = module.state_dict()

    def ignored(key: str) -> bool:
        return any(key.startswith(p) or key.endswith(p) for p in ignore)

    missing = sorted(k for k in expected if k not in state_dict and not ignored(k))
    unexpected = sorted(k for k in state_dict if k not in expected and not ignored(k))
    misshaped = sorted(
        f'{k} (file {tuple(v.shape)}, model {tuple(expected[k].shape)})'
        for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape)
    problems = []
    if missing:
        problems.append(f'missing keys: {", ".join(missing[:10])}'
                        + (f' (+{len(missing) - 10} more)' if len(missing) > 10 else ''))
    if unexpected:
        problems.append(f'unexpected keys: {", ".join(unexpected[:10])}'
                        + (f' (+{len(unexpected) - 10} more)' if len(unexpected) > 10 else ''))
    if misshaped:
        problems.append(f'mis-shaped keys: {", ".join(misshaped[:10])}')
    if problems:
        raise CheckpointError(f'{source} does not fit {type(module).__name__}: '
                              + '; '.join(problems))
    kept = {k: v for k, v in state_dict.items() if k in expected}
    module.load_state_dict(kept, strict=False)

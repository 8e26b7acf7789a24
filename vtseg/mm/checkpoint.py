"""Let mmengine checkpoints load under torch's safe (``weights_only``) unpickler.

torch >= 2.6 loads with ``weights_only=True`` by default. A checkpoint that
mmengine 0.10.7 saves while training also holds its message hub: a
``HistoryBuffer`` of numpy arrays and scalars, whose table of statistics
methods pickles as ``getattr(HistoryBuffer, 'mean')``. The safe unpickler
refuses all of these, so mmseg's ``tools/test.py`` and ``--resume`` fail with
``UnpicklingError: Weights only load failed``.

Rather than turning the safety off (``weights_only=False`` or a patched
``torch.load``), we allowlist exactly those numpy data types and
``HistoryBuffer``, and answer the checkpoint's ``getattr`` with a restricted
one that only looks up ``HistoryBuffer``'s statistics methods. Pickled code
(``os.system``, arbitrary classes, any other ``getattr``) is still refused,
so a checkpoint from an unknown source stays safe to open.

:func:`publish_checkpoint` turns a training checkpoint into a release file the
way OpenMMLab publishes models: weights and meta only, and the first 8 hex
digits of the file's SHA-256 in its name (``NAME-1a2b3c4d.pth``), the suffix
``torch.hub`` checks downloads against.
"""
import hashlib
import io
import os.path as osp
from typing import Any, List, Sequence

import numpy as np
import torch

__all__ = ['mmengine_safe_globals', 'allow_mmengine_checkpoints', 'history_buffer_getattr',
           'PUBLISHED_KEYS', 'publish_checkpoint']

# What a published checkpoint keeps: the weights, and mmengine's meta (config text,
# dataset classes and palette, iteration, seed). Optimizer, scheduler and message-hub
# state only matter for resuming.
PUBLISHED_KEYS = ('meta', 'state_dict')


def history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` limited to ``HistoryBuffer``'s registered statistics methods."""
    from mmengine.logging import HistoryBuffer
    # The four built-in methods are registered lazily (in __init__), custom ones eagerly.
    if obj is HistoryBuffer and name in {'min', 'max', 'current', 'mean',
                                         *HistoryBuffer._statistics_methods}:
        return getattr(obj, name)
    raise ValueError(f'refusing getattr({obj!r}, {name!r}) while loading a checkpoint: only '
                     'mmengine HistoryBuffer statistics methods are allowed')


def mmengine_safe_globals() -> List[object]:
    """What an mmengine 0.10.7 training checkpoint needs beyond tensors."""
    from mmengine.logging import HistoryBuffer
    multiarray = np.core.multiarray  # numpy 1.x; vtseg pins numpy < 2
    # An array's dtype is rebuilt through its concrete class (numpy.dtypes.Float64DType, ...).
    dtype_classes = [type(np.dtype(c)) for c in np.sctypeDict.values() if np.dtype(c).kind in 'biufc']
    return [
        HistoryBuffer, multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype,
        *dict.fromkeys(dtype_classes), (history_buffer_getattr, 'builtins.getattr'),
    ]


def allow_mmengine_checkpoints() -> None:
    """Allowlist :func:`mmengine_safe_globals` for ``torch.load(weights_only=True)``.

    Idempotent; a no-op on torch versions without ``add_safe_globals``.
    """
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(mmengine_safe_globals())


def publish_checkpoint(in_file: str, out_file: str, keys: Sequence[str] = PUBLISHED_KEYS) -> str:
    """Write the release copy of a training checkpoint as ``<out_file stem>-<sha256[:8]>.pth``.

    The checkpoint is read with torch's safe loader (``weights_only=True``), reduced
    to ``keys`` (by default weights and meta: no optimizer, scheduler or message-hub
    state), serialised once, and written under a name that ends in the first 8 hex
    digits of the SHA-256 of exactly those bytes; the write is atomic. The same
    input gives the same bytes, hence the same name.

    Args:
        in_file: A checkpoint written by mmengine (``tools/train.py``'s ``iter_N.pth``).
        out_file: The published name before the hash, ending in ``.pth``
            (e.g. ``work_dirs/demo/vt-fpn_r18_1xb8-1.5k_vtshapes-96x96_20261130.pth``).
        keys: Top-level entries to keep; ``state_dict`` is required.

    Returns:
        The path written, e.g. ``...vtshapes-96x96_20261130-1a2b3c4d.pth``.

    Raises:
        FileNotFoundError: ``in_file`` does not exist.
        ValueError: ``out_file`` does not end in ``.pth``, or ``in_file`` is not a
            checkpoint with a ``state_dict`` (the message is one line).
    """
    from vtseg.apis.io import atomic_write_bytes  # lazy: vtseg.apis loads mmseg.apis and imports vtseg.mm
    if not out_file.endswith('.pth'):
        raise ValueError(f'the published file name must end in .pth, got {out_file}')
    if not osp.isfile(in_file):
        raise FileNotFoundError(f'checkpoint not found: {in_file}')
    try:
        checkpoint = torch.load(in_file, map_location='cpu', weights_only=True)
    except Exception as err:  # any reason the file is unreadable is the file's problem
        reason = ' '.join(str(err).split())[:300]
        raise ValueError(f'cannot read {in_file} as a checkpoint ({type(err).__name__}: {reason})') from err
    if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint:
        raise ValueError(f'{in_file} has no state_dict: pass a checkpoint that tools/train.py wrote')
    buffer = io.BytesIO()
    torch.save({key: checkpoint[key] for key in keys if key in checkpoint}, buffer)
    data = buffer.getvalue()
    published = f'{out_file[:-len(".pth")]}-{hashlib.sha256(data).hexdigest()[:8]}.pth'
    atomic_write_bytes(published, data)
    return published

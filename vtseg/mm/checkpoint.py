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
"""
from typing import Any, List

import numpy as np
import torch

__all__ = ['mmengine_safe_globals', 'allow_mmengine_checkpoints', 'history_buffer_getattr']


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

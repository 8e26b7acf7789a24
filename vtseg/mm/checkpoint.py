"""Let mmengine checkpoints load under torch's safe (``weights_only``) unpickler.

torch >= 2.6 loads with ``weights_only=True`` by default. A checkpoint that
mmengine 0.10.7 saves while training also holds its message hub: a
``HistoryBuffer`` of numpy arrays and numpy scalars. Those types are refused
by default, so ``tools/test.py`` and ``--resume`` fail with
``UnpicklingError: Weights only load failed``.

Rather than turning the safety off for every file (``weights_only=False`` or
a patched ``torch.load``), we add exactly those data types to torch's
allowlist. Pickled code (``os.system``, arbitrary classes, ``getattr``) is
still refused, so a checkpoint from an unknown source stays safe to open.
"""
from typing import List

import numpy as np
import torch

__all__ = ['mmengine_safe_globals', 'allow_mmengine_checkpoints']


def mmengine_safe_globals() -> List[object]:
    """The non-tensor types an mmengine 0.10.7 training checkpoint contains."""
    from mmengine.logging import HistoryBuffer
    multiarray = np.core.multiarray  # numpy 1.x; vtseg pins numpy < 2
    globals_ = [HistoryBuffer, multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype]
    # numpy dtypes pickle as their concrete class (e.g. numpy.dtypes.Float64DType).
    globals_ += [type(np.dtype(t)) for t in
                 (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                  np.uint64, np.float16, np.float32, np.float64)]
    return globals_


def allow_mmengine_checkpoints() -> None:
    """Allowlist :func:`mmengine_safe_globals` for ``torch.load(weights_only=True)``.

    Idempotent; a no-op on torch versions without ``add_safe_globals``.
    """
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(mmengine_safe_globals())

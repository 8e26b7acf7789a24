"""Let mmengine checkpoints load under torch's safe (``weights_only``) unpickler.

torch >= 2.6 loads with ``weights_only=True`` by default. A checkpoint that
mmengine 0.10.7 saves while training also holds its message hub: a
``HistoryBuffer`` of numpy arrays and scalars, whose table of statistics
methods pickles as ``getattr(HistoryBuffer, 'mean')``. The safe unpickler
refuses all of these, so mmseg's ``tools/test.py`` and ``--resume`` fail with
``UnpicklingError: Weights only load failed``.

Rather than turning the safety off (``weights_only=False`` or a patched
``torch.load``), :func:`allow_mmengine_checkpoints` allowlists exactly those numpy
data types and ``HistoryBuffer``, and answers the checkpoint's ``getattr`` with a
restricted one that only looks up ``HistoryBuffer``'s statistics methods. Pickled
code (``os.system``, arbitrary classes, any other ``getattr``) is still refused, so
a checkpoint from an unknown source stays safe to open. It changes torch's global
allowlist, so it is an explicit call: vtseg's tools make it before they read a
checkpoint, and ``import vtseg`` makes it for mmseg's own tools (see :mod:`vtseg`).

:func:`load_checkpoint_file` is the one place a checkpoint file is read: always with
``weights_only=True``, whatever torch's default, and with one line for any reason it fails.

:func:`publish_checkpoint` turns a training checkpoint into a release file the
way OpenMMLab publishes models: weights and meta only, and the first 8 hex
digits of the file's SHA-256 in its name (``NAME-1a2b3c4d.pth``), the suffix
``torch.hub`` checks downloads against.

:func:`explain_unreachable_weights` turns the network error of a config whose
pretrained weights (``open-mmlab://resnet50_v1c``, ``torchvision://resnet50``)
are neither cached nor downloadable (offline, a cluster node without internet)
into one line: which weights, where they are cached, how to fetch them
elsewhere, and the override that trains from scratch.
"""
import hashlib
import io
import os.path as osp
import socket
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Sequence, Tuple
from urllib.error import URLError

import numpy as np
import torch

from vtseg.utils.errors import checkpoint_error_reason, one_line
from vtseg.utils.files import atomic_write_bytes

__all__ = ['mmengine_safe_globals', 'allow_mmengine_checkpoints', 'history_buffer_getattr',
           'load_checkpoint_file', 'PUBLISHED_KEYS', 'publish_checkpoint', 'PretrainedWeightsUnavailable',
           'remote_weights', 'weights_url', 'weights_cache_dir', 'explain_unreachable_weights']

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

    Changes torch's process-wide allowlist (``torch.serialization.add_safe_globals``);
    idempotent; a no-op on torch versions without ``add_safe_globals``.
    """
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(mmengine_safe_globals())


def load_checkpoint_file(path: str) -> Any:
    """A local checkpoint file, loaded on the CPU by torch's ``weights_only`` unpickler.

    ``weights_only=True`` is passed, not left to torch's default (``False`` before torch 2.6).
    A training checkpoint (with mmengine's message-hub state) needs torch >= 2.4, whose
    allowlist :func:`allow_mmengine_checkpoints` fills; a published one (weights and meta)
    loads on any torch.

    Raises:
        ValueError: The file cannot be read, or holds pickled code or objects other than
            weights (never executed). One line, with torch's reason but not its advice to
            load the file unsafely.
    """
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # any reason the file is unreadable is the file's problem
        hint = ''
        if 'Weights only load failed' in str(err) and not hasattr(torch.serialization, 'add_safe_globals'):
            # no allowlist before torch 2.4: a training checkpoint's message-hub state is refused too
            hint = (f'; torch {torch.__version__} cannot allow the training state mmengine saves in a '
                    'checkpoint (torch >= 2.4 can): upgrade torch, or publish the checkpoint (weights '
                    'and meta only) with tools/publish_model.py where torch >= 2.4')
        raise ValueError(f'cannot read checkpoint {path}: {checkpoint_error_reason(err, 300)}{hint}') from err


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
    if not out_file.endswith('.pth'):
        raise ValueError(f'the published file name must end in .pth, got {out_file}')
    if not osp.isfile(in_file):
        raise FileNotFoundError(f'checkpoint not found: {in_file}')
    checkpoint = load_checkpoint_file(in_file)
    if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint:
        raise ValueError(f'{in_file} has no state_dict: pass a checkpoint that tools/train.py wrote')
    buffer = io.BytesIO()
    torch.save({key: checkpoint[key] for key in keys if key in checkpoint}, buffer)
    data = buffer.getvalue()
    published = f'{out_file[:-len(".pth")]}-{hashlib.sha256(data).hexdigest()[:8]}.pth'
    atomic_write_bytes(published, data)
    return published


class PretrainedWeightsUnavailable(RuntimeError):
    """Weights a config names could not be downloaded; the message is one line."""


def remote_weights(cfg: Any, key: str = 'model') -> List[Tuple[str, str]]:
    """Every downloadable weights reference under ``cfg[key]``, as ``(config key, reference)``.

    References are ``pretrained='open-mmlab://...'`` (mmseg's ResNetV1c configs) and
    ``init_cfg=dict(type='Pretrained', checkpoint='torchvision://...')`` (VT-ResNet);
    the key is the one to set to ``None`` to train from scratch, e.g.
    ``('model.pretrained', 'open-mmlab://resnet50_v1c')`` or
    ``('model.backbone.init_cfg', 'torchvision://resnet50')``.
    """
    found: List[Tuple[str, str]] = []

    def is_remote(value: Any) -> bool:
        return isinstance(value, str) and '://' in value

    def visit(node: Any, path: str) -> None:
        if isinstance(node, dict) or hasattr(node, 'items'):
            if is_remote(node.get('pretrained')):
                found.append((f'{path}.pretrained', node['pretrained']))
            init_cfgs = node.get('init_cfg')
            for init_cfg in init_cfgs if isinstance(init_cfgs, (list, tuple)) else [init_cfgs]:
                if (hasattr(init_cfg, 'get') and init_cfg.get('type') == 'Pretrained'
                        and is_remote(init_cfg.get('checkpoint'))):
                    found.append((f'{path}.init_cfg', init_cfg['checkpoint']))
            for name, value in node.items():
                if name not in ('pretrained', 'init_cfg'):
                    visit(value, f'{path}.{name}')
        elif isinstance(node, (list, tuple)):
            for index, value in enumerate(node):
                visit(value, f'{path}.{index}')

    visit(cfg.get(key), key)
    return found


def weights_url(reference: str) -> Optional[str]:
    """The download URL of ``open-mmlab://``/``torchvision://``/``mmcls://``/``http(s)://``
    weights, as mmengine's checkpoint loaders resolve it (``None`` if unknown)."""
    from mmengine.runner import checkpoint as mm_checkpoint
    if reference.startswith(('http://', 'https://')):
        return reference
    scheme, _, name = reference.partition('://')
    if scheme in ('open-mmlab', 'openmmlab'):
        name = mm_checkpoint.get_deprecated_model_names().get(name, name)
        url = mm_checkpoint.get_external_models().get(name)
    elif scheme in ('torchvision', 'modelzoo'):
        url = mm_checkpoint.get_torchvision_models().get(name)
    elif scheme == 'mmcls':
        url = mm_checkpoint.get_mmcls_models().get(name)
    else:
        url = None
    return url if url and url.startswith(('http://', 'https://')) else None


def weights_cache_dir() -> str:
    """Where downloaded weights are kept: ``torch.hub.get_dir()/checkpoints``
    (``~/.cache/torch/hub/checkpoints`` unless ``TORCH_HOME`` says otherwise)."""
    return osp.join(torch.hub.get_dir(), 'checkpoints')


# What a failed download raises: no route or name resolution (URLError wraps
# socket.gaierror / ConnectionRefusedError), a reset or timed-out connection.
_NETWORK_ERRORS = (URLError, ConnectionError, TimeoutError, socket.gaierror, socket.timeout)


@contextmanager
def explain_unreachable_weights(cfg: Any) -> Iterator[None]:
    """Turn a failed download of the weights ``cfg`` names into one line.

    Inside the block (building and running the runner), a network error raised
    while a remote reference is not in :func:`weights_cache_dir` becomes
    :class:`PretrainedWeightsUnavailable`, e.g.::

        cannot download the pretrained weights open-mmlab://resnet50_v1c
        (https://.../resnet50_v1c-2cccc1ad.pth: <urlopen error ...>) into
        ~/.cache/torch/hub/checkpoints; on a machine with internet run python -c
        "import torch.hub; torch.hub.load_state_dict_from_url('https://...')" and copy
        ~/.cache/torch/hub/checkpoints/resnet50_v1c-2cccc1ad.pth to the same folder here,
        or train from scratch with --cfg-options model.pretrained=None

    Any other error, and a network error with every reference cached, passes unchanged.

    Args:
        cfg: The run config (after ``--cfg-options``).
    """
    try:
        yield
    except _NETWORK_ERRORS as err:
        references = remote_weights(cfg)
        cache = weights_cache_dir()
        missing = []
        for key, reference in references:
            url = weights_url(reference)
            if url is None or not osp.isfile(osp.join(cache, osp.basename(url))):
                missing.append((key, reference, url))
        if not missing:
            raise
        key, reference, url = missing[0]
        reason = one_line(getattr(err, 'reason', err), 120)
        where = f'{url}: {reason}' if url else reason
        file_name = osp.basename(url) if url else 'the file'
        fetch = (f'on a machine with internet run python -c "import torch.hub; '
                 f"torch.hub.load_state_dict_from_url('{url}')\" and copy "
                 f'~/.cache/torch/hub/checkpoints/{file_name} into that folder here' if url else
                 'download it on a machine with internet and pass a local path')
        scratch = (f', or train from scratch with --cfg-options {key}=None' if key else '')
        more = f' ({len(missing) - 1} more weights missing too)' if len(missing) > 1 else ''
        what = 'pretrained weights' if key else 'checkpoint'
        raise PretrainedWeightsUnavailable(
            f'cannot download the {what} {reference} ({where}) into {cache}{more}; '
            f'{fetch}{scratch}') from err

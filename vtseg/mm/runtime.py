"""Make a distributed mmengine run work on machines without CUDA.

mmseg's configs are written for GPUs: ``env_cfg.dist_cfg.backend='nccl'``,
``SyncBN`` norm layers; mmengine's ``init_dist`` calls ``torch.cuda.set_device``
for the pytorch launcher and wraps the model in DDP with ``device_ids=[LOCAL_RANK]``.
On a CPU-only machine all of these fail once the run is distributed
(``--launcher pytorch``): NCCL and ``set_device`` need CUDA, torch's
``SyncBatchNorm`` refuses CPU tensors, and DDP refuses ``device_ids`` for a
CPU module. A single, non-distributed run is already fine (mmengine reverts
SyncBN to BN there itself), so :func:`prepare_cpu_distributed` only acts on a
run that will be distributed without CUDA, and says what it changed.
"""
import datetime
import logging
from typing import Any, List

import torch.distributed as torch_dist

import torch
from mmengine.config import Config
from mmengine.logging import print_log

__all__ = ['prepare_cpu_distributed', 'leave_process_group']

# Norm layers that synchronise statistics across processes through CUDA collectives.
_SYNC_NORMS = ('SyncBN', 'MMSyncBN')


def _revert_sync_norms(node: Any) -> int:
    """Replace ``type='SyncBN'`` (and mmcv's ``MMSyncBN``) by ``'BN'`` in place; return how many."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') in _SYNC_NORMS:
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += _revert_sync_norms(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _revert_sync_norms(value)
    return count


def prepare_cpu_distributed(cfg: Config, launcher: str) -> List[str]:
    """Prepare a distributed run on CPU (``cfg`` changed in place); a no-op otherwise.

    When ``launcher`` is not ``'none'`` and CUDA is unavailable:

    - ``env_cfg.dist_cfg.backend`` becomes ``'gloo'`` (unless it already names a
      CPU-capable backend, ``'gloo'`` or ``'mpi'``);
    - ``SyncBN``/``MMSyncBN`` layers in ``cfg.model`` become ``BN``: each process
      then normalises with its own batch statistics (gradients are still averaged
      by DDP), and ``cfg.sync_bn`` (convert BN to SyncBN after building) is dropped;
    - the model wrapper (mmengine's default ``MMDistributedDataParallel``) gets
      ``device_ids=None``, as DDP requires for CPU modules;
    - with the ``pytorch`` launcher (torchrun's environment variables), the
      process group is initialised here, so that mmengine's runner, which skips
      ``init_dist`` when a group exists, does not call ``torch.cuda.set_device``.

    The backend and SyncBN changes are logged as warnings.

    Args:
        cfg: The full run config (after ``--cfg-options`` are merged).
        launcher: The ``--launcher`` of the tool (``'none'``, ``'pytorch'``, ...).

    Returns:
        One message per change made (empty when nothing changed).
    """
    if launcher == 'none' or torch.cuda.is_available():
        return []
    changes = []
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    backend = dist_cfg.get('backend', 'nccl')
    if backend not in ('gloo', 'mpi'):
        dist_cfg['backend'] = 'gloo'
        changes.append(f'CUDA is not available: using the gloo backend instead of {backend} '
                       '(env_cfg.dist_cfg.backend)')
    num_reverted = _revert_sync_norms(cfg.get('model'))
    if cfg.pop('sync_bn', None) is not None:
        num_reverted += 1
    if num_reverted:
        changes.append('CUDA is not available and torch has no CPU SyncBatchNorm: SyncBN '
                       'layers run as BN (batch statistics per process, not synchronised)')
    wrapper_cfg = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    if (wrapper_cfg.get('type', 'MMDistributedDataParallel') == 'MMDistributedDataParallel'
            and wrapper_cfg.get('device_ids', 'unset') is not None):
        # mmengine passes device_ids=[LOCAL_RANK] as a default argument; an explicit
        # None wins over it, and DDP accepts only None for a module on the CPU.
        wrapper_cfg['device_ids'] = None
        cfg.model_wrapper_cfg = wrapper_cfg
    if launcher == 'pytorch' and not torch_dist.is_initialized():
        # What mmengine's init_dist does, minus the CUDA device selection.
        kwargs = {k: v for k, v in dist_cfg.items() if k not in ('backend', 'init_backend')}
        if kwargs.get('timeout') is not None:
            kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
        torch_dist.init_process_group(backend=dist_cfg['backend'], **kwargs)
    # Logged once the group exists, so that only rank 0 prints (MMLogger checks the rank).
    for message in changes:
        print_log(message, logger='current', level=logging.WARNING)
    return changes


def leave_process_group() -> None:
    """Destroy the default process group, if one is up, before the tool exits: a gloo
    group torn down by the interpreter's exit can abort a rank with "terminate called
    without an active exception"."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()

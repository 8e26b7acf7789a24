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

:class:`WorkDirLock` keeps two trainings out of one work dir: the first holds an
exclusive ``flock`` on ``WORK_DIR/.train.lock``, the second is refused with one
line naming the first. The kernel drops the lock when its process ends, however
it ends (``kill -9`` included), so a lock is never stale.

:func:`finish_distributed_process` ends a rank that finished its work with its exit
status before the interpreter's finalisation, where gloo's C++ threads could
abort it (see there).
"""
import datetime
import gc
import logging
import os
import os.path as osp
import socket
import sys
from typing import Any, List, Optional

import torch.distributed as torch_dist

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

from vtseg.utils.dependency_warnings import filter_known_dependency_logs

__all__ = ['build_runner', 'prepare_cpu_distributed', 'leave_process_group', 'finish_distributed_process',
           'launcher_rank', 'WorkDirBusyError', 'WorkDirLock']


def build_runner(cfg: Config) -> Runner:
    """The runner mmseg's tools build for ``cfg``: the ``runner_type`` the config names, else
    mmengine's ``Runner``, its logger rid of the dependencies' known harmless lines (unless
    ``--verbose`` turned that off, see :func:`vtseg.utils.dependency_warnings.filter_known_dependency_logs`).
    """
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    filter_known_dependency_logs(runner.logger)
    return runner


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


# Set by leave_process_group: this process ran distributed, finish_distributed_process acts.
_left_process_group = False


def leave_process_group() -> None:
    """Destroy the default process group, if one is up, once the tool's work is done
    (see :func:`finish_distributed_process` for the rest of a clean exit)."""
    global _left_process_group
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
        _left_process_group = True


def finish_distributed_process(status: int = 0) -> None:
    """End this process now with exit ``status`` if it left a process group; a no-op otherwise.

    Call it after the tool's ``main()`` returned (its runner is unreferenced by then), with
    the status ``main()`` decided (``0``: done; ``tools/infer.py`` also ends with 1 when some
    images failed, 130 when interrupted). ``destroy_process_group`` only unregisters the group:
    DDP's reducer and gloo's pending work objects still hold it, and its worker threads still
    run. Left to the interpreter's exit, the group is freed during finalisation, when a gloo
    thread that needs the GIL (to drop a tensor's Python reference) is stopped by the dying
    interpreter inside a ``noexcept`` frame: ``terminate called without an active exception``,
    SIGABRT, exit status 1 after a run that succeeded (about 1 run in 5 with 2 CPU processes),
    or a status the caller did not choose. Here the run's objects are collected while the
    interpreter is whole (DataLoader workers shut down, the group's threads joined), logs and
    streams are flushed, and the process ends with ``os._exit(status)``, skipping the
    finalisation. Exceptions never get here: one raised by ``main()`` still ends the process
    with a traceback and status 1.

    Args:
        status: The exit status (0 to 255).
    """
    if not _left_process_group:
        return
    gc.collect()
    logging.shutdown()  # flush and close the log files of mmengine's MMLogger
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more can be said
            pass
    os._exit(status)


# Where each launcher puts a process's global rank before the process group exists.
_RANK_VARIABLES = {'pytorch': 'RANK', 'slurm': 'SLURM_PROCID', 'mpi': 'OMPI_COMM_WORLD_RANK'}


def launcher_rank(launcher: str) -> int:
    """This process's global rank as its launcher announces it (0 without a launcher)."""
    return int(os.environ.get(_RANK_VARIABLES.get(launcher, ''), 0) or 0)


class WorkDirBusyError(RuntimeError):
    """Another process holds the work dir; the message is one line naming it."""


class WorkDirLock:
    """An exclusive lock on a work dir for as long as a training runs in it.

    ``WORK_DIR/.train.lock`` is opened and locked with ``flock(LOCK_EX | LOCK_NB)``; the
    holder writes its pid, host and start time into it for the message the next
    process shows. The file stays; the lock goes with the process (on exit, crash or
    ``kill -9``), so no stale lock ever has to be removed by hand.

    Args:
        work_dir: The folder (created if missing).
        purpose: What holds it, for messages (``'training'``).

    Example:
        >>> with WorkDirLock('work_dirs/run'):
        ...     runner.train()
    """

    FILE_NAME = '.train.lock'

    def __init__(self, work_dir: str, purpose: str = 'training') -> None:
        self.work_dir = work_dir
        self.purpose = purpose
        self.path = osp.join(work_dir, self.FILE_NAME)
        self._fd: Optional[int] = None

    def acquire(self) -> 'WorkDirLock':
        """Take the lock.

        Raises:
            WorkDirBusyError: Another process holds it.
            OSError: The work dir or lock file cannot be created.
        """
        import fcntl  # POSIX only, like the tools' other process handling
        os.makedirs(self.work_dir, exist_ok=True)
        for _ in range(3):  # the file may be replaced between open and lock: then try again
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 512).decode('utf-8', 'replace').strip() or 'another process'
                os.close(fd)
                raise WorkDirBusyError(
                    f'work dir {self.work_dir} is in use by another {self.purpose} ({holder[:200]}); '
                    'wait for it to end or pass another --work-dir') from None
            except BaseException:
                os.close(fd)
                raise
            try:
                same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(fd)
        else:
            raise WorkDirBusyError(f'work dir {self.work_dir}: its lock file {self.path} keeps '
                                   'being replaced; is another tool removing it?')
        started = datetime.datetime.now().isoformat(timespec='seconds')
        os.ftruncate(fd, 0)
        os.write(fd, f'pid {os.getpid()} on {socket.gethostname()}, started {started}: '
                     f'{" ".join(sys.argv)[:200]}\n'.encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays, empty of meaning once unlocked)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> 'WorkDirLock':
        return self.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

"""Train a segmentor: mmseg's ``tools/train.py`` with vtseg's modules registered.

Same arguments as mmseg 1.2.2's tool. On top of it:

- ``import vtseg`` registers VTResNet, VTFPN and VTShapesDataset (configs need no
  ``custom_imports``) and lets ``--resume`` load mmengine checkpoints under
  torch's ``weights_only=True`` loader;
- a missing config file, a config that does not load, bad ``--cfg-options``, or
  ``--amp`` without a GPU, is one error line (exit status 2), not a traceback;
- a second training in a ``--work-dir`` that a running one uses is refused with
  one line (``WORK_DIR/.train.lock``, see :class:`vtseg.mm.runtime.WorkDirLock`;
  released when the first ends, however it ends), instead of both writing into it;
- ``--launcher pytorch`` works without CUDA (gloo backend, SyncBN run as BN,
  see :func:`vtseg.mm.runtime.prepare_cpu_distributed`), and a rank that finished
  exits 0 (see :func:`vtseg.mm.runtime.finish_distributed_process`);
- pretrained weights that cannot be downloaded (offline) are one error line naming
  them, their cache folder and the override that trains from scratch
  (see :func:`vtseg.mm.checkpoint.explain_unreachable_weights`);
- OpenMP workers sleep when idle (``OMP_WAIT_POLICY=PASSIVE`` unless set): spinning
  ones slow training 10-25x on a machine where anything else runs;
- the dependencies' known harmless warnings and log lines are hidden
  (:mod:`vtseg.utils.dependency_warnings`); ``--verbose`` shows every warning and logs at
  DEBUG, ``--log-level {DEBUG,INFO,WARNING,ERROR}`` sets the level of mmengine's logger
  (``WARNING``: no config dump, no per-iteration lines).

Examples::

    python tools/train.py configs/vtshapes/vt-fpn_r18_1xb8-1.5k_vtshapes-96x96.py
    bash tools/dist_train.sh CONFIG 2 --work-dir work_dirs/run --resume
"""
import os

# Read once, when torch loads OpenMP: set before anything imports torch (README "Train and test").
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import vtseg  # noqa: F401,E402 isort: skip  (first: hides known dependency warnings, registers modules)

import argparse  # noqa: E402
import logging  # noqa: E402
import os.path as osp  # noqa: E402

from mmengine.device import is_cuda_available, is_mlu_available, is_npu_available  # noqa: E402
from mmengine.logging import print_log  # noqa: E402

from vtseg.apis import InferenceSetupError, load_config  # noqa: E402
from vtseg.mm.checkpoint import PretrainedWeightsUnavailable, explain_unreachable_weights  # noqa: E402
from vtseg.mm.cli import (add_cfg_options, add_launcher, add_verbosity, apply_runner_args,  # noqa: E402
                          apply_verbosity, export_local_rank)
from vtseg.mm.runtime import (WorkDirBusyError, WorkDirLock, build_runner, finish_distributed_process,  # noqa: E402
                              launcher_rank, leave_process_group, prepare_cpu_distributed)
from vtseg.utils.errors import exit_with_error  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        action='store_true',
        default=False,
        help='resume from the latest checkpoint in the work_dir automatically')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training')
    add_cfg_options(parser)
    add_launcher(parser)
    add_verbosity(parser)
    args = parser.parse_args()
    export_local_rank(args)

    return args


def main() -> None:
    args = parse_args()
    vtseg.mm.allow_mmengine_checkpoints()  # training checkpoints load under torch's weights_only=True
    log_level = apply_verbosity(args)  # first: mmengine warns while it reads a config
    problem = None
    if not osp.isfile(args.config):
        problem = (f'config file not found: {args.config} '
                   '(pass the path of a config .py, e.g. configs/vtshapes/...)')
    elif args.amp and not (is_cuda_available() or is_npu_available() or is_mlu_available()):
        # mmengine's AmpOptimWrapper asserts the same, with a traceback.
        problem = '--amp needs a CUDA (or NPU/MLU) device; drop it to train on the CPU'
    if problem:
        exit_with_error(__file__, problem)

    # load config (one line for a config that does not load or a bad --cfg-options)
    try:
        cfg = load_config(args.config, args.cfg_options)
    except InferenceSetupError as err:
        exit_with_error(__file__, str(err))
    apply_runner_args(cfg, args, log_level)  # launcher, work dir (CLI > config > file name), log level

    # One training per work dir: rank 0 holds the lock until this process ends.
    work_dir_lock = None
    if launcher_rank(args.launcher) == 0:
        try:
            work_dir_lock = WorkDirLock(cfg.work_dir).acquire()
        except (WorkDirBusyError, OSError) as err:
            exit_with_error(__file__, str(err) if isinstance(err, WorkDirBusyError) else
                            f'cannot use work dir {cfg.work_dir} ({err.strerror}): pass another --work-dir')
    prepare_cpu_distributed(cfg, args.launcher)

    # enable automatic-mixed-precision training
    if args.amp is True:
        optim_wrapper = cfg.optim_wrapper.type
        if optim_wrapper == 'AmpOptimWrapper':
            print_log(
                'AMP training is already enabled in your config.',
                logger='current',
                level=logging.WARNING)
        else:
            assert optim_wrapper == 'OptimWrapper', (
                '`--amp` is only supported when the optimizer wrapper type is '
                f'`OptimWrapper` but got {optim_wrapper}.')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    # resume training from work_dir/last_checkpoint
    cfg.resume = args.resume

    try:
        with explain_unreachable_weights(cfg):
            build_runner(cfg).train()
    except PretrainedWeightsUnavailable as err:
        exit_with_error(__file__, str(err))
    leave_process_group()
    if work_dir_lock is not None:
        work_dir_lock.release()


if __name__ == '__main__':
    main()
    finish_distributed_process()

"""Test (and evaluate) a segmentor: mmseg's ``tools/test.py`` with vtseg's modules registered.

Same arguments as mmseg 1.2.2's tool. On top of it:

- ``import vtseg`` registers vtseg's modules and lets the checkpoint load under
  torch's ``weights_only=True`` loader;
- a missing config or checkpoint file, a config that does not load, a checkpoint that
  cannot be read or holds pickled code (never run), a checkpoint URL (mmengine would
  unpickle the download unsafely: fetch it first), or bad ``--cfg-options`` is one error
  line (exit status 2);
- a checkpoint of another model (weight names or shapes that differ from the
  model the config builds) is the same one-line error as ``tools/infer.py``
  gives, where mmseg's tool logs missing/unexpected keys and reports the mIoU
  of a half-loaded model; ``--partial-load`` asks for mmseg's behaviour;
- ``--show-dir``/``--show`` draw every image (the visualization hook's interval
  becomes 1 unless ``--cfg-options default_hooks.visualization.interval=N`` sets
  it; mmseg draws every 50th, so a small validation set gave no image at all);
- ``--launcher pytorch`` works without CUDA, a checkpoint or pretrained weights
  that cannot be downloaded are one error line, OpenMP workers sleep when
  idle, and the dependencies' known harmless warnings are hidden unless ``--verbose``;
  ``--log-level`` sets the level of mmengine's logger (see ``tools/train.py``).

Examples::

    python tools/test.py CONFIG work_dirs/run/iter_1500.pth --show-dir vis
    bash tools/dist_test.sh CONFIG CHECKPOINT 2 --out preds
"""
import os

# Read once, when torch loads OpenMP: set before anything imports torch (README "Train and test").
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import vtseg  # noqa: F401,E402 isort: skip  (first: hides known dependency warnings, registers modules)

import argparse  # noqa: E402

from mmengine.config import Config  # noqa: E402

from vtseg.apis import (InferenceSetupError, check_config_checkpoint, check_model_files, load_config,  # noqa: E402
                        read_checkpoint)
from vtseg.mm.checkpoint import PretrainedWeightsUnavailable, explain_unreachable_weights  # noqa: E402
from vtseg.mm.cli import (add_cfg_options, add_launcher, add_verbosity, apply_runner_args,  # noqa: E402
                          apply_verbosity, export_local_rank)
from vtseg.mm.runtime import (build_runner, finish_distributed_process, leave_process_group,  # noqa: E402
                              prepare_cpu_distributed)
from vtseg.utils.errors import exit_with_error  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='MMSeg test (and eval) a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help=('if specified, the evaluation metric results will be dumped'
              'into the directory as json'))
    parser.add_argument(
        '--out',
        type=str,
        help='The directory to save output prediction for offline evaluation')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved. '
        'If specified, it will be automatically saved '
        'to the work_dir/timestamp/show_dir')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    add_cfg_options(parser)
    add_launcher(parser)
    parser.add_argument('--tta', action='store_true', help='Test time augmentation')
    parser.add_argument(
        '--partial-load', action='store_true',
        help='test even when the checkpoint does not fit the model the config builds (weights '
        'missing, unexpected or of another shape; mmengine logs them); default: stop with an error')
    add_verbosity(parser)
    args = parser.parse_args()
    export_local_rank(args)

    return args


def trigger_visualization_hook(cfg: Config, args: argparse.Namespace) -> Config:
    """Turn on mmseg's ``SegVisualizationHook`` for ``--show`` / ``--show-dir``."""
    default_hooks = cfg.default_hooks
    if 'visualization' in default_hooks:
        visualization_hook = default_hooks['visualization']
        visualization_hook['draw'] = True
        if 'default_hooks.visualization.interval' not in (args.cfg_options or {}):
            visualization_hook['interval'] = 1  # every image, not mmseg's every 50th
        if args.show:
            visualization_hook['show'] = True
            visualization_hook['wait_time'] = args.wait_time
        if args.show_dir:
            visualizer = cfg.visualizer
            visualizer['save_dir'] = args.show_dir
    else:
        raise RuntimeError(
            'VisualizationHook must be included in default_hooks.'
            'refer to usage '
            '"visualization=dict(type=\'VisualizationHook\')"')

    return cfg


def main() -> None:
    args = parse_args()
    vtseg.mm.allow_mmengine_checkpoints()  # training checkpoints load under torch's weights_only=True
    log_level = apply_verbosity(args)  # first: mmengine warns while it reads a config

    # load config; a missing file, a URL (mmengine would unpickle a download unsafely) or a
    # config that does not load is one line
    try:
        check_model_files(args.config, args.checkpoint)
        cfg = load_config(args.config, args.cfg_options)
    except InferenceSetupError as err:
        exit_with_error(__file__, str(err))
    apply_runner_args(cfg, args, log_level)  # launcher, work dir (CLI > config > file name), log level
    if args.tta and ('tta_model' not in cfg or 'tta_pipeline' not in cfg):
        exit_with_error(__file__, f'--tta needs tta_model and tta_pipeline in the config ({args.config} '
                        'has no such settings)')
    # before the runner: a checkpoint of another model must not produce an mIoU, and one that holds
    # pickled code must not reach mmengine's loader (torch < 2.6 unpickles with weights_only=False)
    try:
        if args.partial_load:
            read_checkpoint(args.checkpoint)
        else:
            check_config_checkpoint(cfg, args.checkpoint, args.config)
    except InferenceSetupError as err:
        hint = '; or pass --partial-load to test it anyway' if 'does not fit' in str(err) else ''
        exit_with_error(__file__, f'{err}{hint}')
    prepare_cpu_distributed(cfg, args.launcher)

    cfg.load_from = args.checkpoint

    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)

    if args.tta:
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model

    # keep the predictions (label maps) for offline evaluation
    if args.out is not None:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True

    try:
        with explain_unreachable_weights(cfg):
            build_runner(cfg).test()
    except PretrainedWeightsUnavailable as err:
        exit_with_error(__file__, str(err))
    leave_process_group()


if __name__ == '__main__':
    main()
    finish_distributed_process()

"""The embedded demo: VT-FPN learns VT-Shapes on the CPU, with nothing to download.

One command::

    python tools/demo.py

1. makes ``data/vtshapes`` (1000 train / 200 val synthetic scenes of 96x96) if missing;
2. trains VT-FPN on ResNet-18 with ``tools/train.py``;
3. evaluates the last checkpoint on the val split with ``tools/test.py`` and prints mIoU;
4. runs folder inference on the val images (``tools/infer.py``), writing label maps
   and overlays to ``WORK_DIR/infer/{pred,vis}``.

Each stage is the project's own tool run in a fresh process, exactly as a user
would run it (the command lines are printed); their full output goes to
``WORK_DIR/demo_<stage>.log``. Training runs with ``--resume``: an interrupted
demo continues from its last checkpoint, and a finished one is not retrained
(delete ``WORK_DIR`` to start over).
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time
from typing import List

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIG = osp.relpath(
    osp.join(REPO, 'configs', 'vtshapes', 'vt-fpn_r18_1xb8-1.5k_vtshapes-96x96.py'))
# Lines of the tools' output worth showing while the demo runs (the rest goes to the log).
SHOWN = re.compile(r'Iter\(train\)|mIoU:|^\s*[|+]|resumed epoch|Traceback|Error|error:')
# tools/infer.py: everything but the progress bar's intermediate states.
INFER_SHOWN = re.compile(r'^(?!\s*\d+%\|)|100%\|')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train, evaluate and run VT-FPN on VT-Shapes (CPU, no download)')
    parser.add_argument('--config', default=DEFAULT_CONFIG, help='VT-Shapes config to train')
    parser.add_argument('--data-root', default='data/vtshapes', help='VT-Shapes folder')
    parser.add_argument('--work-dir', default='work_dirs/demo',
                        help='checkpoints, logs and inference outputs')
    parser.add_argument('--num-train', type=int, default=1000, help='training images to make')
    parser.add_argument('--num-val', type=int, default=200, help='validation images to make')
    parser.add_argument('--seed', type=int, default=0,
                        help='training seed (randomness.seed); the data set is the same for every seed')
    parser.add_argument(
        '--cfg-options', nargs='+', default=[],
        help='key=value settings passed to tools/train.py and tools/test.py '
        '(e.g. train_cfg.max_iters=300)')
    return parser.parse_args()


def tool(name: str) -> str:
    """Path of one of the project's tools, as the user would type it from here."""
    return osp.relpath(osp.join(REPO, 'tools', name))


def run_stage(name: str, args: List[str], log_path: str, shown: re.Pattern = SHOWN) -> None:
    """Run ``python ARGS``, show its key lines, log all of it; exit if it fails."""
    print(f'\n== {name}: python {" ".join(args)}', flush=True)
    tail: List[str] = []
    # train.py, test.py and infer.py set OMP_WAIT_POLICY=PASSIVE themselves (unless set).
    with open(log_path, 'w') as log, subprocess.Popen(
            [sys.executable, *args], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            log.write(line)
            tail = (tail + [line])[-40:]
            if shown.search(line):
                print('   ' + line.rstrip(), flush=True)
    if proc.returncode != 0:
        sys.stdout.write(''.join(tail))
        print(f'demo.py: error: {name} failed (exit status {proc.returncode}); '
              f'full output in {log_path}', file=sys.stderr)
        sys.exit(1)


def last_checkpoint(work_dir: str) -> str:
    """The checkpoint mmengine's CheckpointHook recorded last in ``work_dir``."""
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def test_metrics(test_work_dir: str) -> dict:
    """Metrics of the newest ``tools/test.py`` run in ``test_work_dir`` (from its json log)."""
    runs = sorted(glob.glob(osp.join(test_work_dir, '*', '*.json')), key=osp.getmtime)
    if not runs:
        raise FileNotFoundError(f'no test results (*/*.json) in {test_work_dir}')
    with open(runs[-1]) as f:
        return json.load(f)


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.config):
        print(f'demo.py: error: config file not found: {args.config}', file=sys.stderr)
        sys.exit(2)
    start = time.time()
    os.makedirs(args.work_dir, exist_ok=True)
    roots = [f'{loader}.dataset.data_root={args.data_root}'
             for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    cfg_options = ['--cfg-options', *roots, f'randomness.seed={args.seed}', *args.cfg_options]
    stage_times = {}

    def log(stage: str) -> str:
        return osp.join(args.work_dir, f'demo_{stage}.log')

    # 1. data: make_vtshapes keeps the files already there, so this only fills gaps.
    run_stage('data', [tool('make_vtshapes.py'), '--out', args.data_root, '--num-train',
                       str(args.num_train), '--num-val', str(args.num_val)], log('data'))
    stage_times['data'] = time.time() - start

    # 2. train (resumable)
    t = time.time()
    run_stage('train', [tool('train.py'), args.config, '--work-dir', args.work_dir, '--resume',
                        *cfg_options], log('train'))
    checkpoint = last_checkpoint(args.work_dir)
    stage_times['train'] = time.time() - t

    # 3. evaluate on the val split
    t = time.time()
    test_dir = osp.join(args.work_dir, 'test')
    run_stage('test', [tool('test.py'), args.config, checkpoint, '--work-dir', test_dir,
                       *cfg_options], log('test'))
    metrics = test_metrics(test_dir)
    stage_times['test'] = time.time() - t

    # 4. folder inference on the val images
    t = time.time()
    img_dir = osp.join(args.data_root, 'img_dir', 'val')
    out_dir = osp.join(args.work_dir, 'infer')
    run_stage('infer', [tool('infer.py'), img_dir, args.config, checkpoint, '--out-dir', out_dir,
                        '--batch-size', '8'], log('infer'), shown=INFER_SHOWN)
    stage_times['infer'] = time.time() - t

    total = time.time() - start
    overlays = sorted(glob.glob(osp.join(out_dir, 'vis', '**', '*.*'), recursive=True))
    print('\n== VT-Shapes demo finished')
    print(f'   config:     {args.config} (seed {args.seed})')
    print(f'   checkpoint: {checkpoint}')
    # mmseg reports IoU in percent
    print(f'   val mIoU:   {metrics["mIoU"] / 100:.3f}   (aAcc {metrics["aAcc"] / 100:.3f})')
    print(f'   overlays:   {len(overlays)} in {osp.join(out_dir, "vis")}')
    print('   time:       ' + ', '.join(f'{k} {v:.0f} s' for k, v in stage_times.items())
          + f'; total {total / 60:.1f} min')


if __name__ == '__main__':
    main()

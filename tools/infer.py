"""Dense inference of a segmentor on an image or a folder of images.

For every image ``INPUT/<rel>/<name>.<ext>`` (searched recursively) writes

- ``OUT/pred/<rel>/<name>.<ext>.png``: class ids as a palette PNG (the data set's colours);
- ``OUT/vis/<rel>/<name>.<ext>.jpg``: the prediction on the image, with a legend

(``~1``, ``~2``, ... after ``<name>.<ext>`` where that name is taken; see
:mod:`vtseg.apis.folder`). Grayscale, RGBA, palette and 16-bit files are read as
mmcv reads them for training, EXIF orientation is applied (outputs match the
displayed image), images much larger than the config's crop size run by sliding
window, in bounded memory, with a second progress bar for the windows. Files
without an image extension are ignored; images that fail (corrupt, truncated,
a named pipe or device, never opened) and folders that cannot be listed are
reported with the reason and the rest go on. The output folder is checked
(created, a probe file written) before the model is loaded. A re-run skips
images whose outputs exist, unless ``--force``; outputs are written atomically.

Images are decoded in ``--workers`` DataLoader processes and outputs encoded and
written in ``--writers`` threads while the model predicts the next images. ``--no-vis``
writes only the class-id PNGs; ``--save-logits`` / ``--save-probs`` add ``(C, H, W)``
float16 ``.npy`` files in ``OUT/logits`` / ``OUT/probs``; ``--palette`` picks the colours;
``--list FILE`` processes only the relative paths it lists. On CPU the model runs in the
channels-last memory format (faster convolutions, the same predictions up to float rounding;
``--no-channels-last`` turns it off).

Many processes: ``torchrun --nproc_per_node N tools/infer.py ...`` (or
``bash tools/dist_infer.sh INPUT CONFIG CHECKPOINT N ...``; several nodes with
torchrun's ``--nnodes``/``--node_rank``/``--master_addr``) split the images by
their sorted relative paths (NCCL on GPUs, one per process; gloo on CPUs); each writes
its own images' outputs, the same bytes one process writes, and rank 0 prints the
summary of all. A stopped run resumes with any number of processes.

Besides its own lines the tool prints what mmengine logs from WARNING up
(``--log-level`` sets another level) and the warnings that matter: the
dependencies' known harmless ones are hidden (:mod:`vtseg.utils.dependency_warnings`)
unless ``--verbose``, which shows every warning and logs at DEBUG.

Exit status: 0 all done (or skipped), 1 some images or folders failed (or a loader
worker process died: what was done is kept, a re-run resumes), 2 bad
arguments (missing config or checkpoint, a checkpoint of another model, no
images, an output folder that cannot be written, an unknown device), 130 interrupted.

Examples::

    python tools/infer.py photos/ CONFIG work_dirs/run/iter_1500.pth --out-dir out
    python tools/infer.py big.tif CONFIG CKPT --out-dir out --slide --device cuda
    torchrun --nproc_per_node 8 tools/infer.py photos/ CONFIG CKPT --out-dir out --no-vis
"""
import os

# OpenMP workers sleep when idle unless the user chose otherwise: spinning ones slow inference
# 10-25x on a machine where anything else runs. Read once, when torch loads OpenMP, so set
# before anything imports torch (README "Train and test").
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import vtseg  # noqa: F401,E402 isort: skip  (first: hides known dependency warnings, registers modules)

import argparse  # noqa: E402
import datetime  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
from typing import Any, List, Optional, Tuple  # noqa: E402

import torch  # noqa: E402
import torch.distributed as torch_dist  # noqa: E402
from tqdm import tqdm  # noqa: E402

from vtseg.apis import (PALETTE_CHOICES, FolderRunner, FolderSummary, InferenceSetupError,  # noqa: E402
                        LoaderWorkerDied, MergedSummary, SegInferencer, check_model_files, find_images, named_palette,
                        prepare_output_dir, read_image_list, remove_created_dirs, resolve_device, select_listed,
                        shard_tasks, tasks_digest)
from vtseg.apis.inference import DEFAULT_SLIDE_RATIO  # noqa: E402
from vtseg.mm.cli import add_cfg_options, add_verbosity, apply_verbosity  # noqa: E402
from vtseg.mm.runtime import finish_distributed_process, leave_process_group  # noqa: E402
from vtseg.utils.errors import print_error  # noqa: E402

# mmengine's INFO lines (where a checkpoint is read from, ...) say nothing the tool's own lines do not.
DEFAULT_LOG_LEVEL = 'WARNING'
# Ranks that finish their share wait in the final gather for the slowest one: far longer
# than torch's default timeout (30 min) on folders of millions of images.
GATHER_TIMEOUT = datetime.timedelta(days=7)


def default_workers() -> int:
    """Loader workers per process: half of this process's share of the cores, 1 to 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)
    processes = int(os.environ.get('LOCAL_WORLD_SIZE', 1) or 1)
    return min(4, max(1, cores // (2 * processes)))


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'must be at least 0, got {value}')
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
    return value


def unit_float(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f'must be in [0, 1], got {value}')
    return value


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Segment an image or every image of a folder (recursively): class-id '
        'PNGs in OUT_DIR/pred, overlays in OUT_DIR/vis')
    parser.add_argument('input', help='image file or folder')
    parser.add_argument('config', help='config file the model was trained with')
    parser.add_argument('checkpoint', help='checkpoint file (a local .pth; URLs are refused)')
    parser.add_argument('--out-dir', required=True, help='output folder (pred/ and vis/ go in it)')
    parser.add_argument(
        '--device', default=None, help='cpu, cuda or cuda:N (default: cuda if available, else cpu)')
    parser.add_argument(
        '--batch-size', type=positive_int, default=1,
        help='images per forward pass (only images of equal size share a batch), and windows '
        'per forward pass in sliding-window inference')
    parser.add_argument(
        '--force', action='store_true', help='redo images whose outputs exist (default: skip them)')
    parser.add_argument(
        '--slide', action='store_true',
        help='sliding-window inference for every image (default: only for images more than '
        'twice the config\'s crop size in a side)')
    parser.add_argument(
        '--auto-slide', action=argparse.BooleanOptionalAction, default=True,
        help='slide over images more than twice the config\'s crop size in a side (default); '
        '--no-auto-slide predicts them whole unless the config\'s test_cfg slides, as mmseg does')
    parser.add_argument(
        '--opacity', type=unit_float, default=0.5,
        help='opacity of the class colours in the overlays, in [0, 1]')
    parser.add_argument(
        '--workers', type=non_negative_int, default=None,
        help='DataLoader worker processes decoding images ahead of the model (0: decode in the '
        'main loop; default: half of the cores per process, 1 to 4)')
    parser.add_argument(
        '--writers', type=non_negative_int, default=2,
        help='threads encoding and writing outputs while the next images are predicted (0: in the main loop)')
    parser.add_argument('--no-vis', action='store_true', help='write only the class-id PNGs, no overlays')
    parser.add_argument(
        '--channels-last', action=argparse.BooleanOptionalAction, default=None,
        help='run the model in the channels-last memory format (default: on CPU, where it is faster; '
        'the same predictions up to float rounding)')
    parser.add_argument(
        '--save-logits', action='store_true',
        help='also write the logits as (classes, H, W) float16 .npy files in OUT_DIR/logits')
    parser.add_argument(
        '--save-probs', action='store_true',
        help='also write class probabilities (softmax; sigmoid for a one-channel head) as (classes, H, W) '
        'float16 .npy files in OUT_DIR/probs')
    parser.add_argument(
        '--palette', default='model',
        help=f'colours of the PNGs and overlays: {", ".join(PALETTE_CHOICES)} (the checkpoint\'s or '
        'config\'s data set colours: default; fixed pseudo-random colours) or a data set mmseg knows '
        '(cityscapes, ade, voc, ...)')
    parser.add_argument(
        '--list', metavar='FILE', default=None,
        help='process only the images whose paths (relative to INPUT) FILE lists, one per line')
    add_cfg_options(parser)
    add_verbosity(parser, default_level=DEFAULT_LOG_LEVEL)
    return parser.parse_args(argv)


def error(message: str) -> int:
    """Print one error line; the exit status of bad input."""
    print_error(__file__, message)
    return 2


class Processes:
    """This process's place in a torchrun launch (rank 0 of 1 without torchrun)."""

    def __init__(self) -> None:
        self.world_size = int(os.environ.get('WORLD_SIZE', 1) or 1)
        self.rank = int(os.environ.get('RANK', 0) or 0)
        self.local_rank = int(os.environ.get('LOCAL_RANK', 0) or 0)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def start(self, device: Optional[str]) -> Optional[str]:
        """Join the process group (NCCL for CUDA, else gloo); returns the device to use."""
        if not self.distributed:
            return device
        use_cuda = torch.cuda.is_available() and (device is None or device.startswith('cuda'))
        if use_cuda:
            device = f'cuda:{self.local_rank}'  # one GPU per process
            torch.cuda.set_device(self.local_rank)
        torch_dist.init_process_group('nccl' if use_cuda else 'gloo', timeout=GATHER_TIMEOUT)
        return device

    def gather(self, value: Any) -> List[Any]:
        """``value`` of every process, in rank order (``[value]`` without torchrun)."""
        if not self.distributed:
            return [value]
        values: List[Any] = [None] * self.world_size
        torch_dist.all_gather_object(values, value)
        return values


def setup(args: argparse.Namespace, created: List[str]
          ) -> Tuple[FolderRunner, SegInferencer, list, list, list]:
    """Everything checked and loaded before the first image: raises InferenceSetupError."""
    # Cheap checks first: a wrong path should not wait for a model to load, and an
    # output folder that cannot be written should not wait for every image to be predicted.
    unreadable_folders: List[Tuple[str, str]] = []
    tasks = find_images(args.input, args.out_dir, unreadable_folders)
    not_found: List[Tuple[str, str]] = []
    if args.list is not None:
        tasks, not_found = select_listed(tasks, read_image_list(args.list), args.list)
    check_model_files(args.config, args.checkpoint)
    device = resolve_device(args.device)
    save = dict(vis=not args.no_vis, save_logits=args.save_logits, save_probs=args.save_probs)
    subdirs = [sub for sub, wanted in (('pred', True), ('vis', save['vis']), ('logits', save['save_logits']),
                                       ('probs', save['save_probs'])) if wanted]
    created += prepare_output_dir(args.out_dir, subdirs)
    inferencer = SegInferencer(args.config, args.checkpoint, device=device, cfg_options=args.cfg_options,
                               slide_ratio=DEFAULT_SLIDE_RATIO if args.auto_slide else math.inf,
                               channels_last=args.channels_last)
    palette = named_palette(args.palette, len(inferencer.classes), inferencer.palette)
    runner = FolderRunner(inferencer, batch_size=args.batch_size, force=args.force,
                          slide=True if args.slide else None, opacity=args.opacity,
                          log=lambda line: tqdm.write(line, file=sys.stderr),
                          workers=default_workers() if args.workers is None else args.workers,
                          writers=args.writers, palette=palette, **save)
    return runner, inferencer, tasks, unreadable_folders, not_found


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    vtseg.mm.allow_mmengine_checkpoints()  # training checkpoints load under torch's weights_only=True
    apply_verbosity(args, default_level=DEFAULT_LOG_LEVEL)
    processes = Processes()
    created: List[str] = []
    problem = ''
    try:
        args.device = processes.start(args.device)
        runner, inferencer, tasks, unreadable_folders, not_found = setup(args, created)
    except InferenceSetupError as err:
        problem = str(err)
    # Every process stops when one cannot start, with its reason said once (by rank 0).
    problems = [p for p in processes.gather(problem) if p]
    if not problems and processes.distributed and len(set(processes.gather(tasks_digest(tasks)))) > 1:
        problems = [f'the processes found different images in {args.input} (was it changing?): run again']
    if problems:
        remove_created_dirs(created)  # a failed start leaves no empty output folder behind
        return error(problems[0]) if processes.rank == 0 else 2
    shard = shard_tasks(tasks, processes.rank, processes.world_size)
    if processes.rank == 0:
        where = f'{inferencer.device}' + (f', {processes.world_size} processes' if processes.distributed else '')
        print(f'{len(tasks) + len(not_found)} images in {args.input}; {len(inferencer.classes)} classes (from the '
              f'{inferencer.meta_source}) on {where}; outputs in {args.out_dir}', flush=True)
    try:
        # folders and listed paths that are missing are reported once, by rank 0
        summary: FolderSummary = runner.run(shard, progress=processes.rank == 0,
                                            unreadable_folders=unreadable_folders if processes.rank == 0 else (),
                                            not_found=not_found if processes.rank == 0 else ())
    except KeyboardInterrupt:
        runner.summary.interrupted = True
        print(runner.summary, file=sys.stderr)
        return runner.summary.exit_code
    except LoaderWorkerDied as err:  # what was done is said; the run is not finished
        print(runner.summary, file=sys.stderr)
        error(str(err))
        return 1
    except InferenceSetupError as err:
        return error(str(err))
    if processes.distributed:
        summary = MergedSummary.of(processes.gather(MergedSummary.of([summary])))
    if processes.rank == 0:
        print(summary)
        print(summary.time_line())
    return summary.exit_code


if __name__ == '__main__':
    exit_status = main()
    leave_process_group()
    finish_distributed_process(exit_status)  # a rank that ran distributed ends here (see there)
    sys.exit(exit_status)

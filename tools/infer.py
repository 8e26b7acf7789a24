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
images whose two outputs exist, unless ``--force``; outputs are written atomically.

Besides its own lines the tool prints what mmengine logs from WARNING up
(``--log-level`` sets another level) and the warnings that matter: the
dependencies' known harmless ones are hidden (:mod:`vtseg.utils.dependency_warnings`)
unless ``--verbose``, which shows every warning and logs at DEBUG.

Exit status: 0 all done (or skipped), 1 some images or folders failed, 2 bad
arguments (missing config or checkpoint, a checkpoint of another model, no
images, an output folder that cannot be written, an unknown device), 130 interrupted.

Examples::

    python tools/infer.py photos/ CONFIG work_dirs/run/iter_1500.pth --out-dir out
    python tools/infer.py big.tif CONFIG CKPT --out-dir out --slide --device cuda
"""
import os

# OpenMP workers sleep when idle unless the user chose otherwise: spinning ones slow inference
# 10-25x on a machine where anything else runs. Read once, when torch loads OpenMP, so set
# before anything imports torch (README "Train and test").
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import vtseg  # noqa: F401,E402 isort: skip  (first: hides known dependency warnings, registers modules)

import argparse  # noqa: E402
import sys  # noqa: E402
from typing import List, Optional, Tuple  # noqa: E402

from tqdm import tqdm  # noqa: E402

from vtseg.apis import (FolderRunner, InferenceSetupError, SegInferencer, check_model_files, find_images,  # noqa: E402
                        prepare_output_dir, remove_created_dirs, resolve_device)
from vtseg.mm.cli import add_cfg_options, add_verbosity, apply_verbosity  # noqa: E402

# mmengine's INFO lines (where a checkpoint is read from, ...) say nothing the tool's own lines do not.
DEFAULT_LOG_LEVEL = 'WARNING'


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
    parser.add_argument('checkpoint', help='checkpoint file (or URL)')
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
        '--opacity', type=unit_float, default=0.5,
        help='opacity of the class colours in the overlays, in [0, 1]')
    add_cfg_options(parser)
    add_verbosity(parser, default_level=DEFAULT_LOG_LEVEL)
    return parser.parse_args(argv)


def error(message: str) -> int:
    print(f'infer.py: error: {message}', file=sys.stderr)
    return 2


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    vtseg.mm.allow_mmengine_checkpoints()  # training checkpoints load under torch's weights_only=True
    apply_verbosity(args, default_level=DEFAULT_LOG_LEVEL)
    created: List[str] = []
    try:
        # Cheap checks first: a wrong path should not wait for a model to load, and an
        # output folder that cannot be written should not wait for every image to be predicted.
        unreadable_folders: List[Tuple[str, str]] = []
        tasks = find_images(args.input, args.out_dir, unreadable_folders)
        check_model_files(args.config, args.checkpoint)
        device = resolve_device(args.device)
        created = prepare_output_dir(args.out_dir)
        inferencer = SegInferencer(args.config, args.checkpoint, device=device,
                                   cfg_options=args.cfg_options)
        runner = FolderRunner(inferencer, batch_size=args.batch_size, force=args.force,
                              slide=True if args.slide else None, opacity=args.opacity,
                              log=lambda line: tqdm.write(line, file=sys.stderr))
    except InferenceSetupError as err:
        remove_created_dirs(created)  # a failed start leaves no empty output folder behind
        return error(str(err))
    print(f'{len(tasks)} images in {args.input}; {len(inferencer.classes)} classes (from the '
          f'{inferencer.meta_source}) on {inferencer.device}; outputs in {args.out_dir}',
          flush=True)
    try:
        summary = runner.run(tasks, progress=True, unreadable_folders=unreadable_folders)
    except KeyboardInterrupt:
        runner.summary.interrupted = True
        print(runner.summary, file=sys.stderr)
        return runner.summary.exit_code
    except InferenceSetupError as err:
        return error(str(err))
    print(summary)
    return summary.exit_code


if __name__ == '__main__':
    sys.exit(main())

"""Dense inference over an image or a folder tree: class-id PNGs and overlays per image.

For an input folder ``IN`` and an output folder ``OUT``, every image
``IN/<rel>/<name>.<ext>`` gets

- ``OUT/pred/<rel>/<name>.png``: class ids as a palette PNG (the data set's colours);
- ``OUT/vis/<rel>/<name>.jpg``: the prediction blended on the image, with a legend.

Files are picked by extension (:data:`~vtseg.apis.io.IMAGE_EXTENSIONS`); other
files, hidden files and hidden folders (names starting with ``.``) are ignored,
and so are ``OUT/pred`` and ``OUT/vis`` when ``OUT`` lies inside ``IN``. When
images of one folder share a name (``a.jpg`` and ``a.png``) their outputs keep
the extension (``a.jpg.png``, ``a.png.png``) so that none overwrites another.

:class:`FolderRunner` skips images whose two outputs exist (unless ``force``),
decodes the rest, batches images of equal size, writes both outputs
atomically, and records per image what happened in a :class:`FolderSummary`;
a file that fails (corrupt, unreadable, inference or write error) is recorded
with its reason and the run goes on.
"""
import os
import os.path as osp
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from .inference import InferenceSetupError, SegInferencer
from .io import (IMAGE_EXTENSIONS, ImageDecodeError, atomic_write_bytes, encode_jpeg,
                 encode_label_png, is_image_file, load_image)
from .visualize import draw_overlay

__all__ = ['ImageTask', 'FolderSummary', 'find_images', 'FolderRunner', 'infer_folder']

PRED_DIR = 'pred'
VIS_DIR = 'vis'


@dataclass(frozen=True)
class ImageTask:
    """One input image and the two files it produces.

    Args:
        src: The image file.
        rel: Its path relative to the input folder (its file name for a single file).
        pred_path: Where its class-id PNG goes.
        vis_path: Where its overlay JPEG goes.
    """
    src: str
    rel: str
    pred_path: str
    vis_path: str


@dataclass
class FolderSummary:
    """What a folder run did, image by image (paths are the input files).

    Args:
        total: Images found.
        done: Images predicted and written.
        skipped: Images whose outputs already existed.
        failed: ``(path, reason)`` per image that could not be processed.
        slid: Images (among ``done``) predicted by sliding windows.
        seconds: Wall time of the run.
        interrupted: The run was stopped before the end (e.g. Ctrl-C).
    """
    total: int = 0
    done: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    failed: List[Tuple[str, str]] = field(default_factory=list)
    slid: List[str] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def images_per_second(self) -> float:
        """Predicted images per second of wall time (skips excluded)."""
        return len(self.done) / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0 when no image failed, 1 otherwise (130 when interrupted)."""
        if self.interrupted:
            return 130
        return 1 if self.failed else 0

    def __str__(self) -> str:
        text = (f'done {len(self.done)}, skipped {len(self.skipped)}, failed {len(self.failed)} '
                f'of {self.total} images in {self.seconds:.1f} s '
                f'({self.images_per_second:.1f} img/s)')
        if self.slid:
            text += f'; {len(self.slid)} by sliding window'
        if self.interrupted:
            text = 'interrupted: ' + text
        return text


def _output_stems(rel_paths: Sequence[str]) -> List[str]:
    """Output path stem per input: without its extension, unless a sibling shares the stem."""
    stems = [osp.splitext(rel)[0] for rel in rel_paths]
    # Case-folded, so that a.JPG and a.png collide on case-insensitive file systems too.
    counts = Counter(stem.lower() for stem in stems)
    return [rel if counts[stem.lower()] > 1 else stem for rel, stem in zip(rel_paths, stems)]


def find_images(input_path: str, out_dir: str) -> List[ImageTask]:
    """The images under ``input_path`` and where their outputs go, in sorted order.

    Args:
        input_path: An image file, or a folder searched recursively.
        out_dir: Output root; its ``pred`` and ``vis`` folders are never read as input.

    Returns:
        One :class:`ImageTask` per image (never empty).

    Raises:
        InferenceSetupError: ``input_path`` does not exist, is a file without an image
            extension, or a folder without images.
    """
    extensions = ', '.join(IMAGE_EXTENSIONS)
    if osp.isfile(input_path):
        if not is_image_file(input_path):
            raise InferenceSetupError(f'input {input_path} is not an image file (extensions: '
                                      f'{extensions})')
        root, rel_paths = osp.dirname(osp.abspath(input_path)), [osp.basename(input_path)]
    elif osp.isdir(input_path):
        root, rel_paths = input_path, []
        excluded = {osp.realpath(osp.join(out_dir, sub)) for sub in (PRED_DIR, VIS_DIR)}
        for dirpath, dirnames, filenames in os.walk(input_path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith('.')
                                 and osp.realpath(osp.join(dirpath, d)) not in excluded)
            rel_dir = osp.relpath(dirpath, input_path)
            for name in sorted(filenames):
                if not name.startswith('.') and is_image_file(name):
                    rel_paths.append(osp.normpath(osp.join(rel_dir, name)))
        if not rel_paths:
            raise InferenceSetupError(f'no images found in {input_path} (looked recursively for '
                                      f'{extensions}): check the path')
    else:
        raise InferenceSetupError(f'input {input_path} does not exist')
    return [
        ImageTask(src=osp.join(root, rel), rel=rel,
                  pred_path=osp.join(out_dir, PRED_DIR, stem + '.png'),
                  vis_path=osp.join(out_dir, VIS_DIR, stem + '.jpg'))
        for rel, stem in zip(rel_paths, _output_stems(rel_paths))
    ]


class FolderRunner:
    """Predict and write the outputs of many images, surviving bad files.

    Args:
        inferencer: The loaded model.
        batch_size: Images per forward pass (only images of equal size share one).
        force: Predict even images whose outputs exist.
        slide: True: sliding windows always; False: never; None: for large images.
        opacity: Weight of the class colours in the overlays.
        log: Called with one line per failed image (e.g. ``tqdm.write``); None: silent.

    Attributes:
        summary: The :class:`FolderSummary` of the current or last :meth:`run`, filled in
            as the run goes (so a caller still has it after an interruption).
    """

    def __init__(self,
                 inferencer: SegInferencer,
                 batch_size: int = 1,
                 force: bool = False,
                 slide: Optional[bool] = None,
                 opacity: float = 0.5,
                 log: Optional[Callable[[str], None]] = None) -> None:
        if batch_size < 1:
            raise ValueError(f'batch_size must be at least 1, got {batch_size}')
        if not 0.0 <= opacity <= 1.0:
            raise ValueError(f'opacity must be in [0, 1], got {opacity}')
        if slide and inferencer.slide_test_cfg is None:
            inferencer.uses_slide((1, 1), slide=True)  # raises the one-line explanation
        self.inferencer = inferencer
        self.batch_size = batch_size
        self.force = force
        self.slide = slide
        self.opacity = opacity
        self.log = log
        self.summary = FolderSummary()
        self._bar: Optional[tqdm] = None

    def run(self, tasks: Sequence[ImageTask], progress: bool = False) -> FolderSummary:
        """Process ``tasks`` in order; see the module docstring.

        Args:
            tasks: From :func:`find_images`.
            progress: Show a tqdm progress bar (images/s) on stderr.

        Returns:
            :attr:`summary`.
        """
        self.summary = FolderSummary(total=len(tasks))
        start = time.perf_counter()
        self._bar = tqdm(total=len(tasks), unit='img', disable=not progress, file=sys.stderr,
                         dynamic_ncols=True)
        # Decoded images wait here, grouped by size, until a group fills a batch; at most
        # batch_size images wait in all, so memory stays bounded on mixed-size folders.
        pending: Dict[Tuple[int, int], List[Tuple[ImageTask, np.ndarray]]] = {}
        try:
            for task in tasks:
                if not self.force and osp.isfile(task.pred_path) and osp.isfile(task.vis_path):
                    self.summary.skipped.append(task.src)
                    self._bar.update()
                    continue
                try:
                    image = load_image(task.src)
                except ImageDecodeError as err:
                    self._fail(task, str(err))
                    continue
                group = pending.setdefault(image.shape[:2], [])
                group.append((task, image))
                if len(group) >= self.batch_size:
                    self._predict_and_write(pending.pop(image.shape[:2]))
                elif sum(map(len, pending.values())) >= self.batch_size:
                    self._predict_and_write(pending.pop(next(iter(pending))))  # the oldest group
            while pending:
                self._predict_and_write(pending.pop(next(iter(pending))))
        finally:
            self.summary.seconds = time.perf_counter() - start
            self._bar.close()
        return self.summary

    def _fail(self, task: ImageTask, reason: str) -> None:
        self.summary.failed.append((task.src, reason))
        if self.log is not None:
            self.log(f'failed: {task.src}: {reason}')
        self._bar.set_postfix(failed=len(self.summary.failed))
        self._bar.update()

    def _predict_and_write(self, batch: List[Tuple[ImageTask, np.ndarray]]) -> None:
        try:
            outputs = self.inferencer.predict_with_mode([image for _, image in batch], self.slide)
        except InferenceSetupError:
            raise
        except Exception as err:  # e.g. out of memory on a huge image: it fails, the run goes on
            if len(batch) > 1:  # find which image it was
                for item in batch:
                    self._predict_and_write([item])
            else:
                self._fail(batch[0][0], f'inference failed ({type(err).__name__}: '
                                        f'{" ".join(str(err).split())})')
            return
        for (task, image), (label_map, mode) in zip(batch, outputs):
            try:
                self._write(task, image, label_map)
            except Exception as err:  # disk full, permissions, ...
                self._fail(task, f'cannot write outputs ({type(err).__name__}: {err})')
                continue
            self.summary.done.append(task.src)
            if mode == 'slide':
                self.summary.slid.append(task.src)
            self._bar.update()

    def _write(self, task: ImageTask, image: np.ndarray, label_map: np.ndarray) -> None:
        palette, classes = self.inferencer.palette, self.inferencer.classes
        pred_png = encode_label_png(label_map, palette)
        vis_jpg = encode_jpeg(draw_overlay(image, label_map, palette, classes, self.opacity))
        atomic_write_bytes(task.pred_path, pred_png)
        atomic_write_bytes(task.vis_path, vis_jpg)


def infer_folder(inferencer: SegInferencer,
                 input_path: str,
                 out_dir: str,
                 batch_size: int = 1,
                 force: bool = False,
                 slide: Optional[bool] = None,
                 opacity: float = 0.5,
                 progress: bool = False,
                 log: Optional[Callable[[str], None]] = None) -> FolderSummary:
    """Predict every image under ``input_path`` into ``out_dir``; see :class:`FolderRunner`.

    Args:
        inferencer: The loaded model.
        input_path: An image file or a folder (searched recursively).
        out_dir: Output root (``pred/`` and ``vis/`` are made in it).
        batch_size: Images per forward pass.
        force: Redo images whose outputs exist.
        slide: True: sliding windows always; False: never; None: for large images.
        opacity: Weight of the class colours in the overlays.
        progress: Show a progress bar on stderr.
        log: Called with one line per failed image.

    Returns:
        The run's :class:`FolderSummary`.

    Raises:
        InferenceSetupError: No input or no images in it.
    """
    tasks = find_images(input_path, out_dir)
    runner = FolderRunner(inferencer, batch_size=batch_size, force=force, slide=slide,
                          opacity=opacity, log=log)
    return runner.run(tasks, progress=progress)

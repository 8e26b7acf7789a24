"""Dense inference over an image or a folder tree: class-id PNGs and overlays per image.

For an input folder ``IN`` and an output folder ``OUT``, every image
``IN/<rel>/<name>.<ext>`` gets

- ``OUT/pred/<rel>/<name>.<ext>.png``: class ids as a palette PNG (the data set's colours);
- ``OUT/vis/<rel>/<name>.<ext>.jpg``: the prediction blended on the image, with a legend.

The output name is the image's whole file name plus ``.png`` / ``.jpg``, so two
images never share an output (``a.jpg``, ``a.png`` and ``a.jpg.png`` give
``a.jpg.png``, ``a.png.png`` and ``a.jpg.png.png``). Only where that name is
already taken, compared case-insensitively (for output folders on case-insensitive
file systems), by another image's output or by an output folder (an input folder
called ``a.jpg.png`` beside ``a.jpg``), ``~1``, ``~2``, ... is appended to the image
name (``a.jpg~1.png``): the first free one, images taken in sorted order. A name
ending in ``~N`` never equals one ending in an image extension, so the mapping
from input to output paths is one-to-one for every folder (:func:`output_names`).

Files are picked by extension (:data:`~vtseg.apis.io.IMAGE_EXTENSIONS`); other
files, hidden files and hidden folders (names starting with ``.``) are ignored,
and so are ``OUT/pred`` and ``OUT/vis`` when ``OUT`` lies inside ``IN``. A file
with an image name that is not a regular file (a named pipe, socket or device)
is never opened: it fails with what it is. A folder that cannot be listed is
reported, and the rest of the tree is still processed.

:func:`prepare_output_dir` proves that the outputs can be written before any
work starts. :class:`FolderRunner` skips images whose two outputs exist (unless
``force``), decodes the rest, batches images of equal size, writes both outputs
atomically, and records per image what happened in a :class:`FolderSummary`; a
file that fails (corrupt, unreadable, inference or write error) is recorded with
its reason and the run goes on.
"""
import os
import os.path as osp
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
from tqdm import tqdm

from vtseg.utils.errors import one_line
from vtseg.visualization.draw import draw_overlay
from .inference import InferenceSetupError, SegInferencer
from .io import (IMAGE_EXTENSIONS, ImageDecodeError, atomic_write_bytes, encode_jpeg,
                 encode_label_png, is_image_file, load_image, make_dirs, remove_created_dirs)

__all__ = [
    'ImageTask', 'FolderSummary', 'output_names', 'find_images', 'prepare_output_dir',
    'FolderRunner', 'infer_folder'
]

PRED_DIR = 'pred'
VIS_DIR = 'vis'
PRED_EXT = '.png'
VIS_EXT = '.jpg'
NAME_ESCAPE = '~'  # a.jpg -> a.jpg~1.png when a.jpg.png is taken


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
        unreadable_folders: ``(path, reason)`` per folder of the input that could not be
            listed (the images in it, if any, were not seen).
        slid: Images (among ``done``) predicted by sliding windows.
        seconds: Wall time of the run.
        interrupted: The run was stopped before the end (e.g. Ctrl-C).
    """
    total: int = 0
    done: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    failed: List[Tuple[str, str]] = field(default_factory=list)
    unreadable_folders: List[Tuple[str, str]] = field(default_factory=list)
    slid: List[str] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def images_per_second(self) -> float:
        """Predicted images per second of wall time (skips excluded)."""
        return len(self.done) / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0 when no image failed and every folder was read, 1 otherwise (130 when interrupted)."""
        if self.interrupted:
            return 130
        return 1 if self.failed or self.unreadable_folders else 0

    def __str__(self) -> str:
        text = (f'done {len(self.done)}, skipped {len(self.skipped)}, failed {len(self.failed)} '
                f'of {self.total} images in {self.seconds:.1f} s '
                f'({self.images_per_second:.1f} img/s)')
        if self.slid:
            text += f'; {len(self.slid)} by sliding window'
        if self.unreadable_folders:
            count = len(self.unreadable_folders)
            text += f'; {count} folder{"s" if count > 1 else ""} could not be read'
        if self.interrupted:
            text = 'interrupted: ' + text
        return text


def output_names(rel_paths: Sequence[str]) -> List[str]:
    """Output path per input path, without the ``.png`` / ``.jpg`` suffix; one-to-one.

    The name is ``rel`` itself, or ``rel~N`` with the smallest N >= 1 where ``rel`` (or a
    smaller N) is taken: when its name, compared case-insensitively, equals an earlier
    output's name, or its ``.png`` / ``.jpg`` output would be an output folder (a folder
    of ``rel_paths``).

    Args:
        rel_paths: Distinct relative paths of the inputs, in the order they are processed
            (sorted); each ends in an image extension.

    Returns:
        One name per input; no two are equal case-insensitively, and no output file has the
        path of an output folder.
    """
    def key(path: str) -> str:
        return osp.normpath(path).casefold()

    folders: Set[str] = set()
    for rel in rel_paths:
        parent = osp.dirname(rel)
        while parent:
            folders.add(key(parent))
            parent = osp.dirname(parent)
    taken: Set[str] = set()

    def is_free(name: str) -> bool:
        return (key(name) not in taken and key(name + PRED_EXT) not in folders
                and key(name + VIS_EXT) not in folders)

    names = []
    for rel in rel_paths:
        name, number = rel, 0
        while not is_free(name):
            number += 1
            name = f'{rel}{NAME_ESCAPE}{number}'
        taken.add(key(name))
        names.append(name)
    return names


def find_images(input_path: str, out_dir: str,
                unreadable_folders: Optional[List[Tuple[str, str]]] = None) -> List[ImageTask]:
    """The images under ``input_path`` and where their outputs go, in sorted order.

    Args:
        input_path: An image file, or a folder searched recursively.
        out_dir: Output root; its ``pred`` and ``vis`` folders are never read as input.
        unreadable_folders: Receives ``(path, reason)`` for each folder below
            ``input_path`` that cannot be listed; None: such a folder is an error.

    Returns:
        One :class:`ImageTask` per image (never empty).

    Raises:
        InferenceSetupError: ``input_path`` does not exist, cannot be listed, is a file
            without an image extension, or a folder without images; a folder below it
            cannot be listed and ``unreadable_folders`` is None.
    """
    extensions = ', '.join(IMAGE_EXTENSIONS)
    if osp.isfile(input_path) or (osp.exists(input_path) and not osp.isdir(input_path)):
        if not is_image_file(input_path):
            raise InferenceSetupError(f'input {input_path} is not an image file (extensions: '
                                      f'{extensions})')
        root, rel_paths = osp.dirname(osp.abspath(input_path)), [osp.basename(input_path)]
    elif osp.isdir(input_path):
        root, rel_paths = input_path, []
        excluded = {osp.realpath(osp.join(out_dir, sub)) for sub in (PRED_DIR, VIS_DIR)}
        walk_errors: List[OSError] = []
        for dirpath, dirnames, filenames in os.walk(input_path, onerror=walk_errors.append):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith('.')
                                 and osp.realpath(osp.join(dirpath, d)) not in excluded)
            rel_dir = osp.relpath(dirpath, input_path)
            for name in sorted(filenames):
                if not name.startswith('.') and is_image_file(name):
                    rel_paths.append(osp.normpath(osp.join(rel_dir, name)))
        for err in walk_errors:
            folder = err.filename or input_path
            reason = f'cannot list this folder ({err.strerror or type(err).__name__})'
            if osp.realpath(folder) == osp.realpath(input_path):
                raise InferenceSetupError(f'input folder {input_path}: {reason}')
            if unreadable_folders is None:
                raise InferenceSetupError(f'{folder}: {reason}; fix its permissions')
            unreadable_folders.append((folder, reason + '; its images were not processed'))
        if not rel_paths:
            raise InferenceSetupError(f'no images found in {input_path} (looked recursively for '
                                      f'{extensions}): check the path')
    else:
        raise InferenceSetupError(f'input {input_path} does not exist')
    return [
        ImageTask(src=osp.join(root, rel), rel=rel,
                  pred_path=osp.join(out_dir, PRED_DIR, name + PRED_EXT),
                  vis_path=osp.join(out_dir, VIS_DIR, name + VIS_EXT))
        for rel, name in zip(rel_paths, output_names(rel_paths))
    ]


def prepare_output_dir(out_dir: str) -> List[str]:
    """Create ``out_dir/pred`` and ``out_dir/vis`` and write (and remove) a probe file in each.

    Run before a model is loaded, so that an output folder that cannot be written fails
    at once instead of after every image was predicted.

    Args:
        out_dir: The output root.

    Returns:
        The folders this call created, outermost first (see :func:`remove_created_dirs`).

    Raises:
        InferenceSetupError: ``out_dir`` (or ``pred``/``vis`` in it) is a file, lies under a
            file, or cannot be written; the message is one line. Folders made so far are
            removed again.
    """
    created: List[str] = []
    for sub in (PRED_DIR, VIS_DIR):
        folder = osp.join(out_dir, sub)
        try:
            created += make_dirs(folder)
            with tempfile.NamedTemporaryFile(dir=folder, prefix='.write-probe-'):
                pass
        except OSError as err:
            remove_created_dirs(created)
            raise InferenceSetupError(f'output folder {out_dir} {_output_problem(out_dir, sub, err)}; '
                                      'pass another --out-dir') from err
    return created


def _output_problem(out_dir: str, sub: str, err: OSError) -> str:
    """What keeps ``out_dir/sub`` from being a writable folder, in words."""
    if osp.lexists(out_dir) and not osp.isdir(out_dir):
        return 'is a file, not a folder'
    if osp.lexists(osp.join(out_dir, sub)) and not osp.isdir(osp.join(out_dir, sub)):
        return f'holds a file {sub} where its {sub}/ folder goes'
    parent = osp.dirname(osp.abspath(out_dir))
    while parent != osp.dirname(parent) and not osp.isdir(parent):
        if osp.lexists(parent):
            return f'lies under the file {parent}'
        parent = osp.dirname(parent)
    return f'cannot be written ({err.strerror or type(err).__name__}: {err.filename})'


class FolderRunner:
    """Predict and write the outputs of many images, surviving bad files.

    Args:
        inferencer: The loaded model.
        batch_size: Images per forward pass (only images of equal size share one), and
            windows per forward pass in sliding-window inference.
        force: Predict even images whose outputs exist.
        slide: True: sliding windows always; False: never; None: for large images.
        opacity: Weight of the class colours in the overlays.
        log: Called with one line per failed image or unreadable folder (e.g.
            ``tqdm.write``); None: silent.

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
        self._progress = False

    def run(self, tasks: Sequence[ImageTask], progress: bool = False,
            unreadable_folders: Sequence[Tuple[str, str]] = ()) -> FolderSummary:
        """Process ``tasks`` in order; see the module docstring.

        Args:
            tasks: From :func:`find_images`.
            progress: Show a tqdm progress bar (images/s) on stderr, and a second one
                (windows) while an image is predicted by sliding windows.
            unreadable_folders: ``(path, reason)`` of the folders :func:`find_images` could
                not list; they are logged and recorded in the summary.

        Returns:
            :attr:`summary`.
        """
        self.summary = FolderSummary(total=len(tasks))
        start = time.perf_counter()
        self._progress = progress
        self._bar = tqdm(total=len(tasks), unit='img', disable=not progress, file=sys.stderr,
                         dynamic_ncols=True)
        for folder, reason in unreadable_folders:
            self.summary.unreadable_folders.append((folder, reason))
            if self.log is not None:
                self.log(f'failed: {folder}: {reason}')
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

    def _window_progress(self) -> Tuple[Callable[[int, int], None], Callable[[], None]]:
        """A callback for the windows of sliding-window inference, and one to close its bar."""
        bar: List[tqdm] = []

        def update(done: int, total: int) -> None:
            if not self._progress:
                return
            if not bar:
                bar.append(tqdm(total=total, unit='window', leave=False, file=sys.stderr,
                                dynamic_ncols=True, position=1, desc='sliding window'))
            bar[0].update(done - bar[0].n)

        def close() -> None:
            if bar:
                bar.pop().close()
        return update, close

    def _predict_and_write(self, batch: List[Tuple[ImageTask, np.ndarray]]) -> None:
        on_window, close_windows = self._window_progress()
        try:
            outputs = self.inferencer.predict_with_mode(
                [image for _, image in batch], self.slide, window_batch_size=self.batch_size,
                on_window=on_window)
        except InferenceSetupError:
            raise
        except Exception as err:  # e.g. out of memory on a huge image: it fails, the run goes on
            if len(batch) > 1:  # find which image it was
                for item in batch:
                    self._predict_and_write([item])
            else:
                self._fail(batch[0][0], f'inference failed ({type(err).__name__}: {one_line(err, 300)})')
            return
        finally:
            close_windows()
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
        InferenceSetupError: No input or no images in it, or ``out_dir`` cannot be written
            (checked before any image is read).
    """
    unreadable_folders: List[Tuple[str, str]] = []
    tasks = find_images(input_path, out_dir, unreadable_folders)
    prepare_output_dir(out_dir)
    runner = FolderRunner(inferencer, batch_size=batch_size, force=force, slide=slide,
                          opacity=opacity, log=log)
    return runner.run(tasks, progress=progress, unreadable_folders=unreadable_folders)

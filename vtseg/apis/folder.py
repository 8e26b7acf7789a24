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
work starts. :class:`FolderRunner` skips images whose outputs exist (unless
``force``; one listing per output folder, not a ``stat`` per file), decodes the rest
in DataLoader worker processes, batches images of equal size, encodes and writes the
outputs atomically in writer threads while the next batch is predicted, and records
per image what happened in a :class:`FolderSummary`; a file that fails (corrupt,
unreadable, inference or write error) is recorded with its reason and the run goes on.
Memory is bounded whatever the folder's size: at most ``workers * 2`` decoded images
wait in the loader, ``batch_size`` wait for a batch, and ``2 * writers`` for their writer.

Many processes (``torchrun``) share a folder with :func:`shard_tasks`: the split
depends only on the sorted relative paths and the number of processes, so a run
stopped with N processes and resumed with M redoes nothing; :class:`MergedSummary`
adds up their summaries. Besides ``pred/`` and ``vis/``, ``logits/`` and ``probs/``
hold ``(C, H, W)`` float16 ``.npy`` class scores at the image's size when asked for.
"""
import collections
import hashlib
import os
import os.path as osp
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vtseg.utils.errors import one_line
from vtseg.visualization.draw import draw_overlay
from .inference import InferenceSetupError, SegInferencer
from .io import (IMAGE_EXTENSIONS, ImageDecodeError, NpyStreamWriter, atomic_write_bytes, encode_jpeg,
                 encode_label_png, is_image_file, load_image, make_dirs, remove_created_dirs, temporary_target)
from .slide import LogitsSink, class_probabilities

__all__ = [
    'ImageTask', 'FolderSummary', 'MergedSummary', 'output_names', 'find_images', 'prepare_output_dir',
    'read_image_list', 'select_listed', 'shard_tasks', 'tasks_digest', 'FolderRunner', 'LoaderWorkerDied',
    'infer_folder'
]

PRED_DIR = 'pred'
VIS_DIR = 'vis'
LOGITS_DIR = 'logits'
PROBS_DIR = 'probs'
OUTPUT_DIRS = (PRED_DIR, VIS_DIR, LOGITS_DIR, PROBS_DIR)
PRED_EXT = '.png'
VIS_EXT = '.jpg'
NPY_EXT = '.npy'
NAME_ESCAPE = '~'  # a.jpg -> a.jpg~1.png when a.jpg.png is taken
# Decoded images each loader worker keeps ready (DataLoader's prefetch_factor).
PREFETCH_PER_WORKER = 2
# Stage names of FolderSummary.stage_seconds, in the order they are printed.
STAGES = ('decode', 'predict', 'encode', 'write')


@dataclass(frozen=True)
class ImageTask:
    """One input image and the two files it produces.

    Args:
        src: The image file.
        rel: Its path relative to the input folder (its file name for a single file).
        pred_path: Where its class-id PNG goes.
        vis_path: Where its overlay JPEG goes.
        logits_path: Where its logits go (``.npy``), when asked for.
        probs_path: Where its class probabilities go (``.npy``), when asked for.
    """
    src: str
    rel: str
    pred_path: str
    vis_path: str
    logits_path: str = ''
    probs_path: str = ''


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
        stage_seconds: Seconds spent per stage (:data:`STAGES`: ``decode`` in the loader,
            ``predict`` (test pipeline, model, class ids), ``encode`` (PNG, overlay, JPEG),
            ``write``), summed over workers and threads; ``wait`` is the time the main loop
            waited for decoded images (where decoding is the bottleneck).
    """
    total: int = 0
    done: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    failed: List[Tuple[str, str]] = field(default_factory=list)
    unreadable_folders: List[Tuple[str, str]] = field(default_factory=list)
    slid: List[str] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    stage_seconds: Dict[str, float] = field(default_factory=dict)

    @property
    def num_done(self) -> int:
        return len(self.done)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    @property
    def num_slid(self) -> int:
        return len(self.slid)

    @property
    def images_per_second(self) -> float:
        """Predicted images per second of wall time (skips excluded)."""
        return self.num_done / self.seconds if self.seconds > 0 else 0.0

    def add_time(self, stage: str, seconds: float) -> None:
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds

    def time_line(self) -> str:
        """Where the time went, in one line (see ``stage_seconds``)."""
        parts = [f'{stage} {self.stage_seconds.get(stage, 0.0):.1f} s' for stage in STAGES]
        return (f'time: {", ".join(parts)} (summed over loader workers, writer threads and '
                f'processes); waited {self.stage_seconds.get("wait", 0.0):.1f} s for decoded images')

    @property
    def exit_code(self) -> int:
        """0 when no image failed and every folder was read, 1 otherwise (130 when interrupted)."""
        if self.interrupted:
            return 130
        return 1 if self.failed or self.unreadable_folders else 0

    def __str__(self) -> str:
        text = (f'done {self.num_done}, skipped {self.num_skipped}, failed {len(self.failed)} '
                f'of {self.total} images in {self.seconds:.1f} s '
                f'({self.images_per_second:.1f} img/s)')
        if self.num_slid:
            text += f'; {self.num_slid} by sliding window'
        if self.unreadable_folders:
            count = len(self.unreadable_folders)
            text += f'; {count} folder{"s" if count > 1 else ""} could not be read'
        if self.interrupted:
            text = 'interrupted: ' + text
        return text


@dataclass
class MergedSummary(FolderSummary):
    """The summaries of the processes of one run (or one process's, compacted), as counts.

    ``done``, ``skipped`` and ``slid`` stay empty: their counts are ``done_count``,
    ``skipped_count`` and ``slid_count`` (a run over millions of images gathers numbers,
    not paths); ``failed`` and ``unreadable_folders`` keep every entry. ``seconds`` is the
    longest process's wall time, ``stage_seconds`` the sums.
    """
    done_count: int = 0
    skipped_count: int = 0
    slid_count: int = 0

    @property
    def num_done(self) -> int:
        return self.done_count

    @property
    def num_skipped(self) -> int:
        return self.skipped_count

    @property
    def num_slid(self) -> int:
        return self.slid_count

    @classmethod
    def of(cls, parts: Sequence[FolderSummary]) -> 'MergedSummary':
        merged = cls()
        for part in parts:
            merged.total += part.total
            merged.done_count += part.num_done
            merged.skipped_count += part.num_skipped
            merged.slid_count += part.num_slid
            merged.failed += list(part.failed)
            merged.unreadable_folders += [f for f in part.unreadable_folders
                                          if f not in merged.unreadable_folders]
            merged.seconds = max(merged.seconds, part.seconds)
            merged.interrupted = merged.interrupted or part.interrupted
            for stage, seconds in part.stage_seconds.items():
                merged.add_time(stage, seconds)
        return merged


def output_names(rel_paths: Sequence[str]) -> List[str]:
    """Output path per input path, without the ``.png`` / ``.jpg`` suffix; one-to-one.

    The name is ``rel`` itself, or ``rel~N`` with the smallest N >= 1 where ``rel`` (or a
    smaller N) is taken: when its name, compared case-insensitively, equals an earlier
    output's name, or its ``.png`` / ``.jpg`` / ``.npy`` output would be an output folder
    (a folder of ``rel_paths``). Names do not depend on which outputs a run writes.

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
        return key(name) not in taken and all(key(name + ext) not in folders
                                              for ext in (PRED_EXT, VIS_EXT, NPY_EXT))

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
        out_dir: Output root; its output folders (``pred``, ``vis``, ``logits``, ``probs``) are
            never read as input.
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
        excluded = {osp.realpath(osp.join(out_dir, sub)) for sub in OUTPUT_DIRS}
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
                  vis_path=osp.join(out_dir, VIS_DIR, name + VIS_EXT),
                  logits_path=osp.join(out_dir, LOGITS_DIR, name + NPY_EXT),
                  probs_path=osp.join(out_dir, PROBS_DIR, name + NPY_EXT))
        for rel, name in zip(rel_paths, output_names(rel_paths))
    ]


def prepare_output_dir(out_dir: str, subdirs: Sequence[str] = (PRED_DIR, VIS_DIR)) -> List[str]:
    """Create ``out_dir/pred`` and ``out_dir/vis`` (or ``subdirs``) and write (and remove) a
    probe file in each.

    Run before a model is loaded, so that an output folder that cannot be written fails
    at once instead of after every image was predicted.

    Args:
        out_dir: The output root.
        subdirs: The output folders the run writes (see :meth:`FolderRunner.output_dirs`).

    Returns:
        The folders this call created, outermost first (see :func:`remove_created_dirs`).

    Raises:
        InferenceSetupError: ``out_dir`` (or ``pred``/``vis`` in it) is a file, lies under a
            file, or cannot be written; the message is one line. Folders made so far are
            removed again.
    """
    created: List[str] = []
    for sub in subdirs:
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


def read_image_list(list_file: str) -> List[str]:
    """The relative image paths listed in ``list_file``, one per line (blank lines ignored).

    Raises:
        InferenceSetupError: The file cannot be read, or lists no path.
    """
    try:
        with open(list_file, encoding='utf-8') as lines:
            paths = [line.rstrip('\r\n') for line in lines]
    except (OSError, UnicodeDecodeError) as err:
        raise InferenceSetupError(f'cannot read the image list {list_file} ({one_line(err, 200)})') from err
    paths = [path for path in paths if path.strip()]
    if not paths:
        raise InferenceSetupError(f'the image list {list_file} names no image: one relative path per line')
    return paths


def select_listed(tasks: Sequence[ImageTask], listed: Sequence[str], list_file: str
                  ) -> Tuple[List[ImageTask], List[Tuple[str, str]]]:
    """The tasks of the listed relative paths, and ``(path, reason)`` for listed paths
    that are not images found in the input (they fail; the rest is processed).

    Outputs keep the names a run over the whole folder gives them, so a folder sharded by
    lists gets exactly the files one run over it would write.
    """
    by_rel = {osp.normpath(task.rel): task for task in tasks}
    chosen: Dict[str, ImageTask] = {}
    missing: List[Tuple[str, str]] = []
    for path in listed:
        task = by_rel.get(osp.normpath(path))
        if task is None:
            missing.append((path, f'listed in {list_file} but not an image found in the input'))
        else:
            chosen.setdefault(task.rel, task)
    return sorted(chosen.values(), key=lambda task: task.rel), missing


def shard_tasks(tasks: Sequence[ImageTask], rank: int, world_size: int) -> List[ImageTask]:
    """The tasks process ``rank`` of ``world_size`` does: every ``world_size``-th of the
    tasks sorted by relative path, from the ``rank``-th on.

    The split depends only on the sorted relative paths and ``world_size``, so every
    process computes the same one without talking to the others, each image has exactly
    one process, and neighbouring images (often alike in size) are spread over processes.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f'rank {rank} is not in [0, {world_size})')
    return sorted(tasks, key=lambda task: task.rel)[rank::world_size]


def tasks_digest(tasks: Sequence[ImageTask]) -> str:
    """A hash of the sorted relative paths and output paths: processes of one run compare
    it to make sure they split the same list of images."""
    digest = hashlib.sha256()
    for task in sorted(tasks, key=lambda task: task.rel):
        digest.update(f'{task.rel}\0{task.pred_path}\n'.encode('utf-8', 'surrogateescape'))
    return digest.hexdigest()


class _OutputListing:
    """Which output files exist, from one ``os.scandir`` per output folder (no ``stat`` per
    file), and the temporary files a killed run left beside them."""

    def __init__(self) -> None:
        self._folders: Dict[str, Tuple[Set[str], Dict[str, List[str]]]] = {}

    def _folder(self, folder: str) -> Tuple[Set[str], Dict[str, List[str]]]:
        if folder not in self._folders:
            files: Set[str] = set()
            temporaries: Dict[str, List[str]] = {}
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        target = temporary_target(entry.name)
                        if target is not None:
                            temporaries.setdefault(target, []).append(entry.name)
                        elif entry.is_file():  # the entry's type from the listing; stat only for links
                            files.add(entry.name)
            except OSError:  # not there yet (nothing to skip), or not a folder (its writes will fail)
                pass
            self._folders[folder] = (files, temporaries)
        return self._folders[folder]

    def exists(self, path: str) -> bool:
        return osp.basename(path) in self._folder(osp.dirname(path))[0]

    def temporaries(self, path: str) -> List[str]:
        """Paths of temporary files for ``path`` (a run that was killed while writing it)."""
        folder = osp.dirname(path)
        return [osp.join(folder, name) for name in self._folder(folder)[1].get(osp.basename(path), [])]


class _DecodeTasks(Dataset):
    """Decodes the images of tasks (in DataLoader worker processes when there are workers).

    Item ``i``: ``(i, image, error, seconds)``: the (H, W, 3) uint8 BGR image as a tensor
    (shared memory between processes) or None, the reason it failed or '', and the time
    decoding took.
    """

    def __init__(self, tasks: Sequence[ImageTask]) -> None:
        self.tasks = tasks

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, index: int) -> Tuple[int, Optional[torch.Tensor], str, float]:
        start = time.perf_counter()
        try:
            image = torch.from_numpy(load_image(self.tasks[index].src))
        except ImageDecodeError as err:
            return index, None, str(err), time.perf_counter() - start
        return index, image, '', time.perf_counter() - start


class LoaderWorkerDied(RuntimeError):
    """A loader worker process died (killed, e.g. by the kernel for memory): the run stops.

    What was predicted before is written and counted; a re-run resumes after it.
    """


def _is_loader_worker_death(err: BaseException) -> bool:
    # torch's DataLoader says so only in its messages: "DataLoader worker (pid 12) is killed by
    # signal: Killed." (raised by its SIGCHLD handler in whatever the main thread runs, e.g. the
    # model or a clean-up) and "DataLoader worker (pid(s) 12) exited unexpectedly" (from the next fetch).
    return isinstance(err, RuntimeError) and str(err).startswith('DataLoader worker (pid')


def _worker_died(reason: str) -> LoaderWorkerDied:
    return LoaderWorkerDied(f'a loader worker process died ({reason}); what was written is kept: run '
                            'again to resume, with fewer workers if it was killed for lack of memory')


def _as_is(item):
    """DataLoader ``collate_fn`` that leaves an item as ``__getitem__`` made it."""
    return item


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
        workers: DataLoader worker processes that decode images ahead of the model; 0
            decodes in this process, between forward passes.
        writers: Threads that encode and write outputs while the next images are
            predicted; 0 writes in the main loop.
        vis: Write the overlays (``vis/``); False: class-id PNGs only.
        save_logits: Also write the logits, ``(C, H, W)`` float16 ``.npy`` at the image's
            size, in ``logits/``.
        save_probs: Also write class probabilities (softmax over classes; the sigmoid for
            a one-channel head), ``(C, H, W)`` float16 ``.npy``, in ``probs/``.
        palette: RGB colour per class id for the PNGs and overlays; None: the model's.

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
                 log: Optional[Callable[[str], None]] = None,
                 workers: int = 0,
                 writers: int = 1,
                 vis: bool = True,
                 save_logits: bool = False,
                 save_probs: bool = False,
                 palette: Optional[Sequence[Sequence[int]]] = None) -> None:
        if batch_size < 1:
            raise ValueError(f'batch_size must be at least 1, got {batch_size}')
        if not 0.0 <= opacity <= 1.0:
            raise ValueError(f'opacity must be in [0, 1], got {opacity}')
        if workers < 0 or writers < 0:
            raise ValueError(f'workers and writers must be at least 0, got {workers} and {writers}')
        if slide and inferencer.slide_test_cfg is None:
            inferencer.uses_slide((1, 1), slide=True)  # raises the one-line explanation
        self.inferencer = inferencer
        self.batch_size = batch_size
        self.force = force
        self.slide = slide
        self.opacity = opacity
        self.log = log
        self.workers = workers
        self.writers = writers
        self.vis = vis
        self.save_logits = save_logits
        self.save_probs = save_probs
        self.palette = [list(c) for c in (palette if palette is not None else inferencer.palette)]
        self.summary = FolderSummary()
        self._bar: Optional[tqdm] = None
        self._progress = False
        self._pool: Optional[ThreadPoolExecutor] = None
        self._writes: Deque[Tuple[ImageTask, str, Future]] = collections.deque()

    def output_dirs(self) -> List[str]:
        """The output folders (below the output root) this runner writes."""
        return [sub for sub, wanted in ((PRED_DIR, True), (VIS_DIR, self.vis), (LOGITS_DIR, self.save_logits),
                                        (PROBS_DIR, self.save_probs)) if wanted]

    def output_paths(self, task: ImageTask) -> List[str]:
        """The files this runner writes for ``task``; it is finished when all exist."""
        paths = [task.pred_path]
        if self.vis:
            paths.append(task.vis_path)
        if self.save_logits:
            paths.append(task.logits_path)
        if self.save_probs:
            paths.append(task.probs_path)
        return paths

    def run(self, tasks: Sequence[ImageTask], progress: bool = False,
            unreadable_folders: Sequence[Tuple[str, str]] = (),
            not_found: Sequence[Tuple[str, str]] = ()) -> FolderSummary:
        """Process ``tasks`` in order; see the module docstring.

        Args:
            tasks: From :func:`find_images` (or a part: :func:`select_listed`, :func:`shard_tasks`).
            progress: Show a tqdm progress bar (images/s) on stderr, and a second one
                (windows) while an image is predicted by sliding windows.
            unreadable_folders: ``(path, reason)`` of the folders :func:`find_images` could
                not list; they are logged and recorded in the summary.
            not_found: ``(path, reason)`` of images asked for that do not exist
                (:func:`select_listed`); they count as failed images.

        Returns:
            :attr:`summary`.
        """
        self.summary = FolderSummary(total=len(tasks) + len(not_found))
        start = time.perf_counter()
        self._progress = progress
        self._bar = tqdm(total=self.summary.total, unit='img', disable=not progress, file=sys.stderr,
                         dynamic_ncols=True)
        for folder, reason in unreadable_folders:
            self.summary.unreadable_folders.append((folder, reason))
            if self.log is not None:
                self.log(f'failed: {folder}: {reason}')
        for path, reason in not_found:
            self._fail_path(path, reason)
        # Decoded images wait here, grouped by size, until a group fills a batch; at most
        # batch_size images wait in all, so memory stays bounded on mixed-size folders.
        pending: Dict[Tuple[int, int], List[Tuple[ImageTask, np.ndarray]]] = {}
        try:
            try:
                todo = self._to_do(tasks)
                self._pool = (ThreadPoolExecutor(self.writers, thread_name_prefix='vtseg-write')
                              if self.writers else None)
                for task, image, error in self._decoded(todo):
                    if image is None:
                        self._fail(task, error)
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
                try:
                    self._finish_writes()  # what was predicted is written and counted, even on Ctrl-C
                finally:
                    if self._pool is not None:
                        self._pool.shutdown(wait=True)
                        self._pool = None
                    self.summary.seconds = time.perf_counter() - start
                    self._bar.close()
        except RuntimeError as err:  # torch's word for a dead worker may come during the clean-up too
            if _is_loader_worker_death(err):
                raise _worker_died(str(err)) from None
            raise
        return self.summary

    def _to_do(self, tasks: Sequence[ImageTask]) -> List[ImageTask]:
        """Tasks whose outputs are not all there (all with ``force``); the rest are skipped.
        Temporary files a killed run left for these outputs are removed."""
        listing = _OutputListing()
        todo = []
        for task in tasks:
            outputs = self.output_paths(task)
            for path in outputs:
                for temporary in listing.temporaries(path):
                    try:
                        os.remove(temporary)
                    except OSError:
                        pass
            if not self.force and all(listing.exists(path) for path in outputs):
                self.summary.skipped.append(task.src)
                self._bar.update()
            else:
                todo.append(task)
        return todo

    def _decoded(self, tasks: Sequence[ImageTask]) -> Iterator[Tuple[ImageTask, Optional[np.ndarray], str]]:
        """``(task, image or None, reason it failed)`` per task, in order."""
        dataset = _DecodeTasks(tasks)
        if self.workers == 0 or not tasks:  # no worker processes to start for nothing
            items: Iterator = (dataset[index] for index in range(len(dataset)))
        else:
            loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=self.workers,
                                collate_fn=_as_is, prefetch_factor=PREFETCH_PER_WORKER)
            items = iter(loader)
        try:
            while True:
                waited = time.perf_counter()
                lost = None
                try:
                    index, image, error, seconds = next(items)
                except StopIteration:
                    return
                except ConnectionError as err:
                    # A worker killed while it hands over an image (shared memory, passed by file
                    # descriptor) breaks that connection before torch notices the death.
                    lost = f'{type(err).__name__} while receiving an image from it: {one_line(err, 200)}'
                if lost is not None:  # raised here, not in the handler: the error's frames would keep
                    # the loader alive, and its SIGCHLD handler would raise again in the clean-up
                    raise _worker_died(lost)
                self.summary.add_time('wait', time.perf_counter() - waited)
                self.summary.add_time('decode', seconds)
                yield tasks[index], (image.numpy() if image is not None else None), error
        finally:
            del items  # a DataLoader iterator stops its workers when it goes

    def _fail_path(self, path: str, reason: str) -> None:
        self.summary.failed.append((path, reason))
        if self.log is not None:
            self.log(f'failed: {path}: {reason}')
        self._bar.set_postfix(failed=len(self.summary.failed))
        self._bar.update()

    def _fail(self, task: ImageTask, reason: str) -> None:
        self._fail_path(task.src, reason)

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

    def _score_writers(self, task: ImageTask, image: np.ndarray) -> List[Tuple[str, NpyStreamWriter]]:
        """``('logits' | 'probs', writer)`` for the score files ``task`` gets (none unless asked)."""
        wanted = [(kind, path) for kind, path, on in (('logits', task.logits_path, self.save_logits),
                                                      ('probs', task.probs_path, self.save_probs)) if on]
        if not wanted:
            return []
        model = self.inferencer.model
        num_channels = int(getattr(model, 'out_channels', 0) or len(self.inferencer.classes))
        writers: List[Tuple[str, NpyStreamWriter]] = []
        try:
            for kind, path in wanted:
                writers.append((kind, NpyStreamWriter(path, (num_channels, *image.shape[:2]))))
        except BaseException:
            for _, writer in writers:
                writer.discard()
            raise
        return writers

    @staticmethod
    def _sink(writers: List[Tuple[str, NpyStreamWriter]]) -> Optional[LogitsSink]:
        if not writers:
            return None

        def sink(axis: int, start: int, strip: torch.Tensor) -> None:
            for kind, writer in writers:
                scores = strip if kind == 'logits' else class_probabilities(strip)
                writer.write(axis, start, scores.to(torch.float16).cpu().numpy())
        return sink

    def _predict_and_write(self, batch: List[Tuple[ImageTask, np.ndarray]]) -> None:
        on_window, close_windows = self._window_progress()
        score_writers: List[List[Tuple[str, NpyStreamWriter]]] = []
        started = time.perf_counter()
        try:
            try:
                for task, image in batch:
                    score_writers.append(self._score_writers(task, image))
                outputs = self.inferencer.predict_with_mode(
                    [image for _, image in batch], self.slide, window_batch_size=self.batch_size,
                    on_window=on_window, logits_sinks=[self._sink(w) for w in score_writers])
            finally:
                close_windows()
                self.summary.add_time('predict', time.perf_counter() - started)
        except BaseException as err:
            for writers in score_writers:
                for _, writer in writers:
                    writer.discard()
            # not the image's fault: the run stops (a dead loader worker: see run())
            if isinstance(err, InferenceSetupError) or not isinstance(err, Exception) or _is_loader_worker_death(err):
                raise
            if len(batch) > 1:  # find which image it was
                for item in batch:
                    self._predict_and_write([item])
            elif isinstance(err, OSError) and len(score_writers) < len(batch):
                self._fail(batch[0][0], f'cannot write outputs ({type(err).__name__}: {one_line(err, 300)})')
            else:  # e.g. out of memory on a huge image: it fails, the run goes on
                self._fail(batch[0][0], f'inference failed ({type(err).__name__}: {one_line(err, 300)})')
            return
        for (task, image), (label_map, mode), writers in zip(batch, outputs, score_writers):
            self._submit_write(task, image, label_map, mode, [writer for _, writer in writers])

    def _submit_write(self, task: ImageTask, image: np.ndarray, label_map: np.ndarray, mode: str,
                      score_writers: List[NpyStreamWriter]) -> None:
        """Encode and write ``task``'s outputs: in a writer thread, or here without writers."""
        future: Future = Future()
        if self._pool is None:
            try:
                future.set_result(self._write(task, image, label_map, score_writers))
            except Exception as err:  # disk full, permissions, ...
                future.set_exception(err)
        else:
            future = self._pool.submit(self._write, task, image, label_map, score_writers)
        self._writes.append((task, mode, future))
        # at most 2 * writers images wait for their writer; finished writes are counted at once
        while self._writes and (self._writes[0][2].done() or len(self._writes) > 2 * self.writers):
            self._collect_write()

    def _collect_write(self) -> None:
        task, mode, future = self._writes.popleft()
        try:
            encode_seconds, write_seconds = future.result()
        except Exception as err:  # disk full, permissions, ...
            self._fail(task, f'cannot write outputs ({type(err).__name__}: {one_line(err, 300)})')
            return
        self.summary.add_time('encode', encode_seconds)
        self.summary.add_time('write', write_seconds)
        self.summary.done.append(task.src)
        if mode == 'slide':
            self.summary.slid.append(task.src)
        self._bar.update()

    def _finish_writes(self) -> None:
        while self._writes:
            self._collect_write()

    def _write(self, task: ImageTask, image: np.ndarray, label_map: np.ndarray,
               score_writers: Sequence[NpyStreamWriter] = ()) -> Tuple[float, float]:
        """Encode and atomically write ``task``'s outputs; returns (encode, write) seconds."""
        try:
            started = time.perf_counter()
            pred_png = encode_label_png(label_map, self.palette)
            vis_jpg = None
            if self.vis:
                vis_jpg = encode_jpeg(draw_overlay(image, label_map, self.palette, self.inferencer.classes,
                                                   self.opacity))
            encoded = time.perf_counter()
            for writer in score_writers:
                writer.commit()
            atomic_write_bytes(task.pred_path, pred_png)
            if vis_jpg is not None:
                atomic_write_bytes(task.vis_path, vis_jpg)
            return encoded - started, time.perf_counter() - encoded
        except BaseException:
            for writer in score_writers:
                writer.discard()  # a no-op for those already committed
            raise


def infer_folder(inferencer: SegInferencer,
                 input_path: str,
                 out_dir: str,
                 batch_size: int = 1,
                 force: bool = False,
                 slide: Optional[bool] = None,
                 opacity: float = 0.5,
                 progress: bool = False,
                 log: Optional[Callable[[str], None]] = None,
                 **options) -> FolderSummary:
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
        **options: More :class:`FolderRunner` arguments (``workers``, ``writers``, ``vis``,
            ``save_logits``, ``save_probs``, ``palette``).

    Returns:
        The run's :class:`FolderSummary`.

    Raises:
        InferenceSetupError: No input or no images in it, or ``out_dir`` cannot be written
            (checked before any image is read).
    """
    unreadable_folders: List[Tuple[str, str]] = []
    tasks = find_images(input_path, out_dir, unreadable_folders)
    runner = FolderRunner(inferencer, batch_size=batch_size, force=force, slide=slide,
                          opacity=opacity, log=log, **options)
    prepare_output_dir(out_dir, runner.output_dirs())
    return runner.run(tasks, progress=progress, unreadable_folders=unreadable_folders)

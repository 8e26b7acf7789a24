"""Convert the official LIP (Look Into Person) download into the layout vtseg's configs read.

LIP, single-person human parsing (http://sysu-hcp.net/lip/): 20 classes (0 is
Background), 30,462 train / 10,000 val images. Download ``TrainVal_images.zip``
and ``TrainVal_parsing_annotations.zip`` into ``LIP_ROOT``; extracting them is
optional. Accepted input, each part either as its folder or as its zip::

    LIP_ROOT/
    ├── TrainVal_images/ or TrainVal_images.zip
    │   └── [TrainVal_images/]              (a second level, as some unzip tools make it)
    │       ├── train_images/*.jpg
    │       ├── val_images/*.jpg
    │       ├── train_id.txt                 (optional: one image id per line)
    │       └── val_id.txt
    └── TrainVal_parsing_annotations/ or TrainVal_parsing_annotations.zip
        └── [TrainVal_parsing_annotations/]
            ├── train_segmentations/*.png    (label ids 0-19, same size as the image)
            └── val_segmentations/*.png

Output (``configs/_base_/datasets/lip_473x473.py`` reads it; mmseg's layout)::

    OUT_DIR/img_dir/{train,val}/<id>.jpg
    OUT_DIR/ann_dir/{train,val}/<id>.png

Files are copied byte for byte (no re-encoding). Everything is checked before
anything is written: every id of the id list, and every image and mask found,
must have both its image and its mask; then each mask must be a single-channel
map of labels 0-19 (255 = ignore) of its image's size. The output is built in a
staging folder inside ``OUT_DIR`` and moved into place at the end, so a failed
or interrupted run (Ctrl-C or SIGTERM) leaves an earlier output untouched, and a
re-run replaces ``img_dir`` / ``ann_dir`` (no stale files) and leaves other files
in ``OUT_DIR`` alone. A run that fails leaves no ``OUT_DIR`` it created, and a
staging folder that a killed run (``kill -9``) left behind is removed by the next
run (each run holds a ``flock`` on its own staging folder, so a folder nobody
holds is stale).

Hostile downloads get one error line: damaged, encrypted or unsupported zip
entries ("download it again"), oversized id lists; quoted names are cut and
escaped. Files are streamed in 1 MB pieces, never read whole. A file in an
extracted folder that is not a regular file (a named pipe, socket or device) is
listed on stderr and never opened.

Example::

    python tools/dataset_converters/lip.py /path/to/LIP -o data/LIP
"""
import argparse
import fcntl
import os
import os.path as osp
import shutil
import signal
import sys
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from typing import IO, Any, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
from PIL import Image

from vtseg.apis.io import file_kind, make_dirs, open_regular_file, remove_created_dirs
from vtseg.utils.errors import exit_with_error, one_line

NUM_CLASSES = 20
IGNORE_INDEX = 255
IMAGES = 'TrainVal_images'
ANNOTATIONS = 'TrainVal_parsing_annotations'
# split -> (image folder, mask folder, id list) in the official download
SPLITS: Dict[str, Tuple[str, str, str]] = {
    'train': ('train_images', 'train_segmentations', 'train_id.txt'),
    'val': ('val_images', 'val_segmentations', 'val_id.txt'),
}
DOWNLOAD_HINT = (f'download {IMAGES}.zip and {ANNOTATIONS}.zip from http://sysu-hcp.net/lip/ '
                 '(Single Person) into LIP_ROOT')
STAGING_PREFIX = '.lip-staging-'
CHUNK_BYTES = 1 << 20
# LIP's id lists are ~0.6 MB; anything this large is not one.
MAX_ID_LIST_BYTES = 16 << 20
# What reading a damaged, encrypted or exotic zip entry raises.
READ_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError,
               ValueError)


def quote(name: str, limit: int = 80) -> str:
    """A file name or id as an error message may show it: escaped, at most ``limit`` characters."""
    return one_line(name, limit) if name.strip() else repr(name)[:limit]


class LIPError(Exception):
    """A problem with the input or output; its message is the one line shown to the user."""


class Source:
    """One part of the download (``TrainVal_images`` ...): its extracted folder or its zip.

    Args:
        root: LIP_ROOT.
        name: The part's name; ``root/name/`` is used if it exists, else ``root/name.zip``.

    Attributes:
        skipped: ``(name, kind)`` of folder entries that are not regular files (named
            pipes, sockets, devices): left out, never opened.
    """

    def __init__(self, root: str, name: str) -> None:
        folder, archive = osp.join(root, name), osp.join(root, name + '.zip')
        self.zip: Optional[zipfile.ZipFile] = None
        self.skipped: List[Tuple[str, str]] = []
        if osp.isdir(folder):
            self.label = name + '/'
            self.folder = folder
            self.names = []
            for d, _, files in os.walk(folder):
                for f in files:
                    rel = osp.relpath(osp.join(d, f), folder).replace(os.sep, '/')
                    try:
                        kind = file_kind(os.stat(osp.join(d, f)).st_mode)
                    except OSError as e:  # a dangling link: listed, fails when read
                        kind = 'regular file' if isinstance(e, FileNotFoundError) else 'unreadable'
                    if kind == 'regular file':
                        self.names.append(rel)
                    else:
                        self.skipped.append((rel, kind))
            self.names.sort()
        elif osp.isfile(archive):
            self.label = name + '.zip'
            try:
                self.zip = zipfile.ZipFile(archive)
            except READ_ERRORS as e:
                raise LIPError(f'{archive} is not a readable zip file ({one_line(e, 120)}; '
                               'incomplete download?): download it again') from None
            self.names = sorted(n for n in self.zip.namelist() if not n.endswith('/'))
        else:
            raise LIPError(f'{root} has neither {name}/ nor {name}.zip; {DOWNLOAD_HINT}')
        # macOS archivers add __MACOSX/ and ._name resource forks: not data.
        self.names = [n for n in self.names
                      if '__MACOSX/' not in n and not n.rsplit('/', 1)[-1].startswith('._')]

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()

    def _damaged(self, name: str, err: BaseException) -> 'LIPError':
        again = 'download it again' if self.zip is not None else 'extract or download it again'
        return LIPError(f'cannot read {quote(name)} from {self.label} ({one_line(err, 160)}); '
                        f'the download is damaged: {again}')

    def _open(self, name: str) -> IO[bytes]:
        try:
            if self.zip is not None:
                return self.zip.open(name)  # encrypted / unknown compression raise here
            return open_regular_file(osp.join(self.folder, name))
        except READ_ERRORS as e:
            raise self._damaged(name, e) from None

    def size(self, name: str) -> int:
        """Uncompressed size of ``name`` in bytes."""
        if self.zip is not None:
            return self.zip.getinfo(name).file_size
        return os.stat(osp.join(self.folder, name)).st_size

    def copy(self, name: str, destination: str) -> None:
        """Stream ``name`` into the new file ``destination`` in 1 MB pieces.

        Raises:
            LIPError: ``name`` cannot be read (damaged or encrypted entry ...).
            OSError: ``destination`` cannot be written.
        """
        with self._open(name) as source, open(destination, 'wb') as target:
            while True:
                try:
                    chunk = source.read(CHUNK_BYTES)  # a zip entry's CRC is checked at its end
                except READ_ERRORS as e:
                    raise self._damaged(name, e) from None
                if not chunk:
                    break
                target.write(chunk)

    def read_small(self, name: str, limit: int = MAX_ID_LIST_BYTES) -> bytes:
        """The whole of a small file such as an id list, refusing one larger than ``limit``."""
        size = self.size(name)
        if size > limit:
            raise LIPError(f'{quote(name)} in {self.label} is {size / 1e6:.0f} MB; LIP\'s id lists '
                           'are under 1 MB: the download is damaged, download it again')
        with self._open(name) as source:
            try:
                return source.read(limit + 1)[:limit]
            except READ_ERRORS as e:
                raise self._damaged(name, e) from None

    def find(self, folder: str, suffix: str) -> Dict[str, str]:
        """``{id: name}`` of the files ``.../<folder>/<id><suffix>`` at any depth."""
        found: Dict[str, str] = {}
        for name in self.names:
            parent, _, base = name.rpartition('/')
            if parent.rpartition('/')[2] == folder and base.endswith(suffix):
                stem = base[:-len(suffix)]
                if stem in found:
                    raise LIPError(f'{self.label} holds {quote(base)} twice ({quote(found[stem])} '
                                   f'and {quote(name)}); keep one copy')
                found[stem] = name
        return found

    def find_file(self, basename: str) -> Optional[str]:
        """The shallowest file called ``basename``, if any."""
        matches = [n for n in self.names if n.rpartition('/')[2] == basename]
        return min(matches, key=lambda n: n.count('/')) if matches else None


def _examples(names: Iterable[str], n: int = 3) -> str:
    names = sorted(names)
    return ', '.join(quote(name, 60) for name in names[:n]) + (', ...' if len(names) > n else '')


def pair_split(split: str, images: Source, masks: Source,
               root: str) -> List[Tuple[str, str, str]]:
    """``[(id, image name, mask name)]`` of one split, after checking that they pair up.

    Raises:
        LIPError: a listed id, image or mask lacks its partner, or the split is empty.
    """
    img_folder, mask_folder, list_name = SPLITS[split]
    img_files = images.find(img_folder, '.jpg')
    mask_files = masks.find(mask_folder, '.png')
    if not img_files and not mask_files:
        raise LIPError(f'no {split} data: {images.label} has no {img_folder}/*.jpg and '
                       f'{masks.label} has no {mask_folder}/*.png; {DOWNLOAD_HINT}')

    listed: Optional[List[str]] = None
    for source in (images, masks):
        list_file = source.find_file(list_name)
        if list_file is not None:
            text = source.read_small(list_file).decode('utf-8', errors='replace')
            break
    else:
        text = None
        path = osp.join(root, list_name)
        if osp.isfile(path):
            if os.stat(path).st_size > MAX_ID_LIST_BYTES:
                raise LIPError(f'{path} is {os.stat(path).st_size / 1e6:.0f} MB; LIP\'s id lists '
                               'are under 1 MB: remove it or download it again')
            with open_regular_file(path) as f:
                text = f.read(MAX_ID_LIST_BYTES).decode('utf-8', errors='replace')
    if text is not None:
        # one id per line; tolerate a file extension and blank lines
        listed = list(dict.fromkeys(
            osp.splitext(line.strip())[0] for line in text.splitlines() if line.strip()))

    problems = []
    no_image = mask_files.keys() - img_files.keys()
    no_mask = img_files.keys() - mask_files.keys()
    if no_image:
        problems.append(f'{len(no_image)} mask(s) without an image '
                        f'({_examples(k + ".png" for k in no_image)})')
    if no_mask:
        problems.append(f'{len(no_mask)} image(s) without a mask '
                        f'({_examples(k + ".jpg" for k in no_mask)})')
    if listed is not None:
        neither = set(listed) - img_files.keys() - mask_files.keys()
        unlisted = (img_files.keys() & mask_files.keys()) - set(listed)
        if neither:
            problems.append(f'{len(neither)} id(s) of {list_name} with neither image nor mask '
                            f'({_examples(neither)})')
        if unlisted:
            problems.append(f'{len(unlisted)} image/mask pair(s) not in {list_name} '
                            f'({_examples(unlisted)})')
    if problems:
        raise LIPError(f'{split} split is incomplete: {"; ".join(problems)}. Extract or download '
                       f'{IMAGES}.zip and {ANNOTATIONS}.zip again')
    ids = listed if listed is not None else sorted(img_files)
    return [(i, img_files[i], mask_files[i]) for i in ids]


def check_pair(image_path: str, mask_path: str, image_name: str, mask_name: str) -> None:
    """Raise :class:`LIPError` unless the mask file is a label map of the image file's size."""
    def decode(path: str, name: str) -> Image.Image:
        try:
            img = Image.open(path)
            img.load()
            return img
        except Exception as e:  # PIL raises several types for corrupt files
            raise LIPError(f'cannot decode {quote(name)} ({one_line(e, 160)}); download it '
                           'again') from None

    with decode(image_path, image_name) as image:
        image_size = image.size
    with decode(mask_path, mask_name) as seg:
        mode, mask_size, labels = seg.mode, seg.size, np.asarray(seg)
    if mode not in ('L', 'P'):
        raise LIPError(f'{quote(mask_name)} has image mode {mode}; LIP masks are single-channel '
                       'label maps (mode L or P)')
    if mask_size != image_size:
        raise LIPError(f'{quote(mask_name)} is {mask_size[0]}x{mask_size[1]} but its image is '
                       f'{image_size[0]}x{image_size[1]}')
    bad = np.setdiff1d(np.unique(labels), [*range(NUM_CLASSES), IGNORE_INDEX])
    if bad.size:
        raise LIPError(f'{quote(mask_name)} holds label(s) {bad.tolist()[:10]}; LIP labels are '
                       f'0-{NUM_CLASSES - 1} (and {IGNORE_INDEX} = ignore)')


def convert(lip_root: str, out_dir: str) -> Dict[str, int]:
    """Check the download at ``lip_root`` and write ``out_dir/{img_dir,ann_dir}/{train,val}``.

    Returns:
        Number of image/mask pairs written per split.
    """
    if not osp.isdir(lip_root):
        raise LIPError(f'LIP_ROOT {lip_root} is not a folder; {DOWNLOAD_HINT}')
    images = Source(lip_root, IMAGES)
    try:
        masks = Source(lip_root, ANNOTATIONS)
    except LIPError:
        images.close()
        raise
    try:
        for source in (images, masks):
            if source.skipped:
                listed = ', '.join(f'{quote(name, 60)} ({kind})' for name, kind in source.skipped[:5])
                more = f', ... {len(source.skipped) - 5} more' if len(source.skipped) > 5 else ''
                print(f'warning: {source.label} holds {len(source.skipped)} entries that are not '
                      f'regular files, skipped without opening them: {listed}{more}',
                      file=sys.stderr)
        return _write(images, masks, lip_root, out_dir)
    finally:
        images.close()
        masks.close()


class _Signals:
    """SIGINT and SIGTERM raise KeyboardInterrupt (so that ``finally`` blocks clean up), except
    inside :func:`_critical_section`, which they do not interrupt (the run then completes)."""
    in_critical_section = False

    @classmethod
    def install(cls) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, cls._handle)

    @classmethod
    def _handle(cls, signum: int, frame: Any) -> None:
        if not cls.in_critical_section:
            raise KeyboardInterrupt


@contextmanager
def _critical_section() -> Iterator[None]:
    _Signals.in_critical_section = True
    try:
        yield
    finally:
        _Signals.in_critical_section = False


def remove_stale_staging(out_dir: str) -> int:
    """Remove the staging folders in ``out_dir`` that no running converter holds.

    A converter holds an exclusive ``flock`` on its staging folder from before the folder
    gets its ``.lip-staging-`` name until it is deleted; a folder whose lock can be taken
    was left by a run that was killed. Returns how many were removed.
    """
    removed = 0
    for entry in os.scandir(out_dir):
        if not entry.name.startswith(STAGING_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        fd = os.open(entry.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a live run's
        try:  # deleted while holding its lock
            shutil.rmtree(entry.path)
            removed += 1
        finally:
            os.close(fd)
    return removed


def _locked_staging(out_dir: str) -> Tuple[str, int]:
    """A new staging folder in ``out_dir`` and the descriptor holding its lock."""
    fresh = tempfile.mkdtemp(prefix='.lip-new-', dir=out_dir)
    fd = os.open(fresh, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    staging = osp.join(out_dir, STAGING_PREFIX + osp.basename(fresh)[len('.lip-new-'):])
    os.rename(fresh, staging)  # the lock stays with the folder
    return staging, fd


def _write(images: Source, masks: Source, lip_root: str, out_dir: str) -> Dict[str, int]:
    pairs = {split: pair_split(split, images, masks, lip_root) for split in SPLITS}

    created: List[str] = []
    try:
        created = make_dirs(out_dir)
        stale = remove_stale_staging(out_dir)
        staging, staging_fd = _locked_staging(out_dir)
    except OSError as e:
        remove_created_dirs(created)
        raise LIPError(f'cannot write to {out_dir} ({e.strerror}); choose another -o') from None
    if stale:
        print(f'removed {stale} staging folder(s) that killed runs left in {out_dir}')
    done = False
    try:
        for split, split_pairs in pairs.items():
            img_dir = osp.join(staging, 'img_dir', split)
            ann_dir = osp.join(staging, 'ann_dir', split)
            os.makedirs(img_dir)
            os.makedirs(ann_dir)
            for n, (stem, image_name, mask_name) in enumerate(split_pairs, 1):
                image_path = osp.join(img_dir, stem + '.jpg')
                mask_path = osp.join(ann_dir, stem + '.png')
                images.copy(image_name, image_path)
                masks.copy(mask_name, mask_path)
                check_pair(image_path, mask_path, image_name, mask_name)
                if n % 5000 == 0:
                    print(f'{split}: {n}/{len(split_pairs)}', flush=True)
        # Swap the finished folders in; an earlier output moves into the staging folder and
        # is deleted with it. Signals wait until both folders are in place.
        with _critical_section():
            moved: List[Tuple[str, str]] = []
            try:
                for sub in ('img_dir', 'ann_dir'):
                    target = osp.join(out_dir, sub)
                    if osp.lexists(target):
                        os.replace(target, osp.join(staging, 'previous_' + sub))
                        moved.append((osp.join(staging, 'previous_' + sub), target))
                    os.replace(osp.join(staging, sub), target)
                    moved.append((target, osp.join(staging, sub)))
            except OSError:
                for source, back in reversed(moved):  # put everything back as it was
                    os.replace(source, back)
                raise
            done = True
    except OSError as e:
        raise LIPError(f'cannot write to {out_dir} ({one_line(e, 200)}); nothing was changed '
                       'there') from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        os.close(staging_fd)
        if not done:
            remove_created_dirs(created)  # a failed run leaves no output folder it made
    return {split: len(p) for split, p in pairs.items()}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert the LIP (Look Into Person) download to mmsegmentation format')
    parser.add_argument('lip_path', help=f'folder holding {IMAGES}(.zip) and {ANNOTATIONS}(.zip)')
    parser.add_argument('-o', '--out_dir', default=osp.join('data', 'LIP'),
                        help='output folder (default: data/LIP)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    _Signals.install()  # SIGTERM cleans up as Ctrl-C does
    try:
        counts = convert(args.lip_path, args.out_dir)
    except LIPError as e:
        exit_with_error(__file__, one_line(e, 1000))
    except KeyboardInterrupt:
        exit_with_error(__file__, f'interrupted; {args.out_dir} is as it was before', status=130)
    print(f'LIP: {counts["train"]} train / {counts["val"]} val image/mask pairs '
          f'-> {osp.join(args.out_dir, "{img_dir,ann_dir}")}')


if __name__ == '__main__':
    main()

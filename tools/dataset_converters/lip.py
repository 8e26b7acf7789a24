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
or interrupted run leaves an earlier output untouched, and a re-run replaces
``img_dir`` / ``ann_dir`` (no stale files) and leaves other files in ``OUT_DIR`` alone.

Example::

    python tools/dataset_converters/lip.py /path/to/LIP -o data/LIP
"""
import argparse
import io
import os
import os.path as osp
import shutil
import sys
import tempfile
import zipfile
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
from PIL import Image

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


class LIPError(Exception):
    """A problem with the input or output; its message is the one line shown to the user."""


class Source:
    """One part of the download (``TrainVal_images`` ...): its extracted folder or its zip.

    Args:
        root: LIP_ROOT.
        name: The part's name; ``root/name/`` is used if it exists, else ``root/name.zip``.
    """

    def __init__(self, root: str, name: str) -> None:
        folder, archive = osp.join(root, name), osp.join(root, name + '.zip')
        self.zip: Optional[zipfile.ZipFile] = None
        if osp.isdir(folder):
            self.label = name + '/'
            self.folder = folder
            self.names = sorted(
                osp.relpath(osp.join(d, f), folder).replace(os.sep, '/')
                for d, _, files in os.walk(folder) for f in files)
        elif osp.isfile(archive):
            self.label = name + '.zip'
            try:
                self.zip = zipfile.ZipFile(archive)
            except zipfile.BadZipFile:
                raise LIPError(f'{archive} is not a readable zip file (incomplete download?); '
                               f'download it again') from None
            self.names = sorted(n for n in self.zip.namelist() if not n.endswith('/'))
        else:
            raise LIPError(f'{root} has neither {name}/ nor {name}.zip; {DOWNLOAD_HINT}')
        # macOS archivers add __MACOSX/ and ._name resource forks: not data.
        self.names = [n for n in self.names
                      if '__MACOSX/' not in n and not n.rsplit('/', 1)[-1].startswith('._')]

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()

    def read(self, name: str) -> bytes:
        try:
            if self.zip is not None:
                return self.zip.read(name)
            with open(osp.join(self.folder, name), 'rb') as f:
                return f.read()
        except (OSError, zipfile.BadZipFile) as e:
            raise LIPError(f'cannot read {name} from {self.label} ({e}); '
                           'download it again') from None

    def find(self, folder: str, suffix: str) -> Dict[str, str]:
        """``{id: name}`` of the files ``.../<folder>/<id><suffix>`` at any depth."""
        found: Dict[str, str] = {}
        for name in self.names:
            parent, _, base = name.rpartition('/')
            if parent.rpartition('/')[2] == folder and base.endswith(suffix):
                stem = base[:-len(suffix)]
                if stem in found:
                    raise LIPError(f'{self.label} holds {base} twice ({found[stem]} and {name}); '
                                   'keep one copy')
                found[stem] = name
        return found

    def find_file(self, basename: str) -> Optional[str]:
        """The shallowest file called ``basename``, if any."""
        matches = [n for n in self.names if n.rpartition('/')[2] == basename]
        return min(matches, key=lambda n: n.count('/')) if matches else None


def _examples(names: Iterable[str], n: int = 3) -> str:
    names = sorted(names)
    return ', '.join(names[:n]) + (', ...' if len(names) > n else '')


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
            text = source.read(list_file).decode('utf-8', errors='replace')
            break
    else:
        text = None
        if osp.isfile(osp.join(root, list_name)):
            with open(osp.join(root, list_name), encoding='utf-8', errors='replace') as f:
                text = f.read()
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


def check_pair(image: bytes, mask: bytes, image_name: str, mask_name: str) -> None:
    """Raise :class:`LIPError` unless ``mask`` is a label map of ``image``'s size."""
    def decode(data: bytes, name: str) -> Image.Image:
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
            return img
        except Exception as e:  # PIL raises several types for corrupt files
            raise LIPError(f'cannot decode {name} ({e}); download it again') from None

    image_size = decode(image, image_name).size
    seg = decode(mask, mask_name)
    mode, mask_size, labels = seg.mode, seg.size, np.asarray(seg)
    if mode not in ('L', 'P'):
        raise LIPError(f'{mask_name} has image mode {mode}; LIP masks are single-channel '
                       'label maps (mode L or P)')
    if mask_size != image_size:
        raise LIPError(f'{mask_name} is {mask_size[0]}x{mask_size[1]} but its image is '
                       f'{image_size[0]}x{image_size[1]}')
    bad = np.setdiff1d(np.unique(labels), [*range(NUM_CLASSES), IGNORE_INDEX])
    if bad.size:
        raise LIPError(f'{mask_name} holds label(s) {bad.tolist()}; LIP labels are '
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
        return _write(images, masks, lip_root, out_dir)
    finally:
        images.close()
        masks.close()


def _write(images: Source, masks: Source, lip_root: str, out_dir: str) -> Dict[str, int]:
    pairs = {split: pair_split(split, images, masks, lip_root) for split in SPLITS}

    try:
        os.makedirs(out_dir, exist_ok=True)
        staging = tempfile.mkdtemp(prefix='.lip-staging-', dir=out_dir)
    except OSError as e:
        raise LIPError(f'cannot write to {out_dir} ({e.strerror}); choose another -o') from None
    try:
        for split, split_pairs in pairs.items():
            img_dir = osp.join(staging, 'img_dir', split)
            ann_dir = osp.join(staging, 'ann_dir', split)
            os.makedirs(img_dir)
            os.makedirs(ann_dir)
            for n, (stem, image_name, mask_name) in enumerate(split_pairs, 1):
                image, mask = images.read(image_name), masks.read(mask_name)
                check_pair(image, mask, image_name, mask_name)
                with open(osp.join(img_dir, stem + '.jpg'), 'wb') as f:
                    f.write(image)
                with open(osp.join(ann_dir, stem + '.png'), 'wb') as f:
                    f.write(mask)
                if n % 5000 == 0:
                    print(f'{split}: {n}/{len(split_pairs)}', flush=True)
        # Swap the finished folders in; an earlier output moves into the staging
        # folder and is deleted with it.
        for sub in ('img_dir', 'ann_dir'):
            target = osp.join(out_dir, sub)
            if osp.lexists(target):
                os.replace(target, osp.join(staging, 'previous_' + sub))
            os.replace(osp.join(staging, sub), target)
    except OSError as e:
        raise LIPError(f'cannot write to {out_dir} ({e}); nothing was changed there') from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
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
    try:
        counts = convert(args.lip_path, args.out_dir)
    except LIPError as e:
        sys.exit(f'error: {e}')
    print(f'LIP: {counts["train"]} train / {counts["val"]} val image/mask pairs '
          f'-> {osp.join(args.out_dir, "{img_dir,ann_dir}")}')


if __name__ == '__main__':
    main()

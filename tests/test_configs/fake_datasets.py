"""Tiny data sets in the real on-disk layouts of LIP and COCO-Stuff 164k, for tests.

Images are noise with a few rectangles; masks label those rectangles, so image and
mask agree in size and the labels are those of the real data sets.
"""
import os
import os.path as osp
import shutil
import zipfile
from typing import Sequence, Tuple

import numpy as np
from PIL import Image

LIP_TRAIN_IDS = ('77_471474', '100034_483681', '100142_449784', '10024_1235960')
LIP_VAL_IDS = ('100034_483681_v', '10005_205677')


def _pair(rng: np.random.Generator, size: Tuple[int, int], labels: Sequence[int]):
    """An RGB image ``(H, W, 3)`` and its label map ``(H, W)`` with rectangles of ``labels``."""
    h, w = size
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    for label in labels:
        y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
        mask[y:y + h // 3, x:x + w // 3] = label
        image[y:y + h // 3, x:x + w // 3] = (label * 37) % 256  # a colour per class
    return image, mask


def write_lip_download(root: str, train_ids: Sequence[str] = LIP_TRAIN_IDS,
                       val_ids: Sequence[str] = LIP_VAL_IDS, as_zip: bool = False,
                       nested: bool = False, seed: int = 0) -> str:
    """Write a miniature of the official LIP download to ``root``.

    ``TrainVal_images/{train,val}_images/<id>.jpg`` with ``train_id.txt`` / ``val_id.txt``
    and ``TrainVal_parsing_annotations/{train,val}_segmentations/<id>.png`` (labels 0-19,
    including Left/Right pairs), images of varying size around 64x48.

    Args:
        root: Folder to write into (made if missing).
        as_zip: Write ``TrainVal_images.zip`` and ``TrainVal_parsing_annotations.zip``
            (holding the top folder, as the official zips do) instead of folders.
        nested: Repeat the top folder once (``TrainVal_images/TrainVal_images/...``), as
            unzip tools that make a folder per archive leave it.
    """
    os.makedirs(root, exist_ok=True)
    for part in ('TrainVal_images', 'TrainVal_parsing_annotations'):
        top = osp.join(root, part, part) if nested else osp.join(root, part)
        for split, ids in (('train', train_ids), ('val', val_ids)):
            if part == 'TrainVal_images':
                os.makedirs(osp.join(top, f'{split}_images'), exist_ok=True)
                with open(osp.join(top, f'{split}_id.txt'), 'w') as f:
                    f.write(''.join(i + '\n' for i in ids))
            else:
                os.makedirs(osp.join(top, f'{split}_segmentations'), exist_ok=True)
        for split, ids in (('train', train_ids), ('val', val_ids)):
            for n, stem in enumerate(ids):
                size = (64 + 4 * n, 48 + 8 * n)
                image, mask = _pair(np.random.default_rng([seed, n, split == 'val']), size,
                                    labels=(5, 9, 13, 14, 15, 18))
                if part == 'TrainVal_images':
                    Image.fromarray(image).save(osp.join(top, f'{split}_images', stem + '.jpg'))
                else:
                    Image.fromarray(mask).save(
                        osp.join(top, f'{split}_segmentations', stem + '.png'))
        if as_zip:
            with zipfile.ZipFile(osp.join(root, part + '.zip'), 'w') as zf:
                base = osp.join(root, part)
                for d, _, files in sorted(os.walk(base)):
                    for f in sorted(files):
                        path = osp.join(d, f)
                        zf.write(path, osp.join(part, osp.relpath(path, base)))
            shutil.rmtree(osp.join(root, part))
    return root


def write_coco_stuff164k(root: str, num_train: int = 4, num_val: int = 2, seed: int = 0) -> str:
    """Write COCO-Stuff 164k as mmseg's converter leaves it, in miniature.

    ``images/{train2017,val2017}/<12-digit id>.jpg`` and
    ``annotations/{train2017,val2017}/<id>_labelTrainIds.png`` (train ids 0-170, 255 =
    unlabelled).
    """
    rng = np.random.default_rng(seed)
    for split, count, first in (('train2017', num_train, 9), ('val2017', num_val, 139)):
        os.makedirs(osp.join(root, 'images', split), exist_ok=True)
        os.makedirs(osp.join(root, 'annotations', split), exist_ok=True)
        for n in range(count):
            stem = f'{first + n:012d}'
            image, mask = _pair(rng, (64, 80), labels=(0, 40, 95, 170))
            mask[:4] = 255  # unlabelled pixels, as in the real maps
            Image.fromarray(image).save(osp.join(root, 'images', split, stem + '.jpg'))
            Image.fromarray(mask).save(
                osp.join(root, 'annotations', split, stem + '_labelTrainIds.png'))
    return root

"""VT-Shapes: a deterministic synthetic segmentation data set made on the spot.

Each image is a textured scene: a noisy, shaded background and a few objects
of four classes. An object's class is carried by its shape *and* its texture
(dots, stripes, checks, rings), never by its colour, which is random per object;
objects overlap and are partly cut by the border, so a model must look at
structure, not at pixel values. Written in mmseg's folder layout::

    ROOT/img_dir/{train,val}/NNNNN.jpg    RGB images (val scenes numbered from 100000)
    ROOT/ann_dir/{train,val}/NNNNN.png    class ids 0..4 (uint8)
    ROOT/vtshapes.json                    the size and seed it was made with
"""
import json
import os
import os.path as osp
from typing import Tuple

import cv2
import numpy as np

from vtseg.utils.files import atomic_write_bytes

__all__ = ['VTSHAPES_CLASSES', 'VTSHAPES_PALETTE', 'render_scene', 'make_vtshapes']

VTSHAPES_CLASSES = ('background', 'disc', 'box', 'triangle', 'ring')
VTSHAPES_PALETTE = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48]]
# Val scenes are numbered from here: the val split does not depend on the train size.
VAL_FIRST_INDEX = 100000


def _texture(kind: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A (h, w) pattern in [0, 1] that identifies the class."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(5, 8)
    phase = rng.uniform(0, period)
    if kind == 1:  # dots
        return ((np.sin((xx + phase) * 2 * np.pi / period) * np.sin((yy + phase) * 2 * np.pi / period)) > 0.5)
    if kind == 2:  # stripes
        return ((yy + xx * 0.3 + phase) % period) < period / 2
    if kind == 3:  # checks
        return (((xx + phase) // (period / 1.5) + (yy + phase) // (period / 1.5)) % 2) == 0
    return np.ones((h, w), bool)  # ring: plain fill, its shape is the cue


def _mask(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cx, cy = (int(v) for v in rng.integers(0, size, 2))
    r = int(rng.integers(size // 9, size // 4))
    if kind == 1:
        cv2.circle(mask, (cx, cy), r, 1, -1)
    elif kind == 2:
        angle = rng.uniform(0, 180)
        box = cv2.boxPoints(((cx, cy), (2 * r, rng.uniform(1.2, 2.0) * r), angle))
        cv2.fillPoly(mask, [box.astype(np.int32)], 1)
    elif kind == 3:
        pts = [(cx + r * np.cos(a), cy + r * np.sin(a))
               for a in rng.uniform(0, 2 * np.pi) + np.array([0, 2.1, 4.2])]
        cv2.fillPoly(mask, [np.array(pts, np.int32)], 1)
    else:
        cv2.circle(mask, (cx, cy), r, 1, max(2, r // 3))
    return mask.astype(bool)


def render_scene(
        index: int,
        size: int = 96,
        seed: int = 0,
) -> Tuple[np.ndarray, np.ndarray]:
    """Render scene ``index``: an RGB ``(size, size, 3)`` uint8 image and its
    ``(size, size)`` uint8 label map. The same arguments give the same scene."""
    rng = np.random.default_rng([seed, index])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(60, 190, 3)
    shade = (xx * rng.uniform(-60, 60) + yy * rng.uniform(-60, 60))[..., None]
    img = base + shade + rng.normal(0, 12, (size, size, 3))
    label = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(2, 6))):
        kind = int(rng.integers(1, 5))
        mask = _mask(kind, size, rng)
        colour = rng.uniform(0, 255, 3)
        other = 255 - colour
        tex = _texture(kind, size, size, rng)[..., None]
        patch = np.where(tex, colour, other * 0.5 + colour * 0.5)
        img[mask] = patch[mask] + rng.normal(0, 8, (int(mask.sum()), 3))
        label[mask] = kind
    return np.clip(img, 0, 255).astype(np.uint8), label


def make_vtshapes(
        root: str,
        num_train: int = 1000,
        num_val: int = 200,
        size: int = 96,
        seed: int = 0,
) -> str:
    """Write the data set under ``root`` (skipping files already there) and return ``root``.

    Train scenes are numbered from 0, val scenes from ``VAL_FIRST_INDEX``, so the val split is
    the same whatever the train size. A folder that holds scenes this call would not write, or
    that was made with another ``size``/``seed`` (``vtshapes.json``), is refused with a
    ``ValueError``: mmseg reads every file of a split, so reusing it would mix data sets.
    """
    settings = dict(size=size, seed=seed)
    manifest = osp.join(root, 'vtshapes.json')
    if osp.isfile(manifest):
        with open(manifest) as f:
            made_with = json.load(f)
        if made_with != settings:
            raise ValueError(f'{root} holds VT-Shapes made with {made_with}, not {settings}: '
                             'delete it or choose another folder')
    splits = (('train', 0, num_train), ('val', VAL_FIRST_INDEX, num_val))
    for split, start, count in splits:
        wanted = {f'{i:05d}' for i in range(start, start + count)}
        for folder, ext in (('img_dir', '.jpg'), ('ann_dir', '.png')):
            path = osp.join(root, folder, split)
            present = {name[:-len(ext)] for name in os.listdir(path)
                       if name.endswith(ext) and '.tmp' not in name} if osp.isdir(path) else set()
            foreign = sorted(present - wanted)
            if foreign:
                raise ValueError(f'{path} holds {len(foreign)} scenes this data set does not have (e.g. '
                                 f'{foreign[0]}{ext}; made by an older vtseg or with other --num-train/--num-val): '
                                 f'delete {root} or choose another folder')
    os.makedirs(root, exist_ok=True)
    atomic_write_bytes(manifest, json.dumps(settings).encode())
    for split, start, count in splits:
        img_dir = osp.join(root, 'img_dir', split)
        ann_dir = osp.join(root, 'ann_dir', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for i in range(start, start + count):
            img_path = osp.join(img_dir, f'{i:05d}.jpg')
            ann_path = osp.join(ann_dir, f'{i:05d}.png')
            if osp.exists(img_path) and osp.exists(ann_path):
                continue
            img, label = render_scene(i, size, seed)
            # Atomic writes: an interrupted run leaves no half file, and processes making the
            # same data set at once do not write into each other's file.
            for path, data, params in ((img_path, img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95]),
                                       (ann_path, label, [])):
                ok, encoded = cv2.imencode(osp.splitext(path)[1], data, params)
                if not ok:
                    raise OSError(f'could not encode {path}')
                atomic_write_bytes(path, encoded.tobytes())
    return root

"""Overlay of a predicted label map on its image, with a legend of the classes present.

The legend sits in a panel to the right of the image, so it never hides a
prediction. Images too small to read (a 1x1 or 8x8 input) are enlarged by an
integer factor with nearest-neighbour sampling, so every input pixel stays a
sharp square aligned with its class colour.
"""
import math
from typing import Sequence

import cv2
import numpy as np

__all__ = ['vis_scale', 'draw_overlay']

_MIN_VIS_SIDE = 256  # small images are enlarged until their short side reaches this
_MAX_VIS_SIDE = 4096  # ... but never beyond this on the long side
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_PANEL_BGR = (40, 40, 40)
_TEXT_BGR = (255, 255, 255)
_CHUNK_VALUES = 1 << 22  # pixel values blended per step (bounds the float temporaries)


def _share(fraction: float) -> str:
    """A pixel share as the legend prints it (a present class never reads 0.0%)."""
    return '<0.1%' if fraction < 0.001 else f'{100.0 * fraction:.1f}%'


def vis_scale(height: int, width: int) -> int:
    """Integer enlargement of an image of ``height`` x ``width`` in its overlay.

    Args:
        height: Image height in pixels.
        width: Image width in pixels.

    Returns:
        1 for images whose short side is at least 256 pixels, else the smallest factor
        that brings the short side to 256 without the long side passing 4096 (at least 1).
    """
    wanted = math.ceil(_MIN_VIS_SIDE / max(1, min(height, width)))
    allowed = max(1, _MAX_VIS_SIDE // max(1, height, width))
    return max(1, min(wanted, allowed))


def draw_overlay(image_bgr: np.ndarray,
                 label_map: np.ndarray,
                 palette: Sequence[Sequence[int]],
                 classes: Sequence[str],
                 opacity: float = 0.5) -> np.ndarray:
    """Blend class colours onto an image and add a legend of the classes present.

    Args:
        image_bgr: (H, W, 3) uint8 BGR image.
        label_map: (H, W) class ids, indices into ``palette`` and ``classes``.
        palette: RGB colour per class id.
        classes: Name per class id.
        opacity: Weight of the class colours in the blend (0: the image only, 1: colours only).

    Returns:
        (H', W', 3) uint8 BGR: the blend enlarged by :func:`vis_scale` (top left), and to its
        right a legend panel listing each class present with its colour and pixel share.
    """
    if image_bgr.shape[:2] != label_map.shape:
        raise ValueError(f'image {image_bgr.shape[:2]} and label map {label_map.shape} '
                         'differ in size')
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f'opacity must be in [0, 1], got {opacity}')
    colours_bgr = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:, ::-1]
    height, width = label_map.shape
    # A few rows at a time: a 6000x6000 photo in float64 at once would take ~2.5 GB.
    blend = np.empty((height, width, 3), dtype=np.uint8)
    counts = np.zeros(len(colours_bgr), dtype=np.int64)
    rows = max(1, _CHUNK_VALUES // max(1, width * 3))
    for top in range(0, height, rows):
        labels = label_map[top:top + rows]
        part = image_bgr[top:top + rows].astype(np.float32) * (1.0 - opacity) + \
            colours_bgr[labels] * opacity
        blend[top:top + rows] = np.clip(np.rint(part), 0, 255)
        counts += np.bincount(labels.ravel(), minlength=len(counts))[:len(counts)]
    scale = vis_scale(height, width)
    if scale > 1:
        blend = cv2.resize(blend, (width * scale, height * scale), interpolation=cv2.INTER_NEAREST)

    entries = [(int(i), f'{classes[i]} {_share(counts[i] / label_map.size)}')
               for i in np.flatnonzero(counts)]
    # Text grows with the image so the legend stays readable on large photos.
    font_scale = float(np.clip(min(blend.shape[:2]) / 600.0, 0.45, 2.0))
    thickness = max(1, round(font_scale * 1.5))
    (_, text_h), baseline = cv2.getTextSize('Ag', _FONT, font_scale, thickness)
    row_h = text_h + baseline + max(4, text_h // 2)
    swatch = text_h + baseline
    margin = max(4, text_h // 2)
    text_w = max(cv2.getTextSize(text, _FONT, font_scale, thickness)[0][0] for _, text in entries)
    panel_w = margin * 3 + swatch + text_w
    panel_h = margin * 2 + row_h * len(entries)

    canvas_h = max(blend.shape[0], panel_h)
    canvas = np.full((canvas_h, blend.shape[1] + panel_w, 3), _PANEL_BGR, dtype=np.uint8)
    canvas[:blend.shape[0], :blend.shape[1]] = blend
    x0 = blend.shape[1] + margin
    for row, (class_id, text) in enumerate(entries):
        top = margin + row * row_h
        colour = tuple(int(c) for c in colours_bgr[class_id])
        cv2.rectangle(canvas, (x0, top), (x0 + swatch, top + swatch), colour, -1)
        cv2.rectangle(canvas, (x0, top), (x0 + swatch, top + swatch), _TEXT_BGR, 1)
        cv2.putText(canvas, text, (x0 + swatch + margin, top + text_h), _FONT, font_scale,
                    _TEXT_BGR, thickness, cv2.LINE_AA)
    return canvas

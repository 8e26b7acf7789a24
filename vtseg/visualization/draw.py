"""Drawing: label overlays with a legend (folder inference) and token figures (the visualiser).

Both colour pixels by an id over an image with one blend, :func:`blend_labels`: a
prediction's class ids with the data set's palette, the token each pixel reads most
with one colour per token, a token's attention quantised to the 256 colours of a
heat map.

- :func:`draw_overlay`: the prediction blended on the image and, in a panel to its right
  (so it never hides a prediction), a legend of the classes present with their pixel
  share. Images too small to read (a 1x1 or 8x8 input) are enlarged by an integer factor
  with nearest-neighbour sampling, so every input pixel stays a sharp square.
- :func:`draw_token_attention`: a grid of panels (matplotlib), one row per VT module or
  pyramid level of :func:`~vtseg.visualization.token_maps`, written as a PNG that is never
  seen half-written.
"""
import io
import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vtseg.utils.files import atomic_write_bytes
from .token_maps import TokenMaps

__all__ = ['blend_labels', 'vis_scale', 'draw_overlay', 'token_colours', 'Panel', 'TokenFigure',
           'draw_token_attention']

_MIN_VIS_SIDE = 256  # small images are enlarged until their short side reaches this
_MAX_VIS_SIDE = 4096  # ... but never beyond this on the long side
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_PANEL_BGR = (40, 40, 40)
_TEXT_BGR = (255, 255, 255)
_CHUNK_VALUES = 1 << 22  # pixel values blended per step (bounds the float temporaries)


def blend_labels(image: np.ndarray, labels: np.ndarray, colours: np.ndarray,
                 opacity: float) -> np.ndarray:
    """``(1 - opacity) * image + opacity * colours[labels]``, rounded, a few rows at a time.

    Args:
        image: ``(H, W, 3)`` uint8.
        labels: ``(H, W)`` integer ids, indices into ``colours``.
        colours: ``(N, 3)`` uint8 colour per id, in ``image``'s channel order.
        opacity: Weight of the colours (0: the image only, 1: colours only).

    Returns:
        ``(H, W, 3)`` uint8. Memory stays bounded on large images: a 6000x6000 photo
        blended at once in float64 would take ~2.5 GB.
    """
    height, width = labels.shape
    blend = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, _CHUNK_VALUES // max(1, width * 3))
    for top in range(0, height, rows):
        part = image[top:top + rows].astype(np.float32) * (1.0 - opacity) + \
            colours[labels[top:top + rows]] * opacity
        blend[top:top + rows] = np.clip(np.rint(part), 0, 255)
    return blend


# ----------------------------------------------------------------------------------------------
# Overlay of a predicted label map (folder inference)

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
    blend = blend_labels(image_bgr, label_map, colours_bgr, opacity)
    counts = np.bincount(label_map.ravel(), minlength=len(colours_bgr))[:len(colours_bgr)]
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


# ----------------------------------------------------------------------------------------------
# Token figure (tools/visualize_tokens.py)

@dataclass
class Panel:
    """One panel of a token figure.

    Args:
        row: Grid row (one per VT module / pyramid level).
        col: Grid column: 0 the input image, 1 the projector's argmax map,
            ``2 + l`` token ``l``.
        kind: ``'image'``, ``'argmax'``, ``'no-projector'`` or ``'token'``.
        label: The row's :attr:`TokenMaps.label`.
        token: Token index for ``'token'`` panels, else ``None``.
        box: ``(x0, y0, x1, y1)`` in pixels of the PNG, origin top left, exclusive end.
    """

    row: int
    col: int
    kind: str
    label: str
    token: Optional[int]
    box: Tuple[int, int, int, int]


@dataclass
class TokenFigure:
    """The layout of a written token figure.

    Args:
        path: The PNG file.
        width: Image width in pixels.
        height: Image height in pixels.
        rows: Grid rows (VT modules / pyramid levels).
        cols: Grid columns (``2 + `` the most tokens of any row).
        panels: Every drawn panel; grid cells beyond a row's tokens stay empty.
    """

    path: str
    width: int
    height: int
    rows: int
    cols: int
    panels: List[Panel] = field(default_factory=list)


def token_colours(num_tokens: int) -> np.ndarray:
    """``(L, 3)`` uint8 RGB: distinct colours, one per token."""
    from matplotlib import colormaps
    if num_tokens <= 10:
        rgb = colormaps['tab10'](np.arange(num_tokens))[:, :3]
    elif num_tokens <= 20:
        # tab20 in pairs of a dark and a light shade: all dark ones first keeps
        # neighbouring token indices apart.
        order = np.r_[np.arange(0, 20, 2), np.arange(1, 20, 2)][:num_tokens]
        rgb = colormaps['tab20'](order)[:, :3]
    else:
        rgb = colormaps['hsv'](np.arange(num_tokens) / num_tokens)[:, :3]
    return np.rint(rgb * 255).astype(np.uint8)


def _heat_colours() -> np.ndarray:
    """``(256, 3)`` uint8 RGB: matplotlib's ``jet``, cold (0) to hot (255)."""
    from matplotlib import colormaps
    return np.rint(colormaps['jet'](np.arange(256))[:, :3] * 255).astype(np.uint8)


def _upsample(maps: torch.Tensor, size: Tuple[int, int], shown: Tuple[int, int]) -> np.ndarray:
    """``(L, h, w)`` maps -> ``(L, *shown)``: bilinearly resized to the network
    input ``size``, then cropped to the shown image (padding lies bottom and right)."""
    up = F.interpolate(maps[None].float(), size=size, mode='bilinear', align_corners=False)
    return up[0, :, :shown[0], :shown[1]].numpy()  # (1, L, H, W) -> (L, h_shown, w_shown)


def _encode_png(rgb: np.ndarray, colors: Optional[int] = None) -> bytes:
    """PNG file content of ``rgb`` ``(H, W, 3)`` uint8; ``colors``: as a palette PNG."""
    from PIL import Image
    picture = Image.fromarray(np.ascontiguousarray(rgb))
    if colors is not None:
        # Median cut without dithering: flat overlays stay flat, and compress well.
        picture = picture.quantize(colors=colors, method=Image.Quantize.MEDIANCUT,
                                   dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    picture.save(buffer, format='PNG', compress_level=9)
    return buffer.getvalue()


def draw_token_attention(
        image: np.ndarray,
        maps: Sequence[TokenMaps],
        out_file: str,
        input_size: Optional[Tuple[int, int]] = None,
        sample: int = 0,
        alpha: float = 0.5,
        panel_inches: float = 1.0,
        dpi: int = 100,
        colors: Optional[int] = None,
) -> TokenFigure:
    """Draw what every token attends to, one row per VT module / pyramid level, as a PNG.

    Each row holds the input image (labelled with the module or level, its map
    size and stride), a colour-coded map of the token each pixel reads most
    from the projector (argmax over L of the projector attention), and for
    every token ``l`` its tokenizer attention over the pixels, upsampled and
    overlaid as a heat map (each map scaled to its own maximum, since a
    softmax over thousands of pixels has tiny values). A token panel's frame
    has the token's colour in the argmax map, its title the share of feature
    map pixels that read the token most.

    Args:
        image: The image the model saw, ``(H, W, 3)`` uint8 RGB.
        maps: From :func:`~vtseg.visualization.token_maps`.
        out_file: PNG to write; it is written whole or not at all
            (:func:`vtseg.utils.files.atomic_write_bytes`).
        input_size: ``(H', W')`` of the network input when it was padded
            beyond the image; defaults to the image size.
        sample: Which image of the batch to draw.
        alpha: Opacity of the overlays.
        panel_inches: Side of one panel.
        dpi: Resolution of the PNG (pixels per inch).
        colors: Write a palette PNG of at most this many colours (2-256),
            about a third of the size (for documentation); ``None``: full RGB.

    Returns:
        The :class:`TokenFigure` layout of the written file.
    """
    from matplotlib.axes import Axes
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not maps:
        raise ValueError('no token attention to draw')
    if colors is not None and not 2 <= colors <= 256:
        raise ValueError(f'a palette PNG holds 2 to 256 colours, got colors={colors}')
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f'image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}')
    batch = maps[0].tokenizer.shape[0]
    if not 0 <= sample < batch:
        raise ValueError(f'sample {sample} is not in the batch of {batch}')
    shown = image.shape[:2]
    input_size = tuple(input_size or shown)
    rows = len(maps)
    cols = 2 + max(m.num_tokens for m in maps)

    # Geometry in inches: a label band left of the grid, a title band above each panel.
    gap, title_band, label_band, margin = 0.06, 0.2, 0.3, 0.08
    cell_w, cell_h = panel_inches + gap, title_band + panel_inches + gap
    fig_w = label_band + cols * cell_w + margin
    fig_h = rows * cell_h + margin
    width, height = round(fig_w * dpi), round(fig_h * dpi)
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor='white')
    FigureCanvasAgg(fig)
    layout = TokenFigure(path=out_file, width=width, height=height, rows=rows, cols=cols)
    font = max(5.0, 6.5 * panel_inches)

    def panel(row: int, col: int, kind: str, label: str, token: Optional[int] = None) -> Axes:
        """Add the axes of one grid cell and record it in the layout."""
        x0 = label_band + col * cell_w
        y0 = row * cell_h + title_band  # from the top
        ax = fig.add_axes((x0 / fig_w, 1 - (y0 + panel_inches) / fig_h,
                           panel_inches / fig_w, panel_inches / fig_h))
        ax.set_xticks([])
        ax.set_yticks([])
        box = (round(x0 * dpi), round(y0 * dpi),
               round((x0 + panel_inches) * dpi), round((y0 + panel_inches) * dpi))
        layout.panels.append(Panel(row, col, kind, label, token, box))
        return ax

    heat = _heat_colours()
    everywhere = np.zeros(shown, dtype=np.int64)  # one id for every pixel
    for row, level in enumerate(maps):
        h, w = level.size
        # The nominal stride: a 100-pixel input gives a 7-pixel map at 1/16.
        stride = 2 ** round(math.log2(input_size[0] / h))
        ax = panel(row, 0, 'image', level.label)
        ax.imshow(image)
        ax.set_ylabel(f'{level.label}\n{h}x{w}, 1/{stride}', fontsize=font)
        if row == 0:
            ax.set_title('input', fontsize=font)

        colours = token_colours(level.num_tokens)
        if level.projector is not None:
            proj = level.projector[sample]  # (L, h, w), each pixel's weights sum to 1
            # Upsample the attention, not the token ids: smooth boundaries between tokens.
            owner = _upsample(proj, input_size, shown).argmax(axis=0)  # (H, W) ids
            share = np.bincount(proj.argmax(dim=0).flatten().numpy(),
                                minlength=level.num_tokens) / (h * w)  # of feature map pixels
            ax = panel(row, 1, 'argmax', level.label)
            ax.imshow(blend_labels(image, owner, colours, alpha))
            ax.set_title('most-read token', fontsize=font)
        else:
            share = None
            ax = panel(row, 1, 'no-projector', level.label)
            # the image, faded: nothing is projected back here
            ax.imshow(blend_labels(image, everywhere, np.full((1, 3), 255, np.uint8), 0.65))
            ax.text(0.5, 0.5, 'no projector', ha='center', va='center', fontsize=font,
                    transform=ax.transAxes)

        tok = level.tokenizer[sample]  # (L, h, w), each map sums to 1
        tok = tok / tok.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
        tok = _upsample(tok, input_size, shown).clip(0, 1)  # (L, H, W)
        for token in range(level.num_tokens):
            ax = panel(row, 2 + token, 'token', level.label, token)
            ax.imshow(blend_labels(image, np.rint(tok[token] * 255).astype(np.int64), heat, alpha))
            if share is None:
                ax.set_title(f'token {token}', fontsize=font)
            else:
                ax.set_title(f'token {token}: {share[token]:.0%}', fontsize=font)
                # The frame carries the token's colour in the argmax map.
                for spine in ax.spines.values():
                    spine.set_edgecolor(colours[token] / 255)
                    spine.set_linewidth(2.5)

    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]  # (height, width, 3); no alpha needed
    atomic_write_bytes(out_file, _encode_png(rgb, colors))
    return layout

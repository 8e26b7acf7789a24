"""See the tokens: what each visual token attends to, drawn over the image.

The paper's central claim is that a few visual tokens capture the semantic
concepts of an image. This module makes that visible for any model that holds
VT modules (:class:`~vtseg.layers.VisualTransformer`, e.g. VT-ResNet) or a
:class:`~vtseg.models.VTFPN` neck:

1. :func:`record_token_attention` / :func:`token_attention` collect, per VT
   module or pyramid level, the tokenizer's spatial attention (which pixels
   make up each token) and the projector's pixel-to-token attention (which
   tokens each pixel reads back). The layers hand these over on request
   (``attn_maps``); a forward pre-hook makes the request, so the model's own
   forward runs unchanged and nothing is kept when no one records.
2. :func:`draw_token_attention` renders them as a grid of panels over the image.

Inputs are prepared as the model expects them by :func:`segmentor_inputs`
(an mmseg segmentor's test pipeline and data preprocessor) or
:func:`classifier_inputs` (resize, centre crop, normalise).
"""
import math
import os
import os.path as osp
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vtseg.layers import VisualTransformer
from vtseg.models import VTFPN, VTResNet

__all__ = [
    'TokenAttention', 'Panel', 'TokenFigure', 'record_token_attention', 'token_attention',
    'classifier_inputs', 'segmentor_inputs', 'draw_token_attention', 'visualize_tokens',
    'IMAGENET_MEAN', 'IMAGENET_STD',
]

# ImageNet statistics in RGB order on the 0-255 scale (what mmseg and mmpretrain configs use).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass
class TokenAttention:
    """The attention of one VT module (or one VT-FPN pyramid level) over a batch.

    Args:
        name: Qualified name of the recorded module in the model
            (e.g. ``'backbone.vt_modules.0'``, ``'neck'``).
        label: Human-readable name (``'VT module 1'``, ``'VT-FPN level 2'``).
        size: ``(h, w)`` of the feature map the tokens were taken from.
        tokenizer: ``(B, h*w, L)``; column ``l`` is token ``l``'s spatial
            attention, a softmax over the ``h*w`` pixels.
        projector: ``(B, h*w, L)``; row ``p`` says how much pixel ``p`` reads
            from each token, a softmax over the L tokens. ``None`` for a module
            without projector (a VT-ResNet classifier's last module).
    """

    name: str
    label: str
    size: Tuple[int, int]
    tokenizer: torch.Tensor
    projector: Optional[torch.Tensor]

    @property
    def num_tokens(self) -> int:
        return self.tokenizer.shape[-1]

    def spatial(self, which: str = 'tokenizer') -> torch.Tensor:
        """The ``'tokenizer'`` or ``'projector'`` attention as maps ``(B, L, h, w)``."""
        attn = getattr(self, which)
        if attn is None:
            raise ValueError(f'{self.label} has no projector attention')
        b, _, num_tokens = attn.shape
        # (B, HW, L) -> (B, L, HW) -> (B, L, h, w)
        return attn.transpose(1, 2).reshape(b, num_tokens, *self.size)


def _attn_maps_index(module: nn.Module) -> int:
    """Index of ``attn_maps`` among the positional arguments of the module's ``forward``:
    ``VisualTransformer.forward(x, tokens, attn_maps)``, ``VTFPN.forward(inputs, attn_maps)``."""
    return 2 if isinstance(module, VisualTransformer) else 1


@contextmanager
def record_token_attention(model: nn.Module) -> Iterator[List[TokenAttention]]:
    """Record the token attention of every VT module and VT-FPN inside ``model``.

    Within the ``with`` block each forward of a
    :class:`~vtseg.layers.VisualTransformer` appends one
    :class:`TokenAttention`, each forward of a :class:`~vtseg.models.VTFPN`
    one per input level, in the order they run. A forward pre-hook passes the
    module an ``attn_maps`` container (a caller's own container is kept and
    read along); the hooks are removed on exit.

    Args:
        model: Any module (a VT-ResNet, an mmseg segmentor, ...).

    Yields:
        The list the records are appended to (tensors detached, on their device).

    Example:
        >>> from vtseg.models import vt_resnet18
        >>> model = vt_resnet18(num_classes=10).eval()
        >>> with record_token_attention(model) as records:
        ...     logits = model(torch.rand(1, 3, 64, 64))
        >>> [(r.label, tuple(r.tokenizer.shape)) for r in records]
        [('VT module 1', (1, 16, 16)), ('VT module 2', (1, 16, 16))]
    """
    records: List[TokenAttention] = []
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, (VisualTransformer, VTFPN))]
    vt_names = [name for name, m in targets if isinstance(m, VisualTransformer)]
    # module name -> (its attn_maps container, entries already in it, feature map sizes)
    pending = {}

    def pre_hook(name: str, module: nn.Module, args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
        is_vt = isinstance(module, VisualTransformer)
        index = _attn_maps_index(module)
        given = args[index] if len(args) > index else kwargs.get('attn_maps')
        container = given if given is not None else ({} if is_vt else [])
        sizes = [tuple(args[0].shape[2:])] if is_vt else [tuple(x.shape[2:]) for x in args[0]]
        pending[name] = (container, 0 if is_vt else len(container), sizes)
        if given is None:
            if len(args) > index:
                args = (*args[:index], container, *args[index + 1:])
            else:
                kwargs = {**kwargs, 'attn_maps': container}
        return args, kwargs

    def post_hook(name: str, module: nn.Module, args: tuple, output: object) -> None:
        container, start, sizes = pending.pop(name)
        is_vt = isinstance(module, VisualTransformer)
        per_level = [container] if is_vt else container[start:]
        for level, (maps, size) in enumerate(zip(per_level, sizes)):
            projector = maps.get('projector')
            records.append(TokenAttention(
                name=name,
                label=(f'VT module {vt_names.index(name) + 1}' if is_vt
                       else f'VT-FPN level {level + 1}'),
                size=size,
                tokenizer=maps['tokenizer'].detach(),
                projector=None if projector is None else projector.detach(),
            ))

    handles = []
    try:
        for name, module in targets:
            handles.append(module.register_forward_pre_hook(
                lambda m, a, k, name=name: pre_hook(name, m, a, k), with_kwargs=True))
            handles.append(module.register_forward_hook(
                lambda m, a, o, name=name: post_hook(name, m, a, o)))
        yield records
    finally:
        for handle in handles:
            handle.remove()


def token_attention(model: nn.Module, inputs: torch.Tensor) -> List[TokenAttention]:
    """Run ``model``'s feature extractor on ``inputs`` and return its token attention.

    Only the part of the model that holds the tokens runs: ``extract_feat``
    (backbone and neck) of an mmseg segmentor or mmpretrain classifier,
    ``forward_features`` of a :class:`~vtseg.models.VTResNet`, the plain
    forward of anything else.

    Args:
        model: A model containing VT modules or a VT-FPN.
        inputs: Normalised images ``(B, 3, H, W)`` on the model's device.

    Returns:
        One :class:`TokenAttention` per VT module / pyramid level, in forward
        order, tensors moved to the CPU as float32.

    Raises:
        ValueError: The model holds no VT module and no VT-FPN.
    """
    if hasattr(model, 'extract_feat'):
        run = model.extract_feat
    elif isinstance(model, VTResNet):
        run = model.forward_features
    else:
        run = model
    with torch.no_grad(), record_token_attention(model) as records:
        run(inputs)
    if not records:
        raise ValueError(f'{type(model).__name__} has no VT module (VisualTransformer) and no '
                         'VT-FPN neck: there are no tokens to show')
    for r in records:
        r.tokenizer = r.tokenizer.float().cpu()
        r.projector = None if r.projector is None else r.projector.float().cpu()
    return records


def classifier_inputs(
        image: np.ndarray,
        img_size: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        to_rgb: bool = True,
) -> Tuple[torch.Tensor, np.ndarray]:
    """ImageNet-style evaluation input: shorter side to ``img_size``, centre crop.

    Args:
        image: ``(H, W, 3)`` uint8, BGR (as ``cv2.imread`` returns it).
        img_size: Side of the square crop the classifier sees.
        mean: Per-channel mean subtracted (in the channel order fed to the model).
        std: Per-channel standard deviation divided by.
        to_rgb: Feed RGB (``True``, ImageNet models) instead of BGR.

    Returns:
        ``(1, 3, img_size, img_size)`` float tensor and the RGB crop
        ``(img_size, img_size, 3)`` uint8 that it shows.
    """
    h, w = image.shape[:2]
    scale = img_size / min(h, w)
    resized = cv2.resize(image, (max(img_size, round(w * scale)), max(img_size, round(h * scale))),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top = (resized.shape[0] - img_size) // 2
    left = (resized.shape[1] - img_size) // 2
    crop = resized[top:top + img_size, left:left + img_size]
    rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
    fed = rgb if to_rgb else crop
    x = torch.from_numpy(fed.astype(np.float32)).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)
    x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return x[None], rgb


def segmentor_inputs(segmentor: nn.Module, image: np.ndarray) -> Tuple[torch.Tensor, np.ndarray]:
    """What an mmseg segmentor sees at test time: its config's test pipeline and
    its data preprocessor (as ``mmseg.apis.inference_model`` prepares images).

    Args:
        segmentor: An mmseg segmentor with ``cfg`` set (``mmseg.apis.init_model`` sets it).
        image: ``(H, W, 3)`` uint8, BGR.

    Returns:
        Normalised input ``(1, 3, H', W')`` on the segmentor's device and the RGB
        image ``(h, w, 3)`` uint8 after the pipeline (resized, not padded).
    """
    from mmengine.dataset import Compose
    cfg = segmentor.cfg
    pipeline_cfg = cfg.get('test_pipeline') or cfg.test_dataloader.dataset.pipeline
    # No annotation to load, and the image is already in memory.
    steps = [dict(t) for t in pipeline_cfg if t.get('type') != 'LoadAnnotations']
    if steps and steps[0].get('type') == 'LoadImageFromFile':
        steps[0] = dict(type='LoadImageFromNDArray')
    data = Compose(steps)(dict(img=image))
    shown = data['inputs'].permute(1, 2, 0).numpy()  # (3, h, w) BGR -> (h, w, 3)
    shown = np.ascontiguousarray(shown[..., ::-1]).astype(np.uint8)
    batch = dict(inputs=[data['inputs']], data_samples=[data['data_samples']])
    batch = segmentor.data_preprocessor(batch, False)  # normalised, stacked, padded if configured
    return batch['inputs'], shown


# ----------------------------------------------------------------------------------------------
# Drawing

@dataclass
class Panel:
    """One panel of a token figure.

    Args:
        row: Grid row (one per VT module / pyramid level).
        col: Grid column: 0 the input image, 1 the projector's argmax map,
            ``2 + l`` token ``l``.
        kind: ``'image'``, ``'argmax'``, ``'no-projector'`` or ``'token'``.
        label: The row's :attr:`TokenAttention.label`.
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


def _token_colours(num_tokens: int) -> np.ndarray:
    """``(L, 3)`` float RGB in [0, 1]: distinct colours, one per token."""
    from matplotlib import colormaps
    if num_tokens <= 10:
        return colormaps['tab10'](np.arange(num_tokens))[:, :3]
    if num_tokens <= 20:
        # tab20 in pairs of a dark and a light shade: all dark ones first keeps
        # neighbouring token indices apart.
        order = np.r_[np.arange(0, 20, 2), np.arange(1, 20, 2)][:num_tokens]
        return colormaps['tab20'](order)[:, :3]
    return colormaps['hsv'](np.arange(num_tokens) / num_tokens)[:, :3]


def _upsample(maps: torch.Tensor, size: Tuple[int, int], shown: Tuple[int, int]) -> np.ndarray:
    """``(L, h, w)`` maps -> ``(L, *shown)``: bilinearly resized to the network
    input ``size``, then cropped to the shown image (padding lies bottom and right)."""
    up = F.interpolate(maps[None].float(), size=size, mode='bilinear', align_corners=False)
    return up[0, :, :shown[0], :shown[1]].numpy()  # (1, L, H, W) -> (L, h_shown, w_shown)


def _write_png_atomically(path: str, rgb: np.ndarray, colors: Optional[int] = None) -> None:
    """Write ``rgb`` ``(H, W, 3)`` uint8 as a PNG: to a temporary file next to
    ``path``, then moved into place, so readers never see a half-written file
    and a failure leaves none behind. ``colors``: reduce to a palette PNG."""
    from PIL import Image
    picture = Image.fromarray(np.ascontiguousarray(rgb))
    if colors is not None:
        # Median cut without dithering: flat overlays stay flat, and compress well.
        picture = picture.quantize(colors=colors, method=Image.Quantize.MEDIANCUT,
                                   dither=Image.Dither.NONE)
    out_dir = osp.dirname(osp.abspath(path))
    os.makedirs(out_dir, exist_ok=True)
    tmp = osp.join(out_dir, f'.{osp.basename(path)}.{os.getpid()}.tmp')
    try:
        picture.save(tmp, format='PNG', compress_level=9)
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def draw_token_attention(
        image: np.ndarray,
        attention: Sequence[TokenAttention],
        out_file: str,
        input_size: Optional[Tuple[int, int]] = None,
        sample: int = 0,
        alpha: float = 0.5,
        panel_inches: float = 1.0,
        dpi: int = 100,
        colors: Optional[int] = None,
) -> TokenFigure:
    """Draw what every token attends to, one row per VT module / pyramid level.

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
        attention: From :func:`token_attention`.
        out_file: PNG to write; written to a temporary file first and moved
            into place, so a failure leaves no partial file.
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
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    if not attention:
        raise ValueError('no token attention to draw')
    if colors is not None and not 2 <= colors <= 256:
        raise ValueError(f'a palette PNG holds 2 to 256 colours, got colors={colors}')
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f'image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}')
    batch = attention[0].tokenizer.shape[0]
    if not 0 <= sample < batch:
        raise ValueError(f'sample {sample} is not in the batch of {batch}')
    shown = image.shape[:2]
    input_size = tuple(input_size or shown)
    rows = len(attention)
    cols = 2 + max(a.num_tokens for a in attention)

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

    base = image.astype(np.float32) / 255.0
    heat_map = colormaps['jet']
    for row, att in enumerate(attention):
        h, w = att.size
        # The nominal stride: a 100-pixel input gives a 7-pixel map at 1/16.
        stride = 2 ** round(math.log2(input_size[0] / h))
        ax = panel(row, 0, 'image', att.label)
        ax.imshow(image)
        ax.set_ylabel(f'{att.label}\n{h}x{w}, 1/{stride}', fontsize=font)
        if row == 0:
            ax.set_title('input', fontsize=font)

        colours = _token_colours(att.num_tokens)
        if att.projector is not None:
            proj = att.spatial('projector')[sample]  # (L, h, w)
            # Upsample the attention, not the token ids: smooth boundaries between tokens.
            owner = _upsample(proj, input_size, shown).argmax(axis=0)  # (H, W) ids
            share = np.bincount(proj.argmax(dim=0).flatten().numpy(),
                                minlength=att.num_tokens) / (h * w)  # of feature map pixels
            ax = panel(row, 1, 'argmax', att.label)
            ax.imshow((1 - alpha) * base + alpha * colours[owner])
            ax.set_title('most-read token', fontsize=font)
        else:
            share = None
            ax = panel(row, 1, 'no-projector', att.label)
            ax.imshow(0.35 * base + 0.65)  # the image, faded: nothing is projected back here
            ax.text(0.5, 0.5, 'no projector', ha='center', va='center', fontsize=font,
                    transform=ax.transAxes)

        tok = att.spatial('tokenizer')[sample]  # (L, h, w), each map sums to 1
        tok = tok / tok.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
        tok = _upsample(tok, input_size, shown).clip(0, 1)  # (L, H, W)
        for token in range(att.num_tokens):
            ax = panel(row, 2 + token, 'token', att.label, token)
            ax.imshow((1 - alpha) * base + alpha * heat_map(tok[token])[..., :3])
            if share is None:
                ax.set_title(f'token {token}', fontsize=font)
            else:
                ax.set_title(f'token {token}: {share[token]:.0%}', fontsize=font)
                # The frame carries the token's colour in the argmax map.
                for spine in ax.spines.values():
                    spine.set_edgecolor(colours[token])
                    spine.set_linewidth(2.5)

    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]  # (height, width, 3); no alpha needed
    _write_png_atomically(out_file, rgb, colors)
    return layout


def visualize_tokens(
        model: nn.Module,
        image: np.ndarray,
        out_file: str,
        img_size: int = 224,
        **draw_kwargs,
) -> TokenFigure:
    """Image in, token figure out: prepare the input as ``model`` expects it,
    record its token attention and draw it.

    Args:
        model: An mmseg segmentor (from ``mmseg.apis.init_model``; its test
            pipeline is used) or a :class:`~vtseg.models.VTResNet` (ImageNet
            normalisation, centre crop of ``img_size``).
        image: ``(H, W, 3)`` uint8 BGR, as ``cv2.imread`` returns it.
        out_file: The PNG to write.
        img_size: Crop side for a VT-ResNet.
        **draw_kwargs: Passed to :func:`draw_token_attention`.

    Returns:
        The :class:`TokenFigure` layout.
    """
    device = next(model.parameters()).device
    if hasattr(model, 'data_preprocessor') and hasattr(model, 'cfg'):
        inputs, shown = segmentor_inputs(model, image)
    else:
        inputs, shown = classifier_inputs(image, img_size)
    attention = token_attention(model, inputs.to(device))
    return draw_token_attention(shown, attention, out_file, input_size=tuple(inputs.shape[2:]),
                                **draw_kwargs)

"""Predict class-id maps of large images in bounded memory, as mmseg's ``EncoderDecoder.predict`` does.

mmseg 1.2.2's ``slide_inference`` keeps a ``(N, C, H, W)`` sum of logits and, for
every window, pads the window's logits to that full size before adding them, so
each window costs time proportional to the whole image; ``postprocess_result``
then resizes the ``(C, h, w)`` logits to the original ``(C, H, W)`` in one
tensor. A 6000x6000 photo with 171 classes needs ~25 GB for each of them.

Here the same numbers are computed in pieces:

- windows follow mmseg's grid and are run ``window_batch_size`` at a time; each
  window is normalised by the model's own data preprocessor when it is cut out,
  so the image is never held as a float tensor (:func:`slide_logit_strips`);
- logits are summed in a band along the image's long side that holds only the
  rows (or columns) that windows still add to: at most ``(C, crop + (k - 1) *
  stride, short side)`` for windows spanning ``k`` rows of the grid per batch;
  finished rows are divided by their window count and handed on;
- :class:`LabelMapAssembler` takes those rows: when the model's input has the
  image's size (no resize in the test pipeline) it turns them into class ids
  at once; otherwise it keeps the logits at the input resolution (the size the
  test pipeline resizes to) and resizes them to the original size a few rows
  at a time with the weights of ``F.interpolate`` before taking the argmax
  (:func:`resize_argmax_into`).

Callers who want the class scores themselves (``tools/infer.py --save-logits``) pass a
:data:`LogitsSink`: it receives the logits at the original image size in the same
pieces (strips of rows or columns) as the class ids are made, so they are never whole
in memory either.

Tests compare the result with mmseg's ``slide_inference`` + ``postprocess_result``
(float tolerance: sums of the same numbers in another grouping).
"""
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    'Box', 'LogitsSink', 'window_grid', 'slide_logit_strips', 'resize_argmax_into', 'LabelMapAssembler',
    'supports_streaming', 'predict_whole', 'slide_encoder', 'predict_sliding', 'class_probabilities'
]

# (y1, y2, x1, x2) of a window in the model's input, end exclusive.
Box = Tuple[int, int, int, int]
# Receives logits at the original image size, piece by piece: (axis, start, strip) with strip
# (C, n, W) for rows start..start+n (axis 0) or (C, H, n) for columns (axis 1).
LogitsSink = Callable[[int, int, torch.Tensor], None]
# Elements of float32 per chunk of the resize (about 32 MB).
_RESIZE_CHUNK_ELEMENTS = 8 * 1024 * 1024


def window_grid(image_hw: Tuple[int, int], crop_hw: Tuple[int, int],
                stride_hw: Tuple[int, int]) -> List[Box]:
    """mmseg's sliding windows over an image, in mmseg's order (row by row).

    Args:
        image_hw: Height and width of the model's input.
        crop_hw: Window height and width.
        stride_hw: Step between window origins.

    Returns:
        ``(y1, y2, x1, x2)`` per window; windows at the bottom and right edges are moved
        back to fit inside the image, and an image smaller than a window is one window.
    """
    (h_img, w_img), (h_crop, w_crop), (h_stride, w_stride) = image_hw, crop_hw, stride_hw
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    boxes = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2 = min(h_idx * h_stride + h_crop, h_img)
            x2 = min(w_idx * w_stride + w_crop, w_img)
            boxes.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return boxes


def slide_logit_strips(encode: Callable[[Sequence[Box]], torch.Tensor],
                       image_hw: Tuple[int, int],
                       crop_hw: Tuple[int, int],
                       stride_hw: Tuple[int, int],
                       window_batch_size: int = 1,
                       on_window: Optional[Callable[[int, int], None]] = None
                       ) -> Iterator[Tuple[int, int, torch.Tensor]]:
    """Average window logits as mmseg's ``slide_inference``, yielding finished strips.

    Args:
        encode: Logits ``(N, C, h, w)`` of the windows it is given (at window size).
        image_hw: Height and width of the model's input.
        crop_hw: Window height and width.
        stride_hw: Step between window origins.
        window_batch_size: Windows per call of ``encode``.
        on_window: Called with (windows done, windows in all) after each call of ``encode``.

    Yields:
        ``(axis, start, logits)``: finished logits of rows (``axis=0``, logits
        ``(C, n, W)``) or columns (``axis=1``, logits ``(C, H, n)``) ``start`` to
        ``start + n``, in order, covering the image once. Strips run along the long side,
        so the band held in memory is as wide as the short side.
    """
    if window_batch_size < 1:
        raise ValueError(f'window_batch_size must be at least 1, got {window_batch_size}')
    axis = 0 if image_hw[0] >= image_hw[1] else 1
    boxes = window_grid(image_hw, crop_hw, stride_hw)
    if axis == 1:  # column by column: the band spans the (short) height
        boxes.sort(key=lambda box: (box[2], box[0]))

    def span(box: Box) -> Tuple[int, int]:
        return (box[0], box[1]) if axis == 0 else (box[2], box[3])

    length = image_hw[axis]
    low = 0  # first row (column) the band holds
    band: Optional[torch.Tensor] = None  # (C, rows, W) or (C, H, columns), window sums
    count: Optional[torch.Tensor] = None  # (1, rows, W) or (1, H, columns), windows per pixel
    for first in range(0, len(boxes), window_batch_size):
        batch = boxes[first:first + window_batch_size]
        logits = encode(batch)  # (N, C, h, w)
        high = max(span(box)[1] for box in batch)
        held = 0 if band is None else band.shape[axis + 1]
        if band is None or low + held < high:
            grow_shape = list(logits.shape[1:2]) + list(image_hw)
            grow_shape[axis + 1] = high - low - held
            extra = logits.new_zeros(grow_shape)
            extra_count = logits.new_zeros([1] + grow_shape[1:])
            band = extra if band is None else torch.cat([band, extra], dim=axis + 1)
            count = extra_count if count is None else torch.cat([count, extra_count], dim=axis + 1)
        for (y1, y2, x1, x2), window_logits in zip(batch, logits):
            if axis == 0:
                y1, y2 = y1 - low, y2 - low
            else:
                x1, x2 = x1 - low, x2 - low
            band[:, y1:y2, x1:x2] += window_logits
            count[:, y1:y2, x1:x2] += 1
        if on_window is not None:
            on_window(first + len(batch), len(boxes))
        next_low = span(boxes[first + len(batch)])[0] if first + len(batch) < len(boxes) else length
        if next_low > low:
            finished = next_low - low
            strip = band.narrow(axis + 1, 0, finished) / count.narrow(axis + 1, 0, finished)
            # the rest becomes the new band (a view until the next growth copies it)
            band = band.narrow(axis + 1, finished, band.shape[axis + 1] - finished)
            count = count.narrow(axis + 1, finished, count.shape[axis + 1] - finished)
            yield axis, low, strip
            low = next_low


def _source_index(out_size: int, in_size: int, align_corners: bool,
                  device: torch.device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per output index: the two input indices and the weight of the second, as ATen's
    bilinear upsampling computes them (``compute_source_index_and_lambda``, float32)."""
    dst = torch.arange(out_size, dtype=torch.float32, device=device)
    if in_size == out_size:
        index = dst.long()
        return index, index, torch.zeros_like(dst)
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = dst * torch.tensor(scale, dtype=torch.float32)
    else:
        scale = torch.tensor(in_size / out_size, dtype=torch.float32)
        src = ((dst + 0.5) * scale - 0.5).clamp(min=0)
    index0 = src.floor().long().clamp(max=in_size - 1)
    weight1 = (src - index0).clamp(0, 1)
    index1 = index0 + (index0 < in_size - 1).long()
    return index0, index1, weight1


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities of ``(C, ...)`` logits: softmax over C, or the sigmoid when C is 1
    (a binary head, whose class-1 probability it is)."""
    if logits.shape[0] > 1:
        return logits.float().softmax(dim=0)
    return logits.float().sigmoid()


def _class_ids(logits: torch.Tensor, threshold: Optional[float]) -> torch.Tensor:
    """(n, m) uint8 class ids of ``(C, n, m)`` logits: argmax, or sigmoid > threshold when C is 1."""
    if logits.shape[0] > 1:
        return logits.argmax(dim=0).to(torch.uint8)
    return (logits[0].sigmoid() > threshold).to(torch.uint8)


def resize_argmax_into(labels: np.ndarray, logits: torch.Tensor, align_corners: bool,
                       threshold: Optional[float] = None,
                       chunk_elements: int = _RESIZE_CHUNK_ELEMENTS,
                       sink: Optional[LogitsSink] = None) -> None:
    """Bilinearly resize ``(C, h, w)`` logits to ``labels``' size and write their class ids.

    Equal to ``F.interpolate(logits[None], labels.shape, mode='bilinear',
    align_corners=align_corners)`` followed by an argmax over classes (mmseg's
    ``postprocess_result``), computed a few output rows at a time so that the resized
    logits never exist whole.

    Args:
        labels: (H, W) uint8 output, written in place.
        logits: (C, h, w) logits at the model's input resolution.
        align_corners: As the decode head's ``align_corners``.
        threshold: For one output channel: class 1 where ``sigmoid(logit) > threshold``.
        chunk_elements: About how many float32 values a chunk of output rows may hold.
        sink: Also receives each chunk of resized logits, ``(0, top, (C, rows, W))``.
    """
    num_classes, in_h, in_w = logits.shape
    out_h, out_w = labels.shape
    rows0, rows1, row_weight1 = _source_index(out_h, in_h, align_corners, logits.device)
    rows_per_chunk = max(1, chunk_elements // max(1, num_classes * out_w * 3))
    for top in range(0, out_h, rows_per_chunk):
        bottom = min(out_h, top + rows_per_chunk)
        index0, index1 = rows0[top:bottom], rows1[top:bottom]
        first, last = int(index0[0]), int(index1[-1])
        # the source rows this chunk reads, resized along the width only (rows unchanged)
        source = logits[None, :, first:last + 1]
        widened = F.interpolate(source, size=(source.shape[2], out_w), mode='bilinear',
                                align_corners=align_corners)[0]
        weight1 = row_weight1[top:bottom, None]
        chunk = ((1 - weight1) * widened[:, index0 - first] + weight1 * widened[:, index1 - first])
        if sink is not None:
            sink(0, top, chunk)
        labels[top:bottom] = _class_ids(chunk, threshold).cpu().numpy()


class LabelMapAssembler:
    """Class ids at the original image size from logits that arrive in strips.

    Reproduces mmseg's ``postprocess_result`` for one image: the padding the data
    preprocessor added is cut off, the logits are resized to ``ori_shape``
    (bilinear, the decode head's ``align_corners``) and the argmax is taken (for one
    output channel: ``sigmoid > threshold``).

    Args:
        meta: The image's metainfo after the data preprocessor (``ori_shape``,
            optional ``padding_size`` / ``img_padding_size`` as left, right, top, bottom).
        input_hw: Height and width of the logits (the model's input, padding included).
        num_classes: Output channels of the decode head.
        align_corners: The decode head's ``align_corners``.
        threshold: The decode head's ``threshold`` (one output channel only).
        device: Where the logits live.
        sink: Also receives the logits at the original size, in strips (see :data:`LogitsSink`).
    """

    def __init__(self, meta: dict, input_hw: Tuple[int, int], num_classes: int,
                 align_corners: bool, threshold: Optional[float], device: torch.device,
                 sink: Optional[LogitsSink] = None) -> None:
        padding = meta.get('img_padding_size', meta.get('padding_size', None)) or [0, 0, 0, 0]
        left, right, top, bottom = (int(p) for p in padding)
        self.valid = ((top, input_hw[0] - bottom), (left, input_hw[1] - right))
        valid_hw = (self.valid[0][1] - top, self.valid[1][1] - left)
        self.labels = np.zeros(tuple(int(s) for s in meta['ori_shape'][:2]), dtype=np.uint8)
        self.align_corners = align_corners
        self.threshold = threshold
        self.sink = sink
        # Logits are kept only when they must be resized: their resolution is then the one
        # the test pipeline chose, not the original image's.
        self.logits = None
        if valid_hw != self.labels.shape:
            self.logits = torch.empty((num_classes, *valid_hw), device=device)

    def add(self, axis: int, start: int, strip: torch.Tensor) -> None:
        """Take finished logits of rows (``axis=0``) or columns (``axis=1``) from ``start``."""
        (low, high), (cross_low, cross_high) = self.valid if axis == 0 else self.valid[::-1]
        first, last = max(start, low), min(start + strip.shape[axis + 1], high)
        if first >= last:
            return
        strip = strip.narrow(axis + 1, first - start, last - first)
        strip = strip.narrow(2 - axis, cross_low, cross_high - cross_low)
        if self.logits is not None:
            self.logits.narrow(axis + 1, first - low, last - first).copy_(strip)
            return
        if self.sink is not None:
            self.sink(axis, first - low, strip)
        ids = _class_ids(strip, self.threshold).cpu().numpy()
        if axis == 0:
            self.labels[first - low:last - low] = ids
        else:
            self.labels[:, first - low:last - low] = ids

    def finish(self) -> np.ndarray:
        """(H, W) uint8 class ids at the original image size."""
        if self.logits is not None:
            resize_argmax_into(self.labels, self.logits, self.align_corners, self.threshold, sink=self.sink)
            self.logits = None
        return self.labels


def supports_streaming(model: torch.nn.Module, metas: Sequence[dict]) -> bool:
    """Whether :func:`predict_whole` / :func:`predict_sliding` reproduce ``model.predict``:
    an mmseg encoder-decoder, images without test-time flips."""
    return (callable(getattr(model, 'encode_decode', None)) and hasattr(model, 'decode_head')
            and hasattr(model, 'align_corners') and hasattr(model, 'out_channels')
            and hasattr(model, 'data_preprocessor') and not any(m.get('flip') for m in metas))


def _assembler(model: torch.nn.Module, meta: dict, input_hw: Tuple[int, int],
               device: torch.device, sink: Optional[LogitsSink] = None) -> LabelMapAssembler:
    # EncoderDecoder copies align_corners from its head (CascadeEncoderDecoder: the last one)
    head = model.decode_head[-1] if isinstance(model.decode_head, torch.nn.ModuleList) else \
        model.decode_head
    return LabelMapAssembler(meta, input_hw, int(model.out_channels), bool(model.align_corners),
                             getattr(head, 'threshold', None), device, sink)


@torch.inference_mode()
def predict_whole(model: torch.nn.Module, samples: Sequence[dict],
                  sinks: Optional[Sequence[Optional[LogitsSink]]] = None) -> List[np.ndarray]:
    """Class ids of a batch of equal-size inputs, predicted whole (``test_cfg.mode='whole'``).

    Args:
        model: An mmseg encoder-decoder (see :func:`supports_streaming`).
        samples: Test-pipeline outputs (``inputs``: (3, h, w) uint8, ``data_samples``).
        sinks: Per sample, None or a :data:`LogitsSink` for its logits at the original size.

    Returns:
        (H, W) uint8 class ids per sample, at its original size.
    """
    data = model.data_preprocessor(dict(inputs=[s['inputs'] for s in samples],
                                        data_samples=[s['data_samples'] for s in samples]), False)
    metas = [sample.metainfo for sample in data['data_samples']]
    logits = model.encode_decode(data['inputs'], metas)  # (B, C, h, w)
    labels = []
    for meta, image_logits, sink in zip(metas, logits, sinks or [None] * len(metas)):
        assembler = _assembler(model, meta, tuple(image_logits.shape[1:]), image_logits.device, sink)
        assembler.add(0, 0, image_logits)
        labels.append(assembler.finish())
    return labels


def slide_encoder(model: torch.nn.Module, sample: dict
                  ) -> Tuple[Callable[[Sequence[Box]], torch.Tensor], Tuple[int, int], dict]:
    """What :func:`slide_logit_strips` needs to run ``model`` on windows of one input.

    Args:
        model: An mmseg encoder-decoder (see :func:`supports_streaming`).
        sample: A test-pipeline output (``inputs``: (3, h, w) uint8, ``data_samples``).

    Returns:
        ``(encode, input_hw, meta)``: window logits ``(N, C, h, w)`` for a list of boxes, as
        mmseg's ``slide_inference`` computes them; the size windows are cut from (padding
        included); the image's metainfo after the data preprocessor.
    """
    preprocessor = model.data_preprocessor
    meta = sample['data_samples'].metainfo
    if getattr(preprocessor, 'test_cfg', None):
        # The preprocessor pads the whole normalised image: do that once, cut windows from it.
        data = preprocessor(dict(inputs=[sample['inputs']], data_samples=[sample['data_samples']]),
                            False)
        normalised, meta = data['inputs'], data['data_samples'][0].metainfo

        def windows(boxes: Sequence[Box]) -> torch.Tensor:
            return torch.cat([normalised[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes])
        input_hw = tuple(normalised.shape[2:])
    else:
        image = sample['inputs']  # (3, h, w) uint8: each window is normalised when cut out

        def windows(boxes: Sequence[Box]) -> torch.Tensor:
            crops = [image[:, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes]
            return preprocessor(dict(inputs=crops), False)['inputs']
        input_hw = tuple(image.shape[1:])

    def encode(boxes: Sequence[Box]) -> torch.Tensor:
        crops = windows(boxes)  # (N, 3, h, w), normalised
        # as mmseg's slide_inference: the window's shape is the image shape the head resizes to
        crop_metas = [dict(meta, img_shape=crops.shape[2:]) for _ in boxes]
        return model.encode_decode(crops, crop_metas)

    return encode, input_hw, meta


@torch.inference_mode()
def predict_sliding(model: torch.nn.Module,
                    sample: dict,
                    crop_hw: Tuple[int, int],
                    stride_hw: Tuple[int, int],
                    window_batch_size: int = 1,
                    on_window: Optional[Callable[[int, int], None]] = None,
                    sink: Optional[LogitsSink] = None) -> np.ndarray:
    """Class ids of one input predicted by sliding windows, in bounded memory.

    Args:
        model: An mmseg encoder-decoder (see :func:`supports_streaming`).
        sample: A test-pipeline output (``inputs``: (3, h, w) uint8, ``data_samples``).
        crop_hw: Window height and width.
        stride_hw: Step between window origins.
        window_batch_size: Windows per forward pass.
        on_window: Called with (windows done, windows in all) after each forward pass.
        sink: Receives the logits at the original size, in strips.

    Returns:
        (H, W) uint8 class ids at the original image size.
    """
    encode, input_hw, meta = slide_encoder(model, sample)
    assembler = None
    for axis, start, strip in slide_logit_strips(encode, input_hw, crop_hw, stride_hw,
                                                 window_batch_size, on_window):
        if assembler is None:
            assembler = _assembler(model, meta, input_hw, strip.device, sink)
        assembler.add(axis, start, strip)
    return assembler.finish()

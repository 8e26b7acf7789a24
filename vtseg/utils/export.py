"""ONNX export of vtseg models and their check on onnxruntime (used by ``tools/export_onnx.py``
and ``tools/benchmark.py --onnx``).

Models are exported with torch's TorchScript-based exporter (``dynamo=False``): it
needs only the ``onnx`` package, where the dynamo exporter also needs ``onnxscript``.
"""
import io
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from vtseg.utils.dependency_warnings import hiding_known_export_warnings
from vtseg.utils.files import atomic_write_bytes

__all__ = ['DEFAULT_OPSET', 'SegmentorLogits', 'export_onnx', 'onnx_session', 'run_onnx',
           'max_abs_diff']

DEFAULT_OPSET = 17


def _require(module: str) -> None:
    from importlib.util import find_spec
    if find_spec(module) is None:
        raise ImportError(f'{module} is not installed; install the onnx extra: '
                          "pip install -e '.[onnx]' (or pip install onnx onnxruntime 'numpy<2')")


class SegmentorLogits(nn.Module):
    """An mmseg segmentor's 'whole' inference as a plain module: image -> class logits.

    ``forward(img)`` is ``segmentor.encode_decode(img, metas)``: backbone, neck and
    decode head, then the logits resized to the image size; what ``mode='predict'``
    computes before its arg-max.

    Args:
        segmentor: An mmseg ``EncoderDecoder``.
    """

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        self.segmentor = segmentor

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """img ``(B, 3, H, W)`` (normalised) -> logits ``(B, num_classes, H, W)``."""
        h, w = img.shape[2:]
        metas = [dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w))] * img.shape[0]
        return self.segmentor.encode_decode(img, metas)


def export_onnx(
        model: nn.Module,
        inputs: Tuple[torch.Tensor, ...],
        path: str,
        opset: int = DEFAULT_OPSET,
        input_names: Optional[Sequence[str]] = None,
        output_names: Optional[Sequence[str]] = None,
        dynamic_axes: Optional[Dict[str, Dict[int, str]]] = None,
) -> str:
    """Export ``model(*inputs)`` (in eval mode) to an ONNX file and check the graph.

    The graph is exported into memory, checked by ``onnx.checker`` and only then written
    (:func:`vtseg.utils.files.atomic_write_bytes`), so a failed export leaves no file, not
    even a partial one.

    Args:
        model: Module to export (put in eval mode; restored afterwards).
        inputs: Example inputs; their shapes are fixed in the graph except for
            ``dynamic_axes``.
        path: Output ``.onnx`` file.
        opset: ONNX opset version.
        input_names: Graph input names (default ``input0``, ``input1``, ...).
        output_names: Graph output names (default ``output0``, ...).
        dynamic_axes: ``{name: {axis: label}}`` axes left symbolic.

    Returns:
        ``path``.
    """
    _require('onnx')
    import onnx
    input_names = list(input_names or [f'input{i}' for i in range(len(inputs))])
    graph = io.BytesIO()
    was_training = model.training
    model.eval()
    try:
        # torch's deprecation notices of its TorchScript exporter are hidden; so are mmseg's shapes
        # traced as constants, but only in a graph for one input size (see dependency_warnings)
        with torch.no_grad(), hiding_known_export_warnings(static_shapes=not dynamic_axes):
            torch.onnx.export(model, tuple(inputs), graph, dynamo=False, opset_version=opset,
                              input_names=input_names,
                              output_names=list(output_names) if output_names else None,
                              dynamic_axes=dynamic_axes, do_constant_folding=True)
    finally:
        model.train(was_training)
    onnx.checker.check_model(onnx.load_from_string(graph.getvalue()))
    atomic_write_bytes(path, graph.getvalue())
    return path


def onnx_session(path: str, threads: Optional[int] = None):
    """An onnxruntime CPU ``InferenceSession`` of ``path`` with ``threads`` intra-op threads."""
    _require('onnxruntime')
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def run_onnx(session, inputs: Sequence[torch.Tensor]) -> List[np.ndarray]:
    """Run ``session`` on torch tensors (fed in graph input order), return numpy outputs."""
    feeds = {i.name: t.detach().cpu().numpy() for i, t in zip(session.get_inputs(), inputs)}
    return session.run(None, feeds)


def max_abs_diff(torch_outputs, onnx_outputs: Sequence[np.ndarray]) -> Tuple[float, float]:
    """Compare torch outputs (a tensor or a sequence) with ONNX outputs.

    Returns:
        ``(largest |torch - onnx|, largest |torch|)`` over all outputs; the second
        sets the scale float32 rounding is relative to (random-weight networks can
        have outputs in the thousands, where 1e-4 is below float32 resolution).
    """
    if isinstance(torch_outputs, torch.Tensor):
        torch_outputs = (torch_outputs,)
    if len(torch_outputs) != len(onnx_outputs):
        raise ValueError(f'{len(torch_outputs)} torch outputs but {len(onnx_outputs)} ONNX outputs')
    diff = scale = 0.0
    for t, o in zip(torch_outputs, onnx_outputs):
        t = t.detach().cpu().double().numpy()
        if t.shape != o.shape:
            raise ValueError(f'output shapes differ: torch {t.shape}, ONNX {o.shape}')
        if t.size:
            diff = max(diff, float(np.abs(t - o).max()))
            scale = max(scale, float(np.abs(t).max()))
    return diff, scale

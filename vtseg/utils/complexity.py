"""Parameters and multiply-adds, counted the way the paper's tables count them.

Multiply-adds as fvcore / ``mmengine.analysis`` count them: one multiply-add = one
FLOP, which is how the paper's "FLOPs" compare (``benchmarks/paper.py`` puts our
counts beside the paper's tables).
"""
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn

__all__ = ['Complexity', 'measure', 'DEFAULT_INPUT_SIZES', 'count']


@dataclass
class Complexity:
    """Size and cost of one model: parameters in millions, multiply-adds in billions
    (``num_params`` / ``macs``: the exact counts they are rounded from)."""
    name: str
    params_m: float
    gmacs: float
    num_params: int = 0
    macs: int = 0


def _baddbmm_flop_jit(inputs: list, outputs: list) -> int:
    """``aten::baddbmm[_](self, batch1, batch2, beta, alpha)``: the multiply-adds of
    ``batch1 @ batch2``, as mmengine counts ``bmm`` (it has no baddbmm handle)."""
    from mmengine.analysis.jit_handles import bmm_flop_jit
    return bmm_flop_jit(inputs[1:3], outputs)


def measure(
        model: nn.Module,
        inputs: Tuple,
        name: str = '',
) -> Complexity:
    """Count parameters (millions) and multiply-adds (billions) of ``model(*inputs)``."""
    from mmengine.analysis import FlopAnalyzer
    was_training = model.training
    model.eval()
    with torch.no_grad():
        analyzer = FlopAnalyzer(model, inputs)
        # mmengine has no baddbmm handle and would count it as 0 (other models use it)
        analyzer.set_op_handle('aten::baddbmm', _baddbmm_flop_jit)
        analyzer.set_op_handle('aten::baddbmm_', _baddbmm_flop_jit)
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        macs = int(analyzer.total())
    model.train(was_training)
    num_params = sum(p.numel() for p in model.parameters())
    return Complexity(name, num_params / 1e6, macs / 1e9, num_params=num_params, macs=macs)


# Input size (H, W) counted when none is given: a config's by its registry scope, a model name 224.
DEFAULT_INPUT_SIZES: Dict[str, Tuple[int, int]] = {
    'mmseg': (512, 512), 'mmpretrain': (224, 224), 'mmdet': (800, 1216), 'name': (224, 224)}


def count(spec: str, shape: Optional[Sequence[int]] = None) -> Complexity:
    """Parameters and multiply-adds of a config's model or a named classifier for one image.

    Args:
        spec: An OpenMMLab config file (``.py``; mmseg, mmpretrain or mmdet, by its
            ``default_scope``; built by :func:`vtseg.apis.build_model`: no weights are
            loaded or downloaded) or the name of a classifier: one of
            :data:`vtseg.models.CLASSIFIERS` (``vt_resnet50``) or its torchvision baseline
            (``resnet18/34/50/101``).
        shape: Input ``(H, W)``, or ``(S,)`` for a square ``S x S``; default
            :data:`DEFAULT_INPUT_SIZES` of the config's scope (mmseg 512x512).

    Returns:
        The counts of ``model(image)`` for a batch of one ``(1, 3, H, W)``: a config's
        model runs in ``mode='tensor'`` (backbone, neck and head; no post-processing).

    Raises:
        vtseg.apis.InferenceSetupError: The config is missing or its model cannot be built.
        ValueError: ``spec`` is neither a config file nor a known model name.
    """
    if spec.endswith('.py'):
        import os.path as osp

        from vtseg.apis import build_model
        model = build_model(spec)
        name, kind = osp.basename(spec)[:-3], model.cfg.get('default_scope', 'mmseg')
    else:
        import torchvision

        from vtseg.models import CLASSIFIERS
        baselines = {f'resnet{depth}': getattr(torchvision.models, f'resnet{depth}') for depth in (18, 34, 50, 101)}
        classifiers = {**CLASSIFIERS, **baselines}
        if spec not in classifiers:
            raise ValueError(f'unknown model name {spec!r}; use a config file or one of {", ".join(classifiers)}')
        model, name, kind = classifiers[spec](), spec, 'name'
    h, w = DEFAULT_INPUT_SIZES.get(kind, (224, 224)) if not shape else (
        tuple(shape) if len(shape) == 2 else (shape[0], shape[0]))
    x = torch.zeros(1, 3, h, w)
    return measure(model, (x,) if kind == 'name' else (x, None, 'tensor'), f'{name} @{h}x{w}')

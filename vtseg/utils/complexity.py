"""Parameters and multiply-adds, counted the way the paper's table counts them.

The paper's FLOPs are multiply-adds as fvcore / ``mmengine.analysis`` count
them (one multiply-add = one FLOP; see shared notes: mmseg's FPN counts 12.90
GMACs at 473x473 against the paper's 12.8).
"""
import os.path as osp
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

__all__ = ['Complexity', 'measure', 'build_model', 'count', 'DEFAULT_INPUT_SIZES', 'PAPER_IMAGENET',
           'PAPER_FPN_MODULE', 'resnet_pairs', 'fpn_pairs', 'resnet50_feature_shapes', 'markdown_table']

# Paper, ImageNet table (224x224): params (M), GMACs of VT-ResNet and its ResNet baseline.
PAPER_IMAGENET: Dict[int, dict] = {
    18: dict(vt=(11.7, 1.569), resnet=(11.7, 1.814)),
    34: dict(vt=(19.2, 3.236), resnet=(21.8, 3.664)),
    50: dict(vt=(21.4, 3.412), resnet=(25.5, 4.089)),
    101: dict(vt=(41.5, 7.129), resnet=(44.4, 7.802)),
}


@dataclass
class Complexity:
    """Size and cost of one model: parameters in millions, multiply-adds in billions
    (``num_params`` / ``macs``: the exact counts they are rounded from)."""
    name: str
    params_m: float
    gmacs: float
    paper_params_m: Optional[float] = None
    paper_gmacs: Optional[float] = None
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
        # mmengine has no baddbmm handle and would count it as 0; vtseg's traced graphs
        # use bmm (the projector's in-place baddbmm_ is off while tracing), other models may not
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


def build_model(spec: str) -> Tuple[nn.Module, str, str]:
    """Build a model from a config file or a model name, for counting (no weights are loaded).

    Args:
        spec: An OpenMMLab config file (``.py``; mmseg, mmpretrain or mmdet, by its
            ``default_scope``; its ``custom_imports`` are imported) or the name of a
            classifier in :mod:`vtseg.models` or ``torchvision.models`` (``vt_resnet50``, ``resnet50``).

    Returns:
        ``(model, display name, kind)``: kind is the config's scope (``'mmseg'``,
        ``'mmpretrain'``, ``'mmdet'``) or ``'name'``. SyncBN layers are plain BN.

    Raises:
        FileNotFoundError: The config file does not exist.
        ValueError: ``spec`` is neither a config file nor a known model name.
    """
    if spec.endswith('.py'):
        if not osp.isfile(spec):
            raise FileNotFoundError(f'config file not found: {spec}')
        from mmengine.config import Config
        from mmengine.model import revert_sync_batchnorm
        from mmengine.registry import MODELS, init_default_scope
        cfg = Config.fromfile(spec)
        scope = cfg.get('default_scope', 'mmseg')
        init_default_scope(scope)
        cfg.model.pop('pretrained', None)
        if isinstance(cfg.model.get('backbone'), dict):
            cfg.model.backbone.pop('init_cfg', None)  # nothing is downloaded to count MACs
        return revert_sync_batchnorm(MODELS.build(cfg.model)), osp.basename(spec)[:-3], scope
    import torchvision
    import vtseg.models
    factory = getattr(vtseg.models, spec, None) or getattr(torchvision.models, spec, None)
    if not callable(factory):
        raise ValueError(f'unknown model name {spec!r}; use a config file or one of '
                         'vt_resnet18/34/50/101, resnet18/34/50/101')
    return factory(), spec, 'name'


def count(spec: str, shape: Optional[Sequence[int]] = None) -> Complexity:
    """Parameters and multiply-adds of a config's model or a named classifier for one image.

    Args:
        spec: Config file or model name (see :func:`build_model`).
        shape: Input ``(H, W)``, or ``(S,)`` for a square ``S x S``; default
            :data:`DEFAULT_INPUT_SIZES` of the config's scope (mmseg 512x512).

    Returns:
        The counts of ``model(image)`` for a batch of one ``(1, 3, H, W)``: a config's
        model runs in ``mode='tensor'`` (backbone, neck and head; no post-processing).
    """
    model, name, kind = build_model(spec)
    h, w = DEFAULT_INPUT_SIZES.get(kind, (224, 224)) if not shape else (
        tuple(shape) if len(shape) == 2 else (shape[0], shape[0]))
    x = torch.zeros(1, 3, h, w)
    return measure(model, (x,) if kind == 'name' else (x, None, 'tensor'), f'{name} @{h}x{w}')


def resnet_pairs(
        depths: Iterable[int] = (18, 34, 50, 101),
        size: int = 224,
) -> List[Complexity]:
    """VT-ResNet-d and torchvision ResNet-d for each depth, with the paper's numbers."""
    import torchvision
    from vtseg.models import VTResNet
    rows = []
    x = (torch.zeros(1, 3, size, size),)
    for d in depths:
        for kind, model in (('vt', VTResNet(depth=d)), ('resnet', getattr(torchvision.models, f'resnet{d}')())):
            row = measure(model, x, f'VT-ResNet-{d}' if kind == 'vt' else f'ResNet-{d}')
            row.paper_params_m, row.paper_gmacs = PAPER_IMAGENET[d][kind]
            rows.append(row)
    return rows


def _rel(ours: float, paper: Optional[float]) -> str:
    return '' if paper is None else f'{ours / paper - 1:+.1%}'


def markdown_table(rows: Sequence[Complexity]) -> str:
    """A markdown table of the rows, with the paper's numbers where known."""
    lines = ['| model | params (M) | paper | diff | GMACs | paper | diff |',
             '|---|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        lines.append(
            f'| {r.name} | {r.params_m:.2f} | {r.paper_params_m or "-"} | {_rel(r.params_m, r.paper_params_m)} '
            f'| {r.gmacs:.3f} | {r.paper_gmacs or "-"} | {_rel(r.gmacs, r.paper_gmacs)} |')
    return '\n'.join(lines)


# Paper, VT-FPN: "FPN module" GMACs on ResNet-50 features (LIP 473x473; COCO-Stuff at 800x1216).
PAPER_FPN_MODULE = {(473, 473): dict(fpn=12.8, vt=2.0), (800, 1216): dict(fpn=55.1, vt=8.5)}


def resnet50_feature_shapes(h: int, w: int) -> List[Tuple[int, int, int]]:
    """(C, H, W) of ResNet-50's stride 4..32 outputs for an ``h x w`` image."""
    shapes, size = [], (h, w)
    size = tuple((s + 1) // 2 for s in size)  # conv1, stride 2
    size = tuple((s + 1) // 2 for s in size)  # max-pool, stride 2
    for i, c in enumerate((256, 512, 1024, 2048)):
        if i:
            size = tuple((s + 1) // 2 for s in size)
        shapes.append((c, *size))
    return shapes


def fpn_pairs(sizes: Iterable[Tuple[int, int]] = ((473, 473), (512, 512))) -> List[Complexity]:
    """mmseg's ``FPN`` and vtseg's ``VTFPN`` (paper settings) on ResNet-50 features."""
    from mmseg.models.necks import FPN
    from vtseg.models import VTFPN
    rows = []
    kwargs = dict(in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=4)
    for h, w in sizes:
        feats = [torch.zeros(1, *s) for s in resnet50_feature_shapes(h, w)]
        for kind, neck in (('fpn', FPN(**kwargs)), ('vt', VTFPN(**kwargs, num_tokens=8, token_channels=1024))):
            row = measure(neck, (feats,), f'{"VT-FPN" if kind == "vt" else "FPN"} neck @{h}x{w}')
            row.paper_gmacs = PAPER_FPN_MODULE.get((h, w), {}).get(kind)
            rows.append(row)
    return rows

"""The paper's parameter and multiply-add tables, and our counts beside them.

``python tools/get_flops.py --paper`` prints :func:`resnet_pairs` and :func:`fpn_pairs`
as :func:`markdown_table`; README.md's "Results" tables are that output, and
``tests/test_tools/test_get_flops.py`` checks that they still are. The counting itself
is the library's :func:`vtseg.utils.complexity.measure` (``mmengine.analysis``: one
multiply-add = one FLOP, as the paper counts; mmseg's FPN counts 12.90 GMACs at
473x473 against the paper's 12.8).
"""
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from vtseg.utils.complexity import Complexity, measure

__all__ = ['PAPER_IMAGENET', 'PAPER_FPN_MODULE', 'Compared', 'resnet_pairs', 'fpn_pairs',
           'resnet50_feature_shapes', 'markdown_table']

# Paper, ImageNet table (224x224): params (M), GMACs of VT-ResNet and its ResNet baseline.
PAPER_IMAGENET: Dict[int, dict] = {
    18: dict(vt=(11.7, 1.569), resnet=(11.7, 1.814)),
    34: dict(vt=(19.2, 3.236), resnet=(21.8, 3.664)),
    50: dict(vt=(21.4, 3.412), resnet=(25.5, 4.089)),
    101: dict(vt=(41.5, 7.129), resnet=(44.4, 7.802)),
}

# Paper, VT-FPN: "FPN module" GMACs on ResNet-50 features (LIP 473x473; COCO-Stuff at 800x1216).
PAPER_FPN_MODULE = {(473, 473): dict(fpn=12.8, vt=2.0), (800, 1216): dict(fpn=55.1, vt=8.5)}


@dataclass
class Compared:
    """One counted model beside the paper's numbers for it (``None`` where the paper has none).

    Args:
        counted: Our count.
        paper_params_m: The paper's parameters, millions.
        paper_gmacs: The paper's multiply-adds, billions.
    """
    counted: Complexity
    paper_params_m: Optional[float] = None
    paper_gmacs: Optional[float] = None


def resnet_pairs(depths: Iterable[int] = (18, 34, 50, 101), size: int = 224) -> List[Compared]:
    """VT-ResNet-d and torchvision ResNet-d for each depth, with the paper's numbers."""
    import torchvision

    from vtseg.models import VTResNet
    rows = []
    x = (torch.zeros(1, 3, size, size),)
    for depth in depths:
        for kind, model in (('vt', VTResNet(depth=depth)),
                            ('resnet', getattr(torchvision.models, f'resnet{depth}')())):
            name = f'VT-ResNet-{depth}' if kind == 'vt' else f'ResNet-{depth}'
            rows.append(Compared(measure(model, x, name), *PAPER_IMAGENET[depth][kind]))
    return rows


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


def fpn_pairs(sizes: Iterable[Tuple[int, int]] = ((473, 473), (512, 512))) -> List[Compared]:
    """mmseg's ``FPN`` and vtseg's ``VTFPN`` (paper settings) on ResNet-50 features."""
    from mmseg.models.necks import FPN

    from vtseg.models import VTFPN
    rows = []
    kwargs = dict(in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=4)
    for h, w in sizes:
        feats = [torch.zeros(1, *s) for s in resnet50_feature_shapes(h, w)]
        for kind, neck in (('fpn', FPN(**kwargs)),
                           ('vt', VTFPN(**kwargs, num_tokens=8, token_channels=1024))):
            name = f'{"VT-FPN" if kind == "vt" else "FPN"} neck @{h}x{w}'
            rows.append(Compared(measure(neck, (feats,), name),
                                 paper_gmacs=PAPER_FPN_MODULE.get((h, w), {}).get(kind)))
    return rows


def _diff(ours: float, paper: Optional[float]) -> str:
    return '' if paper is None else f'{ours / paper - 1:+.1%}'


def markdown_table(rows: Sequence[Compared]) -> str:
    """A markdown table of the rows: params (M) and GMACs, each beside the paper's and the difference."""
    lines = ['| model | params (M) | paper | diff | GMACs | paper | diff |',
             '|---|---:|---:|---:|---:|---:|---:|']
    for row in rows:
        c = row.counted
        lines.append(
            f'| {c.name} | {c.params_m:.2f} | {row.paper_params_m or "-"} '
            f'| {_diff(c.params_m, row.paper_params_m)} '
            f'| {c.gmacs:.3f} | {row.paper_gmacs or "-"} | {_diff(c.gmacs, row.paper_gmacs)} |')
    return '\n'.join(lines)

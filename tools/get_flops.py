"""Parameters and multiply-adds of vtseg models, beside their baselines.

Counted with ``mmengine.analysis`` (fvcore-style: one multiply-add = one FLOP),
the way the paper's tables count.

Examples::

    # the paper's tables: VT-ResNet vs ResNet at 224x224, VT-FPN vs FPN neck
    python tools/get_flops.py --paper
    # a segmentor config (default input 512x512), optionally beside a baseline config
    python tools/get_flops.py configs/coco_stuff/vt-fpn_r50_8xb4-45k_coco-stuff164k-512x512.py \
        --baseline configs/coco_stuff/fpn_r50_8xb4-45k_coco-stuff164k-512x512.py
    # a classification model by name (vtseg.models or torchvision), 224x224
    python tools/get_flops.py vt_resnet50 --baseline resnet50
"""
import argparse
import os.path as osp
import sys
from typing import List, Tuple

import torch
import torch.nn as nn

from vtseg.utils.complexity import Complexity, fpn_pairs, markdown_table, measure, resnet_pairs


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Params and MACs of a model or config')
    parser.add_argument('model', nargs='?', help='config file, or a model name '
                        '(vt_resnet18..101, resnet18..101)')
    parser.add_argument('--baseline', help='config file or model name to show beside it')
    parser.add_argument('--shape', type=int, nargs='+', default=None,
                        help='input H [W] (default: 512 for configs, 224 for names)')
    parser.add_argument('--paper', action='store_true', help="print the paper's comparison tables")
    args = parser.parse_args()
    if not args.paper and not args.model:
        parser.error('give a config or model name, or --paper')
    return args


def build(spec: str) -> Tuple[nn.Module, str, bool]:
    """(model, display name, is_segmentor) for a config path or a model name."""
    if spec.endswith('.py'):
        if not osp.isfile(spec):
            raise SystemExit(f'error: config file not found: {spec}')
        from mmengine.config import Config
        from mmengine.model import revert_sync_batchnorm
        from mmengine.registry import init_default_scope
        from mmseg.registry import MODELS
        import vtseg  # noqa: F401  (registers VTResNet / VTFPN)
        cfg = Config.fromfile(spec)
        init_default_scope(cfg.get('default_scope', 'mmseg'))
        cfg.model.pop('pretrained', None)
        cfg.model.get('backbone', {}).pop('init_cfg', None)  # nothing is downloaded to count MACs
        return revert_sync_batchnorm(MODELS.build(cfg.model)), osp.basename(spec)[:-3], True
    import torchvision
    import vtseg.models
    factory = getattr(vtseg.models, spec, None) or getattr(torchvision.models, spec, None)
    if not callable(factory):
        raise SystemExit(f'error: unknown model name {spec!r}; use a config file or one of '
                         'vt_resnet18/34/50/101, resnet18/34/50/101')
    return factory(), spec, False


def count(spec: str, shape: List[int]) -> Complexity:
    model, name, segmentor = build(spec)
    shape = shape or [512 if segmentor else 224]
    h, w = shape if len(shape) == 2 else (shape[0], shape[0])
    x = torch.zeros(1, 3, h, w)
    # A segmentor's tensor-mode forward is backbone + neck + decode head, no post-processing.
    return measure(model, (x, None, 'tensor') if segmentor else (x,), f'{name} @{h}x{w}')


def main() -> None:
    args = parse_args()
    if args.paper:
        print('VT-ResNet vs ResNet, ImageNet 224x224')
        print(markdown_table(resnet_pairs()))
        print('\nVT-FPN vs FPN neck, ResNet-50 features')
        print(markdown_table(fpn_pairs(((473, 473), (512, 512), (800, 1216)))))
        return
    rows = [count(args.model, args.shape)]
    if args.baseline:
        rows.append(count(args.baseline, args.shape))
    print(markdown_table(rows))
    if args.baseline:
        vt, base = rows
        print(f'\nratio {vt.name} / {base.name}: params {vt.params_m / base.params_m:.3f}, '
              f'MACs {vt.gmacs / base.gmacs:.3f}')


if __name__ == '__main__':
    sys.exit(main())

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
    # exact counts, as configs/*/metafile.yaml records them (FLOPs = multiply-adds)
    python tools/get_flops.py configs/lip/vt-fpn_r50_8xb12-50k_lip-473x473.py --shape 473 --exact

mmpretrain (configs/vt_resnet) and mmdet (configs/mmdet) configs are counted too, by
their ``default_scope``; the counting is :func:`vtseg.utils.complexity.count`, the
paper's tables are ``benchmarks/paper.py``.
"""
import argparse
import os.path as osp
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # benchmarks/: the repository's paper tables, not installed with vtseg

from benchmarks.paper import Compared, fpn_pairs, markdown_table, resnet_pairs  # noqa: E402
from vtseg.apis import InferenceSetupError  # noqa: E402
from vtseg.utils.complexity import count  # noqa: E402
from vtseg.utils.errors import exit_with_error  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Params and MACs of a model or config')
    parser.add_argument('model', nargs='?', help='config file, or a model name '
                        '(vt_resnet18..101, resnet18..101)')
    parser.add_argument('--baseline', help='config file or model name to show beside it')
    parser.add_argument('--shape', type=int, nargs='+', default=None,
                        help='input H [W] (default: 512 for mmseg configs, 800 1216 for mmdet '
                        'configs, 224 for mmpretrain configs and names)')
    parser.add_argument('--exact', action='store_true',
                        help='also print the exact parameter and multiply-add counts')
    parser.add_argument('--paper', action='store_true', help="print the paper's comparison tables")
    args = parser.parse_args()
    if not args.paper and not args.model:
        parser.error('give a config or model name, or --paper')
    return args


def main() -> None:
    args = parse_args()
    if args.paper:
        print('VT-ResNet vs ResNet, ImageNet 224x224')
        print(markdown_table(resnet_pairs()))
        print('\nVT-FPN vs FPN neck, ResNet-50 features')
        print(markdown_table(fpn_pairs(((473, 473), (512, 512), (800, 1216)))))
        return
    try:
        rows = [count(spec, args.shape) for spec in (args.model, args.baseline) if spec]
    except (InferenceSetupError, ValueError) as err:
        exit_with_error(__file__, str(err))
    print(markdown_table([Compared(row) for row in rows]))
    if args.exact:
        for row in rows:
            print(f'{row.name}: Parameters: {row.num_params}, FLOPs: {row.macs}')
    if args.baseline:
        vt, base = rows
        print(f'\nratio {vt.name} / {base.name}: params {vt.params_m / base.params_m:.3f}, '
              f'MACs {vt.gmacs / base.gmacs:.3f}')


if __name__ == '__main__':
    sys.exit(main())

"""Export a VT segmentor (mmseg config) or a VT-ResNet classifier to ONNX and check it
on onnxruntime.

A segmentor is exported as its 'whole' inference: normalised image ``(N, 3, H, W)``
-> class logits ``(N, num_classes, H, W)`` (what ``mode='predict'`` computes before
its arg-max). A classifier: image ``(N, 3, H, W)`` -> logits ``(N, num_classes)``.
After export the graph runs on onnxruntime (CPU) and its outputs are compared with
PyTorch's on a random input; the tool fails if they differ by more than ``--atol``
(times the largest output magnitude where that exceeds 1).

Examples::

    python tools/export_onnx.py configs/coco_stuff/vt-fpn_r50_8xb4-45k_coco-stuff164k-512x512.py \\
        --checkpoint work_dirs/vt-fpn_r50/iter_45000.pth --shape 512 512
    python tools/export_onnx.py vt_resnet50 --checkpoint vt_r50.pth --shape 224 --dynamic
"""
import argparse
import os.path as osp
import sys
from importlib.util import find_spec
from typing import Tuple

import torch
import torch.nn as nn

from vtseg.apis import InferenceSetupError, build_model, load_config, load_weights
from vtseg.mm import allow_mmengine_checkpoints
from vtseg.models import CLASSIFIERS
from vtseg.utils.errors import exit_with_error
from vtseg.utils.export import DEFAULT_OPSET, SegmentorLogits, export_onnx, max_abs_diff, onnx_session, run_onnx


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Export a VT model to ONNX and verify it')
    parser.add_argument('model', help=f'segmentor config file, or one of {", ".join(CLASSIFIERS)}')
    parser.add_argument('--checkpoint', default=None, help='weights to load (default: random init)')
    parser.add_argument('--out', default=None,
                        help='output .onnx file (default: work_dirs/onnx/<model>_<H>x<W>.onnx)')
    parser.add_argument('--shape', type=int, nargs='+', default=None,
                        help='input H [W] (default: 512 for configs, 224 for classifiers)')
    parser.add_argument('--batch', type=int, default=1, help='batch size of the example input')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET, help='ONNX opset version')
    parser.add_argument('--dynamic', action='store_true',
                        help='classifiers: leave batch, height and width symbolic')
    parser.add_argument('--num-classes', type=int, default=None,
                        help='classifier outputs (default 1000), or the segmentor\'s '
                        'decode_head.num_classes')
    parser.add_argument('--no-verify', action='store_true', help='skip the onnxruntime check')
    parser.add_argument('--atol', type=float, default=1e-4,
                        help='largest accepted |PyTorch - onnxruntime| of any output value, '
                        'relative to the largest |output| where that exceeds 1')
    args = parser.parse_args(argv)
    if args.shape is not None and len(args.shape) not in (1, 2):
        parser.error('--shape takes H or H W')
    if args.batch < 1:
        parser.error('--batch must be >= 1')
    return args


def build(args: argparse.Namespace) -> Tuple[nn.Module, str, bool]:
    """(module to export, display name, is_segmentor), weights from ``--checkpoint`` if given."""
    if args.model.endswith('.py'):
        cfg = load_config(args.model)
        model_type = cfg.model.get('type')
        if model_type not in ('EncoderDecoder', 'CascadeEncoderDecoder'):
            exit_with_error(__file__, f'{args.model} is not an mmseg segmentor config (model type {model_type!r}); '
                                      f'classifiers export by name: {", ".join(CLASSIFIERS)}')
        options = {} if args.num_classes is None else {'model.decode_head.num_classes': args.num_classes}
        # SyncBN, which has no ONNX form, is BN in the built model
        model = build_model(cfg, args.checkpoint, cfg_options=options)
        return SegmentorLogits(model), osp.splitext(osp.basename(args.model))[0], True
    if args.model not in CLASSIFIERS:
        exit_with_error(__file__, f'unknown model {args.model!r}: give a segmentor config (.py) or one of '
                                  f'{", ".join(CLASSIFIERS)}')
    model = CLASSIFIERS[args.model](num_classes=args.num_classes or 1000)
    if args.checkpoint is not None:
        load_weights(model, args.checkpoint, args.model)
    return model, args.model, False


def main(argv=None) -> None:
    args = parse_args(argv)
    if find_spec('onnx') is None:
        exit_with_error(__file__, "onnx is not installed: pip install -e '.[onnx]' "
                                  "(or pip install onnx onnxruntime 'numpy<2')")
    verify = not args.no_verify
    if verify and find_spec('onnxruntime') is None:
        exit_with_error(__file__, "onnxruntime is not installed (pip install onnxruntime 'numpy<2'), "
                                  'or pass --no-verify')
    allow_mmengine_checkpoints()  # training checkpoints (with message-hub state) load under weights_only
    try:
        model, name, segmentor = build(args)
    except InferenceSetupError as err:
        exit_with_error(__file__, str(err))
    model.eval()
    shape = args.shape or [512 if segmentor else 224]
    h, w = (shape * 2)[:2]
    out = args.out or osp.join('work_dirs', 'onnx', f'{name}_{h}x{w}.onnx')
    if segmentor and args.dynamic:
        exit_with_error(__file__, '--dynamic is for classifiers; a segmentor graph is exported for one input size')
    output_name = 'seg_logits' if segmentor else 'logits'
    dynamic = ({'input': {0: 'batch', 2: 'height', 3: 'width'}, output_name: {0: 'batch'}}
               if args.dynamic else None)
    x = torch.randn(args.batch, 3, h, w, generator=torch.Generator().manual_seed(0))
    export_onnx(model, (x,), out, opset=args.opset, input_names=['input'],
                output_names=[output_name], dynamic_axes=dynamic)
    print(f'{name}: exported {out} (opset {args.opset}, input {args.batch}x3x{h}x{w}'
          f'{", dynamic batch/size" if args.dynamic else ""})')
    if not verify:
        return
    session = onnx_session(out)
    # a different random input than the traced one, so nothing traced as constant goes unnoticed
    checks = [torch.randn(args.batch, 3, h, w, generator=torch.Generator().manual_seed(1))]
    if args.dynamic:
        checks.append(torch.randn(args.batch + 1, 3, h + 32, w - 32 if w > 64 else w + 32,
                                  generator=torch.Generator().manual_seed(2)))
    for inp in checks:
        with torch.no_grad():
            expected = model(inp)
        diff, scale = max_abs_diff(expected, run_onnx(session, [inp]))
        # --atol is absolute for outputs up to 1 in magnitude and relative to the
        # largest output beyond (float32 keeps ~7 digits of whatever scale it holds).
        limit = args.atol * max(1.0, scale)
        shape_str = 'x'.join(map(str, inp.shape))
        if diff > limit:
            exit_with_error(__file__, f'onnxruntime output differs from PyTorch by {diff:.3g} > {limit:.3g} '
                                      f'(--atol {args.atol:g} x max(1, max|output| = {scale:.3g})) '
                                      f'on a {shape_str} input', status=1)
        print(f'{name}: onnxruntime matches PyTorch on a {shape_str} input: max |diff| {diff:.2e} '
              f'<= {limit:.2e} (--atol {args.atol:g} x max(1, max|output| = {scale:.3g}))')


if __name__ == '__main__':
    sys.exit(main())

"""Draw what each visual token of a VT model attends to, over an image.

Usage::

    python tools/visualize_tokens.py IMAGE CONFIG [CHECKPOINT] --out FILE.png

CONFIG is one of

* an mmseg segmentor config whose backbone is ``VTResNet`` and/or whose neck
  is ``VTFPN`` (e.g. ``configs/vtshapes/vt-fpn_vt-r18_1xb8-1.5k_vtshapes-96x96.py``):
  one row per VT module of the backbone, then one per VT-FPN pyramid level;
* a VT-ResNet classifier config (an mmpretrain ``ImageClassifier`` whose
  backbone is ``mmseg.VTResNet``): only its backbone is built, so mmpretrain
  need not be installed; the checkpoint's ``backbone.*`` weights are loaded;
* an architecture name, ``vt_resnet18`` / ``34`` / ``50`` / ``101``: the pure
  PyTorch classifier of :mod:`vtseg.models`; with a checkpoint (a state dict
  of that model, or any checkpoint whose ``backbone.*`` weights are one) its
  token count and widths are read from the weights.

Without CHECKPOINT the weights are random (a warning says so). Classifiers see
a centre crop of ``--img-size``; segmentors their config's test pipeline.
Bad arguments print one ``visualize_tokens.py: error:`` line and exit with status 2.
"""
import argparse
import copy
import os.path as osp
import sys
from typing import Dict, Optional, Tuple

import cv2
import torch
import torch.nn as nn
from mmengine.config import Config

from vtseg.apis import (InferenceSetupError, build_model, checkpoint_state_dict, load_config, load_weights,
                        read_checkpoint, resolve_device)
from vtseg.mm import allow_mmengine_checkpoints
from vtseg.mm.cli import add_cfg_options
from vtseg.models import CLASSIFIERS, VTResNet, arch_settings
from vtseg.utils.errors import print_error
from vtseg.visualization import (IMAGENET_MEAN, IMAGENET_STD, TokenFigure, classifier_inputs, draw_token_attention,
                                 segmentor_inputs, token_maps)


class UsageError(Exception):
    """A problem with the arguments, reported as one line and exit status 2."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Draw the token attention of a VT-ResNet or VT-FPN model over an image')
    parser.add_argument('img', help='image file')
    parser.add_argument(
        'config',
        help='mmseg segmentor config, VT-ResNet classifier config, or an architecture name: '
        + ', '.join(CLASSIFIERS))
    parser.add_argument('checkpoint', nargs='?', help='checkpoint file (random weights without)')
    parser.add_argument('--out', required=True, help='PNG file to write')
    parser.add_argument('--device', default='cpu', help='device to run the model on: cpu or cuda[:N]')
    parser.add_argument('--img-size', type=int, default=224,
                        help='classifiers only: side of the centre crop the model sees')
    parser.add_argument('--alpha', type=float, default=0.5, help='opacity of the overlays')
    parser.add_argument('--dpi', type=int, default=100, help='pixels per panel side')
    parser.add_argument('--colors', type=int, default=None,
                        help='write a palette PNG of at most this many colours (2-256), about a '
                        'third of the size (for documentation)')
    add_cfg_options(parser)
    return parser.parse_args(argv)


def _vt_resnet_kwargs(state: Dict[str, torch.Tensor], depth: int) -> dict:
    """Arguments of a VT-ResNet that the weights in ``state`` fit.

    Read from tensor shapes, so a classifier of any class count, a backbone
    (no ``fc``) and the VT widths of the VT-Shapes demo load alike.
    """
    last = arch_settings[depth]['num_vt_modules'] - 1
    try:
        tokenizer = state['vt_modules.0.tokenizer.filters.weight']  # (L, C)
        attn_key = state['vt_modules.0.transformer.attn.key.weight']  # (qk, C_T)
        fc1 = state['vt_modules.0.transformer.ffn.fc1.weight']  # (hidden, C_T)
        projector = state['vt_modules.0.projector.query_weight']  # (projector qk, C)
    except KeyError as missing:
        raise UsageError(f'not a VT-ResNet-{depth} checkpoint: it has no {missing}') from None
    return dict(
        num_classes=state['fc.weight'].shape[0] if 'fc.weight' in state else 0,
        num_tokens=tokenizer.shape[0],
        token_channels=attn_key.shape[1],
        project_last=any(k.startswith(f'vt_modules.{last}.projector.') for k in state),
        vt_cfg=dict(qk_channels=attn_key.shape[0], hidden_channels=fc1.shape[0],
                    projector_qk_channels=projector.shape[0]),
    )


def build_arch(name: str, checkpoint: Optional[str]) -> nn.Module:
    """The pure PyTorch VT-ResNet classifier ``name``, with the checkpoint's weights.

    The checkpoint is a state dict of that model, or any checkpoint whose ``backbone.*``
    weights are one (an mmpretrain classifier's, a segmentor's); the token count and the
    widths are read from the weights' shapes.
    """
    depth = int(name[len('vt_resnet'):])
    if checkpoint is None:
        return VTResNet(depth=depth)
    loaded = read_checkpoint(checkpoint)
    state = checkpoint_state_dict(loaded, checkpoint)
    prefix = ''
    if not any(k.startswith('vt_modules.') for k in state) and any(k.startswith('backbone.') for k in state):
        prefix = 'backbone.'
        state = checkpoint_state_dict(loaded, checkpoint, prefix)
    model = VTResNet(depth=depth, **_vt_resnet_kwargs(state, depth))
    load_weights(model, loaded, name, checkpoint, prefix)
    return model


def _classifier_preprocessing(cfg: Config) -> dict:
    """``mean``, ``std`` and ``to_rgb`` of a classifier config's data preprocessor
    (mmpretrain keeps it in ``model`` or at the top level); ImageNet's by default."""
    pre = cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    return dict(mean=tuple(pre.get('mean', IMAGENET_MEAN)), std=tuple(pre.get('std', IMAGENET_STD)),
                to_rgb=bool(pre.get('to_rgb', pre.get('bgr_to_rgb', True))))


def build_from_config(cfg: Config, checkpoint: Optional[str], device: str) -> Tuple[nn.Module, str]:
    """A segmentor (``'segmentor'``) or a VT-ResNet classifier's backbone (``'classifier'``)."""
    model_cfg = cfg.model
    backbone_type = str(model_cfg.get('backbone', {}).get('type', ''))
    if 'decode_head' in model_cfg:
        return build_model(cfg, checkpoint, device), 'segmentor'
    if backbone_type.split('.')[-1] != 'VTResNet':
        raise UsageError(f'the config\'s model ({model_cfg.get("type")}, backbone '
                         f'{backbone_type or "none"}) is neither an mmseg segmentor nor a '
                         'VT-ResNet classifier')
    # Only the backbone: mmpretrain need not be installed, the checkpoint's backbone.* is loaded.
    backbone = copy.deepcopy(cfg)
    backbone.model = dict(model_cfg['backbone'], type='VTResNet')  # the mmseg adapter, whatever scope
    backbone.default_scope = 'mmseg'
    return build_model(backbone, checkpoint, device, prefix='backbone.'), 'classifier'


def run(args: argparse.Namespace) -> TokenFigure:
    """Build the model, draw its tokens over the image, write ``args.out``.

    Returns:
        The layout of the written figure (rows, panels, pixel size).

    Raises:
        UsageError: A bad argument or file.
        InferenceSetupError: A config, checkpoint or device that does not work (one line).
    """
    if not osp.isfile(args.img):
        what = 'is not a regular file' if osp.exists(args.img) else 'does not exist'
        raise UsageError(f'image {args.img} {what}')
    image = cv2.imread(args.img, cv2.IMREAD_COLOR)  # (H, W, 3) BGR, as mmseg loads images
    if image is None:
        raise UsageError(f'cannot read image {args.img}: not an image file OpenCV can decode')
    is_arch = args.config in CLASSIFIERS
    if not is_arch and not osp.isfile(args.config):
        raise UsageError(f'config {args.config} is neither a file nor an architecture name '
                         f'({", ".join(CLASSIFIERS)})')
    if not args.out.lower().endswith('.png'):
        raise UsageError(f'--out {args.out} must name a .png file')
    if not 0 <= args.alpha <= 1:
        raise UsageError(f'--alpha {args.alpha} must lie in [0, 1]')
    if args.dpi < 10:
        raise UsageError(f'--dpi {args.dpi} is too small: a panel needs at least 10 pixels')
    if args.colors is not None and not 2 <= args.colors <= 256:
        raise UsageError(f'--colors {args.colors} must lie in 2..256 (a PNG palette)')
    if args.img_size < 16:
        raise UsageError(f'--img-size {args.img_size} is too small: VT-ResNet needs 16 pixels '
                         'or more')
    device = resolve_device(args.device)
    if args.checkpoint is None:
        print('warning: no checkpoint given, the tokens of randomly initialised weights are shown',
              file=sys.stderr)

    allow_mmengine_checkpoints()  # training checkpoints (with message-hub state) load under weights_only
    if is_arch:
        model, kind = build_arch(args.config, args.checkpoint).to(device).eval(), 'classifier'
        preprocessing = {}
    else:
        try:
            cfg = load_config(args.config, args.cfg_options)
        except InferenceSetupError as e:
            if 'mmpretrain' not in str(e):
                raise
            raise InferenceSetupError(f'{e}; install mmpretrain (pip install -e .[cls]) or name the '
                                      'architecture instead, e.g. vt_resnet18') from None
        model, kind = build_from_config(cfg, args.checkpoint, device)
        preprocessing = _classifier_preprocessing(cfg) if kind == 'classifier' else {}

    if kind == 'segmentor':
        inputs, shown = segmentor_inputs(model, image)
    else:
        inputs, shown = classifier_inputs(image, args.img_size, **preprocessing)
    try:
        maps = token_maps(model, inputs.to(device))
    except ValueError as e:
        raise UsageError(str(e)) from None
    figure = draw_token_attention(shown, maps, args.out, input_size=tuple(inputs.shape[2:]),
                                  alpha=args.alpha, dpi=args.dpi, colors=args.colors)
    rows = ', '.join(f'{m.label} ({m.size[0]}x{m.size[1]}, {m.num_tokens} tokens)' for m in maps)
    print(f'wrote {args.out}: {figure.width}x{figure.height} px; rows: {rows}')
    return figure


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (UsageError, InferenceSetupError) as e:
        print_error(__file__, str(e))
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())

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
Bad arguments print one ``error:`` line and exit with status 2.
"""
import argparse
import os.path as osp
import sys
from typing import Dict, Optional, Tuple

import cv2
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmseg.apis import init_model
from mmseg.registry import MODELS

# vtseg also registers VTResNet and VTFPN in mmseg and allows mmengine checkpoints to load safely.
from vtseg.apis import InferenceSetupError, resolve_device
from vtseg.mm.cli import add_cfg_options, merge_cfg_options
from vtseg.models import VTResNet, arch_settings
from vtseg.utils.errors import checkpoint_error_reason, one_line
from vtseg.visualization import (IMAGENET_MEAN, IMAGENET_STD, TokenFigure, classifier_inputs,
                                 draw_token_attention, segmentor_inputs, token_attention)

ARCH_NAMES = ('vt_resnet18', 'vt_resnet34', 'vt_resnet50', 'vt_resnet101')


class UsageError(Exception):
    """A problem with the arguments, reported as one line and exit status 2."""


def _one_line(error: Exception) -> str:
    """``Type: message`` on one line (a config's SyntaxError says more with its type)."""
    return f'{type(error).__name__}: {one_line(error)}'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Draw the token attention of a VT-ResNet or VT-FPN model over an image')
    parser.add_argument('img', help='image file')
    parser.add_argument(
        'config',
        help='mmseg segmentor config, VT-ResNet classifier config, or an architecture name: '
        + ', '.join(ARCH_NAMES))
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


def _load_state(checkpoint: str) -> Dict[str, torch.Tensor]:
    """The state dict of a checkpoint file (plain or mmengine), tensors only."""
    try:
        # weights_only: a foreign file may not run code; vtseg allowlists what mmengine saves.
        state = torch.load(checkpoint, map_location='cpu', weights_only=True)
    except Exception as e:  # torch raises pickle, zip and runtime errors alike
        raise UsageError(f'cannot load checkpoint {checkpoint}: {checkpoint_error_reason(e)}') from None
    if isinstance(state, dict) and 'state_dict' in state:
        state = state['state_dict']
    if not isinstance(state, dict):
        raise UsageError(f'checkpoint {checkpoint} holds no state dict')
    return state


def _backbone_state(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The VT-ResNet part of ``state``: mmpretrain classifiers and mmseg segmentors
    keep it under ``backbone.``, a plain VT-ResNet at the top level."""
    if any(k.startswith('vt_modules.') for k in state):
        return state
    return {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}


def _load_exactly(model: nn.Module, state: Dict[str, torch.Tensor], checkpoint: str) -> None:
    """Load every tensor ``model`` has from ``state``, or say what does not fit."""
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own}
    mismatched = [k for k, v in state.items() if v.shape != own[k].shape]
    missing = [k for k in own if k not in state]
    if mismatched or missing:
        raise UsageError(f'checkpoint {checkpoint} does not fit the model: {len(missing)} missing '
                         f'and {len(mismatched)} mismatched tensors '
                         f'(e.g. {(missing + mismatched)[0]})')
    model.load_state_dict(state)


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
    """The pure PyTorch VT-ResNet classifier ``name``, with the checkpoint's weights."""
    depth = int(name[len('vt_resnet'):])
    if checkpoint is None:
        return VTResNet(depth=depth)
    state = _backbone_state(_load_state(checkpoint))
    model = VTResNet(depth=depth, **_vt_resnet_kwargs(state, depth))
    _load_exactly(model, state, checkpoint)
    return model


def _classifier_preprocessing(cfg: Config) -> dict:
    """``mean``, ``std`` and ``to_rgb`` of a classifier config's data preprocessor
    (mmpretrain keeps it in ``model`` or at the top level); ImageNet's by default."""
    pre = cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    return dict(mean=tuple(pre.get('mean', IMAGENET_MEAN)), std=tuple(pre.get('std', IMAGENET_STD)),
                to_rgb=bool(pre.get('to_rgb', pre.get('bgr_to_rgb', True))))


def build_from_config(cfg: Config, checkpoint: Optional[str], device: str) -> Tuple[nn.Module, str]:
    """A segmentor (``'segmentor'``) or a VT-ResNet classifier's backbone (``'classifier'``)."""
    model_cfg = cfg.get('model')
    if not isinstance(model_cfg, dict) or 'type' not in model_cfg:
        raise UsageError('the config has no model dict')
    backbone_type = str(model_cfg.get('backbone', {}).get('type', ''))
    try:
        if 'decode_head' in model_cfg:
            model, kind = init_model(cfg, None, device='cpu'), 'segmentor'
        elif backbone_type.split('.')[-1] == 'VTResNet':
            backbone_cfg = dict(model_cfg['backbone'])
            backbone_cfg['type'] = 'VTResNet'  # the mmseg adapter, whatever scope the config names
            backbone_cfg.pop('init_cfg', None)  # no download: weights come from the checkpoint
            model, kind = MODELS.build(backbone_cfg), 'classifier'
        else:
            raise UsageError(f'the config\'s model ({model_cfg["type"]}, backbone '
                             f'{backbone_type or "none"}) is neither an mmseg segmentor nor a '
                             'VT-ResNet classifier')
    except (KeyError, TypeError, ValueError) as e:  # unknown types, bad arguments
        raise UsageError(f'cannot build the config\'s model: {_one_line(e)}') from None
    if checkpoint is not None:
        state = _load_state(checkpoint)
        _load_exactly(model, state if kind == 'segmentor' else _backbone_state(state), checkpoint)
    # SyncBN needs a process group; in one process it is plain BN.
    return revert_sync_batchnorm(model).to(device).eval(), kind


def run(args: argparse.Namespace) -> TokenFigure:
    """Build the model, draw its tokens over the image, write ``args.out``.

    Returns:
        The layout of the written figure (rows, panels, pixel size).

    Raises:
        UsageError: A bad argument or file.
    """
    if not osp.isfile(args.img):
        what = 'is not a regular file' if osp.exists(args.img) else 'does not exist'
        raise UsageError(f'image {args.img} {what}')
    image = cv2.imread(args.img, cv2.IMREAD_COLOR)  # (H, W, 3) BGR, as mmseg loads images
    if image is None:
        raise UsageError(f'cannot read image {args.img}: not an image file OpenCV can decode')
    is_arch = args.config in ARCH_NAMES
    if not is_arch and not osp.isfile(args.config):
        raise UsageError(f'config {args.config} is neither a file nor an architecture name '
                         f'({", ".join(ARCH_NAMES)})')
    if args.checkpoint is not None and not osp.isfile(args.checkpoint):
        raise UsageError(f'checkpoint {args.checkpoint} does not exist')
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
    try:
        args.device = resolve_device(args.device)
    except InferenceSetupError as e:
        raise UsageError(str(e)) from None
    if args.checkpoint is None:
        print('warning: no checkpoint given, the tokens of randomly initialised weights are shown',
              file=sys.stderr)

    if is_arch:
        model, kind = build_arch(args.config, args.checkpoint).to(args.device).eval(), 'classifier'
        preprocessing = {}
    else:
        try:
            cfg = Config.fromfile(args.config)
        except Exception as e:  # a config is Python: any error may come out of it
            hint = ('; install mmpretrain (pip install -e .[cls]) or name the architecture '
                    'instead, e.g. vt_resnet18' if 'mmpretrain' in str(e) else '')
            raise UsageError(f'cannot read config {args.config}: {_one_line(e)}{hint}') from None
        try:
            merge_cfg_options(cfg, args.cfg_options)
        except ValueError as e:
            raise UsageError(str(e)) from None
        model, kind = build_from_config(cfg, args.checkpoint, args.device)
        preprocessing = _classifier_preprocessing(cfg) if kind == 'classifier' else {}

    if kind == 'segmentor':
        inputs, shown = segmentor_inputs(model, image)
    else:
        inputs, shown = classifier_inputs(image, args.img_size, **preprocessing)
    try:
        attention = token_attention(model, inputs.to(args.device))
    except ValueError as e:
        raise UsageError(str(e)) from None
    figure = draw_token_attention(shown, attention, args.out, input_size=tuple(inputs.shape[2:]),
                                  alpha=args.alpha, dpi=args.dpi, colors=args.colors)
    rows = ', '.join(f'{a.label} ({a.size[0]}x{a.size[1]}, {a.num_tokens} tokens)'
                     for a in attention)
    print(f'wrote {args.out}: {figure.width}x{figure.height} px; rows: {rows}')
    return figure


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except UsageError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())

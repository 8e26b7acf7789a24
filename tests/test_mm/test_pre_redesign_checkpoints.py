"""Checkpoints trained before the core redesign load into today's modules and compute the same.

tests/data/pre_redesign/*.pth were written by ``make.py`` there with vtseg at commit 294f718
(channels-last layers, saved-tensor rebuild, in-place inference): a state dict, an input and
the output that code gave, in float64. That code ran every softmax in float32, so its
float64 outputs are right to ~1e-7 only (today's are float64 throughout): the tolerance.
"""
import os.path as osp

import torch
from mmengine.registry import init_default_scope

from mmseg.registry import MODELS

import vtseg  # noqa: F401  (registers the modules)
from vtseg.models import VTResNet

DATA = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'data', 'pre_redesign')


def load(name: str) -> dict:
    return torch.load(osp.join(DATA, name), map_location='cpu', weights_only=True)


def test_vt_fpn_neck():
    init_default_scope('mmseg')
    saved = load('vt_fpn_neck.pth')
    neck = MODELS.build(dict(type='VTFPN', in_channels=[8, 16, 32], out_channels=8, num_outs=4, num_tokens=2,
                             token_channels=12, vt_cfg=dict(qk_channels=6, hidden_channels=10,
                                                            projector_qk_channels=4))).double().eval()
    neck.load_state_dict(saved['state_dict'], strict=True)
    with torch.no_grad():
        outs = neck(saved['inputs'])
    for out, expected in zip(outs, saved['outputs'], strict=True):
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


def test_vt_resnet_vt_modules():
    saved = load('vt_resnet18_vt_modules.pth')
    model = VTResNet(depth=18, num_classes=0, num_tokens=4, token_channels=16,
                     vt_cfg=dict(qk_channels=8, hidden_channels=12, projector_qk_channels=8)).double().eval()
    missing, unexpected = model.load_state_dict(saved['state_dict'], strict=False)
    assert not unexpected and all(not k.startswith('vt_modules.') for k in missing)
    with torch.no_grad():
        vt_map, tokens = model.forward_vt(saved['inputs'])
    torch.testing.assert_close(vt_map, saved['outputs'][0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(tokens, saved['outputs'][1], rtol=1e-6, atol=1e-6)

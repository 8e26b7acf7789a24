"""vtseg's modules are reachable from mmseg configs, and behave like mmseg's own."""
import pytest
import torch
from mmengine.registry import init_default_scope

from mmseg.registry import MODELS

import vtseg  # noqa: F401  (registers the modules)
from vtseg import models as core

init_default_scope('mmseg')


def test_registered_types_are_thin_wrappers_over_the_core():
    backbone = MODELS.build(dict(type='VTResNet', depth=18))
    neck = MODELS.build(dict(type='VTFPN', in_channels=[64, 128, 256, 256], out_channels=32, num_outs=4))
    assert isinstance(backbone, core.VTResNet) and isinstance(neck, core.VTFPN)
    # scoped lookup, as mmdet / mmpretrain configs use it
    assert MODELS.get('mmseg.VTResNet') is type(backbone)


def test_backbone_outputs_and_indices():
    backbone = MODELS.build(dict(type='VTResNet', depth=18, out_indices=(1, 3), out_tokens=True)).eval()
    outs = backbone(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 128, 8, 8), (2, 256, 4, 4), (2, 16, 1024)]
    with pytest.raises(ValueError, match='out_indices'):
        MODELS.build(dict(type='VTResNet', depth=18, out_indices=(4,)))


def test_frozen_stages_and_norm_eval():
    backbone = MODELS.build(dict(type='VTResNet', depth=18, frozen_stages=1, norm_eval=True))
    backbone.train()
    assert not any(p.requires_grad for p in backbone.layer1.parameters())
    assert not any(p.requires_grad for p in backbone.conv1.parameters())
    assert all(p.requires_grad for p in backbone.layer2.parameters())
    assert not backbone.layer1[0].bn1.training  # frozen stages keep their statistics
    assert not backbone.layer3[0].bn1.training  # norm_eval: all BN layers in eval mode
    assert backbone.vt_modules.training


def test_norm_cfg_builds_the_requested_norm():
    backbone = MODELS.build(dict(type='VTResNet', depth=18, norm_cfg=dict(type='GN', num_groups=8)))
    assert isinstance(backbone.layer2[0].bn1, torch.nn.GroupNorm)


def test_neck_is_a_drop_in_for_fpn():
    feats = [torch.randn(1, c, 64 // 2 ** i, 64 // 2 ** i) for i, c in enumerate([32, 64, 128, 256])]
    fpn = MODELS.build(dict(type='FPN', in_channels=[32, 64, 128, 256], out_channels=16, num_outs=5))
    vt = MODELS.build(dict(type='VTFPN', in_channels=[32, 64, 128, 256], out_channels=16, num_outs=5,
                           norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU')))
    vt.init_weights()
    assert [o.shape for o in vt(feats)] == [o.shape for o in fpn(feats)]
    with pytest.raises(NotImplementedError, match='add_extra_convs'):
        MODELS.build(dict(type='VTFPN', in_channels=[8], out_channels=8, num_outs=2, add_extra_convs='on_input'))

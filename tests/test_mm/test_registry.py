"""vtseg's modules are reachable from mmseg configs, and behave like mmseg's own."""
import inspect

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


def test_neck_accepts_every_fpn_argument_with_fpn_defaults():
    from mmseg.models.necks import FPN
    from vtseg.mm import VTFPNNeck
    fpn_args = inspect.signature(FPN.__init__).parameters
    vt_args = inspect.signature(VTFPNNeck.__init__).parameters
    for name, arg in fpn_args.items():
        assert name in vt_args, name
        assert vt_args[name].default == arg.default, name


FPN_CASES = [
    dict(num_outs=5),
    dict(num_outs=4, start_level=1),
    dict(num_outs=2, start_level=1, end_level=3),
    dict(num_outs=6, add_extra_convs='on_input'),
    dict(num_outs=6, add_extra_convs='on_lateral', relu_before_extra_convs=True),
    dict(num_outs=6, add_extra_convs='on_output'),
    dict(num_outs=5, add_extra_convs=True, extra_convs_on_inputs=True),
    dict(num_outs=4, norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU'), no_norm_on_lateral=True),
    dict(num_outs=4, upsample_cfg=dict(mode='bilinear', align_corners=False)),
    dict(num_outs=4, upsample_cfg=dict(mode='nearest', scale_factor=2)),
]


@pytest.mark.parametrize('args', FPN_CASES)
def test_neck_is_a_drop_in_for_fpn(args):
    in_channels = [32, 64, 128, 256]
    feats = [torch.randn(1, c, 64 // 2 ** i, 64 // 2 ** i) for i, c in enumerate(in_channels)]
    fpn = MODELS.build(dict(type='FPN', in_channels=in_channels, out_channels=16, **args))
    vt = MODELS.build(dict(type='VTFPN', in_channels=in_channels, out_channels=16, num_tokens=4,
                           token_channels=32, **args))
    vt.init_weights()
    assert [o.shape for o in vt(feats)] == [o.shape for o in fpn(feats)]
    # the convolutions FPN and VT-FPN share are built alike (norm, activation, input channels)
    fpn_lateral = [type(m).__name__ for m in fpn.lateral_convs.modules()]
    assert fpn_lateral == [type(m).__name__ for m in vt.lateral_convs.modules()]
    extra = fpn.fpn_convs[len(fpn.lateral_convs):]
    assert [m.conv.in_channels for m in extra] == [m.conv.in_channels for m in vt.extra_convs]


def test_mm_adapters_pass_gradcheck_in_float64():
    """The registered neck (ConvModule laterals with GN around the core) and backbone."""
    torch.manual_seed(0)
    neck = MODELS.build(dict(type='VTFPN', in_channels=[4, 4], out_channels=4, num_outs=3, num_tokens=2,
                             token_channels=4, norm_cfg=dict(type='GN', num_groups=2),
                             act_cfg=dict(type='ReLU'), add_extra_convs='on_output')).double()
    feats = (torch.randn(1, 4, 4, 4, dtype=torch.double, requires_grad=True),
             torch.randn(1, 4, 2, 2, dtype=torch.double, requires_grad=True))
    # fast mode (random projections of the Jacobian), as the core's VT-FPN test
    assert torch.autograd.gradcheck(lambda *f: neck(list(f)), feats, fast_mode=True)
    backbone = MODELS.build(dict(type='VTResNet', depth=18, num_tokens=2, token_channels=8,
                                 out_indices=(3,))).double().eval()  # BN with its running statistics
    x = torch.randn(1, 3, 32, 32, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda image: backbone(image)[0], (x,), fast_mode=True)


def test_neck_loads_a_checkpoint_of_the_previous_layout():
    # the parameter names did not change in the core redesign: these keys are what
    # VT-FPN checkpoints trained before it hold
    vt = MODELS.build(dict(type='VTFPN', in_channels=[8, 16], out_channels=8, num_outs=3, num_tokens=2,
                           token_channels=16))
    assert sorted(vt.state_dict()) == sorted([
        'lateral_convs.0.conv.weight', 'lateral_convs.0.conv.bias', 'lateral_convs.1.conv.weight',
        'lateral_convs.1.conv.bias', 'tokenizers.0.filters.weight', 'tokenizers.0.value.weight',
        'tokenizers.1.filters.weight', 'tokenizers.1.value.weight', 'transformers.0.attn.key.weight',
        'transformers.0.attn.query.weight', 'transformers.0.ffn.fc1.weight', 'transformers.0.ffn.fc2.weight',
        'projectors.0.query_weight', 'projectors.0.key.weight', 'projectors.0.value.weight',
        'projectors.1.query_weight', 'projectors.1.key.weight', 'projectors.1.value.weight'])


def test_neck_rejects_what_it_cannot_honour():
    with pytest.raises(ValueError, match='add_extra_convs'):
        MODELS.build(dict(type='VTFPN', in_channels=[8], out_channels=8, num_outs=2, add_extra_convs='on_top'))
    with pytest.raises(ValueError, match='no extra levels'):
        MODELS.build(dict(type='VTFPN', in_channels=[8, 8], out_channels=8, num_outs=3, end_level=2))
    # vt_cfg holds the transformer/projector options only; the token count has its own argument
    with pytest.raises(ValueError, match='vt_cfg cannot set num_tokens'):
        MODELS.build(dict(type='VTFPN', in_channels=[8], out_channels=8, num_outs=1, vt_cfg=dict(num_tokens=4)))
    with pytest.raises(ValueError, match='vt_cfg cannot set depth, heads'):
        MODELS.build(dict(type='VTResNet', depth=18, vt_cfg=dict(heads=2, depth=4)))

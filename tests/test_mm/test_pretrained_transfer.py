"""A VT-ResNet classifier checkpoint initialises the VT-ResNet backbone of an mmseg segmentor
through init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')."""
import os.path as osp
from importlib.util import find_spec

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import vtseg  # noqa: F401  (registers the modules)
from vtseg_testing import REPO
from vtseg import models as core

SEGMENTOR_CONFIG = osp.join(REPO, 'configs', 'vtshapes',
                            'vt-fpn_vt-r18_1xb8-1.5k_vtshapes-96x96.py')
CLASSIFIER_CONFIG = osp.join(REPO, 'configs', 'vt_resnet', 'vt-resnet18_8xb32_in1k.py')


def trained_looking(state: dict) -> dict:
    """Every tensor moved off its initial value (BN weights, biases, running statistics and
    counters too): a fresh model's BN tensors equal any other fresh model's, so they would
    prove nothing. Small steps keep the network's outputs finite."""
    gen = torch.Generator().manual_seed(0)
    return {k: (v + 0.01 * torch.randn(v.shape, generator=gen) if v.is_floating_point()
                else torch.randint(1, 100, v.shape, generator=gen, dtype=v.dtype))
            for k, v in state.items()}


def checkpoint_from_core(path: str) -> None:
    """The keys an mmpretrain ImageClassifier has (``backbone.*``, ``head.fc.*``), written
    from the core classifier with torch alone: works without mmpretrain."""
    classifier = core.vt_resnet18(num_classes=5)
    state = {('head.' if k.startswith('fc.') else 'backbone.') + k: v
             for k, v in classifier.state_dict().items()}
    torch.save({'meta': {}, 'state_dict': trained_looking(state)}, path)


def checkpoint_from_mmpretrain(path: str) -> None:
    """A real mmpretrain ImageClassifier built from configs/vt_resnet, saved by mmengine."""
    from mmengine.runner.checkpoint import save_checkpoint, weights_to_cpu
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(CLASSIFIER_CONFIG)
    init_default_scope('mmpretrain')
    classifier = MODELS.build(cfg.model)
    state = trained_looking(weights_to_cpu(classifier.state_dict()))
    save_checkpoint({'meta': {}, 'state_dict': state}, path)


def build_segmentor(checkpoint: str):
    """The VT-Shapes VT-FPN on VT-ResNet-18, its backbone initialised from ``checkpoint``."""
    from mmseg.registry import MODELS
    cfg = Config.fromfile(SEGMENTOR_CONFIG)
    init_default_scope('mmseg')
    # The demo config uses narrow tokens (C_T 256); the ImageNet classifiers use 1024.
    cfg.model.backbone.update(token_channels=1024, init_cfg=dict(
        type='Pretrained', checkpoint=checkpoint, prefix='backbone.'))
    segmentor = MODELS.build(cfg.model)
    segmentor.init_weights()
    return segmentor


@pytest.mark.parametrize('source', [
    'core',
    pytest.param('mmpretrain', marks=pytest.mark.skipif(
        find_spec('mmpretrain') is None,
        reason='mmpretrain is not installed (optional extra: pip install -e .[cls])')),
])
def test_classifier_weights_arrive_in_the_segmentor_backbone(source, tmp_path):
    path = str(tmp_path / f'{source}_classifier.pth')
    {'core': checkpoint_from_core, 'mmpretrain': checkpoint_from_mmpretrain}[source](path)
    classifier_state = torch.load(path, map_location='cpu')['state_dict']
    segmentor = build_segmentor(path)
    backbone_state = segmentor.backbone.state_dict()

    backbone_keys = [k[len('backbone.'):] for k in classifier_state if k.startswith('backbone.')]
    assert backbone_keys
    for key in backbone_keys:  # every tensor of the classifier's backbone arrived unchanged
        assert torch.equal(backbone_state[key], classifier_state['backbone.' + key]), key
    # Only the last VT module's projector is new: a classifier has none.
    new = sorted({k.split('.projector.')[0] for k in backbone_state if k not in backbone_keys})
    assert new == ['vt_modules.1']
    assert not any(k.startswith(('head.', 'fc.')) for k in backbone_state)

    # Same weights, same function: the segmentor's backbone computes the classifier's tokens.
    reference = core.vt_resnet18(num_classes=5).eval()
    reference.load_state_dict({k: classifier_state['backbone.' + k] for k in backbone_keys},
                              strict=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _, tokens = segmentor.backbone.eval().forward_features(x)
        torch.testing.assert_close(tokens, reference.forward_features(x)[1])


def test_wrong_prefix_loads_nothing(tmp_path):
    """Control for the test above: without the prefix no key matches and the backbone keeps
    its initialisation, so equal tensors there do come from the checkpoint."""
    path = str(tmp_path / 'classifier.pth')
    checkpoint_from_core(path)
    classifier_state = torch.load(path, map_location='cpu')['state_dict']
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    backbone = MODELS.build(dict(type='VTResNet', depth=18, init_cfg=dict(
        type='Pretrained', checkpoint=path, prefix='classifier.')))
    with pytest.raises(AssertionError, match='not in the pretrained model'):
        backbone.init_weights()
    backbone = MODELS.build(dict(type='VTResNet', depth=18,
                                 init_cfg=dict(type='Pretrained', checkpoint=path)))
    backbone.init_weights()  # keys keep 'backbone.': nothing matches, nothing is copied
    assert not torch.equal(backbone.state_dict()['conv1.weight'],
                           classifier_state['backbone.conv1.weight'])

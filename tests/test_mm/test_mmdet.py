"""configs/mmdet: RetinaNet on VT-ResNet-50, reached from mmdet through custom_imports."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

pytest.importorskip('mmdet', reason='mmdet is not installed (optional extra: '
                                    'pip install -e .[det], or bash tools/setup.sh)')
from mmdet.registry import MODELS  # noqa: E402
from mmdet.testing import demo_mm_inputs  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

from vtseg_testing import REPO  # noqa: E402
from vtseg import models as core  # noqa: E402

CONFIG = osp.join(REPO, 'configs', 'mmdet', 'retinanet_vt-r50_fpn_1x_coco.py')


@pytest.fixture(scope='module')
def detector():
    cfg = Config.fromfile(CONFIG)  # runs custom_imports: vtseg registers VTResNet in mmseg
    assert cfg.custom_imports == dict(imports=['vtseg'], allow_failed_imports=False)
    assert cfg.model.backbone.init_cfg.checkpoint == 'torchvision://resnet50'
    cfg.model.backbone.init_cfg = None  # no download in tests
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def test_backbone_is_vtseg_vt_resnet50(detector):
    assert isinstance(detector.backbone, core.VTResNet) and detector.backbone.depth == 50
    assert len(detector.backbone.vt_modules) == 3


def test_pyramid_strides_match_the_anchor_strides(detector):
    """P3 from stage 3, P4 from the VT map, P5-P7 from extra convs: RetinaNet's strides."""
    inputs = torch.randn(1, 3, 128, 256)
    with torch.no_grad():
        feats = detector.extract_feat(inputs)
    strides = [s[0] if isinstance(s, tuple) else s
               for s in detector.bbox_head.prior_generator.strides]
    assert strides == [8, 16, 32, 64, 128]
    assert [tuple(f.shape[-2:]) for f in feats] == [(-(-128 // s), -(-256 // s)) for s in strides]
    assert all(f.shape[1] == 256 for f in feats)


def test_one_training_forward_and_backward(detector):
    packed = demo_mm_inputs(batch_size=1, image_shapes=[(3, 128, 160)], num_items=[3],
                            num_classes=80)
    detector.train()
    data = detector.data_preprocessor(packed, True)
    losses = detector(**data, mode='loss')
    total = sum(sum(v) if isinstance(v, list) else v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total) and total > 0
    total.backward()
    # the VT modules take part: the last projector (feeding P4..P7) receives gradients
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in detector.backbone.vt_modules[-1].projector.parameters())
    assert all(p.grad is None for p in detector.backbone.layer1.parameters())  # frozen_stages=1


def test_one_inference_forward(detector):
    packed = demo_mm_inputs(batch_size=1, image_shapes=[(3, 128, 160)], num_classes=80)
    detector.eval()
    with torch.no_grad():
        result = detector.test_step(packed)[0]
    boxes, scores = result.pred_instances.bboxes, result.pred_instances.scores
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and scores.shape == boxes.shape[:1]
    assert len(result.pred_instances.labels) == len(boxes) <= 100

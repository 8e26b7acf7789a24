"""VT-ResNet as an mmpretrain ImageClassifier: the head, the ImageNet configs, training with
mmpretrain's own tools/train.py, and the checkpoint it writes."""
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

pytest.importorskip('mmpretrain', reason='mmpretrain is not installed (optional extra: '
                    'pip install -e .[cls], or bash tools/setup.sh)')
from mmengine.registry import init_default_scope  # noqa: E402
from mmpretrain.registry import MODELS  # noqa: E402

import vtseg  # noqa: E402,F401  (registers TokenPoolingClsHead; allowlists checkpoint types)
from vtseg_testing import REPO, run_tool  # noqa: E402
from vtseg import models as core  # noqa: E402

CONFIGS = {depth: osp.join(REPO, 'configs', 'vt_resnet', f'vt-resnet{depth}_8xb32_in1k.py')
           for depth in (18, 34, 50, 101)}
CLASSES = ('circle', 'square')


def build_classifier(depth: int = 18, num_classes: int = 1000):
    cfg = Config.fromfile(CONFIGS[depth])
    init_default_scope('mmpretrain')
    cfg.model.head.num_classes = num_classes
    return MODELS.build(cfg.model)


@pytest.mark.parametrize('depth', [18, 34, 50, 101])
def test_configs_follow_the_paper_default_recipe(depth):
    cfg = Config.fromfile(CONFIGS[depth])
    assert cfg.custom_imports == dict(imports=['vtseg'], allow_failed_imports=False)
    assert cfg.default_scope == 'mmpretrain' and cfg.model.type == 'ImageClassifier'
    assert cfg.model.backbone.type == 'mmseg.VTResNet' and cfg.model.backbone.depth == depth
    assert cfg.optim_wrapper.optimizer == dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=4e-5)
    assert cfg.param_scheduler.milestones == [30, 60] and cfg.param_scheduler.gamma == 0.1
    assert cfg.train_cfg.max_epochs == 90
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 256
    assert cfg.train_dataloader.dataset.type == 'ImageNet' and cfg.model.head.num_classes == 1000


@pytest.mark.parametrize('depth', [18, 50])  # BasicBlock, Bottleneck; 34/101 differ in depth only
def test_classifier_has_the_core_model_weights_and_outputs(depth):
    """The mmpretrain classifier is the core classifier: same parameters (strict load) and
    the same logits, so checkpoints move between the two by prefixing keys."""
    classifier = build_classifier(depth, num_classes=10).eval()
    reference = core.VTResNet(depth=depth, num_classes=10).eval()  # its own random weights
    state = {('head.' if k.startswith('fc.') else 'backbone.') + k: v
             for k, v in reference.state_dict().items()}
    classifier.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(classifier(x, mode='tensor'), reference(x))


def test_head_reads_tokens_and_rejects_feature_maps():
    head = MODELS.build(dict(type='TokenPoolingClsHead', num_classes=3, in_channels=8))
    tokens = torch.randn(2, 5, 8)
    torch.testing.assert_close(head((tokens,)), head.fc(tokens.mean(dim=1)))
    assert head.pre_logits((tokens,)).shape == (2, 8)
    with pytest.raises(ValueError, match='out_tokens=True'):
        head((torch.randn(2, 8, 4, 4),))
    with pytest.raises(ValueError, match='num_classes'):
        MODELS.build(dict(type='TokenPoolingClsHead', num_classes=0))


def test_classifier_backbone_has_no_unused_projector():
    """A classifier reads only the tokens: every parameter gets a gradient (DDP needs no
    find_unused_parameters)."""
    classifier = build_classifier(18, num_classes=4)
    classifier(torch.randn(2, 3, 32, 32), mode='tensor').sum().backward()
    assert [n for n, p in classifier.named_parameters() if p.grad is None] == []


def test_classifier_backbone_outputs_only_tokens():
    """mmseg's VTResNet with out_indices=() and project_last=False, as the configs build it."""
    from mmseg.registry import MODELS as SEG_MODELS
    init_default_scope('mmseg')
    backbone = SEG_MODELS.build(dict(type='VTResNet', depth=18, out_indices=(), out_tokens=True,
                                     project_last=False, token_channels=32))
    outs = backbone(torch.randn(2, 3, 32, 32))
    assert len(outs) == 1 and outs[0].shape == (2, 16, 32)
    assert backbone.vt_modules[-1].projector is None and backbone.vt_modules[0].projector is not None
    with pytest.raises(ValueError, match='output nothing'):
        SEG_MODELS.build(dict(type='VTResNet', depth=18, out_indices=()))


@pytest.fixture(scope='module')
def tiny_imagenet(tmp_path_factory) -> str:
    """ImageNet folder layout, two classes: train/<class>/*.jpg (2 each), val/<class>/*.jpg."""
    root = tmp_path_factory.mktemp('tiny_imagenet')
    rng = np.random.default_rng(0)
    for split, per_class in (('train', 2), ('val', 1)):
        for label, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                img = rng.integers(0, 60, (40, 48, 3), dtype=np.uint8) + 150 * label
                assert cv2.imwrite(str(root / split / name / f'{i}.jpg'), img)
    return str(root)


@pytest.fixture(scope='module')
def trained_classifier(tiny_imagenet, tmp_path_factory) -> dict:
    """vt-resnet18_8xb32_in1k.py trained by mmpretrain's own tools/train.py: one epoch of
    2 iterations (4 images, batch 2) at 64x64, then validation."""
    import mmpretrain
    train_py = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'tools', 'train.py')
    work_dir = str(tmp_path_factory.mktemp('vt_r18_in1k'))
    classes = '[' + ','.join(CLASSES) + ']'
    proc = run_tool([
        train_py, CONFIGS[18], '--work-dir', work_dir, '--no-persistent-workers', '--cfg-options',
        *[f'{loader}.dataset.{key}' for loader in ('train_dataloader', 'val_dataloader')
          for key in (f'data_root={tiny_imagenet}', f'metainfo.classes={classes}')],
        'model.head.num_classes=2', 'data_preprocessor.num_classes=2', 'model.head.topk=(1,)',
        'val_evaluator.topk=(1,)', 'train_dataloader.batch_size=2', 'val_dataloader.batch_size=2',
        'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0', 'train_cfg.max_epochs=1',
        # small images keep this fast: RandomResizedCrop / ResizeEdge / CenterCrop sizes
        'train_dataloader.dataset.pipeline.1.scale=64',
        'val_dataloader.dataset.pipeline.1.scale=72',
        'val_dataloader.dataset.pipeline.2.crop_size=64',
        'default_hooks.logger.interval=1',
    ], timeout=300)
    return dict(work_dir=work_dir, log=proc.stdout + proc.stderr,
                checkpoint=osp.join(work_dir, 'epoch_1.pth'))


def test_mmpretrain_train_py_trains_two_iterations(trained_classifier):
    log = trained_classifier['log']
    assert 'Epoch(train) [1][2/2]' in log and 'Epoch(train) [1][3/' not in log
    losses = [float(line.rsplit('loss:', 1)[1].split()[0])
              for line in log.splitlines() if 'Epoch(train)' in line and 'loss:' in line]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert 'accuracy/top1' in log  # validation ran on the val split
    assert osp.isfile(trained_classifier['checkpoint'])


def test_training_checkpoint_loads_under_weights_only(trained_classifier):
    """torch's default (weights_only) load takes the full training state: no extra
    allowlist beyond vtseg.mm.checkpoint is needed for mmpretrain checkpoints."""
    ckpt = torch.load(trained_classifier['checkpoint'], map_location='cpu')
    assert {'meta', 'state_dict', 'message_hub', 'optimizer', 'param_schedulers'} <= set(ckpt)
    assert list(ckpt['meta']['dataset_meta']['classes']) == list(CLASSES)
    reference = core.VTResNet(depth=18, num_classes=2).state_dict()
    expected = {('head.' if k.startswith('fc.') else 'backbone.') + k for k in reference}
    assert set(ckpt['state_dict']) == expected


def test_trained_checkpoint_initialises_a_segmentation_backbone(trained_classifier):
    """The weights mmpretrain trained arrive in mmseg's VTResNet through init_cfg."""
    from mmseg.registry import MODELS as SEG_MODELS
    init_default_scope('mmseg')
    backbone = SEG_MODELS.build(dict(
        type='VTResNet', depth=18, init_cfg=dict(
            type='Pretrained', checkpoint=trained_classifier['checkpoint'], prefix='backbone.')))
    backbone.init_weights()
    trained = torch.load(trained_classifier['checkpoint'], map_location='cpu')['state_dict']
    own = backbone.state_dict()
    loaded = [k for k in trained if k.startswith('backbone.')]
    assert loaded and all(torch.equal(own[k[len('backbone.'):]], trained[k]) for k in loaded)

"""Every segmentation config in configs/ loads, builds through mmseg's registry and runs.

configs/vt_resnet/ (mmpretrain) and configs/mmdet/ (mmdet) use other registries and are
tested with their own packages.
"""
import copy
import functools
import glob
import os.path as osp
import re

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmseg.registry import DATASETS, MODELS, TRANSFORMS
from vtseg_testing import REPO

OTHER_REGISTRIES = ('vt_resnet', 'mmdet')
CONFIGS = sorted(
    osp.relpath(p, REPO)
    for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
    if osp.relpath(p, osp.join(REPO, 'configs')).split(osp.sep)[0]
    not in ('_base_', *OTHER_REGISTRIES))

# The paper's numbers (../shared/vt-paper.md): mIoU; total / FPN-module GFLOPs.
PAPER = {
    'coco_stuff/fpn_r50': (40.78, 159, 55.1), 'coco_stuff/vt-fpn_r50': (41.00, 113, 8.5),
    'coco_stuff/fpn_r101': (41.51, 231, 55.1), 'coco_stuff/vt-fpn_r101': (41.50, 185, 8.5),
    'lip/fpn_r50': (47.04, 37.1, 12.8), 'lip/vt-fpn_r50': (47.39, 26.4, 2.0),
    'lip/fpn_r101': (47.35, 54.4, 12.8), 'lip/vt-fpn_r101': (47.58, 43.6, 2.0),
}
PAPER_CONFIGS = sorted(c for c in CONFIGS if c.split(osp.sep)[1] in ('coco_stuff', 'lip'))


@functools.lru_cache(maxsize=None)
def _load(path: str) -> Config:
    return Config.fromfile(osp.join(REPO, path))


def load(path: str) -> Config:
    """``Config.fromfile``, parsed once per file (each parse resolves the mmseg:: bases)."""
    return copy.deepcopy(_load(path))


def test_the_paper_configs_are_all_there():
    names = {re.sub(r'_8xb.*', '', c[len('configs/'):]) for c in PAPER_CONFIGS}
    assert names == {f'{d}/{m}' for d in ('coco_stuff', 'lip')
                     for m in ('fpn_r50', 'fpn_r101', 'vt-fpn_r50', 'vt-fpn_r101', 'vt-fpn_vt-r50')}


@pytest.mark.parametrize('config', CONFIGS)
def test_config_builds_and_runs(config):
    cfg = load(config)
    assert 'vtseg' in cfg.custom_imports.imports and not cfg.custom_imports.allow_failed_imports
    assert cfg.get('default_scope') == 'mmseg'
    init_default_scope('mmseg')

    classes = DATASETS.get(cfg.train_dataloader.dataset.type).METAINFO['classes']
    assert cfg.model.decode_head.num_classes == len(classes)
    assert cfg.val_dataloader.dataset.type == cfg.train_dataloader.dataset.type

    model = MODELS.build(cfg.model).eval()  # builds only: init_weights would download
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 32, 32), mode='tensor')
    assert logits.shape == (1, len(classes), 8, 8)  # FPNHead predicts at stride 4
    assert torch.isfinite(logits).all()

    if config in PAPER_CONFIGS:
        norms = {type(m).__name__ for m in model.modules()
                 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
        assert norms == {'SyncBatchNorm'}, 'the paper trains with SyncBN'
        name = osp.basename(config)
        assert cfg.model.neck.type == ('VTFPN' if name.startswith('vt-fpn') else 'FPN')
        if '_vt-r50_' in name:
            assert cfg.model.backbone.type == 'VTResNet'
            assert list(cfg.model.decode_head.feature_strides) == [4, 8, 16, 16]


@pytest.mark.parametrize('config', PAPER_CONFIGS)
def test_header_states_the_paper_result(config):
    with open(osp.join(REPO, config)) as f:
        header = ''.join(line for line in f if line.startswith('#'))
    key = re.sub(r'_8xb.*', '', config[len('configs/'):])
    if key in PAPER:
        miou, total, neck = PAPER[key]
        assert f'expects mIoU {miou:.2f}; {total} GFLOPs in all, {neck} in the FPN module' in header
    else:
        assert 'Not in the paper' in header and 'no expected mIoU' in header


@pytest.mark.parametrize('config', PAPER_CONFIGS)
def test_recipe_follows_the_paper(config):
    cfg = load(config)
    batch = 8 * cfg.train_dataloader.batch_size  # the 8xbN in the name
    assert f'_8xb{cfg.train_dataloader.batch_size}-' in config
    assert f'-{cfg.train_cfg.max_iters // 1000}k_' in config
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'SGD' and optimizer.momentum == 0.9
    if '/coco_stuff/' in config:
        assert (batch, optimizer.lr) == (32, 0.04)
        assert cfg.crop_size == (512, 512) and cfg.model.data_preprocessor.size == (512, 512)
    else:
        assert (batch, optimizer.lr, optimizer.weight_decay) == (96, 0.01, 5e-4)
        assert cfg.crop_size == (473, 473) and cfg.model.data_preprocessor.size == (473, 473)


@pytest.mark.parametrize('config', PAPER_CONFIGS)
def test_pretrained_weights_are_known_checkpoints(config):
    """The ImageNet checkpoints named by the configs exist in mmengine's tables (no download)."""
    from mmengine.runner.checkpoint import get_external_models, get_torchvision_models
    cfg = load(config)
    name = cfg.model.get('pretrained') or cfg.model.backbone.init_cfg.checkpoint
    scheme, _, key = name.partition('://')
    table = {'open-mmlab': get_external_models, 'torchvision': get_torchvision_models}[scheme]()
    assert table[key].startswith('https://')
    depth = cfg.model.backbone.depth
    vt_resnet = cfg.model.backbone.type == 'VTResNet'
    assert key == (f'resnet{depth}' if vt_resnet else f'resnet{depth}_v1c')


def test_vt_resnet_backbone_loads_torchvision_resnet50(tmp_path):
    """What init_cfg does with 'torchvision://resnet50', from a local copy of such a file."""
    import torchvision
    cfg = load('configs/_base_/models/vt-fpn_vt-r50.py')
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained',
                                               checkpoint='torchvision://resnet50')
    resnet50 = torchvision.models.resnet50()
    torch.save(resnet50.state_dict(), tmp_path / 'resnet50.pth')
    init_default_scope('mmseg')
    local = dict(type='Pretrained', checkpoint=str(tmp_path / 'resnet50.pth'))
    backbone = MODELS.build({**cfg.model.backbone, 'init_cfg': local})
    backbone.init_weights()
    reference = resnet50.state_dict()
    loaded = {k: v for k, v in backbone.state_dict().items() if k.split('.')[0] in
              ('conv1', 'bn1', 'layer1', 'layer2', 'layer3')}
    assert len(loaded) == sum(k.split('.')[0] in ('conv1', 'bn1', 'layer1', 'layer2', 'layer3')
                              for k in reference)
    for key, value in loaded.items():
        assert torch.equal(value, reference[key]), key


def test_lip_flip_swaps_left_and_right_labels():
    cfg = load('configs/_base_/datasets/lip_473x473.py')
    classes = DATASETS.get(cfg.dataset_type).METAINFO['classes']
    flip_cfg = next(t for t in cfg.train_pipeline if t.type == 'RandomFlip')
    pairs = [tuple(p) for p in flip_cfg.swap_seg_labels]
    # every Left-* class is swapped with its Right-* class, and nothing else
    assert sorted(pairs) == sorted(
        (classes.index(c), classes.index('Right-' + c[len('Left-'):]))
        for c in classes if c.startswith('Left-'))

    init_default_scope('mmseg')
    flip = TRANSFORMS.build({**flip_cfg, 'prob': 1.0})
    seg = np.zeros((4, 6), np.uint8)
    seg[:, :2] = classes.index('Left-arm')  # the left arm, on the image's left
    seg[:, 2] = classes.index('Face')
    out = flip(dict(img=np.zeros((4, 6, 3), np.uint8), gt_seg_map=seg.copy(),
                    seg_fields=['gt_seg_map']))
    expected = np.zeros((4, 6), np.uint8)
    expected[:, 4:] = classes.index('Right-arm')  # mirrored, it is a right arm
    expected[:, 3] = classes.index('Face')
    np.testing.assert_array_equal(out['gt_seg_map'], expected)

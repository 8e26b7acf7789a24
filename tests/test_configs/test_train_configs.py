"""Each model family trains 2 iterations and validates from the real COCO-Stuff / LIP configs.

The data sets are written by the tests in the real layouts: LIP as a miniature official
download converted by tools/dataset_converters/lip.py, COCO-Stuff 164k as mmseg's
converter leaves it. The configs are used unchanged apart from ``--cfg-options``-style
overrides (the same ``Config.merge_from_dict`` that mmseg's tools/train.py applies): data
root, 64x64 crops, batch 2, 2 iterations, no ImageNet download. All on CPU, one
non-distributed process, so mmengine must turn the configs' SyncBN into BatchNorm.
"""
import math
import os.path as osp
from typing import Dict

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from torch.nn.modules.batchnorm import _BatchNorm

from mmseg.registry import MODELS
from vtseg_testing import REPO, run_tool
from test_configs.fake_datasets import write_coco_stuff164k, write_lip_download

SIZE = (64, 64)
LIP = 'configs/lip/{}_8xb12-50k_lip-473x473.py'
COCO = 'configs/coco_stuff/{}_8xb4-45k_coco-stuff164k-512x512.py'


@pytest.fixture(scope='module')
def lip_root(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp('lip')
    out = str(tmp / 'LIP')
    run_tool([osp.join('tools', 'dataset_converters', 'lip.py'),
              write_lip_download(str(tmp / 'download'), as_zip=True), '-o', out])
    return out


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory) -> str:
    return write_coco_stuff164k(str(tmp_path_factory.mktemp('coco') / 'coco_stuff164k'))


def tiny_run_options(cfg: Config, data_root: str, work_dir: str) -> Dict[str, object]:
    """``--cfg-options`` that shrink a real config to a 2-iteration CPU run on ``data_root``."""
    options = {'work_dir': work_dir, 'model.pretrained': None, 'model.backbone.init_cfg': None,
               'model.data_preprocessor.size': SIZE, 'train_cfg.max_iters': 2,
               'train_cfg.val_interval': 2, 'default_hooks.logger.interval': 1,
               'default_hooks.checkpoint': None, 'randomness.seed': 0}
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options.update({f'{loader}.dataset.data_root': data_root, f'{loader}.num_workers': 0,
                        f'{loader}.persistent_workers': False})
    options['train_dataloader.batch_size'] = 2
    # the resize / crop steps of the pipelines, by position, as one would on the command line
    for loader in ('train_dataloader', 'val_dataloader'):
        for i, step in enumerate(cfg[loader].dataset.pipeline):
            key = f'{loader}.dataset.pipeline.{i}'
            if step.type in ('RandomResize', 'Resize'):
                options[f'{key}.scale'] = SIZE
            elif step.type == 'RandomCrop':
                options[f'{key}.crop_size'] = SIZE
    return options


def count_norms(model: torch.nn.Module) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            counts[type(m).__name__] = counts.get(type(m).__name__, 0) + 1
    return counts


# Each family in one process at least once, each data set with a plain and a VT model;
# the fourth pair runs through mmseg's own tools/train.py below. (A run costs about 10 s
# of CPU, most of it mmengine's Runner set-up, so not all six pairs run.)
@pytest.mark.parametrize('dataset, family', [
    ('lip', 'fpn_r50'), ('lip', 'vt-fpn_vt-r50'), ('coco_stuff', 'vt-fpn_r50')])
def test_train_two_iterations_and_validate(dataset, family, request, tmp_path):
    data_root = request.getfixturevalue('coco_root' if dataset == 'coco_stuff' else 'lip_root')
    cfg = Config.fromfile(osp.join(REPO, (COCO if dataset == 'coco_stuff' else LIP).format(family)))
    cfg.merge_from_dict(tiny_run_options(cfg, data_root, str(tmp_path)))

    init_default_scope('mmseg')
    as_configured = count_norms(MODELS.build(cfg.model))
    assert set(as_configured) == {'SyncBatchNorm'}

    runner = Runner.from_cfg(cfg)
    runner.train()
    # the same norm layers, now plain BatchNorm: SyncBN needs a process group we do not have
    assert count_norms(runner.model) == {'_BatchNormXd': as_configured['SyncBatchNorm']}
    hub = runner.message_hub
    assert math.isfinite(hub.get_scalar('train/loss').current())
    miou = hub.get_scalar('val/mIoU').current()
    assert 0 <= miou <= 100
    assert runner.iter == 2


def test_mmseg_train_tool_runs_a_config_unchanged(coco_root, tmp_path):
    """mmseg's own tools/train.py, given the config file and --cfg-options only."""
    import mmseg
    config = COCO.format('vt-fpn_vt-r50')
    options = tiny_run_options(Config.fromfile(osp.join(REPO, config)), coco_root, str(tmp_path))
    del options['default_hooks.checkpoint']
    options['default_hooks.checkpoint.interval'] = 2
    work_dir = options.pop('work_dir')

    def fmt(value: object) -> str:
        return str(value).replace(' ', '').replace("'", '')

    train = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools', 'train.py')
    proc = run_tool([train, config, '--work-dir', work_dir, '--cfg-options',
                     *(f'{k}={fmt(v)}' for k, v in options.items())])
    log = proc.stdout + proc.stderr
    assert 'Distributed training is not used, all SyncBatchNorm (SyncBN) layers' in log
    assert 'mIoU:' in log
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth'))

"""OpenMMLab's launcher: ``mim train`` / ``mim test mmsegmentation`` on a vtseg LIP config, on the CPU.

mim runs mmseg's own tools/train.py and test.py (shipped inside the mmsegmentation
package); the config's ``custom_imports`` loads vtseg. Nothing is downloaded: the
ImageNet weights are switched off through ``--cfg-options``, and mim finds mmseg installed.
"""
import os
import os.path as osp
import subprocess
import sys
from importlib.util import find_spec

import pytest
import torch
from mmengine.config import Config

import vtseg  # noqa: F401  (mmengine checkpoints load under weights_only=True through it)
from test_configs.test_train_configs import tiny_run_options
from vtseg_testing import REPO, as_cfg_options, make_lip

pytestmark = pytest.mark.skipif(
    find_spec('mim') is None, reason='openmim is not installed (optional extra: pip install -e .[mim], '
    'or bash tools/setup.sh)')
CONFIG = 'configs/lip/vt-fpn_r50_8xb12-50k_lip-473x473.py'


def mim(*args: str) -> str:
    """Run ``python -m mim ARGS`` (the ``mim`` command of this Python) on the CPU from the
    repository root; its output, or the test fails with it."""
    env = {**os.environ, 'CUDA_VISIBLE_DEVICES': ''}
    proc = subprocess.run([sys.executable, '-m', 'mim', *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=env)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f'mim {" ".join(args)} exited {proc.returncode}\n{out[-6000:]}')
    return out


@pytest.fixture(scope='module')
def options(tmp_path_factory) -> list:
    """``--cfg-options`` for a 2-iteration CPU run of CONFIG on a tiny LIP, saving iter_2.pth."""
    data_root = make_lip(str(tmp_path_factory.mktemp('lip')))
    overrides = tiny_run_options(Config.fromfile(osp.join(REPO, CONFIG)), data_root, 'unused')
    del overrides['work_dir'], overrides['default_hooks.checkpoint']
    overrides['default_hooks.checkpoint.interval'] = 2
    return ['--cfg-options', *as_cfg_options(overrides)]


def test_mim_train_then_test(options, tmp_path):
    work_dir = str(tmp_path / 'work')
    trained = mim('train', 'mmsegmentation', CONFIG, '--gpus', '0', '--work-dir', work_dir, *options)
    assert 'Training command is' in trained and osp.join('mmseg', '.mim', 'tools', 'train.py') in trained
    assert 'Iter(train) [2/2]' in trained and 'mIoU:' in trained
    checkpoint = osp.join(work_dir, 'iter_2.pth')
    assert torch.load(checkpoint, weights_only=True)['meta']['iter'] == 2

    tested = mim('test', 'mmsegmentation', CONFIG, '--checkpoint', checkpoint, '--work-dir', work_dir, *options)
    assert osp.join('mmseg', '.mim', 'tools', 'test.py') in tested
    assert 'Iter(test) [2/2]' in tested and 'mIoU:' in tested  # the 2 LIP val images
    assert 'Testing finished successfully' in tested

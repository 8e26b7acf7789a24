"""tools/publish_model.py: a trained checkpoint becomes weights + meta named by its SHA-256 prefix."""
import hashlib
import os.path as osp
import re

import pytest
import torch

import vtseg  # noqa: F401  (training checkpoints load under weights_only=True through it)
from vtseg.mm.checkpoint import publish_checkpoint
from vtseg_testing import REPO, run_tool, vtshapes_options

CONFIG = osp.join(REPO, 'configs', 'vtshapes', 'vt-fpn_r18_1xb8-1.5k_vtshapes-96x96.py')


@pytest.fixture(scope='module')
def trained(vtshapes_root, tmp_path_factory) -> str:
    """iter_2.pth of a 2-iteration VT-Shapes run: weights, optimizer, schedulers, message hub."""
    work_dir = str(tmp_path_factory.mktemp('publish') / 'work')
    run_tool(['tools/train.py', CONFIG, '--work-dir', work_dir, '--cfg-options',
              *vtshapes_options(vtshapes_root), 'train_dataloader.batch_size=2', 'train_cfg.max_iters=2',
              'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=2'])
    return osp.join(work_dir, 'iter_2.pth')


def test_publish_strips_training_state_and_names_the_hash(trained, vtshapes_root, tmp_path):
    original = torch.load(trained, weights_only=True)
    assert {'optimizer', 'param_schedulers', 'message_hub'} <= set(original)

    out = run_tool(['tools/publish_model.py', trained, str(tmp_path / 'vt-fpn_vtshapes_20261130.pth')])
    published = out.stdout.strip().splitlines()[-1]
    match = re.fullmatch(re.escape(str(tmp_path / 'vt-fpn_vtshapes_20261130')) + r'-([0-9a-f]{8})\.pth',
                         published)
    assert match, published
    with open(published, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert digest.startswith(match.group(1))
    # the suffix torch.hub checks a download against (load_state_dict_from_url(check_hash=True))
    assert torch.hub.HASH_REGEX.search(osp.basename(published)).group(1) == digest[:8]

    checkpoint = torch.load(published, weights_only=True)
    assert set(checkpoint) == {'meta', 'state_dict'}
    assert checkpoint['meta']['iter'] == 2 and checkpoint['meta']['dataset_meta']['classes']
    assert checkpoint['state_dict'].keys() == original['state_dict'].keys()
    assert all(torch.equal(v, original['state_dict'][k]) for k, v in checkpoint['state_dict'].items())
    assert osp.getsize(published) < osp.getsize(trained) / 2  # AdamW's two moments are gone
    assert not list(tmp_path.glob('.*.tmp'))

    # the same checkpoint gives the same bytes, hence the same name
    assert publish_checkpoint(trained, str(tmp_path / 'vt-fpn_vtshapes_20261130.pth')) == published

    # and the published file is what tools/test.py evaluates
    tested = run_tool(['tools/test.py', CONFIG, published, '--work-dir', str(tmp_path / 'test'),
                       '--cfg-options', *vtshapes_options(vtshapes_root)]).stdout
    assert 'Iter(test) [8/8]' in tested and 'mIoU:' in tested


@pytest.mark.parametrize('make_input, out_name, message', [
    (lambda d: str(d / 'missing.pth'), 'x.pth', 'checkpoint not found:'),
    (lambda d: (d / 'bad.pth').write_text('not a checkpoint') and str(d / 'bad.pth'), 'x.pth',
     'cannot read'),
    (lambda d: torch.save({'weights': torch.ones(1)}, d / 'w.pth') or str(d / 'w.pth'), 'x.pth',
     'has no state_dict'),
    (lambda d: str(d / 'any.pth'), 'x.ckpt', 'must end in .pth'),
])
def test_bad_input_is_one_error_line(make_input, out_name, message, tmp_path):
    import subprocess
    import sys
    in_file = make_input(tmp_path)
    proc = subprocess.run([sys.executable, 'tools/publish_model.py', in_file, str(tmp_path / out_name)],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith('publish_model.py: error: ') and message in error
    assert sum('error' in line for line in proc.stderr.splitlines()) == 1
    assert not list(tmp_path.glob('x*'))  # nothing written

"""What the tools do around the work itself: the OpenMP wait policy they set, the line they print
for pretrained weights that cannot be downloaded, the exit status of distributed ranks, and the
``--show-dir`` interval.

The subprocesses run with a ``sitecustomize`` (on ``PYTHONPATH``) that can make every network
connection fail (``VTSEG_TEST_NO_NETWORK=1``) and record ``OMP_WAIT_POLICY`` at the moment torch
is first imported (``VTSEG_TEST_OMP_RECORD=FILE``): no real network is ever used.
"""
import argparse
import os
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

from vtseg_testing import REPO, as_cfg_options, make_lip

TOOLS = osp.join(REPO, 'tools')
LIP_R50 = osp.join(REPO, 'configs', 'lip', 'fpn_r50_8xb12-50k_lip-473x473.py')
VTSHAPES = osp.join(REPO, 'configs', 'vtshapes', 'vt-fpn_r18_1xb8-1.5k_vtshapes-96x96.py')

SITECUSTOMIZE = '''
import os
import socket
import sys

if os.environ.get('VTSEG_TEST_NO_NETWORK'):
    def _no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, 'Name or service not known (test: no network)')

    socket.getaddrinfo = _no_network
    socket.create_connection = _no_network
    socket.socket.connect = _no_network

_record = os.environ.get('VTSEG_TEST_OMP_RECORD')
if _record:
    def _on_import(event, args):
        if event == 'import' and args[0] == 'torch' and not os.path.exists(_record):
            with open(_record, 'w') as f:
                f.write(os.environ.get('OMP_WAIT_POLICY', '<unset>'))

    sys.addaudithook(_on_import)
'''


@pytest.fixture(scope='module')
def hooks_dir(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp('sitecustomize')
    (folder / 'sitecustomize.py').write_text(SITECUSTOMIZE)
    return str(folder)


def run_python(args: list, hooks_dir: str, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != 'OMP_WAIT_POLICY'}
    environ.update(env, PYTHONPATH=os.pathsep.join([hooks_dir, REPO, environ.get('PYTHONPATH', '')]))
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=environ)


@pytest.mark.parametrize('tool, argv, user_policy', [
    ('train.py', ['missing.py'], None),
    ('test.py', ['missing.py', 'x.pth'], None),
    ('infer.py', ['missing.jpg', 'missing.py', 'x.pth', '--out-dir', 'unused'], None),
    ('infer.py', ['missing.jpg', 'missing.py', 'x.pth', '--out-dir', 'unused'], 'ACTIVE'),
])
def test_openmp_workers_sleep_unless_the_user_chose(tool, argv, user_policy, hooks_dir, tmp_path):
    """OMP_WAIT_POLICY is PASSIVE when torch loads OpenMP; a value the user set is kept."""
    record = tmp_path / 'omp.txt'
    env = {'VTSEG_TEST_OMP_RECORD': str(record)}
    if user_policy:
        env['OMP_WAIT_POLICY'] = user_policy
    proc = run_python([osp.join(TOOLS, tool), *argv], hooks_dir, env)
    assert proc.returncode == 2, proc.stderr[-3000:]  # the bad input is still reported
    assert record.read_text() == (user_policy or 'PASSIVE')


def test_offline_pretrained_weights_are_one_line(hooks_dir, tmp_path):
    """A real LIP R-50 config, networking made to fail and an empty weights cache: one line
    naming the weights, the cache folder, how to fetch them and the override; no traceback."""
    data_root = make_lip(str(tmp_path / 'data'))
    options = as_cfg_options({
        'data_root': data_root, 'train_dataloader.dataset.data_root': data_root,
        'val_dataloader.dataset.data_root': data_root, 'test_dataloader.dataset.data_root': data_root,
        'train_dataloader.num_workers': 0, 'train_dataloader.persistent_workers': False,
        'val_dataloader.num_workers': 0, 'val_dataloader.persistent_workers': False,
        'train_dataloader.batch_size': 1})
    torch_home = tmp_path / 'torch'
    proc = run_python([osp.join(TOOLS, 'train.py'), LIP_R50, '--work-dir', str(tmp_path / 'work'),
                       '--cfg-options', *options], hooks_dir,
                      {'VTSEG_TEST_NO_NETWORK': '1', 'TORCH_HOME': str(torch_home)})
    assert proc.returncode == 2, proc.stderr[-4000:]
    err = proc.stderr.strip().splitlines()
    assert 'Traceback' not in proc.stderr
    line = err[-1]
    cache = osp.join(str(torch_home), 'hub', 'checkpoints')
    assert line.startswith('train.py: error: cannot download the pretrained weights '
                           'open-mmlab://resnet50_v1c (https://download.openmmlab.com/'), line
    assert f'into {cache};' in line and 'Name or service not known' in line
    assert "torch.hub.load_state_dict_from_url('https://" in line
    assert '~/.cache/torch/hub/checkpoints/resnet50_v1c-' in line
    assert line.endswith('or train from scratch with --cfg-options model.pretrained=None')
    assert not os.listdir(cache) if osp.isdir(cache) else True  # nothing half-downloaded left


def test_a_failing_distributed_run_exits_non_zero(tmp_path):
    """dist_train.sh on data that does not exist: a real failure, exit status not 0."""
    with __import__('socket').socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    missing = str(tmp_path / 'no-data')
    env = {**os.environ, 'PORT': str(port), 'CUDA_VISIBLE_DEVICES': ''}
    proc = subprocess.run(['bash', osp.join(TOOLS, 'dist_train.sh'), VTSHAPES, '2', '--work-dir',
                           str(tmp_path / 'work'), '--cfg-options',
                           *as_cfg_options({'train_dataloader.dataset.data_root': missing,
                                            'val_dataloader.dataset.data_root': missing,
                                            'test_dataloader.dataset.data_root': missing})],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0
    assert 'no-data' in proc.stdout + proc.stderr


def load_test_tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location('vtseg_tools_test_runtime', osp.join(TOOLS, 'test.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('cfg_options, interval', [(None, 1),
                                                   ({'default_hooks.visualization.interval': 5}, 5)])
def test_show_dir_draws_every_image(cfg_options, interval, tmp_path):
    """--show-dir on the LIP config: mmseg's SegVisualizationHook is built with interval 1
    (draw every image), unless --cfg-options sets the interval."""
    from mmseg.registry import HOOKS
    from mmseg.visualization import SegLocalVisualizer
    from vtseg.mm.cli import merge_cfg_options
    SegLocalVisualizer.get_instance(f'show_dir_{interval}')  # the hook draws with the current one
    cfg = Config.fromfile(LIP_R50)
    merge_cfg_options(cfg, cfg_options)
    args = argparse.Namespace(show=False, show_dir=str(tmp_path / 'show'), wait_time=2,
                              cfg_options=cfg_options)
    cfg = load_test_tool().trigger_visualization_hook(cfg, args)
    hook = HOOKS.build(cfg.default_hooks.visualization)
    assert hook.interval == interval and hook.draw
    assert cfg.visualizer.save_dir == str(tmp_path / 'show')

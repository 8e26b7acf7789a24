"""tools/slurm_train.sh and tools/slurm_test.sh: what they hand to srun, with a fake srun on PATH.

The fake srun records its arguments and PYTHONPATH; the test then parses the recorded
command line with tools/train.py's / test.py's own argument parser.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

from vtseg_testing import REPO

TOOLS = osp.join(REPO, 'tools')
CONFIG = 'configs/lip/vt-fpn_r50_8xb12-50k_lip-473x473.py'
FAKE_SRUN = f'''#!{sys.executable}
import json, os, sys
with open(os.environ['FAKE_SRUN_LOG'], 'w') as f:
    json.dump(dict(argv=sys.argv[1:], pythonpath=os.environ.get('PYTHONPATH', '')), f)
'''


@pytest.fixture
def fake_srun(tmp_path):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    srun = bin_dir / 'srun'
    srun.write_text(FAKE_SRUN)
    srun.chmod(0o755)
    log = tmp_path / 'srun.json'

    def run(script: str, args: list, **env: str) -> dict:
        environ = {k: v for k, v in os.environ.items()
                   if k not in ('GPUS', 'GPUS_PER_NODE', 'CPUS_PER_TASK', 'SRUN_ARGS')}
        environ.update(env, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', FAKE_SRUN_LOG=str(log))
        proc = subprocess.run(['bash', osp.join(TOOLS, script), *args], cwd=str(tmp_path),
                              capture_output=True, text=True, env=environ, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return json.loads(log.read_text())

    return run


def split(argv: list) -> tuple:
    """(srun options, the python command) of a recorded srun call."""
    at = argv.index('python')
    return argv[:at], argv[at:]


def test_train_defaults(fake_srun):
    recorded = fake_srun('slurm_train.sh', ['gpu_part', 'vt-fpn-lip', CONFIG])
    options, command = split(recorded['argv'])
    assert options == ['-p', 'gpu_part', '--job-name=vt-fpn-lip', '--gres=gpu:4', '--ntasks=4',
                       '--ntasks-per-node=4', '--cpus-per-task=5', '--kill-on-bad-exit=1']
    assert command == ['python', '-u', osp.join(TOOLS, 'train.py'), CONFIG, '--launcher=slurm']
    # the repository is importable in every task, wherever the job starts
    assert recorded['pythonpath'].split(os.pathsep)[0] == osp.join(TOOLS, '..')


def test_train_environment_and_extra_arguments(fake_srun, monkeypatch):
    recorded = fake_srun('slurm_train.sh',
                         ['p1', 'job', CONFIG, '--work-dir', 'work dirs/a b', '--cfg-options',
                          'train_cfg.max_iters=10', 'model.pretrained=None'],
                         GPUS='16', GPUS_PER_NODE='8', CPUS_PER_TASK='3',
                         SRUN_ARGS='--quotatype=auto --time=1:00:00')
    options, command = split(recorded['argv'])
    assert options == ['-p', 'p1', '--job-name=job', '--gres=gpu:8', '--ntasks=16', '--ntasks-per-node=8',
                       '--cpus-per-task=3', '--kill-on-bad-exit=1', '--quotatype=auto', '--time=1:00:00']
    # what tools/train.py makes of the command srun runs in each task
    from test_tools.test_train_test import load_tool
    monkeypatch.setattr(sys, 'argv', command[2:])
    args = load_tool('train').parse_args()
    assert (args.config, args.launcher, args.work_dir) == (CONFIG, 'slurm', 'work dirs/a b')
    assert args.cfg_options == {'train_cfg.max_iters': 10, 'model.pretrained': None}


def test_test_script(fake_srun, monkeypatch):
    recorded = fake_srun('slurm_test.sh', ['p1', 'eval', CONFIG, 'work_dirs/x/iter_50000.pth', '--tta',
                                           '--out', 'preds'], GPUS='8', GPUS_PER_NODE='8')
    options, command = split(recorded['argv'])
    assert options == ['-p', 'p1', '--job-name=eval', '--gres=gpu:8', '--ntasks=8', '--ntasks-per-node=8',
                       '--cpus-per-task=5', '--kill-on-bad-exit=1']
    assert command[:3] == ['python', '-u', osp.join(TOOLS, 'test.py')]
    from test_tools.test_train_test import load_tool
    monkeypatch.setattr(sys, 'argv', command[2:])
    args = load_tool('test').parse_args()
    assert (args.config, args.checkpoint, args.launcher) == (CONFIG, 'work_dirs/x/iter_50000.pth', 'slurm')
    assert args.tta and args.out == 'preds'


@pytest.mark.parametrize('script, args', [('slurm_train.sh', ['p', 'job']),
                                          ('slurm_test.sh', ['p', 'job', CONFIG])])
def test_missing_arguments_are_one_error_line(script, args, tmp_path):
    proc = subprocess.run(['bash', osp.join(TOOLS, script), *args], capture_output=True, text=True,
                          env={**os.environ, 'PATH': f'{tmp_path}{os.pathsep}{os.environ["PATH"]}'})
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f'{script}: error: usage: bash tools/{script} PARTITION JOB_NAME')
    assert len(proc.stderr.strip().splitlines()) == 1

"""tools/train.py, tools/test.py and tools/dist_*.sh on real runs; mmseg's own tools on vtseg configs.

Every run trains VT-FPN R-18 (SyncBN in its config) on the tiny VT-Shapes fixture
for at most 4 iterations of batch 2 on the CPU.
"""
import importlib.util
import os
import os.path as osp
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from vtseg_testing import REPO, run_tool, save_pickled_code_checkpoint, vtshapes_options

import vtseg  # noqa: F401  (the checkpoints below load under weights_only=True through it)

CONFIG = osp.join(REPO, 'configs', 'vtshapes', 'vt-fpn_r18_1xb8-1.5k_vtshapes-96x96.py')
TOOLS = osp.join(REPO, 'tools')
# 4 iterations of batch 2, a checkpoint every 2, one validation at the end.
SHORT = ['train_dataloader.batch_size=2', 'train_cfg.max_iters=4', 'train_cfg.val_interval=4',
         'default_hooks.checkpoint.interval=2', 'default_hooks.checkpoint.max_keep_ckpts=3']
# A training "crash": the process kills itself (SIGKILL, no clean-up) after iteration 3,
# that is after iter_2.pth was saved and before iter_4.pth would be.
CRASH_HOOK = '''
import os, signal
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class CrashAfterIterHook(Hook):
    def __init__(self, iteration):
        self.iteration = iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.iteration:
            os.kill(os.getpid(), signal.SIGKILL)
'''


def load_tool(name: str):
    """Import ``tools/<name>.py`` as a module, to call its ``main`` in this process."""
    spec = importlib.util.spec_from_file_location(f'vtseg_tools_{name}', osp.join(TOOLS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.parametrize('tool, argv, message', [
    ('train', ['missing.py'], 'config file not found: missing.py'),
    ('test', ['missing.py', 'x.pth'], 'config missing.py not found'),
    ('test', [CONFIG, 'missing.pth'], 'checkpoint missing.pth not found'),
    ('test', [CONFIG, 'https://example.com/vt-fpn.pth', '--partial-load'],
     'checkpoint https://example.com/vt-fpn.pth is a URL: vtseg reads checkpoints from local files only'),
    ('train', ['broken.py'], 'cannot load config broken.py: SyntaxError'),
    ('test', ['broken.py', CONFIG], 'cannot load config broken.py: SyntaxError'),
    ('test', [CONFIG, CONFIG, '--tta'], '--tta needs tta_model and tta_pipeline'),
    pytest.param('train', [CONFIG, '--amp'], '--amp needs a CUDA (or NPU/MLU) device',
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU runs --amp')),
])
def test_bad_input_is_one_error_line(tool, argv, message, monkeypatch, capsys, tmp_path):
    main = load_tool(tool).main
    (tmp_path / 'broken.py').write_text('model = dict(\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', [f'{tool}.py', *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    # (library warnings, e.g. pkg_resources' deprecation notice, may come before it)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f'{tool}.py: error: {message}')
    assert sum('error' in line for line in err) == 1 and not any('Traceback' in line for line in err)


def test_arguments_match_mmseg(mmseg_tools, monkeypatch):
    """Every option of mmseg 1.2.2's train.py / test.py is accepted with the same destination."""
    for tool, argv in (('train', ['c.py', '--work-dir', 'w', '--resume', '--amp', '--cfg-options',
                                  'a=1', '--launcher', 'pytorch', '--local-rank', '1']),
                       ('test', ['c.py', 'k.pth', '--work-dir', 'w', '--out', 'o', '--show',
                                 '--show-dir', 's', '--wait-time', '1', '--cfg-options', 'a=1',
                                 '--launcher', 'pytorch', '--tta', '--local_rank', '1'])):
        monkeypatch.setenv('LOCAL_RANK', '0')
        monkeypatch.setattr(sys, 'argv', [tool, *argv])
        ours = vars(load_tool(tool).parse_args())
        spec = importlib.util.spec_from_file_location(f'mmseg_{tool}', osp.join(mmseg_tools, f'{tool}.py'))
        theirs_module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(theirs_module)
        theirs = vars(theirs_module.parse_args())
        # vtseg's additions only, off by default (mmseg's options mean the same): --verbose,
        # --log-level and test.py's --partial-load
        assert {key: ours[key] for key in theirs} == theirs
        assert {key: ours[key] for key in ours.keys() - theirs.keys()} == (
            {'verbose': False, 'log_level': None, **({'partial_load': False} if tool == 'test' else {})})


# The dependencies' known harmless notices (vtseg.utils.dependency_warnings) each tool run meets:
# warnings on stderr, mmengine's log lines on stdout.
KNOWN_TRAIN_NOTICES = ('pkg_resources is deprecated', '``build_loss`` would be deprecated',
                       'Default ``avg_non_ignore`` is False', 'The draw is False',
                       'The prefix is not set in metric class IoUMetric', '"FileClient" will be deprecated')
KNOWN_TEST_NOTICES = ('pkg_resources is deprecated', '``build_loss`` would be deprecated', 'The draw is False',
                      'The prefix is not set in metric class IoUMetric')


def test_tools_print_what_matters_unless_asked_for_more(vtshapes_root, tmp_path):
    """By default train.py and test.py print mmengine's INFO lines and none of the known harmless
    notices; --verbose shows every one of them and mmengine's DEBUG lines; --log-level WARNING
    hides the INFO lines (config, iterations, metrics), also beside --verbose."""
    options = ['--cfg-options', *vtshapes_options(vtshapes_root), 'train_dataloader.batch_size=2',
               'train_cfg.max_iters=1', 'train_cfg.val_interval=100']

    def run(tool: str, name: str, *args: str) -> str:
        extra = [osp.join(tmp_path, 'train', 'iter_1.pth')] if tool == 'test' else []
        proc = run_tool([osp.join(TOOLS, f'{tool}.py'), CONFIG, *extra, '--work-dir', str(tmp_path / name),
                         *args, *options])
        return proc.stdout + proc.stderr

    quiet = run('train', 'train')
    assert 'Iter(train) [1/1]' in quiet and ' - INFO - Config:' in quiet
    assert [n for n in KNOWN_TRAIN_NOTICES if n in quiet] == []
    assert 'Warning:' not in quiet and ' - WARNING - ' not in quiet and ' - DEBUG - ' not in quiet

    verbose = run('train', 'train_verbose', '--verbose')
    assert [n for n in KNOWN_TRAIN_NOTICES if n not in verbose] == []
    assert ' - DEBUG - ' in verbose and 'Iter(train) [1/1]' in verbose

    warning = run('train', 'train_warning', '--log-level', 'WARNING')
    assert ' - INFO - ' not in warning and 'Iter(train)' not in warning
    assert osp.isfile(tmp_path / 'train_warning' / 'iter_1.pth')  # trained all the same

    quiet = run('test', 'test')
    assert 'Iter(test) [8/8]' in quiet and 'mIoU:' in quiet
    assert [n for n in KNOWN_TEST_NOTICES if n in quiet] == []
    assert 'Warning:' not in quiet and ' - WARNING - ' not in quiet

    verbose_warning = run('test', 'test_verbose', '--verbose', '--log-level', 'WARNING')
    assert [n for n in KNOWN_TEST_NOTICES if n not in verbose_warning] == []
    assert ' - INFO - ' not in verbose_warning and ' - DEBUG - ' not in verbose_warning
    assert 'mIoU' not in verbose_warning


def test_two_processes_train_and_test_on_cpu(vtshapes_root, tmp_path):
    """dist_train.sh / dist_test.sh with 2 processes: gloo instead of nccl, SyncBN run as BN."""
    work_dir = str(tmp_path / 'work')
    # CPU even where GPUs exist: this is the run that has to work without CUDA.
    env = {**os.environ, 'PORT': str(free_port()), 'CUDA_VISIBLE_DEVICES': ''}
    options = ['--cfg-options', *vtshapes_options(vtshapes_root), *SHORT]
    train = subprocess.run(['bash', osp.join(TOOLS, 'dist_train.sh'), CONFIG, '2', '--work-dir',
                            work_dir, *options], capture_output=True, text=True, env=env, timeout=600)
    out = train.stdout + train.stderr
    assert train.returncode == 0, out[-6000:]
    assert 'Distributed training: True' in out and 'GPU number: 2' in out  # world size 2
    assert 'using the gloo backend instead of nccl' in out
    assert 'SyncBN layers run as BN' in out
    assert 'Iter(train) [4/4]' in out and 'mIoU:' in out
    checkpoint = torch.load(osp.join(work_dir, 'iter_4.pth'), weights_only=True)
    assert checkpoint['meta']['iter'] == 4

    test = subprocess.run(['bash', osp.join(TOOLS, 'dist_test.sh'), CONFIG,
                           osp.join(work_dir, 'iter_4.pth'), '2', '--work-dir', work_dir, *options],
                          capture_output=True, text=True, env=env, timeout=600)
    out = test.stdout + test.stderr
    assert test.returncode == 0, out[-6000:]
    # The 8 val images are split over the 2 processes and gathered for one result.
    assert 'Iter(test) [4/4]' in out and 'mIoU:' in out


@pytest.mark.parametrize('tools', ['vtseg', 'mmseg'])
def test_resume_after_crash_then_test(tools, vtshapes_root, mmseg_tools, tmp_path):
    """Crash at iteration 3, ``--resume`` from iter_2.pth to iter_4.pth, then test.py evaluates it.

    With ``tools='mmseg'`` these are mmseg's own, unchanged scripts: the config's
    ``custom_imports`` loads vtseg before any checkpoint is read.
    """
    tools_dir = TOOLS if tools == 'vtseg' else mmseg_tools
    work_dir = str(tmp_path / 'work')
    options = ['--cfg-options', *vtshapes_options(vtshapes_root), *SHORT]
    (tmp_path / 'crash_hook.py').write_text(CRASH_HOOK)
    crash_config = tmp_path / 'crash_config.py'
    crash_config.write_text(f"_base_ = [{CONFIG!r}]\n"
                            "custom_imports = dict(imports=['vtseg', 'crash_hook'], "
                            "allow_failed_imports=False)\n"
                            "custom_hooks = [dict(type='CrashAfterIterHook', iteration=3)]\n")
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(tmp_path), os.environ.get('PYTHONPATH', '')])}
    crashed = subprocess.run([sys.executable, osp.join(tools_dir, 'train.py'), str(crash_config),
                              '--work-dir', work_dir, *options], capture_output=True, text=True,
                             env=env, timeout=600)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-4000:]
    assert sorted(f for f in os.listdir(work_dir) if f.endswith('.pth')) == ['iter_2.pth']

    resumed = run_tool([osp.join(tools_dir, 'train.py'), CONFIG, '--work-dir', work_dir, '--resume',
                        *options]).stdout
    assert 'resumed epoch: 0, iter: 2' in resumed
    assert 'Iter(train) [3/4]' in resumed and 'Iter(train) [1/4]' not in resumed
    # Torch's default loader (weights_only=True) reads the full training state.
    checkpoint = torch.load(osp.join(work_dir, 'iter_4.pth'))
    assert checkpoint['meta']['iter'] == 4
    # AdamW counted 2 steps before the crash and 2 after: its state was restored, not restarted.
    steps = {float(state['step']) for state in checkpoint['optimizer']['state'].values()}
    assert steps == {4.0}
    assert checkpoint['param_schedulers'][0]['last_step'] == 4

    show_dir = tmp_path / 'show'
    args = [osp.join(tools_dir, 'test.py'), CONFIG, osp.join(work_dir, 'iter_4.pth'), '--work-dir',
            work_dir, '--show-dir', str(show_dir), *options,
            'default_hooks.visualization.interval=1']  # mmseg draws every 50th image by default
    if tools == 'vtseg':
        args += ['--out', str(tmp_path / 'pred')]
    tested = run_tool(args).stdout
    assert 'Iter(test) [8/8]' in tested and 'mIoU:' in tested
    assert len(list(show_dir.glob('vis_data/vis_image/*.png'))) == 8
    if tools == 'vtseg':
        assert len(list((tmp_path / 'pred').glob('*.png'))) == 8


# --- hostile checkpoints and work dirs -----------------------------------------------------------

FPN_CONFIG = osp.join(REPO, 'configs', 'vtshapes', 'fpn_r18_1xb8-1.5k_vtshapes-96x96.py')


def _save_model(config: str, path: str) -> str:
    """A freshly built model of ``config`` saved as a checkpoint."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    torch.save({'state_dict': MODELS.build(Config.fromfile(config).model).state_dict()}, path)
    return path


@pytest.mark.parametrize('case', ['another model', 'pickled code', 'pickled code, --partial-load',
                                  'cfg-options model=3'])
def test_test_refuses_what_does_not_fit_in_one_line(case, tmp_path, monkeypatch, capsys):
    """A Semantic FPN checkpoint for the VT-FPN config: mmseg's tool would report an mIoU."""
    checkpoint, extra = str(tmp_path / 'c.pth'), []
    if case == 'another model':
        _save_model(FPN_CONFIG, checkpoint)
        message = (r'checkpoint \S*c\.pth does not fit config \S*vt-fpn_r18\S*: \d+ model weights are '
                   r'not in it .*; pass the config it was trained with; or pass --partial-load')
    elif case.startswith('pickled code'):  # --partial-load too: mmengine's loader must not get it
        save_pickled_code_checkpoint(checkpoint, tmp_path / 'PWNED')
        message = r'cannot read checkpoint \S*c\.pth: it holds a pickled reference to (posix|os)\.system'
        extra = ['--partial-load'] if case.endswith('--partial-load') else []
    else:
        _save_model(CONFIG, checkpoint)
        extra = ['--cfg-options', 'model=3']
        message = r'--cfg-options model=3 would replace the config section model'
    monkeypatch.setattr(sys, 'argv', ['test.py', CONFIG, checkpoint, '--work-dir',
                                      str(tmp_path / 'work'), *extra])
    with pytest.raises(SystemExit) as exit_info:
        load_tool('test').main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert re.search(message, err[-1]), err[-1]
    assert err[-1].startswith('test.py: error: ') and sum('error' in line for line in err) == 1
    assert 'weights_only=False' not in err[-1] and not (tmp_path / 'PWNED').exists()
    assert not (tmp_path / 'work').exists()  # stopped before the runner made its work dir


def test_test_partial_load_on_request(vtshapes_root, tmp_path):
    checkpoint = _save_model(FPN_CONFIG, str(tmp_path / 'fpn.pth'))
    out = run_tool([osp.join(TOOLS, 'test.py'), CONFIG, checkpoint, '--partial-load', '--work-dir',
                    str(tmp_path / 'work'), '--cfg-options', *vtshapes_options(vtshapes_root)])
    text = out.stdout + out.stderr
    assert 'mIoU' in text and 'missing keys in source state_dict' in text


def test_a_second_training_in_a_work_dir_is_refused(vtshapes_root, tmp_path):
    """A real training holds the work dir: a second one exits 2 with one line naming it; once
    the first is killed (SIGKILL, no clean-up), the lock is free again."""
    work_dir = str(tmp_path / 'work')
    options = ['--cfg-options', *vtshapes_options(vtshapes_root), *SHORT, 'train_cfg.max_iters=100000',
               'train_cfg.val_interval=100000']
    first = subprocess.Popen([sys.executable, osp.join(TOOLS, 'train.py'), CONFIG, '--work-dir',
                              work_dir, *options], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        lock_file = osp.join(work_dir, '.train.lock')
        for _ in range(600):  # the lock is taken before the model is built
            if osp.isfile(lock_file) and f'pid {first.pid} ' in open(lock_file).read():
                break
            assert first.poll() is None, first.stderr.read()[-3000:]
            time.sleep(0.2)
        second = subprocess.run([sys.executable, osp.join(TOOLS, 'train.py'), CONFIG, '--work-dir',
                                 work_dir, *options], capture_output=True, text=True, timeout=300)
        assert second.returncode == 2
        line = second.stderr.strip().splitlines()[-1]
        assert line.startswith(f'train.py: error: work dir {work_dir} is in use by another training '
                               f'(pid {first.pid} on ')
        assert line.endswith('wait for it to end or pass another --work-dir')
    finally:
        first.kill()  # SIGKILL: no clean-up runs
        first.wait()
    from vtseg.mm.runtime import WorkDirLock
    with WorkDirLock(work_dir):  # not stale: the kernel released it with the process
        pass

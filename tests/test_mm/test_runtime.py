"""prepare_cpu_distributed: what a distributed run on a machine without CUDA needs changed;
leave_process_group: the tools' clean exit from it; WorkDirLock: one training per work dir."""
import copy
import os
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from vtseg.mm.runtime import (WorkDirBusyError, WorkDirLock, build_runner, launcher_rank, leave_process_group,
                              prepare_cpu_distributed)
from vtseg.utils.dependency_warnings import filter_known_dependency_logs

GPU_CFG = dict(
    env_cfg=dict(cudnn_benchmark=True, dist_cfg=dict(backend='nccl', timeout=60)),
    model=dict(
        type='EncoderDecoder',
        backbone=dict(type='ResNet', norm_cfg=dict(type='SyncBN', requires_grad=True)),
        decode_head=dict(type='FPNHead', norm_cfg=dict(type='MMSyncBN'),
                         loss_decode=[dict(type='CrossEntropyLoss')])),
    sync_bn='torch')


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)


def test_cpu_distributed_gets_gloo_bn_and_no_device_ids(no_cuda):
    cfg = Config(copy.deepcopy(GPU_CFG))
    # slurm: the config is adapted, no process group is started in this test process.
    changes = prepare_cpu_distributed(cfg, 'slurm')
    assert len(changes) == 2
    assert cfg.env_cfg.dist_cfg == dict(backend='gloo', timeout=60)
    assert cfg.model.backbone.norm_cfg == dict(type='BN', requires_grad=True)
    assert cfg.model.decode_head.norm_cfg.type == 'BN'
    assert 'sync_bn' not in cfg
    assert cfg.model_wrapper_cfg.type == 'MMDistributedDataParallel'
    assert cfg.model_wrapper_cfg.device_ids is None
    assert cfg.model.decode_head.loss_decode[0] == dict(type='CrossEntropyLoss')


def test_gloo_config_without_sync_bn_is_not_reported(no_cuda):
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='gloo')),
                      model=dict(backbone=dict(norm_cfg=dict(type='BN')))))
    assert prepare_cpu_distributed(cfg, 'mpi') == []
    assert cfg.model_wrapper_cfg.device_ids is None


def test_single_process_or_cuda_is_left_alone(no_cuda, monkeypatch):
    cfg = Config(copy.deepcopy(GPU_CFG))
    assert prepare_cpu_distributed(cfg, 'none') == []
    assert cfg.to_dict() == Config(copy.deepcopy(GPU_CFG)).to_dict()
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert prepare_cpu_distributed(cfg, 'pytorch') == []
    assert cfg.to_dict() == Config(copy.deepcopy(GPU_CFG)).to_dict()


def test_custom_model_wrapper_is_kept(no_cuda):
    wrapper = dict(type='MMFullyShardedDataParallel', cpu_offload=True)
    cfg = Config(dict(model=dict(), model_wrapper_cfg=copy.deepcopy(wrapper)))
    prepare_cpu_distributed(cfg, 'slurm')
    assert cfg.model_wrapper_cfg == wrapper


def test_build_runner_builds_the_runner_type_a_config_names():
    """As mmseg's tools: ``runner_type`` picks a registered runner (``Runner`` without one, which the
    train/test tool tests run); its logger loses the known harmless lines as any other."""
    import logging

    from mmengine.logging import MMLogger
    from mmseg.registry import RUNNERS

    class ConfigNamedRunner:
        built_from = []

        def __init__(self) -> None:
            self.logger = MMLogger.get_instance('vtseg-test-config-named-runner')

        @classmethod
        def from_cfg(cls, cfg: Config) -> 'ConfigNamedRunner':
            cls.built_from.append(cfg)
            return cls()

    RUNNERS.register_module(name='VTSegTestConfigNamedRunner', module=ConfigNamedRunner, force=True)
    runner = build_runner(Config(dict(runner_type='VTSegTestConfigNamedRunner', work_dir='w')))
    assert isinstance(runner, ConfigNamedRunner)
    assert [cfg.work_dir for cfg in ConfigNamedRunner.built_from] == ['w']
    filtered = filter_known_dependency_logs(logging.getLogger('vtseg-test-control'))
    assert bool(runner.logger.filters) == filtered


def test_leave_process_group(tmp_path):
    import torch.distributed as dist
    leave_process_group()  # none up: nothing to do
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    assert dist.is_initialized()
    leave_process_group()
    assert not dist.is_initialized()


LOCK_HOLDER = '''
import sys, time
from vtseg.mm.runtime import WorkDirLock
WorkDirLock(sys.argv[1]).acquire()
print('locked', flush=True)
time.sleep(600)
'''


def test_work_dir_lock_is_exclusive_and_released_with_its_process(tmp_path):
    holder = subprocess.Popen([sys.executable, '-c', LOCK_HOLDER, str(tmp_path / 'w')],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        with pytest.raises(WorkDirBusyError, match=f'in use by another training .pid {holder.pid} on'):
            WorkDirLock(str(tmp_path / 'w')).acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = WorkDirLock(str(tmp_path / 'w')).acquire()
    with pytest.raises(WorkDirBusyError):  # flock is per open file: a second open in one process too
        WorkDirLock(str(tmp_path / 'w')).acquire()
    lock.release()
    WorkDirLock(str(tmp_path / 'w')).acquire().release()
    assert os.path.isfile(tmp_path / 'w' / '.train.lock')  # the file stays, unlocked


def test_launcher_rank_reads_each_launchers_variable(monkeypatch):
    for variable in ('RANK', 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK'):
        monkeypatch.delenv(variable, raising=False)
    assert launcher_rank('none') == 0 and launcher_rank('pytorch') == 0
    monkeypatch.setenv('RANK', '3')
    monkeypatch.setenv('SLURM_PROCID', '5')
    assert (launcher_rank('pytorch'), launcher_rank('slurm'), launcher_rank('mpi')) == (3, 5, 0)
    assert launcher_rank('none') == 0  # a single process takes the lock whatever the environment


FINISH_SCRIPT = '''
import sys
import torch
import torch.distributed as dist
from vtseg.mm.runtime import finish_distributed_process, leave_process_group

def main():
    dist.init_process_group('gloo', init_method='file://' + sys.argv[1], rank=0, world_size=1)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))
    model(torch.ones(3, 4)).sum().backward()  # the reducer and gloo work now hold the group
    if sys.argv[2] == 'fail':
        raise RuntimeError('a real failure')
    leave_process_group()
    print('done', end='')  # unflushed: finish_distributed_process must flush it

main()
finish_distributed_process(int(sys.argv[3]))
print(' after', flush=True)  # never reached: the process ended with the status given
'''


@pytest.mark.parametrize('outcome,status', [('ok', 0), ('ok', 1), ('ok', 130), ('fail', 0)])
def test_finish_distributed_process(outcome, status, tmp_path):
    """A finished rank exits with the status it is given (0 by default: done; tools/infer.py's
    1 for failed images, 130 when interrupted) with its output flushed and nothing after it
    runs; an error before it is still a traceback and exit status 1."""
    proc = subprocess.run([sys.executable, '-c', FINISH_SCRIPT, str(tmp_path / 'store'), outcome, str(status)],
                          capture_output=True, text=True, timeout=120)
    if outcome == 'ok':
        assert (proc.returncode, proc.stdout) == (status, 'done'), proc.stderr[-2000:]
    else:
        assert proc.returncode == 1 and 'RuntimeError: a real failure' in proc.stderr
        assert proc.stdout == ''


def test_finish_is_a_no_op_without_a_group():
    import vtseg.mm.runtime as runtime
    flag = runtime._left_process_group  # test_leave_process_group may have set it in this process
    runtime._left_process_group = False
    try:
        runtime.finish_distributed_process()  # returns: this pytest process goes on
        runtime.finish_distributed_process(1)
    finally:
        runtime._left_process_group = flag

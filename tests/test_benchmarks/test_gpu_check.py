"""benchmarks/gpu/check.py and gpu_check.py: the GPU check, proved on the CPU.

The GPU-only branches (CUDA synchronisation, ``max_memory_allocated``, the AMP dtype, SyncBN)
are small functions tested here with torch.cuda mocked; the whole check runs end to end with
``--device cpu --tiny`` through mmengine's Runner with the real configs.
"""
import json
import math
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from vtseg_testing import REPO

sys.path.insert(0, osp.join(REPO, 'benchmarks', 'gpu'))
import gpu_check  # noqa: E402

CUDA = torch.device('cuda', 0)
CPU = torch.device('cpu')
COCO_CONFIG = gpu_check.COCO_CONFIGS['vt-fpn_r50'][0]


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda's synchronisation and memory statistics, recorded instead of run."""
    calls = []
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda device=None: calls.append(('sync', device)))
    monkeypatch.setattr(torch.cuda, 'reset_peak_memory_stats', lambda device=None: calls.append(('reset', device)))
    monkeypatch.setattr(torch.cuda, 'max_memory_allocated', lambda device=None: 3 * 2 ** 20)
    return calls


# --- GPU-only branches ----------------------------------------------------------------------

def test_synchronize_and_peak_memory_act_on_cuda_only(fake_cuda):
    gpu_check.synchronize(CPU)
    gpu_check.reset_peak_memory(CPU)
    assert fake_cuda == [] and gpu_check.peak_memory_mib(CPU) is None
    gpu_check.synchronize(CUDA)
    gpu_check.reset_peak_memory(CUDA)
    assert fake_cuda == [('sync', CUDA), ('reset', CUDA)]
    assert gpu_check.peak_memory_mib(CUDA) == 3.0


def test_amp_dtype_choice(monkeypatch):
    assert gpu_check.precision_problem('fp32', CPU) is None
    assert 'needs CUDA' in gpu_check.precision_problem('bf16', CPU)
    assert 'needs CUDA' in gpu_check.precision_problem('fp16', CPU)
    assert gpu_check.preferred_amp_precision(CPU) is None
    with pytest.raises(ValueError, match='precision must be one of'):
        gpu_check.precision_problem('int8', CPU)
    # a GPU with bfloat16 (compute capability >= 8.0: A100, H100, H200)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: True)
    assert gpu_check.precision_problem('bf16', CUDA) is None and gpu_check.precision_problem('fp16', CUDA) is None
    assert gpu_check.preferred_amp_precision(CUDA) == 'bf16'
    # an older GPU (V100): fp16 only
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: False)
    assert 'no bfloat16' in gpu_check.precision_problem('bf16', CUDA)
    assert gpu_check.precision_problem('fp16', CUDA) is None
    assert gpu_check.preferred_amp_precision(CUDA) == 'fp16'
    assert 'no bfloat16' in gpu_check.inference_precision_problem('bf16', CUDA)
    assert gpu_check.inference_precision_problem('bf16', CPU) is None  # CPU autocast has bf16


def test_amp_config_builds_mmengines_amp_wrapper_with_the_dtype(monkeypatch, tmp_path):
    """The AMP settings are those of tools/train.py --amp plus the dtype, and mmengine's
    AmpOptimWrapper takes them (its CUDA check mocked: it refuses the CPU)."""
    import mmengine.optim.optimizer.amp_optimizer_wrapper as amp_module
    from mmengine.optim import build_optim_wrapper
    assert gpu_check.amp_cfg_changes('fp32') == {}
    cfg = gpu_check.build_train_cfg(COCO_CONFIG, {}, 'bf16', str(tmp_path), 'amp-test')
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.optim_wrapper.dtype == 'bfloat16' and cfg.optim_wrapper.optimizer.lr == 0.04  # the config's
    monkeypatch.setattr(amp_module, 'is_cuda_available', lambda: True)
    for precision, dtype in (('bf16', torch.bfloat16), ('fp16', torch.float16)):
        cfg = gpu_check.build_train_cfg(COCO_CONFIG, {}, precision, str(tmp_path), 'amp-test')
        wrapper = build_optim_wrapper(torch.nn.Linear(2, 2), cfg.optim_wrapper)
        assert type(wrapper).__name__ == 'AmpOptimWrapper' and wrapper.cast_dtype == dtype


def test_sync_bn_kept_only_with_cuda_and_several_processes(monkeypatch):
    from mmengine.config import Config
    from vtseg.mm.runtime import prepare_cpu_distributed
    assert gpu_check.sync_bn_kept(True, 8) and gpu_check.sync_bn_kept(True, 2)
    assert not gpu_check.sync_bn_kept(True, 1) and not gpu_check.sync_bn_kept(False, 8)
    # what the plan says is what vtseg's launcher preparation does: with CUDA, SyncBN stays
    for cuda in (True, False):
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
        cfg = Config(dict(model=dict(backbone=dict(norm_cfg=dict(type='SyncBN')))))
        prepare_cpu_distributed(cfg, 'slurm')
        kept = cfg.model.backbone.norm_cfg.type == 'SyncBN'
        assert kept == gpu_check.sync_bn_kept(cuda, 8)


def test_step_timer_hook_synchronises_around_every_iteration(fake_cuda):
    hook = gpu_check.StepTimerHook(CUDA)
    assert hook.priority == 'HIGHEST'
    hook.before_train(None)
    for i in range(3):
        hook.before_train_iter(None, i)
        hook.after_train_iter(None, i)
    hook.after_train(None)
    assert fake_cuda[:2] == [('sync', CUDA), ('reset', CUDA)]
    assert fake_cuda[2:] == [('sync', CUDA)] * 6  # before and after each of 3 iterations
    assert len(hook.step_s) == len(hook.iter_s) == 3
    assert all(0 <= step <= it for step, it in zip(hook.step_s, hook.iter_s))
    assert hook.peak_mib == 3.0
    cpu_hook = gpu_check.StepTimerHook(CPU)
    cpu_hook.before_train(None)
    cpu_hook.after_train(None)
    assert cpu_hook.peak_mib is None


def test_timing_summary_leaves_out_the_warm_up():
    summary = gpu_check.timing_summary([9.0, 0.1, 0.3, 0.2], warmup=1, batch=8)
    assert math.isclose(summary['median_ms'], 200.0) and math.isclose(summary['images_per_s'], 40.0)
    with pytest.raises(ValueError, match='no timed iterations'):
        gpu_check.timing_summary([1.0], warmup=1, batch=8)


def test_onnx_cuda_problem():
    assert gpu_check.onnx_cuda_problem(['CUDAExecutionProvider', 'CPUExecutionProvider']) is None
    assert 'onnxruntime-gpu' in gpu_check.onnx_cuda_problem(['CPUExecutionProvider'])


def test_time_onnx_runs_a_session(tmp_path):
    pytest.importorskip('onnxruntime')
    from vtseg.utils.export import export_onnx, onnx_session
    model = torch.nn.Conv2d(3, 4, 3).eval()
    x = torch.randn(1, 3, 8, 8)
    session = onnx_session(export_onnx(model, (x,), str(tmp_path / 'conv.onnx')))
    seconds, outputs = gpu_check.time_onnx(session, x.numpy(), warmup=1, repeats=3)
    assert len(seconds) == 3 and all(s > 0 for s in seconds)
    assert torch.allclose(torch.from_numpy(outputs[0]), model(x).detach(), atol=1e-5)


# --- config overrides and data --------------------------------------------------------------

def test_train_cfg_options_touch_only_data_and_schedule():
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, COCO_CONFIG))
    options = gpu_check.train_cfg_options(cfg, '/data', batch=8, iters=25, workers=12)
    allowed = ('train_dataloader.', 'train_cfg.', 'val_', 'test_', 'default_hooks.', 'model.pretrained',
               'model.backbone.init_cfg')
    assert all(key.startswith(allowed) for key in options), options
    assert options['train_dataloader.batch_size'] == 8 and options['train_cfg.max_iters'] == 25
    assert options['model.pretrained'] is None and options['default_hooks.checkpoint'] is None
    assert 'train_dataloader.dataset.pipeline' not in options  # the config's own crop: pipeline unchanged
    tiny = gpu_check.train_cfg_options(cfg, '/data', batch=2, iters=3, workers=0, crop=64)
    pipeline = tiny['train_dataloader.dataset.pipeline']
    original = cfg.train_dataloader.dataset.pipeline
    assert [step['type'] for step in pipeline] == [step['type'] for step in original]
    resize = next(step for step in pipeline if step['type'] == 'RandomResize')
    crop = next(step for step in pipeline if step['type'] == 'RandomCrop')
    assert resize['scale'] == (256, 64) and crop['crop_size'] == (64, 64)  # (2048, 512) and 512 scaled by 1/8
    assert crop['cat_max_ratio'] == 0.75 and tiny['model.data_preprocessor.size'] == (64, 64)


@pytest.mark.parametrize('layout,dataset_type,num_classes', [('coco_stuff164k', 'COCOStuffDataset', 171),
                                                             ('lip', 'LIPDataset', 20)])
def test_synthetic_data_reads_as_the_real_data_set(tmp_path, layout, dataset_type, num_classes):
    import numpy as np
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    img_dir, ann_dir, _, _, ignore = gpu_check.LAYOUTS[layout]
    root = gpu_check.write_synthetic_dataset(str(tmp_path), layout, num_images=2, size=(48, 64))
    init_default_scope('mmseg')
    dataset = DATASETS.build(dict(type=dataset_type, data_root=root, pipeline=[
        dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')],
        data_prefix=dict(img_path=img_dir, seg_map_path=ann_dir)))
    assert len(dataset) == 2 and len(dataset.metainfo['classes']) == num_classes
    sample = dataset[1]
    assert sample['img'].shape == (48, 64, 3)
    labels = np.unique(sample['gt_seg_map'])
    valid = labels[labels != ignore] if ignore is not None else labels
    assert len(valid) >= 2 and valid.max() < num_classes
    if ignore is not None:
        assert ignore in labels


# --- sections and reports -------------------------------------------------------------------

def test_section_records_failures_and_budget_skips():
    result = gpu_check.CheckResult(machine={}, settings={})
    writes, log = [], []
    section = gpu_check.Section(result, gpu_check.Budget(100.0), lambda: writes.append(1), log.append)
    assert section.attempt('good', lambda: 42) == 42

    def broken():
        raise RuntimeError('CUDA out of memory.\nTried to allocate 2 GiB')
    assert section.attempt('broken', broken) is None
    assert section.attempt('late', lambda: pytest.fail('must not run'), needed_s=1000) is None
    assert result.errors == [dict(what='broken', error='RuntimeError: CUDA out of memory. Tried to allocate 2 GiB')]
    assert result.skipped[0]['what'] == 'late' and result.skipped[0]['reason'].startswith('time budget')
    assert len(writes) == 2 and any('FAILED broken' in line for line in log)


def test_memory_estimate_from_the_committed_cpu_benchmark():
    # 10M parameters = 38.1 MiB of weights; growth 238.1 MiB at batch 2 of 100x100: 100 MiB per image
    weights = 10e6 * 4 / 2 ** 20
    mib = gpu_check.estimate_training_memory_mib(weights + 200, 2, (100, 100), 10.0, 4, (200, 200))
    assert math.isclose(mib, 3 * weights + 4 * 100 * 4)
    with open(osp.join(REPO, 'benchmarks', 'results', 'cpu-vm-1t.json')) as f:
        table = gpu_check.memory_estimate_table(json.load(f))
    lines = table.splitlines()
    assert len(lines) == 4 and 'VT-FPN R-50' in lines[2] and 'Semantic FPN R-50' in lines[3]
    assert all(line.count('(estimate)') == 2 for line in lines[2:])
    with pytest.raises(ValueError, match='no .segmentor-train. pair'):
        gpu_check.memory_estimate_table({'pairs': []})


def run_check(args, tmp_path, timeout=900):
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    return subprocess.run([sys.executable, osp.join(REPO, 'benchmarks', 'gpu', 'check.py'), *args],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=timeout)


def test_check_refuses_cuda_without_a_gpu(tmp_path):
    proc = run_check(['--no-install', '--out', str(tmp_path / 'out')], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        'check.py: error: --device cuda, but torch sees no GPU (use --device cpu --tiny for a CPU run)']
    assert not osp.exists(tmp_path / 'out')


def test_check_install_failure_is_one_line(tmp_path):
    proc = run_check(['--device', 'cpu', '--tiny', '--bundle', str(tmp_path / 'none'), '--out', str(tmp_path)],
                     tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith('check.py: error: no bundle at ')


@pytest.mark.slow
def test_check_runs_end_to_end_on_the_cpu(tmp_path):
    """Every section with tiny sizes: three Runner trainings on 171-class COCO-Stuff-layout
    data written here, inference, classifiers, paper-batch memory runs (LIP too), ONNX."""
    from test_configs.fake_datasets import write_coco_stuff164k
    coco = write_coco_stuff164k(str(tmp_path / 'coco'), num_train=4, num_val=1)
    out = tmp_path / 'out'
    proc = run_check(['--no-install', '--device', 'cpu', '--tiny', '--data-root', coco, '--out', str(out)], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = json.loads((out / 'cpu-tiny.json').read_text())
    assert result['errors'] == []
    train = result['train']
    assert [(r['key'], r['precision']) for r in train] == [(k, 'fp32') for k in gpu_check.COCO_CONFIGS]
    for row in train:
        assert row['batch'] == 2 and row['crop'] == 64 and row['timed_iters'] == 2
        assert math.isfinite(row['final_loss']) and row['median_ms'] > 0 and row['gmacs'] > 0
        assert row['iter_median_ms'] >= row['median_ms'] * 0.5
        assert row['norm_layers'] == ['_BatchNormXd']  # SyncBN reverted in one process
        assert row['workers_left'] == 0  # the data loader's process ended with its Runner
        assert row['cfg_options']['train_dataloader.dataset.data_root'] == coco
    assert [p['precision'] for p in result['train_pairs']] == ['fp32', 'fp32']
    assert {s['what'] for s in result['skipped']} >= {'training bf16', 'training fp16', 'onnxruntime CUDA'}
    assert len(result['inference']) == 2 * 2 * 2 * 2  # shapes x batches x precisions x pairs
    assert len(result['classifier']) == 2 * 2
    assert all(r['ratio']['median_ms'] > 0 for r in result['inference'] + result['classifier'])
    assert [(r['dataset'], r['batch']) for r in result['memory']] == [('coco_stuff', 1)] * 3 + [('lip', 1)] * 3
    assert result['onnx']['cpu']['ok'] is True
    assert result['plans']['norm_layers_ran'] == ['_BatchNormXd'] and result['plans']['amp_precision'] is None
    md = (out / 'cpu-tiny.md').read_text()
    for heading in ('## Training', '## Segmentor inference', '## Classifier inference',
                    "## Training memory per GPU at the paper's batch sizes", '## ONNX', '## Skipped'):
        assert heading in md
    assert '**VT / baseline**' in md and 'Errors' not in md


def test_estimate_memory_cli(tmp_path):
    path = osp.join(REPO, 'benchmarks', 'results', 'cpu-vm-1t.json')
    proc = run_check(['--estimate-memory-from', path], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count('(estimate)') == 4


def test_readme_memory_table_is_what_the_estimate_prints():
    with open(osp.join(REPO, 'benchmarks', 'results', 'cpu-vm-1t.json')) as f:
        table = gpu_check.memory_estimate_table(json.load(f))
    with open(osp.join(REPO, 'README.md')) as f:
        readme = f.read()
    section = readme[readme.index('## Training on GPUs'):]
    assert table in section[:section.index('\n## ', 3)]

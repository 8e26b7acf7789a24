"""tools/benchmark.py on tiny inputs (--quick), and the numbers it derives from its timings.

No timing is asserted: the machine is shared. What is checked is that every reported
number is computed from the measured ones (median/p90 from the recorded calls,
images/s from the median, ratios from both sides) and lands in both result files.
"""
import importlib.util
import json
import os.path as osp
import statistics
import subprocess
import sys
from importlib.util import find_spec

import pytest
import torch
from vtseg_testing import REPO, run_tool

sys.path.insert(0, REPO)
from benchmarks.pairs import PAIRS, TARGETS, check_targets, markdown_report  # noqa: E402
from benchmarks.timing import percentile, ratios, summarize, time_interleaved  # noqa: E402

METRICS = ('params_m', 'gmacs', 'median_ms', 'p90_ms', 'images_per_s', 'peak_mem_mib')
HAS_ORT = find_spec('onnx') is not None and find_spec('onnxruntime') is not None


def check_side(side: dict, batch: int, repeats: int) -> None:
    times = side['times_ms']
    assert len(times) == repeats and all(t > 0 for t in times)
    assert side['median_ms'] == pytest.approx(statistics.median(times))
    assert side['p90_ms'] == pytest.approx(percentile(times, 90))
    assert min(times) <= side['median_ms'] <= side['p90_ms'] <= max(times)
    assert side['images_per_s'] == pytest.approx(batch * 1e3 / side['median_ms'])
    assert side['params_m'] > 0 and side['gmacs'] > 0


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
    """The VT-FPN neck pair with everything measured: timings, memory (subprocesses), ORT."""
    out = tmp_path_factory.mktemp('bench')
    args = ['tools/benchmark.py', '--quick', '--pairs', 'fpn-neck', '--repeats', '3',
            '--warmup', '1', '--threads', '1', '--out-dir', str(out), '--name', 'quick']
    if HAS_ORT:
        args.append('--onnx')
    proc = run_tool(args)
    with open(osp.join(out, 'quick.json')) as f:
        result = json.load(f)
    with open(osp.join(out, 'quick.md')) as f:
        table = f.read()
    return result, table, proc.stdout


@pytest.fixture(scope='module')
def two_pairs_run(tmp_path_factory):
    """VT-ResNet-18 inference, the segmentors' training step and the VT-ResNet-50
    stage-5 pair, without memory probes."""
    out = tmp_path_factory.mktemp('bench')
    run_tool(['tools/benchmark.py', '--quick', '--pairs', 'resnet18-bs1', 'segmentor-train',
              'resnet50-stage5-bs1',
              '--repeats', '2', '--warmup', '0', '--threads', '1', '--memory', 'skip',
              '--out-dir', str(out), '--name', 'two'])
    with open(osp.join(out, 'two.json')) as f:
        return json.load(f)


def test_json_holds_both_models_and_ratios_of_the_measured_numbers(quick_run):
    result, _, _ = quick_run
    assert result['machine']['threads'] == 1 and result['machine']['device'] == 'cpu'
    assert result['settings']['repeats'] == 3 and result['settings']['quick'] is True
    assert 'subprocess per model' in result['settings']['memory_method']
    [pair] = result['pairs']
    assert (pair['name'], pair['task'], pair['batch']) == ('fpn-neck', 'inference', 1)
    assert (pair['vt']['model'], pair['baseline']['model']) == ('VT-FPN neck', 'FPN neck')
    for key in ('vt', 'baseline'):
        check_side(pair[key], pair['batch'], repeats=3)
        assert pair[key]['peak_mem_mib'] > 0
    for metric in METRICS:
        assert pair['ratio'][metric] == pytest.approx(pair['vt'][metric] / pair['baseline'][metric])
    # mmseg's FPN neck with R-50 widths has 3.34M parameters, the VT-FPN neck 7.55M
    assert pair['baseline']['params_m'] == pytest.approx(3.34, abs=0.01)
    assert pair['vt']['params_m'] == pytest.approx(7.55, abs=0.01)
    assert pair['ratio']['gmacs'] < 1
    assert result['targets'] == []  # --quick sizes say nothing about the issue's targets


@pytest.mark.skipif(not HAS_ORT, reason='onnx/onnxruntime not installed '
                    "(pip install onnx onnxruntime 'numpy<2')")
def test_onnxruntime_column(quick_run):
    result, table, _ = quick_run
    for pair in result['pairs']:
        for key in ('vt', 'baseline'):
            side = pair[key]
            assert side['onnx_median_ms'] > 0
            assert side['onnx_max_abs_diff'] <= 1e-4 * max(1.0, side['onnx_max_abs_output'])
        assert pair['ratio']['onnx_median_ms'] == pytest.approx(
            pair['vt']['onnx_median_ms'] / pair['baseline']['onnx_median_ms'])
    assert 'ORT median ms' in table


def test_markdown_matches_json(quick_run):
    result, table, stdout = quick_run
    assert table in stdout  # the table is also printed
    lines = table.splitlines()
    assert lines[0].startswith('Device: ') and '1 torch thread(s) (OMP_WAIT_POLICY=' in lines[0]
    for pair in result['pairs']:
        rows = [line for line in lines if line.startswith(f"| {pair['name']} |")]
        assert len(rows) == 3  # VT, baseline, ratio
        assert f"| {pair['vt']['model']} |" in rows[0]
        assert f"| {pair['baseline']['model']} |" in rows[1]
        assert f"| {pair['vt']['median_ms']:.1f} |" in rows[0]
        assert f"| {pair['baseline']['peak_mem_mib']:.1f} |" in rows[1]
        assert f"**{pair['ratio']['median_ms']:.2f}**" in rows[2]


def test_classifier_and_training_step_pairs(two_pairs_run):
    resnet, train, _ = two_pairs_run['pairs']
    assert (resnet['vt']['model'], resnet['baseline']['model']) == ('VT-ResNet-18', 'ResNet-18')
    # the same models tools/get_flops.py counts: 11.81M and 11.69M parameters
    assert resnet['vt']['params_m'] == pytest.approx(11.81, abs=0.01)
    assert resnet['baseline']['params_m'] == pytest.approx(11.69, abs=0.01)
    assert train['task'] == 'training step' and train['batch'] == 2
    assert train['vt']['model'] == 'VT-FPN R-50'
    assert train['baseline']['model'] == 'Semantic FPN R-50'
    # the VT segmentor differs only in its neck: fewer multiply-adds, more parameters
    assert train['ratio']['gmacs'] < 1 < train['ratio']['params_m']
    for pair in (resnet, train):
        for key in ('vt', 'baseline'):
            check_side(pair[key], pair['batch'], repeats=2)
            assert 'peak_mem_mib' not in pair[key]
        assert pair['ratio']['median_ms'] == pytest.approx(
            pair['vt']['median_ms'] / pair['baseline']['median_ms'])


def test_each_pair_runs_in_a_process_of_its_own(two_pairs_run):
    # so a pair's numbers do not depend on the allocator state the previous pair left
    pids = [pair['pid'] for pair in two_pairs_run['pairs']]
    assert len(set(pids)) == len(pids) == 3


def test_stage5_pair_times_only_what_vt_resnet_replaces(two_pairs_run):
    import torchvision

    from vtseg.models import VTResNet
    stage5 = two_pairs_run['pairs'][2]
    assert stage5['input'] == 'stage-4 map of 1x3x32x32'
    assert stage5['vt']['model'] == 'VT-ResNet-50 VT modules + head'
    assert stage5['baseline']['model'] == 'ResNet-50 stage 5 + head'
    for key in ('vt', 'baseline'):
        check_side(stage5[key], 1, repeats=2)
    # the whole models minus the counted parts: the same stages 1-4 on both sides
    whole = {'vt': VTResNet(depth=50), 'baseline': torchvision.models.resnet50()}
    stages = {k: sum(p.numel() for p in m.parameters()) / 1e6 - stage5[k]['params_m']
              for k, m in whole.items()}
    assert stages['vt'] == pytest.approx(stages['baseline'], abs=1e-6)
    assert stages['vt'] == pytest.approx(8.54, abs=0.01)  # ResNet-50 conv1..layer3


def load_tool(monkeypatch):
    # the tool sets OMP_WAIT_POLICY for the processes it starts; keep it out of this one's
    monkeypatch.delenv('OMP_WAIT_POLICY', raising=False)
    path = osp.join(REPO, 'tools', 'benchmark.py')
    spec = importlib.util.spec_from_file_location('benchmark_tool', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('args,message', [
    (['--pairs', 'resnet7'], 'unknown pair'),
    (['--pairs', 'segmentor', '--vt-config', 'missing.py'],
     'segmentor config not found: missing.py'),
    (['--device', 'tpu'], "--device 'tpu': only cpu and cuda[:i] are supported"),
])
def test_bad_input_is_one_clear_error(args, message, tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as exc:
        load_tool(monkeypatch).main(['--out-dir', str(tmp_path), *args])
    # argparse's errors and the tool's own: exit status 2, the last line says what is wrong
    text = capsys.readouterr().err.strip().splitlines()[-1]
    assert exc.value.code == 2 and ': error: ' in text and message in text
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_bad_input_exits_nonzero_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, 'tools/benchmark.py', '--out-dir', str(tmp_path),
                           '--pairs', 'segmentor', '--baseline-config', 'missing.py'],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith('benchmark.py: error: segmentor config not found: missing.py')
    assert '\n' not in proc.stderr.strip() and not list(tmp_path.iterdir())


def test_interleaving_alternates_and_swaps_order():
    calls = []
    steps = {'vt': lambda: calls.append('vt'), 'baseline': lambda: calls.append('b')}
    times = time_interleaved(steps, repeats=3, warmup=1)
    assert calls == ['vt', 'b', 'b', 'vt', 'vt', 'b', 'b', 'vt']
    assert [len(t) for t in times.values()] == [3, 3]


def test_cuda_timing_synchronises_around_every_call(monkeypatch):
    """The CUDA path without a GPU: kernels run asynchronously there, so a call is
    only timed correctly between two synchronisations (recorded, not run)."""
    events = []
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda device=None: events.append(('sync', str(device))))
    clock = iter(range(100))
    monkeypatch.setattr('benchmarks.timing.time.perf_counter', lambda: next(clock))
    steps = {'vt': lambda: events.append('vt'), 'baseline': lambda: events.append('b')}
    times = time_interleaved(steps, repeats=1, warmup=0, device=torch.device('cuda', 1))
    sync = ('sync', 'cuda:1')
    assert events == [sync, 'vt', sync, sync, 'b', sync]
    # each duration is read after the closing synchronisation: 2 clock ticks per call
    assert times == {'vt': [1], 'baseline': [1]}


def test_cuda_peak_memory_is_the_growth_over_the_calls(monkeypatch):
    from benchmarks.timing import cuda_peak_memory_mib
    state = dict(allocated=100 * 2 ** 20, peak=0, log=[])
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda device=None: state['log'].append('sync'))
    monkeypatch.setattr(torch.cuda, 'memory_allocated', lambda device=None: state['allocated'])
    monkeypatch.setattr(torch.cuda, 'reset_peak_memory_stats',
                        lambda device=None: state.update(peak=state['allocated']))
    monkeypatch.setattr(torch.cuda, 'max_memory_allocated', lambda device=None: state['peak'])

    def step():  # allocates 30 MiB at its peak, frees it again
        state['log'].append('step')
        state['peak'] = max(state['peak'], state['allocated'] + 30 * 2 ** 20)
    assert cuda_peak_memory_mib(step, torch.device('cuda')) == 30
    assert state['log'] == ['sync', 'step', 'step', 'sync']


def test_summary_and_ratios_are_arithmetic_of_the_inputs():
    s = summarize([0.010, 0.030, 0.020, 0.040], batch=4)
    assert s['median_ms'] == pytest.approx(25.0) and s['images_per_s'] == pytest.approx(160.0)
    assert s['p90_ms'] == pytest.approx(37.0)  # numpy's linear interpolation
    assert percentile([5.0], 90) == 5.0
    r = ratios(dict(median_ms=10.0, params_m=2.0, peak_mem_mib=None),
               dict(median_ms=40.0, params_m=1.0, peak_mem_mib=5.0))
    assert r == dict(median_ms=0.25, params_m=2.0)


def test_targets_are_checked_against_the_issue_limits():
    pairs = [dict(name='fpn-neck', ratio=dict(median_ms=0.2)),
             dict(name='segmentor-train', ratio=dict(median_ms=0.95, peak_mem_mib=0.9))]
    got = {(t['pair'], t['metric']): (t['met'], t['max_ratio']) for t in check_targets(pairs)}
    assert got == {('fpn-neck', 'median_ms'): (True, 0.25),
                   ('segmentor-train', 'median_ms'): (False, 0.9),
                   ('segmentor-train', 'peak_mem_mib'): (True, 1.0)}
    assert {name for name, _, _ in TARGETS} <= set(PAIRS)


def test_markdown_report_of_a_result():
    side = dict(model='A', params_m=1.0, gmacs=2.0, median_ms=3.0, p90_ms=4.0, images_per_s=5.0)
    result = dict(
        machine=dict(device_name='cpu X', device='cpu', threads=2, host='h',
                     torch=torch.__version__),
        settings=dict(repeats=7, warmup=1, memory_method='not measured'),
        pairs=[dict(name='fpn-neck', task='inference', input='i', vt=dict(side, model='V'),
                    baseline=side, ratio=dict(median_ms=1.0))],
        targets=check_targets([dict(name='fpn-neck', ratio=dict(median_ms=1.0))]))
    table = markdown_report(result)
    assert '2 torch thread(s)' in table and '7 interleaved repeats' in table
    assert '| fpn-neck | inference | V | i | 1.00 | 2.00 | 3.0 | 4.0 | 5.00 | - |' in table
    assert '| fpn-neck median_ms | 1.00 | 0.25 | NO |' in table

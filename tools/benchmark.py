"""Time VT models beside their baselines: one process, the two models interleaved.

For each pair (see ``benchmarks/pairs.py``) both models are built on the same
seeded inputs, counted (params, multiply-adds with ``mmengine.analysis``), then
called alternately ``--repeats`` times after ``--warmup`` untimed rounds, so load
from other processes hits both alike. Reported per model: median and p90 latency,
images/s at the median, peak memory, optionally onnxruntime latency; per pair the
ratio VT / baseline of each, and whether the issue's targets are met.

Each pair runs in a fresh process of its own (when more than one is asked for), so
that its numbers do not depend on which pairs ran before it: a process's allocator
and caches keep the state the previous pair left (measured: the FPN neck ran ~8%
faster right after the batch-16 classifiers than in a process of its own).

Peak memory: on CPU each model runs in a fresh subprocess that resets the kernel's
peak-RSS mark (``/proc/self/clear_refs``) after building the model and inputs and
reports the peak RSS growth over two calls (activations, workspaces and, for a
training step, gradients; not the weights); on CUDA ``torch.cuda.max_memory_allocated``
above the memory allocated before the calls.

Examples::

    python tools/benchmark.py                                  # every pair, CPU, all cores
    python tools/benchmark.py --pairs fpn-neck segmentor --threads 1 --repeats 20
    python tools/benchmark.py --pairs resnet18-bs1 --onnx      # add an onnxruntime column
    python tools/benchmark.py --quick --repeats 2              # tiny inputs (tests)

Results go to ``--out-dir`` as ``<name>.json`` and ``<name>.md``.
"""
import os

# Idle OpenMP workers sleep instead of spinning. On a machine shared with other
# processes (the 2-core CI box this was written on) spinning workers steal the
# cores their own team waits for, and with 2 threads every model ran 10-25x
# slower. Read when torch loads OpenMP, so set before importing torch; an
# explicit setting in the environment wins. Recorded in the results.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os.path as osp  # noqa: E402
import platform  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Optional  # noqa: E402

import torch  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # benchmarks/: the repository's harness, not installed with vtseg

from benchmarks.pairs import (PAIRS, SEGMENTOR_CONFIGS, PairSpec, Side, build_side, check_targets,  # noqa: E402
                              markdown_report)
from benchmarks.timing import (cpu_peak_memory_mib, cuda_peak_memory_mib, ratios, summarize,  # noqa: E402
                               time_interleaved)
from vtseg.apis import InferenceSetupError  # noqa: E402
from vtseg.utils.errors import exit_with_error  # noqa: E402
from vtseg.utils.files import atomic_write_bytes  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Time VT models beside their baselines (interleaved, in one process)')
    parser.add_argument('--pairs', nargs='+', default=list(PAIRS), metavar='PAIR',
                        help=f'pairs to run (default: all): {", ".join(PAIRS)}')
    parser.add_argument('--repeats', type=int, default=10, help='timed calls per model')
    parser.add_argument('--warmup', type=int, default=2, help='untimed calls per model first')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch (and onnxruntime) threads (default: all cores)')
    parser.add_argument('--device', default='cpu', help='cpu (default) or cuda[:i]')
    parser.add_argument('--quick', action='store_true',
                        help='tiny inputs (32x32 classifiers, 64x64 dense, batch <= 2) for tests')
    parser.add_argument('--onnx', action='store_true',
                        help='also export the inference pairs to ONNX and time them on onnxruntime')
    parser.add_argument('--memory', choices=['measure', 'skip'], default='measure',
                        help='peak memory (CPU: one subprocess per model) or skip it')
    parser.add_argument('--vt-config', default=SEGMENTOR_CONFIGS['vt'],
                        help='model config of the VT segmentor')
    parser.add_argument('--baseline-config', default=SEGMENTOR_CONFIGS['baseline'],
                        help='model config of the baseline segmentor')
    parser.add_argument('--num-classes', type=int, default=None,
                        help="override the segmentors' decode_head.num_classes")
    parser.add_argument('--out-dir', default=osp.join('benchmarks', 'results'),
                        help='folder of the .json and .md results')
    parser.add_argument('--name', default=None,
                        help='file stem of the results '
                        '(default: <device>-<host>-<threads>t[-quick])')
    # internal: measure one model's peak memory in this (fresh) process, print JSON
    parser.add_argument('--memory-probe', default=None, help=argparse.SUPPRESS)
    # internal: run the one pair of --pairs in this (fresh) process, write its JSON here
    parser.add_argument('--pair-out', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [p for p in args.pairs if p not in PAIRS]
    if unknown:
        parser.error(f'unknown pair(s) {", ".join(unknown)}; choose from {", ".join(PAIRS)}')
    if args.repeats < 1 or args.warmup < 0:
        parser.error('--repeats must be >= 1 and --warmup >= 0')
    if args.threads is not None and args.threads < 1:
        parser.error('--threads must be >= 1')
    return args


def setup_device(args: argparse.Namespace) -> torch.device:
    try:
        device = torch.device(args.device)
    except RuntimeError:
        device = None
    if device is None or device.type not in ('cpu', 'cuda'):
        exit_with_error(__file__, f'--device {args.device!r}: only cpu and cuda[:i] are supported')
    if device.type == 'cuda' and not torch.cuda.is_available():
        exit_with_error(__file__, '--device cuda was asked for but torch sees no CUDA device; use --device cpu')
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    return device


def spec_of(args: argparse.Namespace, name: str) -> PairSpec:
    spec = PAIRS[name]
    return spec.quick() if args.quick else spec


def build(args: argparse.Namespace, spec: PairSpec, side: str, device: torch.device) -> Side:
    configs = dict(vt=args.vt_config, baseline=args.baseline_config)
    try:
        return build_side(spec, side, device, segmentor_configs=configs,
                          num_classes=args.num_classes)
    except InferenceSetupError as e:
        exit_with_error(__file__, f'{e}; pass --vt-config / --baseline-config (run from the repository root)')


def memory_probe(args: argparse.Namespace) -> None:
    """Child process: peak memory of one model, printed as one JSON line."""
    name, _, side = args.memory_probe.partition(':')
    device = setup_device(args)
    model = build(args, spec_of(args, name), side, device)
    if device.type == 'cuda':
        mib, method = cuda_peak_memory_mib(model.step, device), 'cuda.max_memory_allocated'
    else:
        mib, method = cpu_peak_memory_mib(model.step)
    print(json.dumps(dict(peak_mem_mib=mib, method=method)))


def forwarded_args(args: argparse.Namespace) -> list:
    """The command-line settings a child process needs to measure like this one."""
    cmd = ['--device', args.device, '--threads', str(torch.get_num_threads()),
           '--repeats', str(args.repeats), '--warmup', str(args.warmup), '--memory', args.memory,
           '--vt-config', args.vt_config, '--baseline-config', args.baseline_config]
    if args.quick:
        cmd.append('--quick')
    if args.onnx:
        cmd.append('--onnx')
    if args.num_classes is not None:
        cmd += ['--num-classes', str(args.num_classes)]
    return cmd


def run_pair_in_child(args: argparse.Namespace, name: str, tmp: str) -> dict:
    """:func:`run_pair` in a fresh process (its progress lines go to this stderr)."""
    out = osp.join(tmp, f'{name}.json')
    cmd = [sys.executable, osp.abspath(__file__), '--pairs', name, '--pair-out', out,
           *forwarded_args(args)]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    if proc.returncode != 0 or not osp.isfile(out):
        exit_with_error(__file__, f'pair {name} failed in its process (exit status {proc.returncode}; '
                                  'its error is above)', status=1)
    with open(out) as f:
        return json.load(f)


def probe_memory(args: argparse.Namespace, name: str) -> dict:
    """Run :func:`memory_probe` for both models of a pair, each in a fresh process.

    The two processes run at the same time (each measures only its own RSS), which
    halves the wall time spent importing torch and mmseg twice.
    """
    # mmap every block >= 64 KiB so that freed tensors leave the RSS at once instead
    # of staying in malloc's heap, where a later peak would hide in them.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536')
    procs = {}
    for side in ('vt', 'baseline'):
        cmd = [sys.executable, osp.abspath(__file__), '--memory-probe', f'{name}:{side}',
               *forwarded_args(args)]
        procs[side] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, env=env)
    results = {}
    for side, proc in procs.items():
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            tail = (stderr.strip().splitlines() or ['(no output)'])[-1]
            exit_with_error(__file__, f'memory probe of {name}:{side} failed: {tail}', status=1)
        results[side] = json.loads(stdout.strip().splitlines()[-1])
    return results


def onnx_columns(args: argparse.Namespace, sides: dict, spec: PairSpec, tmp: str) -> dict:
    """Export both models, time them interleaved on onnxruntime, check their outputs."""
    from vtseg.utils.export import export_onnx, max_abs_diff, onnx_session, run_onnx
    steps, out = {}, {}
    for key, side in sides.items():
        module, inputs = side.export
        path = export_onnx(module, inputs, osp.join(tmp, f'{spec.name}-{key}.onnx'))
        session = onnx_session(path, torch.get_num_threads())
        with torch.no_grad():
            expected = module(*inputs)
        diff, scale = max_abs_diff(expected, run_onnx(session, inputs))
        out[key] = dict(onnx_max_abs_diff=diff, onnx_max_abs_output=scale)
        steps[key] = (lambda s=session, i=inputs: run_onnx(s, i))
    times = time_interleaved(steps, args.repeats, args.warmup)
    for key in sides:
        out[key]['onnx_median_ms'] = summarize(times[key], spec.batch)['median_ms']
    return out


def run_pair(args: argparse.Namespace, name: str, device: torch.device, tmp: str) -> dict:
    from vtseg.utils.complexity import measure
    spec = spec_of(args, name)
    log(f'[{name}] building')
    sides = {key: build(args, spec, key, device) for key in ('vt', 'baseline')}
    result = dict(name=name, task=spec.task, batch=spec.batch, pid=os.getpid(),
                  input=dict(neck='R-50 C2-C5 of ', stage5='stage-4 map of ').get(spec.kind, '')
                  + f'{spec.batch}x3x{spec.size}x{spec.size}')
    for key, side in sides.items():
        c = measure(side.flops_model, side.flops_inputs)
        side.model.train(spec.train)  # measure() leaves the wrapper's mode behind
        params = sum(p.numel() for p in side.model.parameters())
        result[key] = dict(model=side.label, params_m=params / 1e6, gmacs=c.gmacs)
    log(f'[{name}] timing {args.warmup} + {args.repeats} interleaved calls')
    times = time_interleaved({k: s.step for k, s in sides.items()}, args.repeats, args.warmup,
                             device)
    for key in sides:
        result[key].update(summarize(times[key], spec.batch))
    if args.onnx and not spec.train:
        log(f'[{name}] onnxruntime')
        for key, extra in onnx_columns(args, sides, spec, tmp).items():
            result[key].update(extra)
    del sides
    gc.collect()
    if args.memory == 'measure':
        log(f'[{name}] peak memory')
        for key, probe in probe_memory(args, name).items():
            result[key]['peak_mem_mib'] = probe['peak_mem_mib']
            result['memory_method'] = probe['method']
    result['ratio'] = ratios(result['vt'], result['baseline'])
    return result


def machine(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    info = dict(host=socket.gethostname(), device=device.type, cpu=cpu, cores=os.cpu_count(),
                threads=torch.get_num_threads(), torch=torch.__version__,
                omp_wait_policy=os.environ.get('OMP_WAIT_POLICY'),
                python=platform.python_version(), date=time.strftime('%Y-%m-%d %H:%M:%S %z'))
    info['device_name'] = (torch.cuda.get_device_name(device) if device.type == 'cuda'
                           else f'{cpu}, {info["cores"]} cores')
    try:
        import onnxruntime
        info['onnxruntime'] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Optional[list] = None) -> None:
    args = parse_args(argv)
    if args.memory_probe:
        return memory_probe(args)
    device = setup_device(args)
    if args.onnx:
        from importlib.util import find_spec
        missing = [m for m in ('onnx', 'onnxruntime') if find_spec(m) is None]
        if missing:
            exit_with_error(__file__, f'--onnx needs {" and ".join(missing)}: pip install -e \'.[onnx]\' '
                                      "(or pip install onnx onnxruntime 'numpy<2')")
    if any(PAIRS[p].kind == 'segmentor' for p in args.pairs):
        for path in (args.vt_config, args.baseline_config):
            if not osp.isfile(path):
                exit_with_error(__file__, f'segmentor config not found: {path}; pass --vt-config / --baseline-config '
                                          '(paths are relative to the current folder)')
    if args.pair_out:  # a child of the process below: one pair, its JSON to a file
        with tempfile.TemporaryDirectory() as tmp:
            result = run_pair(args, args.pairs[0], device, tmp)
        return atomic_write_bytes(args.pair_out, json.dumps(result).encode())
    os.makedirs(args.out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if len(args.pairs) == 1:
            pairs = [run_pair(args, args.pairs[0], device, tmp)]
        else:
            pairs = [run_pair_in_child(args, name, tmp) for name in args.pairs]
    methods = sorted({p.pop('memory_method') for p in pairs if 'memory_method' in p})
    memory_method = ('not measured' if args.memory == 'skip' else
                     'CUDA max_memory_allocated' if device.type == 'cuda' else
                     'peak RSS growth during 2 calls, fresh subprocess per model '
                     f'({", ".join(methods)})')
    result = dict(machine=machine(device),
                  settings=dict(repeats=args.repeats, warmup=args.warmup, quick=args.quick,
                                memory_method=memory_method, vt_config=args.vt_config,
                                baseline_config=args.baseline_config),
                  pairs=pairs, targets=check_targets(pairs) if not args.quick else [])
    name = args.name or (f'{device.type}-{socket.gethostname()}-{torch.get_num_threads()}t'
                         + ('-quick' if args.quick else ''))
    table = markdown_report(result)
    atomic_write_bytes(osp.join(args.out_dir, f'{name}.json'), (json.dumps(result, indent=1) + '\n').encode())
    atomic_write_bytes(osp.join(args.out_dir, f'{name}.md'), table.encode())
    print(table)
    log(f'results: {osp.join(args.out_dir, name)}.json / .md')


if __name__ == '__main__':
    main()

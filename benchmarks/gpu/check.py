"""The GPU check: install the carried bundle, then train and time VT-FPN beside Semantic FPN.

One command for a GPU machine that has PyTorch but no network (``benchmarks/gpu/README.md``
has the device call with its ``carry`` list and the time plan):

1. installs mmengine, mmsegmentation, vtseg and mmcv 2.1.0 from ``--bundle`` (made here
   by ``prepare.py``; mmcv's CPU ops are compiled there when no carried wheel fits);
2. trains VT-FPN R-50, Semantic FPN R-50 and VT-FPN VT-R-50 (``configs/coco_stuff``) on
   synthetic COCO-Stuff-shaped data through mmengine's Runner, batch 8, fp32/bf16/fp16;
3. times ``mode='tensor'`` inference at 512x512 and 800x1216 (batch 1, 16), and
   VT-ResNet-50 vs ResNet-50 at 224 (batch 1, 64, 256), fp32 and bf16;
4. measures training memory at the paper's batch sizes (COCO-Stuff 4, LIP 12 per GPU);
5. exports VT-FPN R-50 to ONNX and runs it on onnxruntime (its CUDA provider if present);

and writes ``<name>.json`` and ``<name>.md`` to ``--out`` after every step, so that a run
cut short still leaves what it measured. ``--budget-s`` (default 450 s, counted from the
start, install included) skips what would not finish in time, and says so.

Examples::

    python3 benchmarks/gpu/check.py --out "$OUT"                    # on the GPU machine
    python benchmarks/gpu/check.py --no-install --device cpu --tiny --out /tmp/check   # CPU, tests
    python benchmarks/gpu/check.py --estimate-memory-from benchmarks/results/cpu-vm-1t.json

Exit status: 0 all measured, 1 an item failed (the results say which; the others ran) or the
install failed (one error line), 2 bad arguments.
"""
import time

START = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import os.path as osp  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from dataclasses import asdict  # noqa: E402

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
# the repository root, for benchmarks.timing; appended, so that an installed vtseg (the bundle's) wins
sys.path.append(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
import gpu_bundle  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='gpu-check', help='folder for the JSON and markdown results')
    parser.add_argument('--name', help='results file name without extension (default: gpu-<device name> or '
                        'cpu-tiny)')
    parser.add_argument('--device', choices=('cuda', 'cpu'), default='cuda')
    parser.add_argument('--tiny', action='store_true', help='a few iterations at 64x64, batch 2 (tests)')
    parser.add_argument('--bundle', default=gpu_bundle.DEFAULT_BUNDLE, help='the folder prepare.py made')
    parser.add_argument('--no-install', action='store_true', help='use the installed packages as they are')
    parser.add_argument('--target-dir', help='install the bundle into this folder instead of this Python')
    parser.add_argument('--sections', nargs='+', default=['train', 'infer', 'classifier', 'memory', 'onnx'],
                        choices=['train', 'infer', 'classifier', 'memory', 'onnx'],
                        help='what to run (infer and onnx use the models of the fp32 training runs)')
    parser.add_argument('--data-root', help='COCO-Stuff 164k-layout data to train on (default: synthetic)')
    parser.add_argument('--lip-root', help='LIP-layout data for the memory runs (default: synthetic)')
    parser.add_argument('--work-dir', help='keep the runs\' work dirs and data here (default: a temporary folder)')
    parser.add_argument('--budget-s', type=float, help='wall-clock budget from the start, install included '
                        '(default: 450, or none with --tiny)')
    parser.add_argument('--estimate-memory-from', metavar='BENCHMARK_JSON',
                        help='print the estimated memory per GPU at the paper\'s batch sizes from a CPU result of '
                        'tools/benchmark.py and exit')
    return parser.parse_args(argv)


def fail(problem: str, status: int = 1) -> int:
    print(f'check.py: error: {problem}', file=sys.stderr)
    return status


# Warnings every Runner repeats (deprecations inside mmengine/mmseg/setuptools, a disabled
# visualisation hook): a dozen lines per training run would bury the check's own output.
QUIET = ('pkg_resources is deprecated', 'The draw is False', 'instance named of visualizer',
         '``build_loss`` would be deprecated', 'Default ``avg_non_ignore`` is False')


def preflight() -> None:
    """Import what every training run needs, so that a broken install fails here, once."""
    try:
        import distutils  # noqa: F401
    except ImportError:
        # Python >= 3.12 has no distutils; mmengine's Runner imports it (collect_env).
        # setuptools provides it once imported, where its .pth hook has not already.
        import setuptools  # noqa: F401
    import mmcv.ops  # noqa: F401  (mmseg imports the compiled ops unguarded)
    import mmseg.models  # noqa: F401

    import vtseg  # noqa: F401  (registers VTFPN, VTResNet in mmseg's registries)


def main(argv=None) -> int:
    args = parse_args(argv)
    for message in QUIET:
        warnings.filterwarnings('ignore', message='.*' + re.escape(message))
    if args.estimate_memory_from:
        import gpu_check
        try:
            with open(args.estimate_memory_from) as f:
                print(gpu_check.memory_estimate_table(json.load(f)))
        except (OSError, ValueError, KeyError) as err:
            return fail(f'cannot estimate from {args.estimate_memory_from}: {err}', 2)
        return 0
    import torch
    if args.device == 'cuda' and not torch.cuda.is_available():
        return fail('--device cuda, but torch sees no GPU (use --device cpu --tiny for a CPU run)', 2)
    if args.device == 'cpu' and torch.cuda.is_available():
        return fail('--device cpu on a machine with a GPU: mmengine\'s Runner would still train on the GPU; '
                    'run with CUDA_VISIBLE_DEVICES= to check on the CPU', 2)
    install_lines = []
    if not args.no_install:
        try:
            install_lines = gpu_bundle.install(args.bundle, args.target_dir)
        except gpu_bundle.BundleError as err:
            return fail(str(err))
        for line in install_lines:
            print(f'install: {line}', flush=True)
    try:
        preflight()
    except Exception as err:  # any import failure of the stack: say which, in one line
        return fail(f'the installed stack does not import: {type(err).__name__}: {" ".join(str(err).split())[:300]}')
    import gpu_check

    from vtseg.apis.io import atomic_write_bytes

    device = torch.device(args.device)
    settings = gpu_check.CheckSettings.tiny_cpu() if args.tiny else gpu_check.CheckSettings.full()
    budget = gpu_check.Budget(args.budget_s or (1e9 if args.tiny else 450.0), START)
    machine = gpu_check.machine_info(device)
    name = args.name or ('cpu-tiny' if args.tiny and device.type == 'cpu' else
                         f"{device.type}-{machine['device_name']}".lower().replace(' ', '-').replace('/', '-'))
    result = gpu_check.CheckResult(machine=machine, settings=dict(asdict(settings), budget_s=budget.seconds),
                                   install=install_lines)

    def write() -> None:
        data = result.as_dict()
        atomic_write_bytes(osp.join(args.out, f'{name}.json'), json.dumps(data, indent=1).encode())
        atomic_write_bytes(osp.join(args.out, f'{name}.md'), gpu_check.markdown(data).encode())

    section = gpu_check.Section(result, budget, write, log=lambda line: print(f'check: {line}', flush=True))
    work_root = args.work_dir or tempfile.mkdtemp(prefix='vtseg-gpu-check-')
    os.makedirs(work_root, exist_ok=True)
    # rough seconds per item on an H200, for the budget (0 with --tiny: no budget)
    need = (lambda s: 0.0) if args.tiny else (lambda s: s)
    try:
        coco_root = args.data_root
        if coco_root is None and {'train', 'memory'} & set(args.sections):
            coco_root = section.attempt('writing synthetic COCO-Stuff data', lambda: gpu_check.write_synthetic_dataset(
                osp.join(work_root, 'coco_stuff164k'), 'coco_stuff164k', settings.num_images, settings.image_size))
        models = {}
        if 'train' in args.sections and coco_root:
            models = gpu_check.training_section(section, settings, device, coco_root, work_root, need(25))
        result.plans = dict(
            amp_precision=gpu_check.preferred_amp_precision(device),
            norm_layers_ran=sorted({n for r in result.train for n in r['norm_layers']}),
            sync_bn_kept_here=gpu_check.sync_bn_kept(device.type == 'cuda', 1),
            sync_bn_kept_8_gpus=gpu_check.sync_bn_kept(device.type == 'cuda', 8))
        if 'infer' in args.sections:
            gpu_check.inference_section(section, settings, device, models, need(10))
        if 'classifier' in args.sections:
            gpu_check.classifier_section(section, settings, device, need(6))
        if 'memory' in args.sections and coco_root:
            lip_root = args.lip_root or section.attempt(
                'writing synthetic LIP data', lambda: gpu_check.write_synthetic_dataset(
                    osp.join(work_root, 'lip'), 'lip', settings.num_images, settings.lip_image_size))
            if lip_root:  # (the trained models wait on the CPU: the memory runs have the GPU alone)
                gpu_check.memory_section(section, settings, device, coco_root, lip_root, work_root, need(15))
        if 'onnx' in args.sections:
            gpu_check.onnx_section(section, settings, device, models, work_root)
    finally:
        result.elapsed_s = budget.elapsed()
        write()
        if not args.work_dir:
            shutil.rmtree(work_root, ignore_errors=True)
    print(f'check: done in {result.elapsed_s:.0f} s: {len(result.errors)} failed, {len(result.skipped)} skipped; '
          f'results in {osp.join(args.out, name)}.json/.md', flush=True)
    return 1 if result.errors else 0


if __name__ == '__main__':
    sys.exit(main())

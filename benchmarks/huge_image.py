"""One huge photo through folder inference: wall time and peak memory, per way of predicting it.

Usage::

    python benchmarks/huge_image.py                       # 6000x6000, 2 threads, all scenarios
    python benchmarks/huge_image.py --size 3000 --scenarios config full-res --window-batch 2

The model is the LIP VT-FPN R-50 config (``configs/lip/vt-fpn_r50_8xb12-50k_lip-473x473.py``,
20 classes) with random weights (``pretrained=None``, ``init_cfg=None``: nothing is
downloaded), saved once as a checkpoint. The image is a synthetic JPEG (smooth colour
fields and noise). Each scenario runs in a fresh process, which loads the model and then
runs :func:`vtseg.apis.infer_folder` on the image (decode, predict, write the class-id PNG
and the overlay JPEG, as ``tools/infer.py`` does); it reports the time of that call and its
own peak RSS (``ru_maxrss``: the whole process, libraries and model included).

Scenarios:

- ``config``: the config as it is. Its test pipeline resizes the image to 473 pixels on the
  long side, the model runs once, and the (20, 473, 473) logits are resized back to the
  image's size a few rows at a time before the argmax.
- ``mmseg-config``: the same through mmseg's own ``predict`` (``postprocess_result`` resizes
  the logits to one (20, H, W) float32 tensor: 2.9 GB at 6000x6000), for comparison.
- ``full-res``: the test pipeline without its ``Resize``: the model sees every pixel, through
  mmseg's grid of 473x473 windows at stride 315 (361 windows at 6000x6000), run
  ``--window-batch`` at a time, with logits summed in a band along the image.

Results go to ``--out`` (``.json`` and ``.md``) and stdout, with the machine's load average
before and after each scenario (a shared machine makes times vary; peak memory does not).
"""
import argparse
import json
import os
import os.path as osp
import platform
import resource
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs', 'lip', 'vt-fpn_r50_8xb12-50k_lip-473x473.py')
SCENARIOS = ('config', 'mmseg-config', 'full-res')


def load_config(scenario: str):
    """The LIP VT-FPN R-50 config for ``scenario``."""
    from vtseg.apis import load_config as load
    cfg = load(CONFIG)
    if scenario == 'full-res':
        pipeline = cfg.test_dataloader.dataset.pipeline
        cfg.test_dataloader.dataset.pipeline = [t for t in pipeline if t['type'] != 'Resize']
    return cfg


def make_inputs(folder: str, size: int) -> Dict[str, str]:
    """A random-weight checkpoint of the config and a synthetic size x size JPEG in ``folder``."""
    import cv2
    import numpy as np
    import torch

    from vtseg.apis import build_model
    torch.manual_seed(0)
    checkpoint = osp.join(folder, 'vt-fpn_r50_lip_random.pth')
    # random weights: build_model downloads nothing without a checkpoint
    torch.save({'state_dict': build_model(load_config('config')).state_dict()}, checkpoint)
    rng = np.random.default_rng(0)
    fields = rng.integers(0, 256, (size // 200 + 2, size // 200 + 2, 3), dtype=np.uint8)
    image = cv2.resize(fields, (size, size), interpolation=cv2.INTER_CUBIC)
    image = cv2.add(image, rng.integers(0, 24, image.shape, dtype=np.uint8))
    image_dir = osp.join(folder, 'photos')
    os.makedirs(image_dir)
    cv2.imwrite(osp.join(image_dir, f'photo_{size}.jpg'), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return dict(checkpoint=checkpoint, images=image_dir)


def run_scenario(args: argparse.Namespace) -> dict:
    """In the child process: load, predict the folder, report time and peak RSS."""
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    import vtseg.apis.inference as inference_module
    from vtseg.apis import SegInferencer, infer_folder, window_grid
    if args.child == 'mmseg-config':
        inference_module.supports_streaming = lambda model, metas: False  # mmseg's predict
    start = time.perf_counter()
    inferencer = SegInferencer(load_config(args.child), args.checkpoint, device='cpu')
    loaded = time.perf_counter()
    summary = infer_folder(inferencer, args.images, args.out_dir, batch_size=args.window_batch,
                           force=True)
    predicted = time.perf_counter()
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if summary.failed:
        raise RuntimeError(f'failed: {summary.failed}')
    # what the model saw, and the windows it slid (measured above; counted here)
    input_hw = tuple(inferencer.pipeline(np.zeros((args.size, args.size, 3), np.uint8))['inputs'].shape[1:])
    windows = []
    if summary.slid:
        windows = window_grid(input_hw, inferencer.slide_test_cfg.crop_size,
                              inferencer.slide_test_cfg.stride)
    return dict(scenario=args.child, model_input=f'{input_hw[0]}x{input_hw[1]}',
                mode='slide' if summary.slid else 'whole', windows=len(windows),
                window_batch=args.window_batch if windows else None,
                load_s=round(loaded - start, 1), predict_s=round(predicted - loaded, 1),
                peak_rss_gb=round(peak_rss_gb, 2))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, default=6000, help='image side in pixels')
    parser.add_argument('--threads', type=int, default=2, help='torch / OpenMP threads')
    parser.add_argument('--window-batch', type=int, default=2, help='windows per forward pass')
    parser.add_argument('--scenarios', nargs='+', choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument('--out', default=osp.join(REPO, 'benchmarks', 'results',
                                                  f'huge-image-{platform.node()}'),
                        help='results path without extension (.json and .md are written)')
    parser.add_argument('--timeout', type=int, default=3600, help='seconds per scenario')
    # internal: run one scenario in this process
    parser.add_argument('--child', choices=SCENARIOS, help=argparse.SUPPRESS)
    parser.add_argument('--checkpoint', help=argparse.SUPPRESS)
    parser.add_argument('--images', help=argparse.SUPPRESS)
    parser.add_argument('--out-dir', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def table(results: List[dict]) -> str:
    lines = ['| scenario | image | model input | mode | windows (per pass) | threads | load s | '
             'predict + write s | peak RSS GB | load avg before / after |',
             '|---|---|---|---|---:|---:|---:|---:|---:|---|']
    for r in results:
        if 'error' in r:
            lines.append(f"| {r['scenario']} | {r['image']} | | | | {r['threads']} | | "
                         f"{r['error']} | | {r['load_before']} / {r['load_after']} |")
            continue
        batch = f" ({r['window_batch']})" if r['windows'] else ''
        lines.append(f"| {r['scenario']} | {r['image']} | {r['model_input']} | {r['mode']} | "
                     f"{r['windows']}{batch} | {r['threads']} | {r['load_s']} | {r['predict_s']} | "
                     f"{r['peak_rss_gb']} | {r['load_before']} / {r['load_after']} |")
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print('RESULT ' + json.dumps(run_scenario(args)), flush=True)
        return 0
    results = []
    env = {**os.environ, 'OMP_NUM_THREADS': str(args.threads),
           'OMP_WAIT_POLICY': os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')}
    with tempfile.TemporaryDirectory(prefix='vtseg-huge-') as folder:
        inputs = make_inputs(folder, args.size)
        for scenario in args.scenarios:
            load_before = '%.1f' % os.getloadavg()[0]
            command = [sys.executable, osp.abspath(__file__), '--child', scenario, '--size',
                       str(args.size), '--threads', str(args.threads), '--window-batch',
                       str(args.window_batch), '--checkpoint', inputs['checkpoint'], '--images',
                       inputs['images'], '--out-dir', osp.join(folder, 'out-' + scenario)]
            try:
                proc = subprocess.run(command, capture_output=True, text=True, env=env,
                                      timeout=args.timeout, cwd=REPO)
                lines = [line for line in proc.stdout.splitlines() if line.startswith('RESULT ')]
                if proc.returncode != 0 or not lines:
                    tail = (proc.stderr.strip().splitlines() or ['?'])[-1]
                    result = dict(scenario=scenario, error=f'exit {proc.returncode}: {tail[:200]}')
                else:
                    result = json.loads(lines[-1][len('RESULT '):])
            except subprocess.TimeoutExpired:
                result = dict(scenario=scenario, error=f'not done in {args.timeout} s')
            result.update(image=f'{args.size}x{args.size}', threads=args.threads,
                          load_before=load_before, load_after='%.1f' % os.getloadavg()[0])
            results.append(result)
            print(json.dumps(result), flush=True)
    report = dict(host=platform.node(), cpus=os.cpu_count(), python=platform.python_version(),
                  config=osp.relpath(CONFIG, REPO), results=results)
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out + '.json', 'w') as f:
        json.dump(report, f, indent=1)
    with open(args.out + '.md', 'w') as f:
        f.write(table(results) + '\n')
    print(table(results))
    return 0 if all('error' not in r for r in results) else 1


if __name__ == '__main__':
    sys.exit(main())

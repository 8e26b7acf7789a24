"""What VT-FPN's one fast path buys: its inference with and without it, beside mmseg's FPN.

``VTFPN.forward`` has one fast path (see its comments): with autograd off it writes the
top-down sums and the projections into the lateral maps it made, and adds nearest-2x
upsampling as a broadcast. Its plain twin is reached without a switch in the model: the
same neck with its parameters frozen, run with autograd on (nothing requires grad, so no
graph is recorded, but ``torch.is_grad_enabled()`` is True). A third twin takes the fast
path with its top-down step by ``F.interpolate`` (still in place), to measure the broadcast
on its own. The necks are built from the shipped R-50 model configs and timed interleaved in
one process on the ResNet-50 C2-C5 shapes of a 512x512 image, like ``tools/benchmark.py``'s
``fpn-neck`` pair.

    python benchmarks/vt_fpn_fast_path.py [--threads 1] [--repeats 20] [--size 512]
"""
import argparse
import json
import os
import os.path as osp
import platform
import sys
from typing import Dict

import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.paper import resnet50_feature_shapes  # noqa: E402
from benchmarks.timing import summarize, time_interleaved  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402
from vtseg.utils.files import atomic_write_bytes  # noqa: E402

from vtseg.mm import VTFPNNeck  # noqa: E402


class InterpolatingVTFPN(VTFPNNeck):
    """The same neck whose top-down step is always ``F.interpolate``, then the sum."""

    def add_upsampled(self, fine: torch.Tensor, coarse: torch.Tensor, in_place: bool = False) -> torch.Tensor:
        up = F.interpolate(coarse, size=fine.shape[2:], **self.upsample_cfg)
        return fine.add_(up) if in_place else fine + up


def build_necks() -> Dict[str, torch.nn.Module]:
    init_default_scope('mmseg')
    models = osp.join(REPO, 'configs', '_base_', 'models')
    fpn_cfg = Config.fromfile(osp.join(models, 'fpn_r50.py')).model.neck
    vt_cfg = Config.fromfile(osp.join(models, 'vt-fpn_r50.py')).model.neck
    torch.manual_seed(0)
    fast = MODELS.build(vt_cfg).eval()
    plain = MODELS.build(vt_cfg).eval()
    plain.load_state_dict(fast.state_dict())
    plain.requires_grad_(False)
    interpolating = InterpolatingVTFPN(**{k: v for k, v in vt_cfg.items() if k != 'type'}).eval()
    interpolating.load_state_dict(fast.state_dict())
    return dict(fpn=MODELS.build(fpn_cfg).eval(), vt_fast=fast, vt_fast_interpolate=interpolating,
                vt_plain=plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--size', type=int, default=512, help='image side whose R-50 C2-C5 shapes the necks get')
    parser.add_argument('--out-dir', default=osp.join(REPO, 'benchmarks', 'results'))
    args = parser.parse_args()
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    torch.set_num_threads(args.threads)

    necks = build_necks()
    feats = [torch.randn(1, c, h, w) for c, h, w in resnet50_feature_shapes(args.size, args.size)]
    with torch.no_grad():
        reference = necks['vt_fast'](feats)
        interpolated = necks['vt_fast_interpolate'](feats)
    with torch.enable_grad():
        plain_out = necks['vt_plain'](feats)
    assert not any(o.requires_grad for o in plain_out), 'the plain run recorded a graph'
    for a, b, c in zip(reference, plain_out, interpolated):
        torch.testing.assert_close(a, b)  # same numbers all three ways
        torch.testing.assert_close(a, c)

    def step(name: str):
        grad_mode = torch.enable_grad if name == 'vt_plain' else torch.no_grad

        def run() -> None:
            with grad_mode():
                necks[name](feats)
        return run

    times = time_interleaved({name: step(name) for name in necks}, args.repeats, args.warmup)
    stats = {name: summarize(t, batch=1) for name, t in times.items()}
    fpn_ms = stats['fpn']['median_ms']
    rows = [(name, stats[name]['median_ms'], stats[name]['median_ms'] / fpn_ms) for name in necks]
    gain = 1 - stats['vt_fast']['median_ms'] / stats['vt_plain']['median_ms']
    broadcast_gain = 1 - stats['vt_fast']['median_ms'] / stats['vt_fast_interpolate']['median_ms']
    host = platform.node() or 'host'
    md = [f'VT-FPN neck inference fast path, R-50 C2-C5 of 1x3x{args.size}x{args.size}, {args.threads} thread(s), '
          f'{args.repeats} interleaved repeats after {args.warmup} warm-up, torch {torch.__version__}, host {host}',
          '', '| neck | median ms | / FPN |', '|---|---:|---:|']
    md += [f'| {name} | {ms:.1f} | {ratio:.2f} |' for name, ms, ratio in rows]
    md += ['', f'Fast path: {100 * gain:.0f}% less time than the plain evaluation of the same neck; '
           f'its nearest-2x broadcast: {100 * broadcast_gain:.0f}% less than the same path with '
           f'F.interpolate.', '']
    os.makedirs(args.out_dir, exist_ok=True)
    size = '' if args.size == 512 else f'-{args.size}px'
    stem = osp.join(args.out_dir, f'vt-fpn-fast-path-{host}-{args.threads}t{size}')
    atomic_write_bytes(stem + '.md', '\n'.join(md).encode())
    atomic_write_bytes(stem + '.json', json.dumps(dict(threads=args.threads, repeats=args.repeats, stats=stats,
                                                       gain=gain, broadcast_gain=broadcast_gain),
                                                  indent=1).encode())
    print('\n'.join(md))
    print(f'results: {stem}.md / .json')


if __name__ == '__main__':
    main()

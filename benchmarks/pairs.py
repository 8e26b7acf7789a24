"""The VT / baseline pairs that ``tools/benchmark.py`` times, and the speed targets.

A *pair* is a VT model and the model it replaces, run on the same inputs:

================= ======================================== ===================================
pair              VT model                                 baseline
================= ======================================== ===================================
resnet18-bs1/16   VT-ResNet-18 classifier, 224x224          torchvision ResNet-18
resnet50-bs1/16   VT-ResNet-50 classifier, 224x224          torchvision ResNet-50
resnet50-stage5-  VT-ResNet-50's VT modules + head on the   ResNet-50's stage 5 + head on the
bs1/16            stride-16 map of a 224x224 image          same map (the part VT replaces)
fpn-neck          VT-FPN neck on R-50 C2-C5 of a 512x512    mmseg ``FPN`` neck
segmentor         VT-FPN R-50 whole inference, 512x512      Semantic FPN R-50 (mmseg)
segmentor-train   VT-FPN R-50 forward + backward, 512x512   Semantic FPN R-50
================= ======================================== ===================================

The two models of a pair are timed interleaved (:mod:`benchmarks.timing`); the ratios
VT / baseline are what a run on a shared machine can be trusted for.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from benchmarks.paper import resnet50_feature_shapes
from vtseg.utils.export import SegmentorLogits

__all__ = ['PairSpec', 'PAIRS', 'TARGETS', 'SEGMENTOR_CONFIGS', 'Side', 'build_side', 'check_targets',
           'markdown_report']

# The repository's model configs: Semantic FPN R-50 and the same with VTFPN as its neck.
SEGMENTOR_CONFIGS = dict(vt='configs/_base_/models/vt-fpn_r50.py',
                         baseline='configs/_base_/models/fpn_r50.py')


@dataclass(frozen=True)
class PairSpec:
    """What one pair runs.

    Args:
        name: Pair id used on the command line.
        kind: ``'resnet'``, ``'stage5'`` (only what VT-ResNet replaces), ``'neck'``
            or ``'segmentor'``.
        batch: Images per call.
        size: Image side (the neck gets ResNet-50 feature maps of such an image).
        train: Time a training step (forward + backward) instead of inference.
        depth: ResNet depth of a ``'resnet'`` or ``'stage5'`` pair.
    """
    name: str
    kind: str
    batch: int
    size: int
    train: bool = False
    depth: int = 0

    def quick(self) -> 'PairSpec':
        """Tiny sizes for tests: 32x32 classifiers, 64x64 dense models, batch <= 2."""
        return PairSpec(self.name, self.kind, min(self.batch, 2),
                        32 if self.kind in ('resnet', 'stage5') else 64, self.train, self.depth)

    @property
    def task(self) -> str:
        return 'training step' if self.train else 'inference'


PAIRS: Dict[str, PairSpec] = {p.name: p for p in [
    PairSpec('resnet18-bs1', 'resnet', 1, 224, depth=18),
    PairSpec('resnet18-bs16', 'resnet', 16, 224, depth=18),
    PairSpec('resnet50-bs1', 'resnet', 1, 224, depth=50),
    PairSpec('resnet50-bs16', 'resnet', 16, 224, depth=50),
    # The ratio of the whole classifiers is diluted by stages 1-4, which both share:
    # these pairs time only what VT-ResNet replaces (the paper's stage-5 claim).
    PairSpec('resnet50-stage5-bs1', 'stage5', 1, 224, depth=50),
    PairSpec('resnet50-stage5-bs16', 'stage5', 16, 224, depth=50),
    PairSpec('fpn-neck', 'neck', 1, 512),
    PairSpec('segmentor', 'segmentor', 1, 512),
    # mmseg's 512x512 Semantic FPN configs train with 2 images per GPU.
    PairSpec('segmentor-train', 'segmentor', 2, 512, train=True),
]}

# Issue 7's targets: (pair, metric, largest acceptable VT / baseline ratio).
TARGETS: List[Tuple[str, str, float]] = [
    ('fpn-neck', 'median_ms', 0.25),
    ('segmentor', 'median_ms', 0.8),
    ('segmentor-train', 'median_ms', 0.9),
    ('segmentor-train', 'peak_mem_mib', 1.0),
    ('resnet50-bs1', 'median_ms', 0.9),
    ('resnet50-bs16', 'median_ms', 0.9),
]


@dataclass
class Side:
    """One model of a pair, ready to run.

    Args:
        label: Display name, e.g. ``'VT-ResNet-50'``.
        model: The module (its parameters are counted).
        step: Runs one timed call (inference, or forward + backward).
        flops_model: Module whose ``forward(*flops_inputs)`` is the counted forward pass.
        flops_inputs: Its inputs.
        export: ``(module, inputs)`` to export to ONNX, ``None`` for training steps.
    """
    label: str
    model: nn.Module
    step: Callable[[], None]
    flops_model: nn.Module
    flops_inputs: Tuple
    export: Optional[Tuple[nn.Module, Tuple[torch.Tensor, ...]]] = None
    extra: dict = field(default_factory=dict)


class _Call(nn.Module):
    """``forward(x)`` -> ``fn(x)``: a module view of a bound method (for counting and export)."""

    def __init__(self, model: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.fn = fn
        self.train(model.training)

    def forward(self, *args):
        return self.fn(*args)


def build_side(
        spec: PairSpec,
        side: str,
        device: torch.device,
        segmentor_configs: Optional[Dict[str, str]] = None,
        num_classes: Optional[int] = None,
) -> Side:
    """Build one model of a pair with its inputs (seeded: both sides and every process
    get the same inputs).

    Args:
        spec: The pair.
        side: ``'vt'`` or ``'baseline'``.
        device: Where to run.
        segmentor_configs: ``{'vt': path, 'baseline': path}`` model configs of the
            segmentor pairs (default :data:`SEGMENTOR_CONFIGS`), built by
            :func:`vtseg.apis.build_model` (random weights, nothing downloaded, SyncBN as BN).
        num_classes: Override the segmentors' ``decode_head.num_classes``.

    Raises:
        vtseg.apis.InferenceSetupError: A segmentor config is missing or broken.
    """
    if side not in ('vt', 'baseline'):
        raise ValueError(f"side must be 'vt' or 'baseline', got {side!r}")
    vt = side == 'vt'
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if spec.kind in ('resnet', 'stage5'):
        import torchvision

        from vtseg.models import VTResNet
        model = (VTResNet(depth=spec.depth) if vt
                 else getattr(torchvision.models, f'resnet{spec.depth}')())
        label = f'VT-ResNet-{spec.depth}' if vt else f'ResNet-{spec.depth}'
        model = model.to(device).eval()
        if spec.kind == 'resnet':
            x = torch.randn(spec.batch, 3, spec.size, spec.size, generator=gen).to(device)

            def step() -> None:
                with torch.no_grad():
                    model(x)
            return Side(label, model, step, model, (x,), export=(model, (x,)))

        # stage5: only the part VT-ResNet replaces, on the stage-4 map
        if vt:
            label += ' VT modules + head'

            def forward(c4: torch.Tensor) -> torch.Tensor:
                return model.forward_head(model.forward_vt(c4)[1])
        else:
            label += ' stage 5 + head'

            def forward(c4: torch.Tensor) -> torch.Tensor:
                return model.fc(torch.flatten(model.avgpool(model.layer4(c4)), 1))
        channels = model.layer3[-1].conv1.in_channels  # stage-4 output width
        x = torch.randn(spec.batch, channels, spec.size // 16, spec.size // 16,
                        generator=gen).to(device)
        wrapped = _Call(model, forward)
        # parameters of the replaced part only
        parts = nn.ModuleList([model.vt_modules, model.fc] if vt else [model.layer4, model.fc])

        def step() -> None:
            with torch.no_grad():
                forward(x)
        return Side(label, parts, step, wrapped, (x,), export=(wrapped, (x,)))

    if spec.kind == 'neck':
        from mmengine.registry import init_default_scope
        from mmseg.registry import MODELS

        import vtseg  # noqa: F401  (registers VTFPN)
        init_default_scope('mmseg')
        cfg = dict(type='VTFPN' if vt else 'FPN', in_channels=[256, 512, 1024, 2048],
                   out_channels=256, num_outs=4)
        if vt:
            cfg.update(num_tokens=8, token_channels=1024)  # the paper's VT-FPN
        model = MODELS.build(cfg)
        model = model.to(device).eval()
        feats = [torch.randn(spec.batch, *s, generator=gen).to(device)
                 for s in resnet50_feature_shapes(spec.size, spec.size)]
        wrapped = _Call(model, lambda *xs: model(list(xs)))

        def step() -> None:
            with torch.no_grad():
                model(feats)
        return Side('VT-FPN neck' if vt else 'FPN neck', model, step, model, (feats,),
                    export=(wrapped, tuple(feats)))

    if spec.kind == 'segmentor':
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample

        from vtseg.apis import build_model
        configs = dict(SEGMENTOR_CONFIGS, **(segmentor_configs or {}))
        options = {} if num_classes is None else {'model.decode_head.num_classes': num_classes}
        model = build_model(configs[side], device=str(device), cfg_options=options)
        n, s = spec.batch, spec.size
        x = torch.randn(n, 3, s, s, generator=gen).to(device)
        classes = model.decode_head.num_classes
        label = 'VT-FPN R-50' if vt else 'Semantic FPN R-50'
        logits = SegmentorLogits(model)  # 'whole' inference: logits at input size
        if spec.train:
            samples = []
            for _ in range(n):
                sample = SegDataSample(metainfo=dict(img_shape=(s, s), ori_shape=(s, s),
                                                     pad_shape=(s, s)))
                sample.gt_sem_seg = PixelData(
                    data=torch.randint(0, classes, (1, s, s), generator=gen).to(device))
                samples.append(sample)
            model.train()

            def step() -> None:
                model.zero_grad(set_to_none=True)
                loss, _ = model.parse_losses(model.loss(x, samples))
                loss.backward()
            # the counted forward is the inference one (backward costs about twice that)
            return Side(label, model, step, logits, (x,))
        model.eval()

        def step() -> None:
            with torch.no_grad():
                logits(x)
        return Side(label, model, step, logits, (x,), export=(logits, (x,)))
    raise ValueError(f'unknown pair kind {spec.kind!r}')


def check_targets(pairs: Sequence[dict]) -> List[dict]:
    """The issue's targets that the measured pairs allow to check."""
    by_name = {p['name']: p for p in pairs}
    out = []
    for name, metric, limit in TARGETS:
        ratio = by_name.get(name, {}).get('ratio', {}).get(metric)
        if ratio is not None:
            out.append(dict(pair=name, metric=metric, max_ratio=limit, ratio=ratio,
                            met=ratio <= limit))
    return out


def _fmt(value: Optional[float], digits: int = 1) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def markdown_report(result: dict) -> str:
    """The result of ``tools/benchmark.py`` as markdown: machine line, table, targets."""
    m = result['machine']
    lines = [
        f"Device: {m['device_name']} ({m['device']}), {m['threads']} torch thread(s)"
        + (f" (OMP_WAIT_POLICY={m['omp_wait_policy']})" if m.get('omp_wait_policy') else '') + ', '
        f"host {m['host']}, torch {m['torch']}; {result['settings']['repeats']} interleaved "
        f"repeats after {result['settings']['warmup']} warm-up; peak memory: "
        f"{result['settings']['memory_method']}.",
        '',
    ]
    onnx = any('onnx_median_ms' in p['vt'] for p in result['pairs'])
    head = ('| pair | task | model | input | params (M) | GMACs | median ms | p90 ms | img/s '
            '| peak mem (MiB) |' + (' ORT median ms |' if onnx else ''))
    lines += [head, '|' + '---|' * 4 + '---:|' * (6 + onnx)]
    for p in result['pairs']:
        for key in ('vt', 'baseline'):
            s = p[key]
            row = (f"| {p['name']} | {p['task']} | {s['model']} | {p['input']} "
                   f"| {_fmt(s['params_m'], 2)} | {_fmt(s['gmacs'], 2)} | {_fmt(s['median_ms'])} "
                   f"| {_fmt(s['p90_ms'])} | {_fmt(s['images_per_s'], 2)} "
                   f"| {_fmt(s.get('peak_mem_mib'))} |")
            lines.append(row + (f" {_fmt(s.get('onnx_median_ms'))} |" if onnx else ''))
        r = p['ratio']
        row = (f"| {p['name']} | | **ratio VT / baseline** | | {_fmt(r.get('params_m'), 2)} "
               f"| {_fmt(r.get('gmacs'), 2)} | **{_fmt(r.get('median_ms'), 2)}** "
               f"| {_fmt(r.get('p90_ms'), 2)} | {_fmt(r.get('images_per_s'), 2)} "
               f"| {_fmt(r.get('peak_mem_mib'), 2)} |")
        lines.append(row + (f" {_fmt(r.get('onnx_median_ms'), 2)} |" if onnx else ''))
    if result['targets']:
        lines += ['', '| target | VT / baseline | limit | met |', '|---|---:|---:|---|']
        for t in result['targets']:
            lines.append(f"| {t['pair']} {t['metric']} | {t['ratio']:.2f} | {t['max_ratio']:.2f} "
                         f"| {'yes' if t['met'] else 'NO'} |")
    return '\n'.join(lines) + '\n'

"""The GPU check's measurements (library part of ``benchmarks/gpu/check.py``).

It imports mmengine: on a GPU machine, ``check.py`` installs the bundle before importing it.

What it measures, VT models beside their baselines, with the repository's real configs:

- **training** through mmengine's ``Runner``: VT-FPN R-50, Semantic FPN R-50 and VT-FPN on
  VT-ResNet-50 (``configs/coco_stuff``), on synthetic COCO-Stuff-shaped data (171 classes),
  batch 8, fp32 and AMP (bf16, fp16); the config's pipeline and model unchanged, only data
  and schedule set with ``--cfg-options``-style overrides (:func:`train_cfg_options`);
- **inference** (``mode='tensor'``) of the same models at 512x512 and 800x1216, batch 1 and
  16, fp32 and bf16, and of VT-ResNet-50 vs ResNet-50 at 224x224, batch 1/64/256;
- **memory at the paper's batch sizes**: COCO-Stuff 4 and LIP 12 images per GPU;
- **ONNX**: VT-FPN R-50 exported and run on onnxruntime (CUDA provider if there is one).

The GPU-only branches are small functions here: :func:`synchronize`,
:func:`peak_memory_mib`, :func:`precision_problem` / :func:`preferred_amp_precision`
(AMP dtype), :func:`sync_bn_kept`; :class:`StepTimerHook` times training steps with them.
"""
import contextlib
import copy
import gc
import os
import os.path as osp
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from mmengine.hooks import Hook

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# name -> (config, label); the COCO-Stuff configs train at batch 8 and are timed for inference.
COCO_CONFIGS: Dict[str, Tuple[str, str]] = {
    'vt-fpn_r50': ('configs/coco_stuff/vt-fpn_r50_8xb4-45k_coco-stuff164k-512x512.py', 'VT-FPN R-50'),
    'fpn_r50': ('configs/coco_stuff/fpn_r50_8xb4-45k_coco-stuff164k-512x512.py', 'Semantic FPN R-50'),
    'vt-fpn_vt-r50': ('configs/coco_stuff/vt-fpn_vt-r50_8xb4-45k_coco-stuff164k-512x512.py', 'VT-FPN VT-R-50'),
}
LIP_CONFIGS: Dict[str, Tuple[str, str]] = {
    'lip_vt-fpn_r50': ('configs/lip/vt-fpn_r50_8xb12-50k_lip-473x473.py', 'VT-FPN R-50'),
    'lip_fpn_r50': ('configs/lip/fpn_r50_8xb12-50k_lip-473x473.py', 'Semantic FPN R-50'),
    'lip_vt-fpn_vt-r50': ('configs/lip/vt-fpn_vt-r50_8xb12-50k_lip-473x473.py', 'VT-FPN VT-R-50'),
}
# (VT model, baseline) pairs of the segmentors.
SEGMENTOR_PAIRS = [('vt-fpn_r50', 'fpn_r50'), ('vt-fpn_vt-r50', 'fpn_r50')]
PRECISIONS = ('fp32', 'bf16', 'fp16')
AMP_DTYPES = {'bf16': 'bfloat16', 'fp16': 'float16'}
# The paper's images per GPU and crop side: COCO-Stuff 8 GPUs x 4, LIP 8 GPUs x 12.
PAPER_BATCH = {'coco_stuff': (4, 512), 'lip': (12, 473)}
# Synthetic data sets in the layouts mmseg's datasets read: (image folder, label folder,
# label suffix, number of classes, ignored label or None).
LAYOUTS = {
    'coco_stuff164k': ('images/train2017', 'annotations/train2017', '_labelTrainIds.png', 171, 255),
    'lip': ('img_dir/train', 'ann_dir/train', '.png', 20, None),
}


# --- GPU-only branches ----------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously); a no-op on CPU."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> Optional[float]:
    """``torch.cuda.max_memory_allocated`` since the last reset, MiB; None on CPU (torch
    keeps no allocation statistics there)."""
    if device.type != 'cuda':
        return None
    return torch.cuda.max_memory_allocated(device) / 2 ** 20


def bf16_supported(device: torch.device) -> bool:
    return device.type == 'cuda' and torch.cuda.is_bf16_supported()


def precision_problem(precision: str, device: torch.device) -> Optional[str]:
    """Why training in ``precision`` cannot run on ``device`` (None if it can).

    fp32 runs anywhere. AMP (mmengine's ``AmpOptimWrapper``, what ``tools/train.py --amp``
    selects) needs CUDA; bf16 needs a GPU of compute capability 8.0 or more.
    """
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {PRECISIONS}, got {precision!r}')
    if precision == 'fp32':
        return None
    if device.type != 'cuda':
        return 'AMP training needs CUDA (mmengine\'s AmpOptimWrapper refuses the CPU)'
    if precision == 'bf16' and not bf16_supported(device):
        return 'this GPU has no bfloat16 (compute capability < 8.0): train with fp16 AMP'
    return None


def preferred_amp_precision(device: torch.device) -> Optional[str]:
    """The AMP dtype to train with on ``device``: bf16 where the GPU has it (no loss scaling
    needed, fp32's range), else fp16; None without CUDA."""
    if device.type != 'cuda':
        return None
    return 'bf16' if bf16_supported(device) else 'fp16'


def amp_cfg_changes(precision: str) -> Dict[str, str]:
    """The optim-wrapper settings of an AMP run: ``tools/train.py --amp`` (AmpOptimWrapper,
    dynamic loss scale) plus the autocast dtype; empty for fp32."""
    if precision == 'fp32':
        return {}
    return {'type': 'AmpOptimWrapper', 'loss_scale': 'dynamic', 'dtype': AMP_DTYPES[precision]}


def inference_autocast(precision: str, device: torch.device):
    """Context of an inference call: autocast to bf16, or nothing for fp32."""
    if precision == 'fp32':
        return contextlib.nullcontext()
    if precision != 'bf16':
        raise ValueError(f'inference precision must be fp32 or bf16, got {precision!r}')
    return torch.autocast(device.type, dtype=torch.bfloat16)


def sync_bn_kept(cuda_available: bool, world_size: int) -> bool:
    """Whether a config's ``SyncBN`` layers train as SyncBN.

    Only a distributed run (world size > 1) with CUDA keeps them: mmengine reverts SyncBN
    to BN in a single, non-distributed process, and ``vtseg.mm.runtime.prepare_cpu_distributed``
    turns them into BN in a distributed run without CUDA (torch has no CPU SyncBatchNorm).
    """
    return cuda_available and world_size > 1


def norm_layer_types(model: nn.Module) -> List[str]:
    """Class names of the normalisation layers in ``model`` (sorted, once each)."""
    from torch.nn.modules.batchnorm import _BatchNorm
    return sorted({type(m).__name__ for m in model.modules()
                   if isinstance(m, (_BatchNorm, nn.GroupNorm, nn.LayerNorm))})


# --- settings -------------------------------------------------------------------------------

@dataclass
class CheckSettings:
    """Sizes and counts of one run of the check (:meth:`full` on a GPU, :meth:`tiny` in tests)."""
    batch: int = 8
    crop: int = 512
    warmup_iters: int = 5
    timed_iters: int = 20
    workers: int = 12
    num_images: int = 64
    image_size: Tuple[int, int] = (480, 640)
    infer_shapes: Tuple[Tuple[int, int], ...] = ((512, 512), (800, 1216))
    infer_batches: Tuple[int, ...] = (1, 16)
    infer_warmup: int = 3
    infer_repeats: int = 10
    cls_size: int = 224
    cls_batches: Tuple[int, ...] = (1, 64, 256)
    memory_iters: int = 3
    memory_batch_cap: Optional[int] = None
    memory_crop: Optional[int] = None
    lip_image_size: Tuple[int, int] = (320, 240)
    tiny: bool = False

    @classmethod
    def full(cls) -> 'CheckSettings':
        workers = max(0, min(12, (os.cpu_count() or 1) - 2))
        return cls(workers=workers)

    @classmethod
    def tiny_cpu(cls) -> 'CheckSettings':
        """A few iterations of 64x64 crops, batch 2, one data-loader process: every code path,
        in about a minute on a CPU."""
        return cls(batch=2, crop=64, warmup_iters=1, timed_iters=2, workers=1, num_images=4,
                   image_size=(64, 80), infer_shapes=((64, 64), (64, 96)), infer_batches=(1, 2),
                   infer_warmup=1, infer_repeats=2, cls_size=32, cls_batches=(1, 2), memory_iters=2,
                   memory_batch_cap=1, memory_crop=64, lip_image_size=(64, 48), tiny=True)


class Budget:
    """Wall-clock budget of the whole check, counted from ``start`` (the process start)."""

    def __init__(self, seconds: float, start: Optional[float] = None) -> None:
        self.seconds = seconds
        self.start = time.time() if start is None else start

    def elapsed(self) -> float:
        return time.time() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def allows(self, needed_s: float) -> bool:
        return self.left() >= needed_s


# --- synthetic data -------------------------------------------------------------------------

def write_synthetic_dataset(root: str, layout: str, num_images: int, size: Tuple[int, int],
                            seed: int = 0) -> str:
    """Write ``num_images`` image/label pairs of ``size`` (H, W) in a real data set's layout.

    Each label map is a background class with 4-9 rectangles and ellipses of other classes
    (plus a border of the ignored label where the data set has one); the image paints each
    class in its own colour with mild noise, so that JPEG decoding costs what a photo's does.

    Args:
        root: The data set's ``data_root``.
        layout: A key of :data:`LAYOUTS` (``'coco_stuff164k'``: 171 classes, 255 ignored;
            ``'lip'``: 20 classes).

    Returns:
        ``root``.
    """
    from PIL import Image
    img_dir, ann_dir, suffix, num_classes, ignore = LAYOUTS[layout]
    os.makedirs(osp.join(root, img_dir), exist_ok=True)
    os.makedirs(osp.join(root, ann_dir), exist_ok=True)
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    for n in range(num_images):
        label = np.full((h, w), rng.integers(num_classes), np.uint8)
        for _ in range(rng.integers(4, 10)):
            cls = rng.integers(num_classes)
            cy, cx = rng.integers(h), rng.integers(w)
            ry, rx = rng.integers(h // 10 + 1, h // 3 + 2), rng.integers(w // 10 + 1, w // 3 + 2)
            if rng.random() < 0.5:
                mask = (abs(yy - cy) < ry) & (abs(xx - cx) < rx)
            else:
                mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
            label[mask] = cls
        if ignore is not None:
            label[:max(1, h // 32)] = ignore
        noise = rng.integers(-12, 13, (h, w, 3))
        image = np.clip(palette[label].astype(np.int16) + noise, 0, 255).astype(np.uint8)
        stem = f'{n:012d}'
        Image.fromarray(image).save(osp.join(root, img_dir, stem + '.jpg'), quality=90)
        Image.fromarray(label).save(osp.join(root, ann_dir, stem + suffix))
    return root


# --- training through mmengine's Runner --------------------------------------------------------

def scaled_pipeline(pipeline: Sequence[dict], crop: int, config_crop: int) -> List[dict]:
    """The training pipeline with its crop (and the resize scale that goes with it) scaled
    from ``config_crop`` to ``crop``; the same transforms in the same order."""
    out = []
    factor = crop / config_crop
    for step in pipeline:
        step = copy.deepcopy(dict(step))
        if step.get('type') == 'RandomResize' and 'scale' in step:
            step['scale'] = tuple(max(1, round(s * factor)) for s in step['scale'])
        if step.get('type') == 'RandomCrop':
            step['crop_size'] = (crop, crop)
        out.append(step)
    return out


def train_cfg_options(cfg, data_root: str, batch: int, iters: int, workers: int,
                      crop: Optional[int] = None) -> Dict[str, object]:
    """The overrides of a timing run, as ``--cfg-options`` would give them: data and schedule
    only, plus no pretrained weights (nothing is downloaded).

    Data: ``data_root``, ``batch`` images per GPU, ``workers`` loader processes and, when
    ``crop`` differs from the config's, the pipeline's crop and resize scale and the data
    preprocessor's pad size. Schedule: ``iters`` iterations, no validation or test loop, no
    checkpoint, one log line at the end.
    """
    config_crop = cfg.crop_size[0]
    options: Dict[str, object] = {
        'model.pretrained': None,
        'model.backbone.init_cfg': None,
        'train_dataloader.dataset.data_root': data_root,
        'train_dataloader.batch_size': batch,
        'train_dataloader.num_workers': workers,
        'train_dataloader.persistent_workers': workers > 0,
        'train_cfg.max_iters': iters,
        'train_cfg.val_interval': iters + 1,
        'val_cfg': None, 'val_dataloader': None, 'val_evaluator': None,
        'test_cfg': None, 'test_dataloader': None, 'test_evaluator': None,
        'default_hooks.checkpoint': None,
        'default_hooks.logger.interval': iters,
    }
    if crop is not None and crop != config_crop:
        options['train_dataloader.dataset.pipeline'] = scaled_pipeline(
            cfg.train_dataloader.dataset.pipeline, crop, config_crop)
        options['model.data_preprocessor.size'] = (crop, crop)
    return options


def build_train_cfg(config: str, options: Dict[str, object], precision: str, work_dir: str, name: str):
    """The config of one timing run: file + overrides (vtseg's ``--cfg-options`` checks) + AMP
    as ``tools/train.py --amp`` sets it, with the autocast dtype."""
    from mmengine.config import Config

    from vtseg.mm.cli import merge_cfg_options
    cfg = Config.fromfile(osp.join(REPO, config))
    merge_cfg_options(cfg, options)
    changes = amp_cfg_changes(precision)
    if changes:
        if cfg.optim_wrapper.get('type', 'OptimWrapper') != 'OptimWrapper':
            raise ValueError(f'{config}: AMP needs optim_wrapper.type OptimWrapper, not {cfg.optim_wrapper.type}')
        cfg.optim_wrapper.update(changes)
    cfg.work_dir = work_dir
    cfg.experiment_name = name
    cfg.log_level = 'WARNING'
    return cfg


class StepTimerHook(Hook):
    """Times every training iteration, synchronising CUDA around it, and reads the peak memory.

    ``step_s``: from before the iteration's hooks to after them: the data preprocessor
    (copy to the GPU), forward, backward and optimizer step, without waiting for the data
    loader. ``iter_s``: from the end of the previous iteration, data loading included.
    ``peak_mib``: ``torch.cuda.max_memory_allocated`` over the run (weights, gradients,
    optimizer state, activations), None on CPU.
    """
    priority = 'HIGHEST'  # starts before and stops before the other hooks' iteration work

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.step_s: List[float] = []
        self.iter_s: List[float] = []
        self.peak_mib: Optional[float] = None
        self._start = self._last_end = 0.0

    def before_train(self, runner) -> None:
        synchronize(self.device)
        reset_peak_memory(self.device)
        self._last_end = time.perf_counter()

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        synchronize(self.device)
        end = time.perf_counter()
        self.step_s.append(end - self._start)
        self.iter_s.append(end - self._last_end)
        self._last_end = end

    def after_train(self, runner) -> None:
        self.peak_mib = peak_memory_mib(self.device)


def timing_summary(seconds: Sequence[float], warmup: int, batch: int) -> Dict[str, float]:
    """Median / p90 ms and images/s of the iterations after ``warmup``."""
    from benchmarks.timing import summarize
    timed = list(seconds[warmup:])
    if not timed:
        raise ValueError(f'no timed iterations: {len(seconds)} run, {warmup} of them warm-up')
    out = summarize(timed, batch)
    out.pop('times_ms')
    return out


def train_run(config: str, label: str, precision: str, data_root: str, work_dir: str, device: torch.device,
              batch: int, warmup: int, timed: int, workers: int, crop: Optional[int] = None,
              name: str = 'run') -> Tuple[dict, nn.Module]:
    """Train ``config`` for ``warmup + timed`` iterations through mmengine's Runner.

    Returns:
        ``(result, model)``: the timings (``median_ms`` etc. of the training step, ``iter_*``
        with data loading), ``peak_mem_mib``, the norm layers that ran, the final loss, the
        overrides used, the CUDA memory other objects held before the run
        (``resident_mib_before``) and the data-loader processes still alive after it
        (``workers_left``); and the trained model (the Runner and its data loader are released).
    """
    import multiprocessing

    from mmengine.config import Config
    from mmengine.runner import Runner
    resident = torch.cuda.memory_allocated(device) / 2 ** 20 if device.type == 'cuda' else None
    base = Config.fromfile(osp.join(REPO, config))
    options = train_cfg_options(base, data_root, batch, warmup + timed, workers, crop)
    cfg = build_train_cfg(config, options, precision, work_dir, name)
    runner = Runner.from_cfg(cfg)
    timer = StepTimerHook(device)
    runner.register_hook(timer)
    runner.train()
    loss = runner.message_hub.get_scalar('train/loss').current()
    model = runner.model
    step = timing_summary(timer.step_s, warmup, batch)
    iters = timing_summary(timer.iter_s, warmup, batch)
    result = dict(
        config=config, model=label, precision=precision, batch=batch,
        crop=crop or base.crop_size[0], warmup_iters=warmup, timed_iters=timed,
        median_ms=step['median_ms'], p90_ms=step['p90_ms'], images_per_s=step['images_per_s'],
        iter_median_ms=iters['median_ms'], iter_images_per_s=iters['images_per_s'],
        peak_mem_mib=timer.peak_mib, params_m=sum(p.numel() for p in model.parameters()) / 1e6,
        norm_layers=norm_layer_types(model), final_loss=float(loss),
        cfg_options={k: v for k, v in options.items() if k != 'train_dataloader.dataset.pipeline'},
        pipeline_scaled='train_dataloader.dataset.pipeline' in options)
    del runner
    gc.collect()  # the Runner holds reference cycles: its data loader's workers end with it
    result.update(resident_mib_before=resident, workers_left=len(multiprocessing.active_children()))
    return result, model


# --- inference ------------------------------------------------------------------------------

def count_gmacs(model: nn.Module, inputs: Tuple) -> float:
    """Multiply-adds (billions) of ``model(*inputs)`` as ``tools/get_flops.py`` counts them."""
    from vtseg.utils.complexity import measure
    return measure(model, inputs).gmacs


def time_models(calls: Dict[str, Callable[[], None]], batch: int, warmup: int, repeats: int,
                device: torch.device) -> Dict[str, dict]:
    """Median/p90 ms, images/s and peak memory (CUDA) of each call, the calls interleaved
    (``benchmarks.timing.time_interleaved``: synchronised on CUDA)."""
    from benchmarks.timing import cuda_peak_memory_mib, summarize, time_interleaved
    times = time_interleaved(calls, repeats, warmup, device)
    out = {}
    for name, call in calls.items():
        stats = summarize(times[name], batch)
        stats.pop('times_ms')
        stats['peak_mem_mib'] = cuda_peak_memory_mib(call, device, calls=1) if device.type == 'cuda' else None
        out[name] = stats
    return out


def segmentor_call(model: nn.Module, x: torch.Tensor, precision: str) -> Callable[[], None]:
    """One ``mode='tensor'`` inference (backbone, neck, head; no resizing or arg-max)."""
    def call() -> None:
        with torch.no_grad(), inference_autocast(precision, x.device):
            model(x, None, 'tensor')
    return call


def classifier_call(model: nn.Module, x: torch.Tensor, precision: str) -> Callable[[], None]:
    def call() -> None:
        with torch.no_grad(), inference_autocast(precision, x.device):
            model(x)
    return call


def pair_rows(results: Dict[str, dict], pairs: Sequence[Tuple[str, str]], labels: Dict[str, str],
              common: dict) -> List[dict]:
    """One row per (VT, baseline) pair: both sides' numbers and ``benchmarks.timing.ratios``."""
    from benchmarks.timing import ratios
    rows = []
    for vt, base in pairs:
        if vt in results and base in results:
            rows.append(dict(common, vt=dict(results[vt], model=labels[vt]),
                             baseline=dict(results[base], model=labels[base]),
                             ratio=ratios(results[vt], results[base])))
    return rows


def onnx_cuda_problem(available_providers: Sequence[str]) -> Optional[str]:
    """Why onnxruntime cannot run on the GPU here (None if it can)."""
    if 'CUDAExecutionProvider' not in available_providers:
        return ('onnxruntime has no CUDAExecutionProvider (providers: ' + ', '.join(available_providers)
                + '): the onnxruntime-gpu package is not installed')
    return None


def time_onnx(session, x: np.ndarray, warmup: int, repeats: int) -> Tuple[List[float], List[np.ndarray]]:
    """Seconds per ``session.run`` on ``x`` (host to device and back included) and the last outputs."""
    feeds = {session.get_inputs()[0].name: x}
    outputs = None
    seconds = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        outputs = session.run(None, feeds)
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    return seconds, outputs


def median_ms(seconds: Sequence[float]) -> float:
    return statistics.median(seconds) * 1e3


# --- memory estimate without a GPU ----------------------------------------------------------

def estimate_training_memory_mib(growth_mib: float, measured_batch: int, measured_hw: Tuple[int, int],
                                 params_m: float, batch: int, hw: Tuple[int, int]) -> float:
    """Estimated peak memory of an fp32 SGD-with-momentum training step at ``batch`` x ``hw``,
    from a measured peak memory growth of a training step at ``measured_batch`` x ``measured_hw``.

    The measured growth (``tools/benchmark.py``'s ``segmentor-train``: activations and
    gradients above the weights) minus one weights' worth (the gradients) gives the
    activations per image, scaled linearly in pixels; weights, gradients and the momentum
    buffer are three weights' worth. An estimate: cuDNN workspaces and the CUDA allocator's
    rounding are not in it.
    """
    weights_mib = params_m * 1e6 * 4 / 2 ** 20
    per_image = (growth_mib - weights_mib) / measured_batch
    scale = hw[0] * hw[1] / (measured_hw[0] * measured_hw[1])
    return 3 * weights_mib + per_image * scale * batch


@dataclass
class CheckResult:
    """Everything the check found, written as JSON and markdown after every section."""
    machine: dict
    settings: dict
    install: List[str] = field(default_factory=list)
    plans: dict = field(default_factory=dict)
    train: List[dict] = field(default_factory=list)
    train_pairs: List[dict] = field(default_factory=list)
    inference: List[dict] = field(default_factory=list)
    classifier: List[dict] = field(default_factory=list)
    memory: List[dict] = field(default_factory=list)
    onnx: dict = field(default_factory=dict)
    skipped: List[dict] = field(default_factory=list)
    errors: List[dict] = field(default_factory=list)
    elapsed_s: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


# --- the sections ---------------------------------------------------------------------------

class Section:
    """Runs the check's items: each within the time budget, each failure recorded (with its
    traceback on stderr) while the rest go on, the results written after every item."""

    def __init__(self, result: CheckResult, budget: Budget, write: Callable[[], None],
                 log: Callable[[str], None] = print) -> None:
        self.result = result
        self.budget = budget
        self.write = write
        self.log = log

    def skip(self, what: str, reason: str) -> None:
        self.result.skipped.append(dict(what=what, reason=reason))
        self.log(f'[{self.budget.elapsed():5.0f} s] skipped {what}: {reason}')

    def attempt(self, what: str, fn: Callable[[], object], needed_s: float = 0.0):
        """``fn()``, or None when the budget has no ``needed_s`` left or ``fn`` fails."""
        import traceback

        from vtseg.utils.errors import one_line
        if not self.budget.allows(needed_s):
            self.skip(what, f'time budget: {self.budget.left():.0f} s left of {self.budget.seconds:.0f}, '
                            f'about {needed_s:.0f} s needed')
            return None
        start = time.time()
        try:
            value = fn()
        except Exception as err:  # one failed item must not cost the others their answer
            traceback.print_exc()
            self.result.errors.append(dict(what=what, error=f'{type(err).__name__}: {one_line(err)}'))
            self.log(f'[{self.budget.elapsed():5.0f} s] FAILED {what}: {type(err).__name__}: {one_line(err, 200)}')
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            value = None
        else:
            self.log(f'[{self.budget.elapsed():5.0f} s] {what} ({time.time() - start:.1f} s)')
        self.result.elapsed_s = self.budget.elapsed()
        self.write()
        return value


def _labels(configs: Dict[str, Tuple[str, str]]) -> Dict[str, str]:
    return {key: label for key, (_, label) in configs.items()}


def training_section(section: Section, settings: CheckSettings, device: torch.device, data_root: str,
                     work_root: str, needed_s: float = 0.0) -> Dict[str, nn.Module]:
    """Train each COCO-Stuff config in each precision; return the fp32 models (for inference),
    moved to the CPU."""
    result = section.result
    models: Dict[str, nn.Module] = {}
    gmacs: Dict[str, float] = {}
    for precision in PRECISIONS:
        problem = precision_problem(precision, device)
        if problem:
            section.skip(f'training {precision}', problem)
            continue
        for key, (config, label) in COCO_CONFIGS.items():
            out = section.attempt(
                f'training {label} {precision}',
                lambda: train_run(config, label, precision, data_root, osp.join(work_root, f'{key}-{precision}'),
                                  device, settings.batch, settings.warmup_iters, settings.timed_iters,
                                  settings.workers, settings.crop, name=f'{key}-{precision}'),
                needed_s)
            if out is None:
                continue
            row, model = out
            model.zero_grad(set_to_none=True)
            if key not in gmacs:
                x = torch.zeros(1, 3, row['crop'], row['crop'], device=device)
                gmacs[key] = count_gmacs(model, (x, None, 'tensor'))
            row.update(key=key, gmacs=gmacs[key])
            result.train.append(row)
            section.log(f'    {label} {precision}: step {row["median_ms"]:.1f} ms, {row["images_per_s"]:.1f} img/s, '
                        f'with data {row["iter_median_ms"]:.1f} ms, peak {_f(row["peak_mem_mib"], 0)} MiB')
            if precision == 'fp32':
                models[key] = model.cpu()  # off the GPU: later runs' peak memory is theirs alone
            else:
                del model
        rows = {r['key']: r for r in result.train if r['precision'] == precision}
        result.train_pairs += pair_rows(rows, SEGMENTOR_PAIRS, _labels(COCO_CONFIGS),
                                        dict(precision=precision, batch=settings.batch, crop=settings.crop))
        section.write()
    return models


def inference_precision_problem(precision: str, device: torch.device) -> Optional[str]:
    if precision == 'bf16' and device.type == 'cuda' and not bf16_supported(device):
        return 'this GPU has no bfloat16 (compute capability < 8.0)'
    return None


def inference_section(section: Section, settings: CheckSettings, device: torch.device,
                      models: Dict[str, nn.Module], needed_s: float = 0.0) -> None:
    """``mode='tensor'`` inference of the trained models at each shape, batch and precision."""
    keys = [k for k in COCO_CONFIGS if k in models]
    if len(keys) < 2:
        section.skip('segmentor inference', 'needs the models of the fp32 training runs, which did not all run')
        return
    for key in keys:
        models[key].to(device).eval()
    gen = torch.Generator().manual_seed(0)
    for h, w in settings.infer_shapes:
        gmacs = section.attempt(
            f'counting GMACs at {h}x{w}',
            lambda: {k: count_gmacs(models[k], (torch.zeros(1, 3, h, w, device=device), None, 'tensor'))
                     for k in keys}, needed_s / 2) or {}
        for batch in settings.infer_batches:
            for precision in ('fp32', 'bf16'):
                what = f'inference {h}x{w} batch {batch} {precision}'
                problem = inference_precision_problem(precision, device)
                if problem:
                    section.skip(what, problem)
                    continue
                x = torch.randn(batch, 3, h, w, generator=gen).to(device)
                stats = section.attempt(what, lambda: time_models(
                    {k: segmentor_call(models[k], x, precision) for k in keys}, batch, settings.infer_warmup,
                    settings.infer_repeats, device), needed_s)
                if stats is None:
                    continue
                for k in keys:
                    stats[k].update(gmacs=gmacs.get(k), params_m=sum(p.numel() for p in models[k].parameters()) / 1e6)
                section.result.inference += pair_rows(stats, SEGMENTOR_PAIRS, _labels(COCO_CONFIGS),
                                                      dict(shape=[h, w], batch=batch, precision=precision))
                section.write()
    for key in keys:
        models[key].cpu()


def classifier_section(section: Section, settings: CheckSettings, device: torch.device,
                       needed_s: float = 0.0) -> None:
    """VT-ResNet-50 vs torchvision's ResNet-50 classifiers, inference."""
    import torchvision

    from vtseg.models import vt_resnet50
    labels = {'vt-resnet50': 'VT-ResNet-50', 'resnet50': 'ResNet-50'}
    torch.manual_seed(0)
    models = {'vt-resnet50': vt_resnet50().to(device).eval(),
              'resnet50': torchvision.models.resnet50().to(device).eval()}
    s = settings.cls_size
    gmacs = section.attempt(f'counting classifier GMACs at {s}x{s}', lambda: {
        k: count_gmacs(m, (torch.zeros(1, 3, s, s, device=device),)) for k, m in models.items()}) or {}
    gen = torch.Generator().manual_seed(0)
    for batch in settings.cls_batches:
        for precision in ('fp32', 'bf16'):
            what = f'classifier {s}x{s} batch {batch} {precision}'
            problem = inference_precision_problem(precision, device)
            if problem:
                section.skip(what, problem)
                continue
            x = torch.randn(batch, 3, s, s, generator=gen).to(device)
            stats = section.attempt(what, lambda: time_models(
                {k: classifier_call(m, x, precision) for k, m in models.items()}, batch, settings.infer_warmup,
                settings.infer_repeats, device), needed_s)
            if stats is None:
                continue
            for k, m in models.items():
                stats[k].update(gmacs=gmacs.get(k), params_m=sum(p.numel() for p in m.parameters()) / 1e6)
            section.result.classifier += pair_rows(stats, [('vt-resnet50', 'resnet50')], labels,
                                                   dict(shape=[s, s], batch=batch, precision=precision))
            section.write()


def memory_section(section: Section, settings: CheckSettings, device: torch.device, coco_root: str,
                   lip_root: str, work_root: str, needed_s: float = 0.0) -> None:
    """Peak memory of fp32 training at the paper's images per GPU (COCO-Stuff 4, LIP 12)."""
    from benchmarks.timing import ratios
    for dataset, configs, root in (('coco_stuff', COCO_CONFIGS, coco_root), ('lip', LIP_CONFIGS, lip_root)):
        batch, crop = PAPER_BATCH[dataset]
        batch = min(batch, settings.memory_batch_cap or batch)
        crop = settings.memory_crop or crop
        rows = {}
        for key, (config, label) in configs.items():
            out = section.attempt(
                f'memory {label} {dataset} batch {batch} {crop}x{crop}',
                lambda: train_run(config, label, 'fp32', root, osp.join(work_root, f'memory-{key}'), device, batch,
                                  1, settings.memory_iters - 1, settings.workers, crop, name=f'memory-{key}'),
                needed_s)
            if out is None:
                continue
            row, model = out
            del model
            row.update(key=key, dataset=dataset)
            rows[key] = row
            section.result.memory.append(row)
        pairs = [(f'{prefix}vt-fpn_r50', f'{prefix}fpn_r50') for prefix in ('', 'lip_')] + \
                [(f'{prefix}vt-fpn_vt-r50', f'{prefix}fpn_r50') for prefix in ('', 'lip_')]
        for vt, base in pairs:
            if vt in rows and base in rows:
                rows[vt]['ratio_to_baseline'] = ratios(rows[vt], rows[base])
        section.write()


def onnx_section(section: Section, settings: CheckSettings, device: torch.device, models: Dict[str, nn.Module],
                 work_root: str) -> None:
    """Export VT-FPN R-50 (image -> logits) to ONNX, check it on onnxruntime's CPU provider,
    time it on the CUDA provider where onnxruntime has one."""
    from vtseg.utils.export import DEFAULT_OPSET, SegmentorLogits, export_onnx, max_abs_diff, onnx_session, run_onnx
    if 'vt-fpn_r50' not in models:
        section.skip('onnx', 'needs the VT-FPN R-50 model of the fp32 training run, which did not run')
        return
    s = settings.crop
    # eval() on the wrapper: export_onnx restores the mode it finds, and BN must use its running statistics
    cpu_model = SegmentorLogits(copy.deepcopy(models['vt-fpn_r50']).cpu().float()).eval()
    x = torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(0))
    path = osp.join(work_root, 'vt-fpn_r50.onnx')
    onnx = section.result.onnx
    onnx.update(model='VT-FPN R-50', input=[1, 3, s, s], opset=DEFAULT_OPSET)

    def export_and_check() -> None:
        export_onnx(cpu_model, (x,), path)
        with torch.no_grad():
            ref = cpu_model(x)
        diff, scale = max_abs_diff(ref, run_onnx(onnx_session(path), [x]))
        onnx.update(file_mib=os.path.getsize(path) / 2 ** 20,
                    cpu=dict(max_abs_diff=diff, max_abs=scale, ok=diff <= 1e-4 * max(1.0, scale)))
    section.attempt('onnx export and onnxruntime CPU check', export_and_check)
    if not osp.isfile(path):
        return
    import onnxruntime as ort
    problem = onnx_cuda_problem(ort.get_available_providers()) if device.type == 'cuda' else \
        'the check runs on the CPU'
    if problem:
        onnx['cuda'] = dict(skipped=problem)
        section.skip('onnxruntime CUDA', problem)
        return

    def run_cuda() -> None:
        session = ort.InferenceSession(path, providers=['CUDAExecutionProvider'])
        if session.get_providers()[0] != 'CUDAExecutionProvider':
            raise RuntimeError(f'onnxruntime fell back to {session.get_providers()}')
        seconds, outputs = time_onnx(session, x.numpy(), settings.infer_warmup, settings.infer_repeats)
        gpu_model = SegmentorLogits(models['vt-fpn_r50']).to(device).eval()
        xd = x.to(device)
        torch_stats = time_models({'torch': lambda: gpu_model(xd)}, 1, settings.infer_warmup,
                                  settings.infer_repeats, device)['torch']
        with torch.no_grad():
            diff, scale = max_abs_diff(gpu_model(xd), outputs)
        onnx['cuda'] = dict(median_ms=median_ms(seconds), torch_median_ms=torch_stats['median_ms'],
                            max_abs_diff=diff, max_abs=scale, note='onnxruntime times include the copies '
                            'of input and logits between host and GPU')
    with torch.no_grad():
        section.attempt('onnxruntime CUDA timing', run_cuda)
    models['vt-fpn_r50'].cpu()


# --- reports --------------------------------------------------------------------------------

def machine_info(device: torch.device) -> dict:
    import platform
    info = dict(device=device.type, python=platform.python_version(), torch=torch.__version__,
                cuda=torch.version.cuda, cpus=os.cpu_count(), numpy=np.__version__)
    for name in ('mmengine', 'mmcv', 'mmseg'):
        try:
            info[name] = __import__(name).__version__
        except Exception as err:  # reported, not fatal: the sections say what failed
            info[name] = f'not importable ({type(err).__name__})'
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, capability='%d.%d' % (props.major, props.minor),
                    memory_gib=props.total_memory / 2 ** 30, bf16=bf16_supported(device),
                    cudnn=torch.backends.cudnn.version())
    else:
        info.update(device_name=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return info


def _f(value, digits: int = 1) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def _pair_table(rows: Sequence[dict], head: List[str], keys: Callable[[dict], List[str]]) -> List[str]:
    """Markdown rows: VT, baseline and the ratio line of every pair row."""
    lines = ['| ' + ' | '.join(head + ['model', 'median ms', 'p90 ms', 'img/s', 'peak MiB', 'GMACs/img']) + ' |',
             '|' + '---|' * (len(head) + 1) + '---:|' * 5]
    for row in rows:
        for side in ('vt', 'baseline'):
            s = row[side]
            cells = [s['model'], _f(s['median_ms'], 2), _f(s['p90_ms'], 2), _f(s['images_per_s']),
                     _f(s.get('peak_mem_mib'), 0), _f(s.get('gmacs'), 2)]
            lines.append('| ' + ' | '.join(keys(row) + cells) + ' |')
        r = row['ratio']
        cells = ['**VT / baseline**', f"**{_f(r.get('median_ms'), 2)}**", _f(r.get('p90_ms'), 2),
                 _f(r.get('images_per_s'), 2), _f(r.get('peak_mem_mib'), 2), _f(r.get('gmacs'), 2)]
        lines.append('| ' + ' | '.join(keys(row) + cells) + ' |')
    return lines


def markdown(result: dict) -> str:
    """The check's result as markdown: machine, training, inference, classifiers, memory, ONNX."""
    m, s = result['machine'], result['settings']
    lines = [f"# GPU check: {m.get('device_name')} ({m['device']})", '',
             f"torch {m['torch']} (CUDA {m.get('cuda')}), Python {m['python']}, numpy {m['numpy']}, "
             f"mmengine {m.get('mmengine')}, mmcv {m.get('mmcv')}, mmseg {m.get('mmseg')}; {m['cpus']} CPUs"
             + (f"; compute capability {m['capability']}, {m['memory_gib']:.0f} GiB" if 'capability' in m else '')
             + f"; {result['elapsed_s']:.0f} s in all" + (' (tiny sizes: a test run)' if s.get('tiny') else '') + '.',
             '']
    if result['install']:
        lines += ['Install: ' + '; '.join(result['install']) + '.', '']
    if result['train']:
        lines += [f"## Training (mmengine Runner, real configs, synthetic COCO-Stuff, batch {s['batch']}, "
                  f"{s['crop']}x{s['crop']} crops; median of {s['timed_iters']} iterations after "
                  f"{s['warmup_iters']})", '',
                  '"step": the training step alone (data preprocessor, forward, backward, optimizer), CUDA '
                  'synchronised around it; "with data": iteration to iteration, data loading included; '
                  'peak: `torch.cuda.max_memory_allocated` over the run (weights, gradients, momentum, '
                  'activations).', '',
                  '| model | precision | step ms | p90 ms | img/s | with data ms | peak MiB | GMACs/img | norm | '
                  'final loss |', '|---|---|---:|---:|---:|---:|---:|---:|---|---:|']
        for r in result['train']:
            lines.append(f"| {r['model']} | {r['precision']} | {_f(r['median_ms'], 2)} | {_f(r['p90_ms'], 2)} "
                         f"| {_f(r['images_per_s'])} | {_f(r['iter_median_ms'], 2)} | {_f(r['peak_mem_mib'], 0)} "
                         f"| {_f(r.get('gmacs'), 2)} | {', '.join(r['norm_layers'])} | {_f(r['final_loss'], 3)} |")
        if result['train_pairs']:
            lines += ['', '| pair | precision | step ms ratio | img/s ratio | peak memory ratio | GMACs ratio |',
                      '|---|---|---:|---:|---:|---:|']
            for p in result['train_pairs']:
                r = p['ratio']
                lines.append(f"| {p['vt']['model']} / {p['baseline']['model']} | {p['precision']} "
                             f"| **{_f(r.get('median_ms'), 2)}** | {_f(r.get('images_per_s'), 2)} "
                             f"| {_f(r.get('peak_mem_mib'), 2)} | {_f(r.get('gmacs'), 2)} |")
        lines.append('')
    if result['inference']:
        lines += ["## Segmentor inference (`mode='tensor'`, interleaved, CUDA synchronised)", '']
        lines += _pair_table(result['inference'], ['input', 'batch', 'precision'],
                             lambda r: [f"{r['shape'][0]}x{r['shape'][1]}", str(r['batch']), r['precision']])
        lines.append('')
    if result['classifier']:
        lines += ['## Classifier inference: VT-ResNet-50 vs ResNet-50', '']
        lines += _pair_table(result['classifier'], ['input', 'batch', 'precision'],
                             lambda r: [f"{r['shape'][0]}x{r['shape'][1]}", str(r['batch']), r['precision']])
        lines.append('')
    if result['memory']:
        lines += ["## Training memory per GPU at the paper's batch sizes (fp32)", '',
                  '| data set | model | images per GPU | crop | peak MiB | VT / baseline | step ms |',
                  '|---|---|---:|---|---:|---:|---:|']
        for r in result['memory']:
            ratio = r.get('ratio_to_baseline', {}).get('peak_mem_mib')
            lines.append(f"| {r['dataset']} | {r['model']} | {r['batch']} | {r['crop']}x{r['crop']} "
                         f"| {_f(r['peak_mem_mib'], 0)} | {_f(ratio, 2)} | {_f(r['median_ms'], 1)} |")
        lines.append('')
    onnx = result['onnx']
    if onnx:
        lines += ['## ONNX', '']
        cpu = onnx.get('cpu')
        if cpu:
            lines.append(f"{onnx['model']} {'x'.join(map(str, onnx['input']))}, opset {onnx['opset']}, "
                         f"{onnx['file_mib']:.1f} MiB: onnxruntime CPU vs torch max |diff| {cpu['max_abs_diff']:.2e} "
                         f"(outputs up to {cpu['max_abs']:.2f}): {'ok' if cpu['ok'] else 'TOO LARGE'}.")
        cuda = onnx.get('cuda', {})
        if 'skipped' in cuda:
            lines.append(f"onnxruntime on the GPU: skipped ({cuda['skipped']}).")
        elif cuda:
            lines.append(f"onnxruntime CUDA: {cuda['median_ms']:.2f} ms median (torch {cuda['torch_median_ms']:.2f} "
                         f"ms), max |diff| {cuda['max_abs_diff']:.2e}; {cuda['note']}.")
        lines.append('')
    plans = result['plans']
    if plans:
        lines += ['## Precision and norm layers', '',
                  f"- AMP dtype for this device: {plans.get('amp_precision') or 'none (no CUDA)'} "
                  f"(bf16 where the GPU has it, else fp16).",
                  f"- SyncBN: configs ask for it; in this single process it ran as "
                  f"{', '.join(plans.get('norm_layers_ran', [])) or '-'} (mmengine reverts it without "
                  f"distribution); kept as SyncBN with CUDA and 8 processes: {plans.get('sync_bn_kept_8_gpus')}.", '']
    if result['skipped']:
        lines += ['## Skipped', ''] + [f"- {x['what']}: {x['reason']}" for x in result['skipped']] + ['']
    if result['errors']:
        lines += ['## Errors', ''] + [f"- {x['what']}: {x['error']}" for x in result['errors']] + ['']
    return '\n'.join(lines)


def memory_estimate_table(cpu_result: dict, pair: str = 'segmentor-train') -> str:
    """Markdown: estimated per-GPU memory of fp32 training at the paper's batch sizes, from a
    ``tools/benchmark.py`` result's training-step pair (see :func:`estimate_training_memory_mib`)."""
    rows = [p for p in cpu_result['pairs'] if p['name'] == pair]
    if not rows:
        raise ValueError(f'the benchmark result has no {pair!r} pair (run tools/benchmark.py --pairs {pair})')
    p = rows[0]
    n, _, h, w = (int(v) for v in p['input'].split('x'))
    lines = ['| model | COCO-Stuff: 4 images of 512x512 per GPU | LIP: 12 images of 473x473 per GPU |',
             '|---|---:|---:|']
    for side in ('vt', 'baseline'):
        s = p[side]
        cells = []
        for dataset in ('coco_stuff', 'lip'):
            batch, crop = PAPER_BATCH[dataset]
            mib = estimate_training_memory_mib(s['peak_mem_mib'], n, (h, w), s['params_m'], batch, (crop, crop))
            cells.append(f'~{mib / 1024:.1f} GiB (estimate)')
        lines.append(f"| {s['model']} | {cells[0]} | {cells[1]} |")
    return '\n'.join(lines)

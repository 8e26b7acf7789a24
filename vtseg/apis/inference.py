"""Load a segmentor from (config, checkpoint, device) and predict class-id maps.

:class:`SegInferencer` is mmseg's :class:`~mmseg.apis.MMSegInferencer` with
what a command-line tool on real folders needs on top:

- bad setup is an :class:`InferenceSetupError` with a one-line message: a
  missing or unreadable config or checkpoint, an unknown or absent device, and a
  checkpoint of another model (:class:`CheckpointMismatchError`, found by
  comparing every weight name and shape with the model the config builds,
  where mmengine would load it partially with a logged warning);
- classes and palette come from the checkpoint's ``dataset_meta``, else from the
  config's test data set, else generic names (never Cityscapes' by default);
- :meth:`SegInferencer.predict` takes decoded images of any sizes, batches
  those of equal size, and switches the model to sliding-window inference
  (``test_cfg.mode='slide'``, crop and stride from the config's crop size) for
  images much larger than the crop, or always when asked;
- predictions are mmseg's, computed in bounded memory (:mod:`.slide`): windows
  run in batches with a progress callback, logits are summed in a band along the
  image and resized to the original size a few rows at a time, so a 24-megapixel
  photo never needs a full-size tensor of class scores.

The inherited ``__call__`` still works as in mmseg.
"""
import copy
import os.path as osp
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model

from mmseg.apis import MMSegInferencer
from mmseg.registry import DATASETS

import vtseg  # noqa: F401  (registers vtseg's modules; mmengine checkpoints load with weights_only)
from vtseg.mm.cli import merge_cfg_options
from vtseg.utils.errors import checkpoint_error_reason, one_line
from .slide import predict_sliding, predict_whole, supports_streaming

__all__ = [
    'InferenceSetupError', 'CheckpointMismatchError', 'check_model_files', 'resolve_device',
    'read_checkpoint', 'checkpoint_mismatch', 'check_checkpoint_fits', 'check_config_checkpoint',
    'SegInferencer'
]

# Slide when an image side exceeds this many crop sides (and the config has a crop size).
DEFAULT_SLIDE_RATIO = 2.0
_MAX_PNG_CLASSES = 256


class InferenceSetupError(RuntimeError):
    """Inference cannot start (bad config, checkpoint, device or input); the message is one line."""


class CheckpointMismatchError(InferenceSetupError):
    """The checkpoint's weights do not fit the model that the config builds."""


def _is_url(path: str) -> bool:
    return bool(re.match(r'^[a-z][a-z0-9+.-]*://', path))


def check_model_files(config: Union[str, Path, Config], checkpoint: str) -> None:
    """Fail early, in one line, when the config or checkpoint file does not exist.

    Args:
        config: Config file (a :class:`~mmengine.config.Config` passes unchecked).
        checkpoint: Checkpoint file or URL (URLs pass unchecked).

    Raises:
        InferenceSetupError: A file is missing.
    """
    if isinstance(config, (str, Path)) and not osp.isfile(config):
        raise InferenceSetupError(f'config {config} not found: pass the config file the model '
                                  'was trained with')
    if not _is_url(str(checkpoint)) and not osp.isfile(checkpoint):
        raise InferenceSetupError(f'checkpoint {checkpoint} not found: pass a .pth file saved by '
                                  'training (e.g. work_dirs/<config>/iter_1500.pth)')


def resolve_device(device: Optional[str]) -> str:
    """The device to run on: ``device`` checked, or CUDA when available, else CPU.

    Args:
        device: ``'cpu'``, ``'cuda'``, ``'cuda:N'``, ``'mps'`` (where torch has it) or None
            (choose).

    Raises:
        InferenceSetupError: Unknown or unsupported device string (``'meta'``, ``'tpu'``),
            or a device asked for that this machine does not have.
    """
    if device is None:
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    usable = 'use cpu or cuda[:N]'
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise InferenceSetupError(f'unknown device {device!r} ({one_line(err, 120)}): {usable}') from err
    if parsed.type == 'cuda':
        if not torch.cuda.is_available():
            raise InferenceSetupError(f'device {device!r} asked for, but torch sees no CUDA GPU: '
                                      'use --device cpu')
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise InferenceSetupError(f'device {device!r} asked for, but there are only '
                                      f'{torch.cuda.device_count()} CUDA GPUs')
    elif parsed.type == 'mps':
        if not torch.backends.mps.is_available():
            raise InferenceSetupError(f'device {device!r} asked for, but torch has no MPS (Apple '
                                      f'GPU) backend here: {usable}')
    elif parsed.type != 'cpu':
        raise InferenceSetupError(f'device {device!r} cannot run inference here: {usable}')
    return device


def read_checkpoint(checkpoint: str) -> Any:
    """Load a checkpoint file (or URL) on the CPU with torch's ``weights_only`` loader.

    Raises:
        InferenceSetupError: It cannot be read, or holds pickled code or objects other than
            weights (never executed); the message gives torch's reason without its advice
            to load the file unsafely.
    """
    try:
        return _load_checkpoint(checkpoint, map_location='cpu', logger='silent')
    except Exception as err:
        raise InferenceSetupError(f'cannot read checkpoint {checkpoint}: '
                                  f'{checkpoint_error_reason(err, 300)}') from err


def checkpoint_mismatch(model_state: Mapping[str, torch.Tensor],
                        checkpoint_state: Mapping[str, Any],
                        max_names: int = 3) -> str:
    """Describe how a checkpoint's weights differ from a model's, '' when they fit.

    Args:
        model_state: The model's ``state_dict()``.
        checkpoint_state: The checkpoint's state dict (``module.`` prefixes removed).
        max_names: Weight names quoted per kind of difference.

    Returns:
        One line naming the missing, unexpected and differently shaped weights.
    """
    # BatchNorm fills num_batches_tracked itself when loading checkpoints older than it.
    missing = [k for k in model_state
               if k not in checkpoint_state and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in checkpoint_state if k not in model_state]
    reshaped = []
    for key, value in model_state.items():
        if key in checkpoint_state:
            saved_shape = tuple(getattr(checkpoint_state[key], 'shape', ('not a tensor', )))
            if saved_shape != tuple(value.shape):
                reshaped.append(f'{key}: {saved_shape} in the checkpoint, {tuple(value.shape)} '
                                'in the model')

    def listed(names: List[str]) -> str:
        more = f', ... {len(names) - max_names} more' if len(names) > max_names else ''
        return ', '.join(names[:max_names]) + more

    problems = []
    if missing:
        problems.append(f'{len(missing)} model weights are not in it ({listed(missing)})')
    if unexpected:
        problems.append(f'{len(unexpected)} of its weights are not in the model '
                        f'({listed(unexpected)})')
    if reshaped:
        problems.append(f'{len(reshaped)} weights differ in shape ({listed(reshaped)})')
    return '; '.join(problems)


def check_checkpoint_fits(model: nn.Module, checkpoint: Any, checkpoint_name: str,
                          config_name: str) -> Dict[str, Any]:
    """The checkpoint's state dict, after checking that it fits ``model`` exactly.

    Args:
        model: The model the config builds.
        checkpoint: What :func:`read_checkpoint` returned.
        checkpoint_name: The checkpoint's path, for the message.
        config_name: The config's path, for the message.

    Returns:
        The state dict, ``module.`` prefixes removed.

    Raises:
        InferenceSetupError: The checkpoint holds no state dict.
        CheckpointMismatchError: Names or shapes differ (one line naming some of them).
    """
    if not isinstance(checkpoint, Mapping):
        raise InferenceSetupError(f'checkpoint {checkpoint_name} holds no state dict '
                                  f'(it holds a {type(checkpoint).__name__})')
    state = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state, Mapping) or not state:
        raise InferenceSetupError(f'checkpoint {checkpoint_name} holds no state dict')
    state = {re.sub(r'^module\.', '', key): value for key, value in state.items()}
    problem = checkpoint_mismatch(model.state_dict(), state)
    if problem:
        raise CheckpointMismatchError(
            f'checkpoint {checkpoint_name} does not fit config {config_name}: '
            f'{problem}; pass the config it was trained with')
    return state


def check_config_checkpoint(cfg: Config, checkpoint: str, config_name: str) -> None:
    """Check, before a run, that ``checkpoint`` holds the weights of the model ``cfg`` builds.

    Builds the model on the CPU (no pretrained weights are fetched: building does not
    initialise) and compares every weight name and shape, as :class:`SegInferencer` does.

    Raises:
        InferenceSetupError: The checkpoint cannot be read or the model cannot be built;
            :class:`CheckpointMismatchError` when the weights do not fit.
    """
    loaded = read_checkpoint(checkpoint)
    model_cfg = copy.deepcopy(cfg.model)
    try:
        with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmseg')):
            model = MODELS.build(model_cfg)
    except Exception as err:
        raise InferenceSetupError(f'cannot build the model of config {config_name}: '
                                  f'{one_line(err)}') from err
    check_checkpoint_fits(model, loaded, checkpoint, config_name)


def _generic_palette(num_colours: int) -> List[List[int]]:
    """Fixed pseudo-random RGB colours (the same every run)."""
    rng = np.random.RandomState(42)
    return rng.randint(0, 256, size=(num_colours, 3)).tolist()


def _config_dataset_meta(cfg: Config) -> Optional[dict]:
    """Classes and palette of the config's test data set (its ``metainfo`` or class METAINFO)."""
    dataset_cfg = cfg.get('test_dataloader', {}).get('dataset', {})
    meta = dict(dataset_cfg.get('metainfo') or {})
    if 'classes' not in meta:
        try:
            dataset_cls = DATASETS.get(dataset_cfg.get('type', ''))
        except Exception:  # an unknown or unimportable data set type: no classes from the config
            dataset_cls = None
        meta = {**dict(getattr(dataset_cls, 'METAINFO', {}) or {}), **meta}
    return meta if meta.get('classes') else None


class SegInferencer(MMSegInferencer):
    """mmseg's inferencer with checked setup, decoded-image batching and sliding windows.

    Args:
        config: Config file or :class:`~mmengine.config.Config`.
        checkpoint: Checkpoint file (or URL) saved by training this config.
        device: ``'cpu'``, ``'cuda'``, ``'cuda:N'``; None picks CUDA when available.
        cfg_options: Overrides merged into the config (as ``--cfg-options`` does).
        slide_ratio: In automatic mode, slide when an image side exceeds this many
            crop sides.

    Attributes:
        classes: Name per class id.
        palette: RGB colour per class id.
        meta_source: Where classes and palette came from: ``'checkpoint'``, ``'config'``
            or ``'generic'``.
        config_slides: Whether the config itself asks for sliding windows.
        slide_test_cfg: The model's ``test_cfg`` for sliding windows, None if the config
            has no crop size.

    Raises:
        InferenceSetupError: Missing or unreadable files, unknown device, a model that
            cannot be built; :class:`CheckpointMismatchError` for a checkpoint of another
            model.

    Example:
        >>> inferencer = SegInferencer('configs/vtshapes/vt-fpn_r18_1xb8-1.5k_vtshapes-96x96.py',
        ...                            'work_dirs/vtshapes/iter_1500.pth', device='cpu')
        >>> label_maps = inferencer.predict([load_image('scene.jpg')])  # [(H, W) uint8]
    """

    def __init__(self,
                 config: Union[str, Path, Config],
                 checkpoint: str,
                 device: Optional[str] = None,
                 cfg_options: Optional[dict] = None,
                 slide_ratio: float = DEFAULT_SLIDE_RATIO) -> None:
        check_model_files(config, checkpoint)
        self.device = resolve_device(device)
        self.config_name = str(config) if isinstance(config, (str, Path)) else '<Config object>'
        self.checkpoint_name = str(checkpoint)
        if isinstance(config, Config):
            cfg = copy.deepcopy(config)
        else:
            try:
                cfg = Config.fromfile(str(config))
            except Exception as err:
                raise InferenceSetupError(f'cannot load config {config}: {one_line(err)}') from err
        try:
            merge_cfg_options(cfg, cfg_options)
        except ValueError as err:
            raise InferenceSetupError(str(err)) from err
        if not isinstance(cfg.get('model'), Mapping):
            raise InferenceSetupError(f'config {self.config_name} defines no model (a dict '
                                      '`model = dict(type=...)`)')
        self.slide_ratio = slide_ratio
        self.meta_source = 'generic'
        super().__init__(model=cfg, weights=checkpoint, device=self.device,
                         scope=cfg.get('default_scope', 'mmseg'))
        self.classes: Tuple[str, ...] = tuple(self.model.dataset_meta['classes'])
        self.palette: List[List[int]] = [list(c) for c in self.model.dataset_meta['palette']]
        test_cfg = self.model.test_cfg or ConfigDict(mode='whole')
        self.whole_test_cfg = (ConfigDict(mode='whole') if test_cfg.get('mode') == 'slide'
                               else copy.deepcopy(test_cfg))
        self.config_slides = test_cfg.get('mode') == 'slide'
        self.slide_test_cfg = self._slide_test_cfg(self.cfg, test_cfg)

    # --- construction (overrides of mmengine's BaseInferencer steps) ---------------------------

    def _init_model(self, cfg: Config, weights: Optional[str], device: str = 'cpu') -> nn.Module:
        """Read the checkpoint, build the model, check the fit, then load (all one-line errors)."""
        checkpoint = read_checkpoint(weights)
        # Weights come from the checkpoint: never fetch ImageNet-pretrained ones.
        if cfg.model.get('pretrained') is not None:
            del cfg.model.pretrained
        try:
            model = MODELS.build(cfg.model)
        except Exception as err:
            raise InferenceSetupError(f'cannot build the model of config {self.config_name}: '
                                      f'{one_line(err)}') from err
        model.cfg = cfg
        self._load_weights_to_model(model, checkpoint, cfg)
        model.to(device)
        model.eval()
        return model

    def _load_weights_to_model(self, model: nn.Module, checkpoint: Optional[dict],
                               cfg: Optional[Config]) -> None:
        """Load the weights strictly, after checking that every name and shape fits."""
        check_checkpoint_fits(model, checkpoint, self.checkpoint_name, self.config_name)
        _load_checkpoint_to_model(model, checkpoint, strict=True)
        model.dataset_meta = self._dataset_meta(model, checkpoint, cfg)

    def _dataset_meta(self, model: nn.Module, checkpoint: Mapping, cfg: Config) -> Dict[str, list]:
        """Classes and palette covering every id the model predicts."""
        saved = checkpoint.get('meta') or {}
        meta = None
        if isinstance(saved, Mapping) and (saved.get('dataset_meta') or {}).get('classes'):
            meta, self.meta_source = dict(saved['dataset_meta']), 'checkpoint'
        elif isinstance(saved, Mapping) and saved.get('CLASSES'):  # mmseg 0.x checkpoints
            meta = dict(classes=saved['CLASSES'], palette=saved.get('PALETTE'))
            self.meta_source = 'checkpoint'
        else:
            meta = _config_dataset_meta(cfg)
            self.meta_source = 'config' if meta else 'generic'
        classes = list((meta or {}).get('classes') or [])
        head = getattr(model, 'decode_head', None)
        num_classes = max(len(classes), int(getattr(head, 'num_classes', 0) or 0))
        if num_classes > _MAX_PNG_CLASSES:
            raise InferenceSetupError(f'the model predicts {num_classes} classes; palette PNGs '
                                      f'hold at most {_MAX_PNG_CLASSES}')
        classes += [f'class {i}' for i in range(len(classes), num_classes)]
        palette = [list(map(int, c)) for c in ((meta or {}).get('palette') or [])][:num_classes]
        palette += _generic_palette(num_classes)[len(palette):]
        return dict(classes=classes, palette=palette)

    def _init_pipeline(self, cfg: Config) -> Any:
        try:
            return super()._init_pipeline(cfg)
        except Exception as err:
            raise InferenceSetupError(
                f'config {self.config_name} has no usable test pipeline '
                f'(test_dataloader.dataset.pipeline): {one_line(err)}') from err

    def _init_visualizer(self, cfg: Config) -> Any:
        # MMSegInferencer requires a SegLocalVisualizer; configs without one get the default.
        if 'visualizer' not in cfg:
            cfg.visualizer = dict(type='SegLocalVisualizer')
        return super()._init_visualizer(cfg)

    @staticmethod
    def _slide_test_cfg(cfg: Config, test_cfg: ConfigDict) -> Optional[ConfigDict]:
        """``test_cfg`` for sliding windows: the config's own, or one from its crop size."""
        if test_cfg.get('mode') == 'slide':
            return copy.deepcopy(test_cfg)
        crop = cfg.get('crop_size') or (cfg.model.get('data_preprocessor') or {}).get('size')
        if not crop:
            return None
        if isinstance(crop, (int, float)):
            crop = (crop, crop)
        crop_hw = tuple(int(side) for side in crop)
        # mmseg's slide configs overlap windows by a third (e.g. crop 512, stride 341).
        stride_hw = tuple(max(1, side * 2 // 3) for side in crop_hw)
        return ConfigDict(mode='slide', crop_size=crop_hw, stride=stride_hw)

    # --- prediction ----------------------------------------------------------------------------

    def uses_slide(self, input_hw: Tuple[int, int], slide: Optional[bool] = None) -> bool:
        """Whether an input of ``input_hw`` (after the test pipeline) is run by sliding window.

        Args:
            input_hw: Height and width the model receives.
            slide: True: always; False: never; None: when the config asks for it, or when a
                side exceeds ``slide_ratio`` crop sides.

        Raises:
            InferenceSetupError: ``slide=True`` but the config has no crop size.
        """
        if slide is False:
            return False
        if self.slide_test_cfg is None:
            if slide:
                raise InferenceSetupError(f'sliding-window inference needs a crop size, and config '
                                          f'{self.config_name} has neither crop_size nor '
                                          'model.data_preprocessor.size')
            return False
        if slide or self.config_slides:
            return True
        crop_h, crop_w = self.slide_test_cfg.crop_size
        return input_hw[0] > self.slide_ratio * crop_h or input_hw[1] > self.slide_ratio * crop_w

    @contextmanager
    def _test_mode(self, slide: bool) -> Iterator[None]:
        """Run the model in whole-image or sliding-window mode for the duration."""
        original = self.model.test_cfg
        self.model.test_cfg = self.slide_test_cfg if slide else self.whole_test_cfg
        try:
            yield
        finally:
            self.model.test_cfg = original

    def predict_with_mode(self,
                          images: Sequence[np.ndarray],
                          slide: Optional[bool] = None,
                          window_batch_size: int = 1,
                          on_window: Optional[Callable[[int, int], None]] = None
                          ) -> List[Tuple[np.ndarray, str]]:
        """Predict class-id maps, saying for each whether it was made by sliding windows.

        Predictions equal mmseg's ``model.predict`` (up to float rounding) but take memory
        bounded by a window batch and a band of logits, not by the image (see :mod:`.slide`).

        Args:
            images: (H, W, 3) uint8 BGR images (as :func:`vtseg.apis.load_image` gives), of any
                sizes; images of equal size after the test pipeline run as one batch.
            slide: See :meth:`uses_slide`.
            window_batch_size: Windows per forward pass in sliding-window inference.
            on_window: Called with (windows done, windows of the image) during sliding-window
                inference of each image.

        Returns:
            Per image: its (H, W) uint8 class ids at the image's own size, and ``'slide'`` or
            ``'whole'``.
        """
        packed = [self.pipeline(image) for image in images]
        by_shape: Dict[Tuple[int, int], List[int]] = {}
        for index, sample in enumerate(packed):
            # inputs: (C, H', W') tensor after the test pipeline
            by_shape.setdefault(tuple(sample['inputs'].shape[-2:]), []).append(index)
        results: List[Optional[Tuple[np.ndarray, str]]] = [None] * len(images)
        for input_hw, indices in by_shape.items():
            slide_here = self.uses_slide(input_hw, slide)
            samples = [packed[i] for i in indices]
            with self._test_mode(slide_here):
                if not supports_streaming(self.model, [s['data_samples'].metainfo for s in samples]):
                    label_maps = self._predict_by_mmseg(samples)
                elif slide_here:
                    crop_hw, stride_hw = self.slide_test_cfg.crop_size, self.slide_test_cfg.stride
                    label_maps = [predict_sliding(self.model, sample, tuple(crop_hw), tuple(stride_hw),
                                                  window_batch_size, on_window)
                                  for sample in samples]
                else:
                    label_maps = predict_whole(self.model, samples)
            for index, label_map in zip(indices, label_maps):
                results[index] = (label_map, 'slide' if slide_here else 'whole')
        return results

    def _predict_by_mmseg(self, samples: List[dict]) -> List[np.ndarray]:
        """mmseg's own prediction (full-size tensors), for segmentors other than encoder-decoders."""
        label_maps = []
        for sample in self.forward(self.collate_fn(samples)):
            # pred_sem_seg.data: (1, H, W) int64 at the original image size
            label_maps.append(sample.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8))
        return label_maps

    def predict(self, images: Sequence[np.ndarray],
                slide: Optional[bool] = None) -> List[np.ndarray]:
        """(H, W) uint8 class-id maps of ``images``; see :meth:`predict_with_mode`."""
        return [label_map for label_map, _ in self.predict_with_mode(images, slide)]

"""Load a segmentor from (config, checkpoint, device) and predict class-id maps.

:class:`SegInferencer` does what mmseg's :class:`~mmseg.apis.MMSegInferencer` does for a
command-line tool on real folders, built from public mmengine and mmseg parts:

- the model comes from :func:`~vtseg.apis.model.build_model`: bad setup is an
  :class:`InferenceSetupError` with a one-line message (a missing or unreadable config or
  checkpoint, an unknown or absent device), and a checkpoint of another model is a
  :class:`CheckpointMismatchError` (every weight name and shape is compared with the
  model the config builds, where mmengine would load it partially with a logged warning);
- images go through the config's test pipeline (:func:`~vtseg.apis.model.inference_pipeline`,
  as mmseg's inferencer builds it) and the model's ``test_step``;
- classes and palette come from the checkpoint's ``dataset_meta``, else from the
  config's test data set, else generic names (never Cityscapes' by default);
- :meth:`SegInferencer.predict` takes decoded images of any sizes, batches
  those of equal size, and switches the model to sliding-window inference
  (``test_cfg.mode='slide'``, crop and stride from the config's crop size) for
  images much larger than the crop, or always when asked;
- on CPU the model runs in the channels-last memory format (see ``channels_last``);
- predictions are mmseg's, computed in bounded memory (:mod:`.slide`): windows
  run in batches with a progress callback, logits are summed in a band along the
  image and resized to the original size a few rows at a time, so a 24-megapixel
  photo never needs a full-size tensor of class scores.

mmseg's own ``MMSegInferencer`` (drawing, ``out_dir``) works on vtseg's configs and
checkpoints too, once ``import vtseg`` has registered vtseg's modules.
"""
import copy
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.config import Config, ConfigDict
from mmengine.dataset import pseudo_collate
from mmseg.registry import DATASETS

from .model import (CheckpointMismatchError, InferenceSetupError, build_model, check_model_files, inference_pipeline,
                    load_config, resolve_device)
from .slide import LogitsSink, predict_sliding, predict_whole, supports_streaming

__all__ = ['InferenceSetupError', 'CheckpointMismatchError', 'SegInferencer', 'PALETTE_CHOICES', 'named_palette']

# Slide when an image side exceeds this many crop sides (and the config has a crop size).
DEFAULT_SLIDE_RATIO = 2.0
_MAX_PNG_CLASSES = 256


def _generic_palette(num_colours: int) -> List[List[int]]:
    """Fixed pseudo-random RGB colours (the same every run)."""
    rng = np.random.RandomState(42)
    return rng.randint(0, 256, size=(num_colours, 3)).tolist()


# --palette choices besides mmseg's data set names (mmseg.utils.dataset_aliases)
PALETTE_CHOICES = ('model', 'random')


def named_palette(name: str, num_classes: int, model_palette: Sequence[Sequence[int]]) -> List[List[int]]:
    """RGB colour per class id for a palette choice.

    Args:
        name: ``'model'`` (the checkpoint's or config's data set colours, ``model_palette``),
            ``'random'`` (fixed pseudo-random colours) or a data set mmseg knows
            (``cityscapes``, ``ade``, ``voc``, ...: :func:`mmseg.utils.get_palette`).
        num_classes: Class ids the model predicts; the palette must cover them.
        model_palette: The model's own palette.

    Raises:
        InferenceSetupError: An unknown name, or a palette with fewer colours than classes.
    """
    from mmseg.utils import dataset_aliases, get_palette
    if name == 'model':
        return [list(map(int, c)) for c in model_palette]
    if name == 'random':
        return _generic_palette(num_classes)
    if not any(name in aliases for aliases in dataset_aliases.values()):
        known = ', '.join(list(PALETTE_CHOICES) + list(dataset_aliases))
        raise InferenceSetupError(f'unknown palette {name!r}: choose one of {known}')
    colours = [list(map(int, c)) for c in get_palette(name)]
    if len(colours) < num_classes:
        raise InferenceSetupError(f'palette {name} has {len(colours)} colours but the model predicts '
                                  f'{num_classes} classes: choose another palette')
    return colours[:num_classes]


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


class SegInferencer:
    """A segmentor loaded for inference: checked setup, decoded-image batching, sliding windows.

    Args:
        config: Config file or :class:`~mmengine.config.Config`.
        checkpoint: Checkpoint file saved by training this config.
        device: ``'cpu'``, ``'cuda'``, ``'cuda:N'``; None picks CUDA when available.
        cfg_options: Overrides merged into the config (as ``--cfg-options`` does).
        slide_ratio: In automatic mode, slide when an image side exceeds this many
            crop sides.
        channels_last: Keep the weights, and so every convolution's output, in the
            ``torch.channels_last`` memory format: the same numbers (up to float rounding)
            in another layout, which oneDNN's CPU convolutions run without reordering.
            ``None`` (default) means on CPU only, where ``benchmarks/infer_throughput.py``
            measured it; on CUDA it is not measured here.

    Attributes:
        model: The segmentor, in eval mode on ``device`` (channels-last if ``channels_last``).
        cfg: The config it was built from (after ``cfg_options``).
        pipeline: The test pipeline: an (H, W, 3) uint8 BGR image (or a file name) ->
            ``dict(inputs, data_samples)``.
        collate_fn: Batches what ``pipeline`` gives (mmengine's ``pseudo_collate``).
        classes: Name per class id.
        palette: RGB colour per class id.
        meta_source: Where classes and palette came from: ``'checkpoint'``, ``'config'``
            or ``'generic'``.
        config_slides: Whether the config itself asks for sliding windows.
        slide_test_cfg: The model's ``test_cfg`` for sliding windows, None if the config
            has no crop size.

    Raises:
        InferenceSetupError: Missing or unreadable files, unknown device, a model that
            cannot be built, a config without a test pipeline; :class:`CheckpointMismatchError`
            for a checkpoint of another model.

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
                 slide_ratio: float = DEFAULT_SLIDE_RATIO,
                 channels_last: Optional[bool] = None) -> None:
        check_model_files(config, checkpoint)
        self.device = resolve_device(device)
        self.config_name = str(config) if isinstance(config, (str, Path)) else '<Config object>'
        self.checkpoint_name = str(checkpoint)
        self.slide_ratio = slide_ratio
        self.cfg = load_config(config, cfg_options)
        self.model = build_model(self.cfg, checkpoint, self.device)
        self.channels_last = torch.device(self.device).type == 'cpu' if channels_last is None else channels_last
        if self.channels_last:
            # Each convolution keeps the memory format of its weights: with channels-last weights
            # the whole network after the first convolution runs channels-last.
            self.model.to(memory_format=torch.channels_last)
        self.pipeline = inference_pipeline(self.cfg)
        self.collate_fn = pseudo_collate
        self.model.dataset_meta = self._dataset_meta(getattr(self.model, 'dataset_meta', None))
        self.classes: Tuple[str, ...] = tuple(self.model.dataset_meta['classes'])
        self.palette: List[List[int]] = [list(c) for c in self.model.dataset_meta['palette']]
        test_cfg = self.model.test_cfg or ConfigDict(mode='whole')
        self.whole_test_cfg = (ConfigDict(mode='whole') if test_cfg.get('mode') == 'slide'
                               else copy.deepcopy(test_cfg))
        self.config_slides = test_cfg.get('mode') == 'slide'
        self.slide_test_cfg = self._slide_test_cfg(self.cfg, test_cfg)

    def _dataset_meta(self, saved: Optional[Mapping]) -> Dict[str, list]:
        """Classes and palette covering every id the model predicts: the checkpoint's
        (``saved``), else the config's test data set's, else generic ones."""
        if saved and saved.get('classes'):
            meta, self.meta_source = dict(saved), 'checkpoint'
        else:
            meta = _config_dataset_meta(self.cfg)
            self.meta_source = 'config' if meta else 'generic'
        classes = list((meta or {}).get('classes') or [])
        head = getattr(self.model, 'decode_head', None)
        num_classes = max(len(classes), int(getattr(head, 'num_classes', 0) or 0))
        if num_classes > _MAX_PNG_CLASSES:
            raise InferenceSetupError(f'the model predicts {num_classes} classes; palette PNGs '
                                      f'hold at most {_MAX_PNG_CLASSES}')
        classes += [f'class {i}' for i in range(len(classes), num_classes)]
        palette = [list(map(int, c)) for c in ((meta or {}).get('palette') or [])][:num_classes]
        palette += _generic_palette(num_classes)[len(palette):]
        return dict(classes=classes, palette=palette)

    def forward(self, data: dict) -> list:
        """The model's ``test_step`` on a collated batch: one ``SegDataSample`` per image."""
        with torch.no_grad():
            return self.model.test_step(data)

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
                          on_window: Optional[Callable[[int, int], None]] = None,
                          logits_sinks: Optional[Sequence[Optional[LogitsSink]]] = None
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
            logits_sinks: Per image, None or a :data:`~vtseg.apis.slide.LogitsSink` that
                receives its ``(C, H, W)`` logits at the image's size, in strips.

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
        all_sinks = list(logits_sinks) if logits_sinks is not None else [None] * len(images)
        for input_hw, indices in by_shape.items():
            slide_here = self.uses_slide(input_hw, slide)
            samples = [packed[i] for i in indices]
            sinks = [all_sinks[i] for i in indices]
            with self._test_mode(slide_here):
                if not supports_streaming(self.model, [s['data_samples'].metainfo for s in samples]):
                    label_maps = self._predict_by_mmseg(samples, sinks)
                elif slide_here:
                    crop_hw, stride_hw = self.slide_test_cfg.crop_size, self.slide_test_cfg.stride
                    label_maps = [predict_sliding(self.model, sample, tuple(crop_hw), tuple(stride_hw),
                                                  window_batch_size, on_window, sink)
                                  for sample, sink in zip(samples, sinks)]
                else:
                    label_maps = predict_whole(self.model, samples, sinks)
            for index, label_map in zip(indices, label_maps):
                results[index] = (label_map, 'slide' if slide_here else 'whole')
        return results

    def _predict_by_mmseg(self, samples: List[dict],
                          sinks: Sequence[Optional[LogitsSink]]) -> List[np.ndarray]:
        """mmseg's own prediction (full-size tensors), for segmentors other than encoder-decoders."""
        label_maps = []
        for sample, sink in zip(self.forward(self.collate_fn(samples)), sinks):
            if sink is not None:
                sink(0, 0, sample.seg_logits.data)  # (C, H, W) at the original image size
            # pred_sem_seg.data: (1, H, W) int64 at the original image size
            label_maps.append(sample.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8))
        return label_maps

    def predict(self, images: Sequence[np.ndarray],
                slide: Optional[bool] = None) -> List[np.ndarray]:
        """(H, W) uint8 class-id maps of ``images``; see :meth:`predict_with_mode`."""
        return [label_map for label_map, _ in self.predict_with_mode(images, slide)]

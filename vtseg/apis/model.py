"""Build a model from an OpenMMLab config, with or without a checkpoint: one way for every tool.

:func:`build_model` is what ``tools/infer.py`` (through :class:`~.inference.SegInferencer`),
``tools/test.py`` (:func:`check_config_checkpoint`), ``tools/export_onnx.py``,
``tools/visualize_tokens.py``, ``tools/get_flops.py`` and ``tools/benchmark.py`` build their
models with, as mmseg's ``init_model`` does but checked:

- the config is read and ``--cfg-options`` merged with one-line errors (:func:`load_config`);
- nothing is downloaded: ``model.pretrained`` and every ``init_cfg`` that names remote
  weights (``open-mmlab://``, ``torchvision://``, URLs) are dropped; building does not
  initialise weights, so a model without a checkpoint has its layers' default (random) ones;
- the model is built in the config's registry scope (``default_scope``: mmseg, mmpretrain,
  mmdet), SyncBN becomes BN (one process), and it is moved to the device in eval mode;
- a checkpoint is a local file, read with ``torch.load(weights_only=True)`` whatever torch's
  default (pickled code is refused unread; mmengine's training checkpoints load once
  :func:`vtseg.mm.allow_mmengine_checkpoints` ran, which ``import vtseg`` does, on torch >= 2.4),
  compared weight by weight with the model, names and shapes, and loaded strictly
  (:func:`load_weights`). A URL is refused rather than downloaded: mmengine's loader unpickles
  downloads with ``weights_only=False``. A checkpoint of another model is a
  :class:`CheckpointMismatchError` naming the weights that differ, where mmengine would load
  what fits and log a warning.

Only public mmengine API is used: ``load_state_dict`` (``mmengine.runner``), ``Config``,
``DefaultScope``, ``MODELS``, ``Compose``.
"""
import copy
import os.path as osp
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner import load_state_dict

from vtseg.mm.checkpoint import load_checkpoint_file, remote_weights
from vtseg.mm.cli import merge_cfg_options
from vtseg.utils.errors import one_line

__all__ = [
    'InferenceSetupError', 'CheckpointMismatchError', 'resolve_device', 'check_model_files',
    'load_config', 'read_checkpoint', 'checkpoint_state_dict', 'checkpoint_mismatch',
    'check_checkpoint_fits', 'load_weights', 'build_model', 'check_config_checkpoint',
    'inference_pipeline'
]


class InferenceSetupError(RuntimeError):
    """A model (or a run with it) cannot be set up: a bad config, checkpoint, device or input.

    The message is one line saying what is wrong and what to do.
    """


class CheckpointMismatchError(InferenceSetupError):
    """The checkpoint's weights do not fit the model that the config builds."""


def _is_url(path: str) -> bool:
    return bool(re.match(r'^[a-z][a-z0-9+.-]*://', path))


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


def _check_config_file(config: Union[str, Path]) -> None:
    if not osp.isfile(config):
        raise InferenceSetupError(f'config {config} not found: pass the config file the model '
                                  'was trained with')


def _check_checkpoint_file(checkpoint: str) -> None:
    if _is_url(str(checkpoint)):
        raise InferenceSetupError(f'checkpoint {checkpoint} is a URL: vtseg reads checkpoints from local '
                                  'files only and downloads nothing; fetch it first (e.g. with wget) '
                                  'and pass the file')
    if not osp.isfile(checkpoint):
        raise InferenceSetupError(f'checkpoint {checkpoint} not found: pass a .pth file saved by '
                                  'training (e.g. work_dirs/<config>/iter_1500.pth)')


def check_model_files(config: Union[str, Path, Config], checkpoint: Optional[str] = None) -> None:
    """Fail early, in one line, when the config or checkpoint file does not exist.

    Args:
        config: Config file (a :class:`~mmengine.config.Config` passes unchecked).
        checkpoint: Checkpoint file, or None.

    Raises:
        InferenceSetupError: A file is missing, or the checkpoint is a URL.
    """
    if isinstance(config, (str, Path)):
        _check_config_file(config)
    if checkpoint is not None:
        _check_checkpoint_file(checkpoint)


def _config_name(cfg: Config) -> str:
    return cfg.filename or '<Config object>'


def load_config(config: Union[str, Path, Config], cfg_options: Optional[dict] = None) -> Config:
    """A config file read (or a :class:`~mmengine.config.Config` copied) with ``cfg_options`` merged.

    Args:
        config: Config file or object (the object is not changed).
        cfg_options: ``{'a.b': value}`` overrides, as ``--cfg-options`` gives them.

    Raises:
        InferenceSetupError: The file is missing or does not load (its error in one line), an
            option would replace a config section, or the config has no ``model`` dict.
    """
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
    else:
        _check_config_file(config)
        try:
            cfg = Config.fromfile(str(config))
        except Exception as err:  # a config is Python: any error may come out of it
            raise InferenceSetupError(f'cannot load config {config}: {type(err).__name__}: '
                                      f'{one_line(err)}') from err
    try:
        merge_cfg_options(cfg, cfg_options)
    except ValueError as err:
        raise InferenceSetupError(str(err)) from err
    if not isinstance(cfg.get('model'), Mapping):
        raise InferenceSetupError(f'config {_config_name(cfg)} defines no model (a dict '
                                  '`model = dict(type=...)`)')
    return cfg


def read_checkpoint(checkpoint: str) -> Any:
    """Load a local checkpoint file on the CPU with torch's ``weights_only`` loader
    (:func:`vtseg.mm.checkpoint.load_checkpoint_file`: always ``weights_only=True``; a training
    checkpoint needs torch >= 2.4, a published one loads on any torch).

    Raises:
        InferenceSetupError: It is a URL, does not exist, cannot be read, or holds pickled
            code or objects other than weights (never executed); the message gives torch's
            reason without its advice to load the file unsafely.
    """
    _check_checkpoint_file(checkpoint)
    try:
        return load_checkpoint_file(checkpoint)
    except ValueError as err:
        raise InferenceSetupError(str(err)) from err


def checkpoint_state_dict(checkpoint: Any, checkpoint_name: str, prefix: str = '') -> Dict[str, Any]:
    """The weights a checkpoint holds: its ``state_dict`` (or the checkpoint itself when it is
    a plain state dict), ``module.`` prefixes removed.

    Args:
        checkpoint: What :func:`read_checkpoint` returned.
        checkpoint_name: Its path, for messages.
        prefix: Keep only the weights whose names start with it, without it (``'backbone.'``
            takes a classifier's backbone).

    Raises:
        InferenceSetupError: It holds no state dict, or no weight under ``prefix``.
    """
    if not isinstance(checkpoint, Mapping):
        raise InferenceSetupError(f'checkpoint {checkpoint_name} holds no state dict '
                                  f'(it holds a {type(checkpoint).__name__})')
    state = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state, Mapping) or not state:
        raise InferenceSetupError(f'checkpoint {checkpoint_name} holds no state dict')
    state = {re.sub(r'^module\.', '', key): value for key, value in state.items()}
    if prefix:
        state = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
        if not state:
            raise InferenceSetupError(f'checkpoint {checkpoint_name} holds no weights under '
                                      f'{prefix!r}')
    return state


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
                          model_name: str, prefix: str = '') -> Dict[str, Any]:
    """The checkpoint's state dict, after checking that it fits ``model`` exactly.

    Args:
        model: The model.
        checkpoint: What :func:`read_checkpoint` returned.
        checkpoint_name: The checkpoint's path, for the message.
        model_name: What the model is, for the message: ``'config PATH'`` or a name.
        prefix: See :func:`checkpoint_state_dict`.

    Returns:
        The state dict, ``module.`` (and ``prefix``) removed.

    Raises:
        InferenceSetupError: The checkpoint holds no state dict.
        CheckpointMismatchError: Names or shapes differ (one line naming some of them).
    """
    state = checkpoint_state_dict(checkpoint, checkpoint_name, prefix)
    problem = checkpoint_mismatch(model.state_dict(), state)
    if problem:
        hint = ('pass the config it was trained with' if model_name.startswith('config ')
                else f'pass a checkpoint of {model_name}')
        raise CheckpointMismatchError(f'checkpoint {checkpoint_name} does not fit {model_name}: '
                                      f'{problem}; {hint}')
    return state


def load_weights(model: nn.Module, checkpoint: Union[str, Mapping], model_name: str,
                 checkpoint_name: Optional[str] = None, prefix: str = '') -> Mapping:
    """Load a checkpoint's weights into ``model``, all of them or none.

    Args:
        model: The model.
        checkpoint: A checkpoint file, or what :func:`read_checkpoint` returned.
        model_name: What the model is, for messages: ``'config PATH'`` or a name.
        checkpoint_name: The checkpoint's path for messages (default: ``checkpoint``
            when that is a path).
        prefix: Load the weights under this prefix (see :func:`checkpoint_state_dict`).

    Returns:
        The checkpoint's ``meta`` (empty when it has none).

    Raises:
        InferenceSetupError: The checkpoint cannot be read or holds no state dict;
            :class:`CheckpointMismatchError` when names or shapes differ (nothing is loaded).
    """
    if isinstance(checkpoint, (str, Path)):
        checkpoint_name = checkpoint_name or str(checkpoint)
        checkpoint = read_checkpoint(str(checkpoint))
    checkpoint_name = checkpoint_name or '<checkpoint>'
    state = check_checkpoint_fits(model, checkpoint, checkpoint_name, model_name, prefix)
    load_state_dict(model, state, strict=True, logger='silent')
    meta = checkpoint.get('meta') if isinstance(checkpoint, Mapping) else None
    return meta if isinstance(meta, Mapping) else {}


def _without_remote_weights(cfg: Config) -> None:
    """Drop ``model.pretrained`` and every ``init_cfg`` that names weights to download."""
    cfg.model.pop('pretrained', None)
    cfg.merge_from_dict({key: None for key, _ in remote_weights(cfg)})


def _saved_dataset_meta(meta: Mapping) -> Optional[dict]:
    """Classes and palette a checkpoint's meta records (mmseg 1.x or 0.x), else None."""
    saved = meta.get('dataset_meta')
    if isinstance(saved, Mapping) and saved.get('classes'):
        return dict(classes=saved['classes'], palette=saved.get('palette'))
    if meta.get('CLASSES'):  # mmseg 0.x checkpoints
        return dict(classes=meta['CLASSES'], palette=meta.get('PALETTE'))
    return None


def _build(cfg: Config, config_name: str) -> nn.Module:
    """The config's model, built in its registry scope (one-line error)."""
    try:
        with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmseg')):
            return MODELS.build(copy.deepcopy(cfg.model))
    except Exception as err:
        raise InferenceSetupError(f'cannot build the model of config {config_name}: '
                                  f'{type(err).__name__}: {one_line(err)}') from err


def build_model(config: Union[str, Path, Config],
                checkpoint: Optional[str] = None,
                device: str = 'cpu',
                cfg_options: Optional[dict] = None,
                prefix: str = '') -> nn.Module:
    """Build the model a config describes, load a checkpoint into it if given, ready to run.

    Args:
        config: Config file or object (an OpenMMLab config with a ``model`` dict, of any
            scope; the object is not changed).
        checkpoint: Checkpoint file whose weights must all fit the model, or None
            for the layers' default (random) weights.
        device: Where the model goes (see :func:`resolve_device`).
        cfg_options: Overrides merged into the config (as ``--cfg-options``).
        prefix: Load only the checkpoint's weights under this prefix (``'backbone.'``).

    Returns:
        The model in eval mode on ``device``, SyncBN as BN, with ``model.cfg`` (the config
        used, as mmseg's ``init_model`` sets it) and, when the checkpoint records them,
        ``model.dataset_meta`` (``classes`` and ``palette``).

    Raises:
        InferenceSetupError: A missing or broken config or checkpoint, a model that cannot
            be built; :class:`CheckpointMismatchError` for a checkpoint of another model.

    Example:
        >>> model = build_model('configs/vtshapes/vt-fpn_r18_1xb8-1.5k_vtshapes-96x96.py',
        ...                     'work_dirs/demo/iter_1500.pth')  # doctest: +SKIP
        >>> model.dataset_meta['classes']  # doctest: +SKIP
        ('background', 'disc', 'box', 'triangle', 'ring')
    """
    cfg = load_config(config, cfg_options)
    loaded = read_checkpoint(checkpoint) if checkpoint is not None else None
    _without_remote_weights(cfg)
    config_name = _config_name(cfg)
    model = revert_sync_batchnorm(_build(cfg, config_name))  # one process: SyncBN has no process group
    if loaded is not None:
        meta = load_weights(model, loaded, f'config {config_name}', str(checkpoint), prefix)
        dataset_meta = _saved_dataset_meta(meta)
        if dataset_meta is not None:
            model.dataset_meta = dataset_meta
    model.cfg = cfg
    return model.to(device).eval()


def check_config_checkpoint(cfg: Config, checkpoint: str, config_name: str) -> None:
    """Check, before a run, that ``checkpoint`` holds the weights of the model ``cfg`` builds.

    Builds the model on the CPU (no pretrained weights are fetched: building does not
    initialise) and compares every weight name and shape, as :func:`build_model` does.

    Raises:
        InferenceSetupError: The checkpoint cannot be read or the model cannot be built;
            :class:`CheckpointMismatchError` when the weights do not fit.
    """
    loaded = read_checkpoint(checkpoint)
    check_checkpoint_fits(_build(cfg, config_name), loaded, checkpoint, f'config {config_name}')


def inference_pipeline(cfg: Config) -> Compose:
    """The config's test pipeline for images in memory or on disk, as mmseg's inferencer makes it.

    ``test_dataloader.dataset.pipeline`` without its annotation loading, and
    ``LoadImageFromFile`` replaced by mmseg's ``InferencerLoader``, which takes an image
    array ((H, W, 3) uint8 BGR) or a file name. Calling it on one image gives
    ``dict(inputs=(3, H', W') uint8 tensor, data_samples=SegDataSample)``.

    Raises:
        InferenceSetupError: The config has no test pipeline that loads images, or one of
            its transforms cannot be built.
    """
    try:
        steps = [dict(step) for step in cfg.test_dataloader.dataset.pipeline
                 if step['type'] not in ('LoadAnnotations', 'LoadDepthAnnotation')]
        loaders = [i for i, step in enumerate(steps) if step['type'] == 'LoadImageFromFile']
        if not loaders:
            raise ValueError('it has no LoadImageFromFile step')
        steps[loaders[0]]['type'] = 'InferencerLoader'
        with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmseg')):
            return Compose(steps)
    except Exception as err:
        raise InferenceSetupError(
            f'config {_config_name(cfg)} has no usable test pipeline '
            f'(test_dataloader.dataset.pipeline): {one_line(err)}') from err

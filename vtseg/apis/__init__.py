"""Inference for callers: load a segmentor, predict class-id maps, run over image folders.

:func:`build_model` (:mod:`.model`) builds any config's model, with or without a
checkpoint, for every tool; :class:`SegInferencer` (:mod:`.inference`) predicts with a
segmentor; ``tools/infer.py`` is their command line over folders. Importing this
package loads mmseg but builds nothing and changes no global settings.

Example:
    >>> from vtseg.apis import SegInferencer, infer_folder, load_image
    >>> inferencer = SegInferencer(CONFIG, CHECKPOINT, device='cpu')
    >>> label_map = inferencer.predict([load_image('photo.jpg')])[0]  # (H, W) class ids
    >>> summary = infer_folder(inferencer, 'photos/', 'out/')  # out/pred/*.jpg.png, out/vis/*.jpg.jpg
    >>> print(summary)  # done 12, skipped 0, failed 1 of 13 images in ...
"""
from vtseg.visualization.draw import draw_overlay, vis_scale
from .folder import (FolderRunner, FolderSummary, ImageTask, LoaderWorkerDied, MergedSummary, find_images, infer_folder,
                     output_names, prepare_output_dir, read_image_list, select_listed, shard_tasks, tasks_digest)
from .inference import PALETTE_CHOICES, SegInferencer, named_palette
from .io import (IMAGE_EXTENSIONS, ImageDecodeError, NpyStreamWriter, atomic_write_bytes, encode_jpeg, encode_label_png,
                 file_kind, is_image_file, load_image, make_dirs, open_regular_file, remove_created_dirs,
                 temporary_target)
from .model import (CheckpointMismatchError, InferenceSetupError, build_model, check_checkpoint_fits,
                    check_config_checkpoint, check_model_files, checkpoint_mismatch, checkpoint_state_dict,
                    inference_pipeline, load_config, load_weights, read_checkpoint, resolve_device)
from .slide import LogitsSink, class_probabilities, predict_sliding, predict_whole, resize_argmax_into, window_grid

__all__ = [
    'SegInferencer', 'InferenceSetupError', 'CheckpointMismatchError', 'build_model', 'load_config',
    'load_weights', 'inference_pipeline', 'check_model_files', 'checkpoint_mismatch',
    'checkpoint_state_dict', 'check_checkpoint_fits', 'check_config_checkpoint', 'read_checkpoint',
    'resolve_device', 'FolderRunner', 'FolderSummary', 'LoaderWorkerDied', 'ImageTask', 'find_images', 'output_names',
    'prepare_output_dir', 'remove_created_dirs', 'infer_folder', 'IMAGE_EXTENSIONS',
    'ImageDecodeError', 'is_image_file', 'file_kind', 'open_regular_file', 'load_image',
    'make_dirs', 'atomic_write_bytes', 'encode_label_png', 'encode_jpeg', 'draw_overlay', 'vis_scale',
    'window_grid', 'predict_whole', 'predict_sliding', 'resize_argmax_into', 'LogitsSink', 'class_probabilities',
    'MergedSummary', 'read_image_list', 'select_listed', 'shard_tasks', 'tasks_digest', 'PALETTE_CHOICES',
    'named_palette', 'NpyStreamWriter', 'temporary_target'
]

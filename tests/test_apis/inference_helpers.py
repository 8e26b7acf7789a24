"""Shared by the inference API tests: the configs and a checkpoint made on the spot."""
import os.path as osp

import numpy as np
import torch

from vtseg.datasets import VTSHAPES_CLASSES, VTSHAPES_PALETTE

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
VTFPN_CONFIG = osp.join(REPO, 'configs', 'vtshapes', 'vt-fpn_r18_1xb8-1.5k_vtshapes-96x96.py')
FPN_CONFIG = osp.join(REPO, 'configs', 'vtshapes', 'fpn_r18_1xb8-1.5k_vtshapes-96x96.py')
DATASET_META = dict(classes=VTSHAPES_CLASSES, palette=VTSHAPES_PALETTE)


def save_test_checkpoint(path: str, config: str = VTFPN_CONFIG, cfg_options: dict = None,
                         meta: dict = None, seed: int = 0) -> str:
    """Save a freshly built (untrained, seeded) model of ``config`` as mmengine would."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope('mmseg')
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    torch.save({'state_dict': model.state_dict(),
                'meta': {'dataset_meta': DATASET_META} if meta is None else meta}, path)
    return path


def assert_same_labels(ours: np.ndarray, labels: np.ndarray, logits: torch.Tensor) -> None:
    """``ours`` equals ``labels``, except where the two best classes of ``logits`` (those ``labels``
    were taken from) are within float rounding of each other."""
    assert ours.shape == labels.shape and ours.dtype == np.uint8
    differ = ours != labels
    top2 = logits.topk(2, dim=0).values
    margin = (top2[0] - top2[1]).numpy()
    assert differ.mean() < 1e-3, differ.mean()
    assert (margin[differ] < 1e-4).all(), margin[differ].max()


def collect_logits(num_classes: int, hw):
    """A logits sink that assembles its strips into one (C, H, W) array; that array; the axis of
    each strip received (0: rows, 1: columns)."""
    full = torch.full((num_classes, *hw), float('nan'))
    seen = []

    def sink(axis, start, strip):
        seen.append(axis)
        if axis == 0:
            full[:, start:start + strip.shape[1]] = strip
        else:
            full[:, :, start:start + strip.shape[2]] = strip
    return sink, full, seen

"""LIP's flip test: the mirrored view's Left-*/Right-* channels are swapped back before the average.

The segmentor here stands in for a LIP model trained with label-swapping flips: it tells a
left arm from a right arm by the way the arm's brightness ramps across it (brighter to the
right: left arm), a cue that a mirror reverses, so it calls the mirror image of a left arm
"Right-arm", as a model trained with ``RandomFlip(swap_seg_labels=...)`` does. Everything
else is real: the LIP config's ``tta_pipeline`` and ``tta_model``, mmseg's ``EncoderDecoder``
(which flips the mirrored view's logits back in space) and ``FCNHead``.
"""
import copy
import glob
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config, ConfigDict
from mmengine.dataset import Compose, pseudo_collate
from mmengine.model import BaseModule
from mmengine.registry import init_default_scope
from PIL import Image

from mmseg.registry import DATASETS, MODELS
from vtseg.mm.tta import SwapLabelsSegTTAModel, swap_label_channels
from vtseg_testing import REPO

LIP_CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', 'lip', '*.py')))
LIP_CONFIG = osp.join(REPO, 'configs', 'lip', 'vt-fpn_r50_8xb12-50k_lip-473x473.py')
SIZE = 32


@MODELS.register_module(force=True)
class ArmRampBackbone(BaseModule):
    """Class scores ``(B, 20, H, W)`` from the sign of each pixel's horizontal brightness slope.

    Slope up to the right: Left-arm; down: Right-arm; flat: Background.
    """

    def __init__(self, left: int, right: int, num_classes: int = 20) -> None:
        super().__init__()
        self.left, self.right, self.num_classes = left, right, num_classes

    def forward(self, inputs: torch.Tensor) -> tuple:
        gray = inputs.mean(dim=1, keepdim=True)                      # (B, 1, H, W)
        padded = F.pad(gray, (1, 1, 0, 0), mode='replicate')
        slope = padded[..., 2:] - padded[..., :-2]                   # (B, 1, H, W)
        scores = torch.full((inputs.shape[0], self.num_classes, *inputs.shape[2:]), -100.,
                            device=inputs.device)
        scores[:, 0] = 0.                                            # Background
        scores[:, self.left] = slope[:, 0] - 1                       # > 0 where it ramps up
        scores[:, self.right] = -slope[:, 0] - 1
        return (scores, )


def lip_classes() -> tuple:
    init_default_scope('mmseg')
    return DATASETS.get('LIPDataset').METAINFO['classes']


def build_tta_model(tta_type: str = None) -> nn.Module:
    """The LIP config's tta_model around an EncoderDecoder built on :class:`ArmRampBackbone`."""
    classes = lip_classes()
    cfg = Config.fromfile(LIP_CONFIG)
    segmentor = dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor'),  # raw 0-255 pixel values
        backbone=dict(type='ArmRampBackbone', left=classes.index('Left-arm'),
                      right=classes.index('Right-arm')),
        decode_head=dict(type='FCNHead', in_channels=20, channels=20, num_convs=0, concat_input=False,
                         num_classes=20, norm_cfg=None, align_corners=False),
        test_cfg=ConfigDict(mode='whole'))
    tta_cfg = copy.deepcopy(cfg.tta_model)
    if tta_type:
        tta_cfg = dict(type=tta_type)
    tta_model = MODELS.build(dict(**tta_cfg, module=segmentor)).eval()
    conv = tta_model.module.decode_head.conv_seg  # the head passes the scores through unchanged
    with torch.no_grad():
        conv.weight.copy_(torch.eye(20)[:, :, None, None])
        conv.bias.zero_()
    return tta_model


@pytest.fixture(scope='module')
def left_arm_image(tmp_path_factory) -> dict:
    """A 32x32 image whose left half is a left arm (brightness ramping up to the right)."""
    classes = lip_classes()
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[:, :SIZE // 2] = (np.arange(SIZE // 2) * 8)[None, :, None]
    labels = np.zeros((SIZE, SIZE), np.uint8)
    labels[:, :SIZE // 2] = classes.index('Left-arm')
    folder = tmp_path_factory.mktemp('lip_tta')
    Image.fromarray(image).save(folder / 'person.png')  # lossless: the ramp stays a ramp
    Image.fromarray(labels).save(folder / 'person_label.png')
    return dict(img_path=str(folder / 'person.png'), seg_map_path=str(folder / 'person_label.png'),
                reduce_zero_label=False, seg_fields=[])


def views(image_info: dict) -> dict:
    """The LIP config's tta_pipeline on one image, at 32x32: ``{'inputs': [...], 'data_samples': [...]}``."""
    cfg = Config.fromfile(LIP_CONFIG)
    cfg.merge_from_dict({'tta_pipeline.1.transforms.0.0.scale': (SIZE, SIZE)})
    init_default_scope('mmseg')
    return Compose(cfg.tta_pipeline)(copy.deepcopy(image_info))


def predict(tta_model: nn.Module, image_views: dict, flipped: list) -> np.ndarray:
    """The TTA model's label map ``(H, W)`` from the views whose ``flip`` is in ``flipped``."""
    keep = [i for i, sample in enumerate(image_views['data_samples']) if sample.flip in flipped]
    data = pseudo_collate([{key: [value[i] for i in keep] for key, value in image_views.items()}])
    with torch.no_grad():
        return tta_model.test_step(data)[0].pred_sem_seg.data[0].numpy()


@pytest.mark.parametrize('config', LIP_CONFIGS, ids=osp.basename)
def test_config_tta_swaps_the_training_flip_pairs(config):
    cfg = Config.fromfile(config)
    flip = next(t for t in cfg.train_pipeline if t.type == 'RandomFlip')
    assert cfg.tta_model.type == 'SwapLabelsSegTTAModel'
    assert [tuple(p) for p in cfg.tta_model.swap_seg_labels] == [tuple(p) for p in flip.swap_seg_labels]
    aug = cfg.tta_pipeline[1]
    assert aug.type == 'TestTimeAug'
    assert [(t.prob, t.direction) for t in aug.transforms[1]] == [(0., 'horizontal'), (1., 'horizontal')]


def test_flipped_view_alone_predicts_left_arm_on_the_left(left_arm_image):
    classes = lip_classes()
    left, right = classes.index('Left-arm'), classes.index('Right-arm')
    image_views = views(left_arm_image)
    assert sorted(s.flip for s in image_views['data_samples']) == [False, True]
    inner = (slice(None), slice(1, SIZE // 2 - 1))  # the left half, off its edges

    unflipped = predict(build_tta_model(), image_views, [False])
    assert (unflipped[inner] == left).all()
    assert (unflipped[:, SIZE // 2 + 1:] == 0).all()

    # The mirrored view alone: the model saw a right arm on the right; flipped back in space
    # and with Left/Right swapped back, it is a left arm on the left again.
    mirrored = predict(build_tta_model(), image_views, [True])
    assert (mirrored[inner] == left).all()
    assert (mirrored[:, SIZE // 2 + 1:] == 0).all()
    # mmseg's plain SegTTAModel flips back in space only and keeps the wrong side
    unswapped = predict(build_tta_model('SegTTAModel'), image_views, [True])
    assert (unswapped[inner] == right).all()

    both = predict(build_tta_model(), image_views, [False, True])
    np.testing.assert_array_equal(both, unflipped)


def test_swap_label_channels():
    logits = torch.arange(5.)[:, None, None].expand(5, 2, 3)
    swapped = swap_label_channels(logits, [(1, 2), (3, 4)])
    assert swapped[:, 0, 0].tolist() == [0., 2., 1., 4., 3.]
    assert logits[:, 0, 0].tolist() == [0., 1., 2., 3., 4.]  # the input is left alone
    with pytest.raises(ValueError, match='outside the 5 channels'):
        swap_label_channels(logits, [(4, 5)])


@pytest.mark.parametrize('pairs, message', [
    ([(14, 14)], 'pairs of two different class ids'),
    ([(14, 15, 16)], 'pairs of two different class ids'),
    ([(14, 15), (15, 16)], 'more than one swap_seg_labels pair'),
])
def test_bad_pairs_are_refused(pairs, message):
    with pytest.raises(ValueError, match=message):
        SwapLabelsSegTTAModel(module=nn.Identity(), swap_seg_labels=pairs)

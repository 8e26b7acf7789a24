"""Flip test-time augmentation for data sets whose classes come in left/right pairs.

A horizontal flip turns a person's left arm into what looks like a right arm.
Training handles it with ``RandomFlip(swap_seg_labels=...)`` (the label map is
mirrored and the Left-*/Right-* ids swapped). At test time mmseg's
:class:`~mmseg.models.SegTTAModel` averages the class probabilities of the
views after the segmentor has flipped each flipped view's logits back in
space, but it leaves the channels alone: a model trained with label swapping
calls the mirrored left arm "Right-arm", so the flipped view votes for the
wrong side of every pair. :class:`SwapLabelsSegTTAModel` swaps the paired
channels of every mirrored view back before the average.
"""
from typing import List, Sequence, Tuple

import torch
from mmengine.structures import PixelData

from mmseg.models import SegTTAModel
from mmseg.registry import MODELS
from mmseg.utils import SampleList

__all__ = ['SwapLabelsSegTTAModel', 'swap_label_channels']

# Flips that mirror the image (turn left into right). 'diagonal' (both flips) is a
# 180-degree rotation: it keeps a left arm a left arm.
MIRROR_DIRECTIONS = ('horizontal', 'vertical')


def swap_label_channels(logits: torch.Tensor, pairs: Sequence[Tuple[int, int]]) -> torch.Tensor:
    """Exchange the class channels of each ``(a, b)`` pair.

    Args:
        logits: Per-class maps ``(C, H, W)``; channels ``a`` and ``b`` trade places.
        pairs: Class-id pairs, e.g. LIP's ``[(14, 15), (16, 17), (18, 19)]``.

    Returns:
        A new tensor ``(C, H, W)``; ``logits`` is not modified.

    Raises:
        ValueError: A class id is not a channel of ``logits``.
    """
    num_classes = logits.shape[0]
    order = list(range(num_classes))
    for a, b in pairs:
        if not (0 <= a < num_classes and 0 <= b < num_classes):
            raise ValueError(f'swap_seg_labels pair ({a}, {b}) names a class outside the '
                             f'{num_classes} channels of the prediction: fix the pairs in the config')
        order[a], order[b] = b, a
    return logits[order]


@MODELS.register_module()
class SwapLabelsSegTTAModel(SegTTAModel):
    """mmseg's ``SegTTAModel`` that swaps paired classes of mirrored views back.

    Use it with a ``tta_pipeline`` whose ``TestTimeAug`` includes
    ``RandomFlip(prob=1.)``; views whose ``flip`` metainfo is set with a mirroring
    direction (horizontal or vertical) get their ``swap_seg_labels`` channels
    exchanged before the views' softmax probabilities are averaged. Everything else
    (the spatial flip back, the average, the argmax) is mmseg's.

    Args:
        swap_seg_labels: Class-id pairs to swap, as given to ``RandomFlip`` for training.
        **kwargs: ``module`` (the segmentor) and the other ``SegTTAModel`` arguments.

    Example (``configs/_base_/datasets/lip_473x473.py``)::

        tta_model = dict(type='SwapLabelsSegTTAModel', swap_seg_labels=[(14, 15), (16, 17), (18, 19)])
    """

    def __init__(self, swap_seg_labels: Sequence[Sequence[int]] = (), **kwargs) -> None:
        pairs = [tuple(int(i) for i in pair) for pair in swap_seg_labels]
        if any(len(pair) != 2 or pair[0] == pair[1] for pair in pairs):
            raise ValueError(f'swap_seg_labels must be pairs of two different class ids, got {swap_seg_labels}')
        ids = [i for pair in pairs for i in pair]
        if len(set(ids)) != len(ids):
            raise ValueError(f'a class id appears in more than one swap_seg_labels pair: {swap_seg_labels}')
        super().__init__(**kwargs)
        self.swap_seg_labels: List[Tuple[int, int]] = pairs

    def merge_preds(self, data_samples_list: List[SampleList]) -> SampleList:
        """Swap the paired channels of mirrored views, then merge as ``SegTTAModel`` does.

        Args:
            data_samples_list: Per image, the predictions of its views; each view's
                ``seg_logits`` is ``(C, H, W)``, already flipped back in space.
        """
        for views in data_samples_list:
            for view in views:
                if view.metainfo.get('flip') and view.metainfo.get('flip_direction') in MIRROR_DIRECTIONS:
                    view.seg_logits = PixelData(data=swap_label_channels(view.seg_logits.data,
                                                                         self.swap_seg_labels))
        return super().merge_preds(data_samples_list)

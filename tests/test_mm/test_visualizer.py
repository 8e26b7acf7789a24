"""ContiguousSegLocalVisualizer: mmseg's visualizer, for the HWC views mmseg's browse_dataset.py passes."""
import cv2
import numpy as np
import pytest
import torch
from mmengine.structures import PixelData

from mmseg.structures import SegDataSample
from mmseg.visualization import SegLocalVisualizer
from vtseg.mm.visualizer import ContiguousSegLocalVisualizer

META = dict(classes=('background', 'arm'), palette=[[0, 0, 0], [51, 170, 221]])


def view_and_labels():
    """What browse_dataset.py draws: a CHW tensor permuted to HWC, channels reordered (a view)."""
    chw = torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8)
    image = chw.permute(1, 2, 0).numpy()[..., [2, 1, 0]]
    labels = torch.zeros(1, 40, 48, dtype=torch.long)
    labels[:, 10:30, 5:25] = 1
    sample = SegDataSample(gt_sem_seg=PixelData(data=labels))
    return image, sample


def draw(visualizer_type, image, sample):
    visualizer = visualizer_type(name=f'test_{visualizer_type.__name__}', alpha=1.0)
    visualizer.dataset_meta = META
    visualizer.add_datasample('x', image, sample, draw_pred=False)
    return visualizer.get_image()


def test_mmseg_visualizer_fails_on_the_view_it_is_given():
    """open-mmlab/mmsegmentation issue 3405: if this stops failing, the workaround can go."""
    image, sample = view_and_labels()
    assert not image.flags.c_contiguous
    with pytest.raises(cv2.error, match='Layout of the output array'):
        draw(SegLocalVisualizer, image, sample)


def test_contiguous_visualizer_draws_what_mmseg_draws_for_a_copy():
    image, sample = view_and_labels()
    drawn = draw(ContiguousSegLocalVisualizer, image, sample)
    np.testing.assert_array_equal(drawn, draw(SegLocalVisualizer, np.ascontiguousarray(image), sample))
    assert (drawn[12, 6] == META['palette'][1]).all() and (drawn[35, 40] == 0).all()

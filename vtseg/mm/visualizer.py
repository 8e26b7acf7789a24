"""mmseg's ``SegLocalVisualizer`` for images that are array views.

mmseg 1.2.2 draws the class names of a label map with OpenCV into
``np.zeros_like(image)``, which keeps the image's memory layout; OpenCV refuses
to draw into a non-contiguous array ("Layout of the output array img is
incompatible with cv::Mat"). mmseg's own ``tools/analysis_tools/browse_dataset.py``
passes exactly such a view (the data set's CHW tensor permuted to HWC), so it
fails on every data set (open-mmlab/mmsegmentation issue 3405).
:class:`ContiguousSegLocalVisualizer` hands mmseg a contiguous copy and changes
nothing else; with it the unchanged tool works::

    python $MMSEG_TOOLS/analysis_tools/browse_dataset.py CONFIG --output-dir browse --not-show \\
        --cfg-options visualizer.type=ContiguousSegLocalVisualizer
"""
from typing import Any

import numpy as np

from mmseg.registry import VISUALIZERS
from mmseg.visualization import SegLocalVisualizer

__all__ = ['ContiguousSegLocalVisualizer']


@VISUALIZERS.register_module()
class ContiguousSegLocalVisualizer(SegLocalVisualizer):
    """``SegLocalVisualizer`` whose ``add_datasample`` accepts non-contiguous images.

    Same arguments and output as mmseg's; ``image`` ``(H, W, 3)`` is copied to a
    C-contiguous array first when it is a view with another layout.
    """

    def add_datasample(self, name: str, image: np.ndarray, *args: Any, **kwargs: Any) -> None:
        super().add_datasample(name, np.ascontiguousarray(image), *args, **kwargs)

"""mmseg data set classes for data vtseg makes itself."""
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from vtseg.datasets import VTSHAPES_CLASSES, VTSHAPES_PALETTE

__all__ = ['VTShapesDataset']


@DATASETS.register_module()
class VTShapesDataset(BaseSegDataset):
    """VT-Shapes (see :mod:`vtseg.datasets.vtshapes`): ``.jpg`` images and
    ``.png`` label maps with ids 0 (background) to 4; 0 is a real class."""

    METAINFO = dict(classes=VTSHAPES_CLASSES, palette=VTSHAPES_PALETTE)

    def __init__(self,
                 img_suffix: str = '.jpg',
                 seg_map_suffix: str = '.png',
                 reduce_zero_label: bool = False,
                 **kwargs) -> None:
        super().__init__(
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            reduce_zero_label=reduce_zero_label,
            **kwargs)

"""OpenMMLab adapters: thin registered wrappers over :mod:`vtseg.models`.

Importing this package (``import vtseg`` does it when mmsegmentation is
installed, e.g. through ``custom_imports=dict(imports=['vtseg'])``) registers
``VTResNet`` (:class:`.backbones.VTResNetBackbone`), ``VTFPN`` (:class:`.necks.VTFPNNeck`)
and ``SwapLabelsSegTTAModel`` (flip test for left/right class pairs, see
:mod:`.tta`) in mmseg's ``MODELS`` (and ``VTShapesDataset`` in ``DATASETS``, and
``ContiguousSegLocalVisualizer`` in ``VISUALIZERS``, see :mod:`.visualizer`).
With mmpretrain installed it also registers ``TokenPoolingClsHead`` in
mmpretrain's ``MODELS`` (see :mod:`.pretrain`).

:func:`allow_mmengine_checkpoints` (see :mod:`.checkpoint`) lets mmengine's training
checkpoints load under torch's ``weights_only`` unpickler. It is an explicit call: the
tools make it, and ``import vtseg`` makes it (see :mod:`vtseg`), not this package's import.
"""
from importlib.util import find_spec

from .backbones import VTResNetBackbone
from .checkpoint import allow_mmengine_checkpoints
from .datasets import VTShapesDataset
from .necks import VTFPNNeck
from .tta import SwapLabelsSegTTAModel
from .visualizer import ContiguousSegLocalVisualizer

if find_spec('mmpretrain') is not None:  # optional extra: pip install -e .[cls]
    from . import pretrain  # noqa: F401  (registers TokenPoolingClsHead)

__all__ = ['VTResNetBackbone', 'VTFPNNeck', 'VTShapesDataset', 'SwapLabelsSegTTAModel',
           'ContiguousSegLocalVisualizer', 'allow_mmengine_checkpoints']

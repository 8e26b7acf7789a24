"""vtseg: Visual Transformers (Wu et al., arXiv 2006.03677) for semantic segmentation.

``vtseg.layers`` and ``vtseg.models`` are pure PyTorch. When mmsegmentation is
installed, importing vtseg also registers the mmseg adapters (``VTResNet``,
``VTFPN``) so that configs can use them through
``custom_imports = dict(imports=['vtseg'], allow_failed_imports=False)``.

Global settings ``import vtseg`` changes, on purpose:

- known, harmless notices of the dependencies are hidden, each by its message and
  category (:func:`vtseg.utils.dependency_warnings.hide_known_dependency_warnings`);
- with mmsegmentation installed, torch's ``weights_only`` unpickler is allowed the
  numpy and ``HistoryBuffer`` types that mmengine's training checkpoints hold
  (:func:`vtseg.mm.allow_mmengine_checkpoints`, nothing else: pickled code is still
  refused). vtseg's tools call it themselves; the import does it too because mmseg's
  own, unchanged ``tools/test.py`` and ``tools/train.py --resume`` import vtseg only
  through a config's ``custom_imports``, and would otherwise fail to read a vtseg
  training checkpoint.
"""
from importlib.util import find_spec

from .utils.dependency_warnings import hide_known_dependency_warnings

__version__ = '0.1.0'

# Before any OpenMMLab import: their known, harmless notices (by message and category) stay
# hidden unless Python is run with -W / PYTHONWARNINGS (see vtseg.utils.dependency_warnings).
hide_known_dependency_warnings()

if find_spec('mmseg') is not None:
    from . import mm  # registers the modules into mmseg's MODELS

    mm.allow_mmengine_checkpoints()  # see the module docstring: for mmseg's own tools

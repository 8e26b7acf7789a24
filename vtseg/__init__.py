"""vtseg: Visual Transformers (Wu et al., arXiv 2006.03677) for semantic segmentation.

``vtseg.layers`` and ``vtseg.models`` are pure PyTorch. When mmsegmentation is
installed, importing vtseg also registers the mmseg adapters (``VTResNet``,
``VTFPN``) so that configs can use them through
``custom_imports = dict(imports=['vtseg'], allow_failed_imports=False)``.
"""
from importlib.util import find_spec

from .utils.dependency_warnings import hide_known_dependency_warnings

__version__ = '0.1.0'

# Before any OpenMMLab import: their known, harmless notices (by message and category) stay
# hidden unless Python is run with -W / PYTHONWARNINGS (see vtseg.utils.dependency_warnings).
hide_known_dependency_warnings()

if find_spec('mmseg') is not None:
    from . import mm  # noqa: F401  (registers the modules into mmseg's MODELS)

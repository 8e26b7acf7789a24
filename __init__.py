"""The top folder of a vtseg clone, imported as ``vtseg`` when Python runs from the folder that holds it.

A clone named ``vtseg`` next to a user's script (or in the working directory of
``python -c``/a notebook) comes first on ``sys.path``; without this file Python would
take it for an empty namespace package ``vtseg``, register nothing, and fail much later
(``KeyError: 'mmseg.VTResNet is not in the mmpretrain::model registry'``). Instead this
file loads the package that lives inside the clone (``<clone>/vtseg``) as ``vtseg``:
the same code an editable install of the clone runs. It is only ever executed in that
situation (imported under any other name, e.g. by pytest as the package of the repository's
tests, it does nothing); the package itself is ``vtseg/__init__.py``.
"""
import importlib.util
import os.path as osp
import sys

if __name__ == 'vtseg':  # imported under another name (pytest's package "main" of the clone): nothing to do
    _PACKAGE_DIR = osp.join(osp.dirname(osp.abspath(__file__)), 'vtseg')
    if not osp.isfile(osp.join(_PACKAGE_DIR, '__init__.py')):
        raise ImportError(f'{osp.dirname(_PACKAGE_DIR)} shadows the vtseg package (it is imported as vtseg '
                          'but has no vtseg/__init__.py): run from another folder or rename it')
    _spec = importlib.util.spec_from_file_location(
        __name__, osp.join(_PACKAGE_DIR, '__init__.py'), submodule_search_locations=[_PACKAGE_DIR])
    _package = importlib.util.module_from_spec(_spec)
    sys.modules[__name__] = _package  # the import statement returns this module, not the clone's folder
    _spec.loader.exec_module(_package)

"""Shared fixtures: small data sets written by the tests, paths of the tools."""
import os.path as osp

import pytest
from vtseg_testing import REPO


@pytest.fixture(scope='session')
def repo_root() -> str:
    return REPO


@pytest.fixture(scope='session')
def mmseg_tools() -> str:
    """mmsegmentation's own tool scripts, shipped inside the package."""
    import mmseg
    return osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools')


@pytest.fixture(scope='session')
def vtshapes_root(tmp_path_factory) -> str:
    """A small VT-Shapes data set (16 train / 8 val images of 96x96) in mmseg's layout."""
    from vtseg.datasets import make_vtshapes
    return make_vtshapes(str(tmp_path_factory.mktemp('vtshapes')), num_train=16, num_val=8)

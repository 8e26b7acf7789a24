"""Shared fixtures: small data sets written by the tests, paths of the tools."""
import os.path as osp

import pytest
import torch
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


@pytest.fixture(scope='module')
def one_torch_thread():
    """Run a module's tests on one torch thread: on a shared 2-core machine, OpenMP's
    second thread makes small forward passes up to 20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_sessionstart(session) -> None:
    """Hide the dependencies' known harmless warnings for the whole session, as ``import vtseg``
    does in a tool: pytest restores the warning filters after loading conftests, collecting and
    each test, so the filters ``import vtseg`` installs there would not last."""
    from vtseg.utils.dependency_warnings import hide_known_dependency_warnings
    hide_known_dependency_warnings()

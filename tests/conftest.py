"""Shared fixtures: small data sets written by the tests, paths of the tools."""
import os
import os.path as osp
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


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


def vtshapes_options(root: str) -> list:
    """``--cfg-options`` that point a VT-Shapes config at ``root`` and keep a run short."""
    return [f'train_dataloader.dataset.data_root={root}', f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}', 'train_dataloader.batch_size=4',
            'default_hooks.logger.interval=1']


def run_tool(args: list, cwd: str = REPO, timeout: int = 600, env: dict = None) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` in a fresh process; fail the test with its output if it fails."""
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        pytest.fail(f'{" ".join(args)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}')
    return proc

"""Fixtures of the inference API tests: a VT-FPN checkpoint made on the spot, a loaded model."""
import pytest
from inference_helpers import VTFPN_CONFIG, save_test_checkpoint


@pytest.fixture(autouse=True, scope='module')
def _one_torch_thread(one_torch_thread):
    """Every inference API test module runs on one torch thread (see tests/conftest.py)."""


@pytest.fixture(scope='session')
def vtfpn_checkpoint(tmp_path_factory) -> str:
    return save_test_checkpoint(str(tmp_path_factory.mktemp('ckpt') / 'vtfpn.pth'))


@pytest.fixture(scope='module')
def inferencer(vtfpn_checkpoint):
    from vtseg.apis import SegInferencer
    return SegInferencer(VTFPN_CONFIG, vtfpn_checkpoint, device='cpu')

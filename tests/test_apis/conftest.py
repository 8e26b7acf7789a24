"""Fixtures of the inference API tests: a VT-FPN checkpoint made on the spot, a loaded model."""
import pytest
import torch
from inference_helpers import VTFPN_CONFIG, save_test_checkpoint


@pytest.fixture(autouse=True, scope='module')
def one_torch_thread():
    """On a shared 2-core machine, OpenMP's second thread makes small forwards 20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def vtfpn_checkpoint(tmp_path_factory) -> str:
    return save_test_checkpoint(str(tmp_path_factory.mktemp('ckpt') / 'vtfpn.pth'))


@pytest.fixture(scope='module')
def inferencer(vtfpn_checkpoint):
    from vtseg.apis import SegInferencer
    return SegInferencer(VTFPN_CONFIG, vtfpn_checkpoint, device='cpu')

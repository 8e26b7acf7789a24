"""vtseg.utils.export.export_onnx: a checked graph written whole, or no file at all."""
import os

import pytest
import torch
import torch.nn as nn

from vtseg.utils.export import export_onnx, max_abs_diff, onnx_session, run_onnx

pytest.importorskip('onnx', reason="onnx is not installed (pip install onnx 'numpy<2')")


class Fails(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError('cannot trace this')


def test_export_writes_a_checked_graph(tmp_path):
    pytest.importorskip('onnxruntime')
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).train()
    x = torch.randn(1, 3, 8, 8)
    path = export_onnx(model, (x,), str(tmp_path / 'sub' / 'm.onnx'))
    assert os.listdir(tmp_path / 'sub') == ['m.onnx']
    assert model.training  # the mode is restored
    diff, _ = max_abs_diff(model.eval()(x), run_onnx(onnx_session(path), [x]))
    assert diff < 1e-5


def test_failed_export_leaves_no_file(tmp_path):
    out = tmp_path / 'm.onnx'
    out.write_bytes(b'previous')
    with pytest.raises(RuntimeError, match='cannot trace this'):
        export_onnx(Fails(), (torch.zeros(1),), str(out))
    assert out.read_bytes() == b'previous' and os.listdir(tmp_path) == ['m.onnx']

"""vtseg.utils.export.export_onnx: a checked graph written whole, or no file at all."""
import importlib.util
import os
import re
import sys
import warnings

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


class UpsampledByMMSeg(nn.Module):
    """A conv and mmseg's Upsample (its output size: the input's, as Python ints, times 2), plus
    a Python branch on the data, as a model a user wrote might have."""

    def __init__(self) -> None:
        super().__init__()
        from mmseg.models.utils import Upsample
        self.conv = nn.Conv2d(3, 2, 1)
        self.up = Upsample(scale_factor=2, mode='nearest')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.conv(x))
        if y.mean() > 1e9:  # a value of this input decides the graph: that warning always shows
            y = -y
        return y


def export_warnings(tmp_path, dynamic: bool):
    """Every warning export_onnx lets through (shown 'always', not once per place)."""
    x = torch.randn(1, 3, 8, 12)
    dynamic_axes = {'input': {2: 'height', 3: 'width'}, 'output': {2: 'h', 3: 'w'}} if dynamic else None
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter('always')
        export_onnx(UpsampledByMMSeg(), (x,), str(tmp_path / 'up.onnx'), input_names=['input'],
                    output_names=['output'], dynamic_axes=dynamic_axes)
    return [(w.category, str(w.message)) for w in shown]


def test_a_static_export_shows_only_the_warnings_that_matter(tmp_path):
    """No deprecation notice of torch's exporter, none of mmseg's sizes traced as constants (one input
    size: every shape is a constant); the data-dependent branch still shows."""
    from torch.jit import TracerWarning
    shown = export_warnings(tmp_path, dynamic=False)
    assert [(category, message.split(' might')[0]) for category, message in shown] == [
        (TracerWarning, 'Converting a tensor to a Python boolean')]


def test_a_dynamic_export_shows_the_sizes_fixed_to_the_traced_shape(tmp_path):
    """With dynamic axes mmseg's 'Converting a tensor to a Python integer' warnings show: the graph's
    output size is the traced one for any input, which onnxruntime confirms."""
    from torch.jit import TracerWarning
    shown = export_warnings(tmp_path, dynamic=True)
    assert all(category is TracerWarning for category, _ in shown), shown
    assert sum(message.startswith('Converting a tensor to a Python integer') for _, message in shown) == 2
    if importlib.util.find_spec('onnxruntime') is not None:
        [out] = run_onnx(onnx_session(str(tmp_path / 'up.onnx')), [torch.randn(1, 3, 10, 6)])
        assert out.shape == (1, 2, 16, 24)  # the traced input's 8x12, doubled, not 20x12: why they show


def test_every_known_export_warning_is_what_torch_and_mmseg_say(tmp_path, monkeypatch):
    """With every warning shown (-W, --verbose) the export hides nothing, and each entry of the export
    lists is a warning the export raised: its message, category and the module it is attributed to."""
    import vtseg.utils.dependency_warnings as dependency_warnings
    monkeypatch.setattr(dependency_warnings, '_hiding', False)  # as after show_all_warnings()
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter('always')
        export_onnx(UpsampledByMMSeg(), (torch.randn(1, 3, 8, 12),), str(tmp_path / 'up.onnx'))
    module_of_file = {getattr(m, '__file__', None): name for name, m in list(sys.modules.items())}
    raised = [(str(w.message), w.category, module_of_file.get(w.filename, '?')) for w in shown]
    known = (dependency_warnings.KNOWN_HARMLESS_EXPORT_WARNINGS
             + dependency_warnings.KNOWN_HARMLESS_STATIC_EXPORT_WARNINGS)
    for message, category, module, _ in known:  # matched as warnings.filterwarnings matches
        assert any(re.match(message, text, re.I) and issubclass(cls, category) and re.match(module, name)
                   for text, cls, name in raised), f'{message!r} is no longer what the export raises: {raised}'
    assert any(text.startswith('Converting a tensor to a Python boolean') for text, _, _ in raised)

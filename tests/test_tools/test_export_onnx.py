"""tools/export_onnx.py: VT-FPN segmentors and VT-ResNet classifiers exported to ONNX (opset 17)
give PyTorch's outputs on onnxruntime.

The tests write a checkpoint of a model they built themselves, export it through the
tool, and compare onnxruntime's output with that model's on inputs the export never
saw (other values; for --dynamic also another batch size and image size).
"""
import importlib.util
import os.path as osp
import subprocess
import sys

import pytest
import torch
from vtseg_testing import REPO

onnx = pytest.importorskip('onnx', reason="onnx is not installed (pip install onnx 'numpy<2')")
ort = pytest.importorskip('onnxruntime',
                          reason="onnxruntime is not installed (pip install onnxruntime 'numpy<2')")

VTSHAPES = osp.join(REPO, 'configs', 'vtshapes')


def export_tool():
    """tools/export_onnx.py as a module: its main() runs in this process (no second
    torch/mmseg import); one test below runs it as a script."""
    spec = importlib.util.spec_from_file_location('export_onnx_tool',
                                                  osp.join(REPO, 'tools', 'export_onnx.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def randomise_(model: torch.nn.Module) -> None:
    """Non-default weights and BN statistics, so that a dropped layer or a training-mode BN
    in the export would show."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                if name.endswith('running_var'):
                    t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=gen) * 0.1)


def ort_outputs(path: str, x: torch.Tensor):
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def check_opset(path: str) -> None:
    model = onnx.load(path)
    onnx.checker.check_model(model)
    assert {o.domain: o.version for o in model.opset_import}[''] == 17


@pytest.mark.parametrize('config', ['vt-fpn_r18_1xb8-1.5k_vtshapes-96x96.py',
                                    'vt-fpn_vt-r18_1xb8-1.5k_vtshapes-96x96.py'])
def test_vt_fpn_segmentor_matches_pytorch(config, tmp_path, capsys):
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from vtseg.utils.export import SegmentorLogits

    cfg = Config.fromfile(osp.join(VTSHAPES, config))
    init_default_scope('mmseg')
    cfg.model.pop('pretrained', None)
    segmentor = revert_sync_batchnorm(MODELS.build(cfg.model)).eval()
    randomise_(segmentor)
    ckpt = str(tmp_path / 'seg.pth')
    torch.save({'state_dict': segmentor.state_dict()}, ckpt)
    out = str(tmp_path / 'seg.onnx')
    export_tool().main([osp.join(VTSHAPES, config), '--checkpoint', ckpt, '--shape', '64', '96',
                        '--out', out])
    assert 'onnxruntime matches PyTorch on a 1x3x64x96 input' in capsys.readouterr().out
    check_opset(out)

    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = SegmentorLogits(segmentor)(x)
    [got] = ort_outputs(out, x)
    assert got.shape == (1, 5, 64, 96)  # VT-Shapes: 5 classes, logits at the input size
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-4)


def test_vt_resnet_with_dynamic_batch_and_size(tmp_path):
    from vtseg.models import vt_resnet18
    model = vt_resnet18(num_classes=7).eval()
    randomise_(model)
    ckpt = str(tmp_path / 'vt_r18.pth')
    torch.save(model.state_dict(), ckpt)
    out = str(tmp_path / 'vt_r18.onnx')
    export_tool().main(['vt_resnet18', '--num-classes', '7', '--checkpoint', ckpt, '--shape', '64',
                        '--batch', '2', '--dynamic', '--out', out])
    check_opset(out)
    for shape in [(2, 3, 64, 64), (3, 3, 96, 80)]:  # the traced shape and another one
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(6))
        with torch.no_grad():
            expected = model(x)
        [got] = ort_outputs(out, x)
        torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('args,message', [
    (['vt_resnet7'], "unknown model 'vt_resnet7'"),
    (['missing.py'], 'config missing.py not found'),
    (['vt_resnet18', '--checkpoint', 'missing.pth'], 'checkpoint missing.pth not found'),
    (['configs/vt_resnet/vt-resnet18_8xb32_in1k.py'], 'is not an mmseg segmentor config'),
])
def test_bad_input_is_one_clear_error_and_writes_nothing(args, message, tmp_path, capsys):
    out = tmp_path / 'm.onnx'
    with pytest.raises(SystemExit) as exc:
        export_tool().main([*args, '--out', str(out)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith('export_onnx.py: error:') and message in err
    assert '\n' not in err
    assert not list(tmp_path.iterdir())


def test_wrong_checkpoint_is_refused_by_the_script(tmp_path):
    from vtseg.models import vt_resnet18
    ckpt = str(tmp_path / 'r18.pth')
    torch.save(vt_resnet18(num_classes=3).state_dict(), ckpt)  # fc of 3 classes, not 1000
    out = tmp_path / 'm.onnx'
    proc = subprocess.run([sys.executable, 'tools/export_onnx.py', 'vt_resnet18', '--checkpoint',
                           ckpt, '--shape', '32', '--out', str(out)],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.startswith(f'export_onnx.py: error: checkpoint {ckpt} does not fit vt_resnet18: ') and '\n' not in err
    assert 'fc.bias: (3,) in the checkpoint, (1000,) in the model' in err
    assert not out.exists()

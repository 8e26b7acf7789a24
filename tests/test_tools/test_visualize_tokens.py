"""tools/visualize_tokens.py: token figures of VT-ResNet classifiers and VT-FPN segmentors."""
import glob
import importlib.util
import os
import os.path as osp
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from vtseg_testing import save_pickled_code_checkpoint

from vtseg.apis import CheckpointMismatchError

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
VT_FPN_VT_R18 = osp.join(REPO, 'configs/vtshapes/vt-fpn_vt-r18_1xb8-1.5k_vtshapes-96x96.py')
VT_FPN_R18 = osp.join(REPO, 'configs/vtshapes/vt-fpn_r18_1xb8-1.5k_vtshapes-96x96.py')
FPN_R18 = osp.join(REPO, 'configs/vtshapes/fpn_r18_1xb8-1.5k_vtshapes-96x96.py')
# VT-ResNet-18 with narrow tokens: quick to build and save.
NARROW = dict(num_tokens=4, token_channels=64,
              vt_cfg=dict(qk_channels=32, hidden_channels=48, projector_qk_channels=16))


@pytest.fixture(scope='module')
def tool():
    """The tool as a module, so that most tests run in this process (no start-up cost)."""
    spec = importlib.util.spec_from_file_location('visualize_tokens',
                                                  osp.join(REPO, 'tools', 'visualize_tokens.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def image(vtshapes_root) -> str:
    return sorted(glob.glob(osp.join(vtshapes_root, 'img_dir', 'val', '*.jpg')))[0]


def check_png(figure, expected_rows):
    """The PNG has the figure's size, one row per (label, tokens) and every panel drawn."""
    png = cv2.imread(figure.path, cv2.IMREAD_COLOR)
    assert png.shape == (figure.height, figure.width, 3)
    assert figure.rows == len(expected_rows)
    assert figure.cols == 2 + max(tokens for _, tokens in expected_rows)
    for row, (label, tokens) in enumerate(expected_rows):
        panels = [p for p in figure.panels if p.row == row]
        assert {p.label for p in panels} == {label}
        assert [p.token for p in panels if p.kind == 'token'] == list(range(tokens))
        assert len(panels) == 2 + tokens
    for p in figure.panels:
        x0, y0, x1, y1 = p.box
        assert not (png[y0:y1, x0:x1] == 255).all(), p
    return png


def test_vt_resnet18_by_name(tool, image, tmp_path, capsys):
    out = str(tmp_path / 'vt_r18.png')
    args = tool.parse_args([image, 'vt_resnet18', '--out', out, '--img-size', '64', '--dpi', '40'])
    figure = tool.run(args)
    check_png(figure, [('VT module 1', 16), ('VT module 2', 16)])
    assert [p.kind for p in figure.panels if p.col == 1] == ['argmax', 'no-projector']
    assert 'warning: no checkpoint given' in capsys.readouterr().err


def test_vt_fpn_on_vt_resnet18_segmentor(tool, image, tmp_path):
    out = str(tmp_path / 'vt_fpn.png')
    figure = tool.run(tool.parse_args([image, VT_FPN_VT_R18, '--out', out, '--dpi', '30']))
    # Both token models of the config: the backbone's 2 VT modules, then the 4 VT-FPN levels.
    check_png(figure, [('VT module 1', 16), ('VT module 2', 16), ('VT-FPN level 1', 8),
                       ('VT-FPN level 2', 8), ('VT-FPN level 3', 8), ('VT-FPN level 4', 8)])
    assert all(p.kind != 'no-projector' for p in figure.panels)


def test_segmentor_checkpoint(tool, image, tmp_path):
    from mmengine.config import Config
    from mmengine.runner import save_checkpoint
    from mmseg.apis import init_model
    torch.manual_seed(1)
    trained = init_model(VT_FPN_R18, device='cpu')
    path = str(tmp_path / 'iter_1.pth')
    save_checkpoint({'state_dict': trained.state_dict(), 'meta': {'iter': 1}}, path)
    model, kind = tool.build_from_config(Config.fromfile(VT_FPN_R18), path, 'cpu')
    assert kind == 'segmentor'
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_arch_name_reads_widths_from_checkpoint(tool, image, tmp_path):
    from vtseg.models import vt_resnet18
    torch.manual_seed(2)
    trained = vt_resnet18(num_classes=5, **NARROW)
    plain = str(tmp_path / 'plain.pth')
    torch.save(trained.state_dict(), plain)
    model = tool.build_arch('vt_resnet18', plain)
    assert model.num_classes == 5 and model.vt_modules[-1].projector is None
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)
    # Weights that do not fit are refused, not silently left random.
    state = trained.state_dict()
    del state['layer1.0.conv1.weight']
    torch.save(state, plain)
    with pytest.raises(CheckpointMismatchError,
                       match=r'does not fit vt_resnet18: 1 model weights are not in it \(layer1\.0\.conv1\.weight\)'):
        tool.build_arch('vt_resnet18', plain)
    # The same weights as the backbone of a classifier/segmentor checkpoint ('backbone.' keys).
    wrapped = str(tmp_path / 'wrapped.pth')
    torch.save({'state_dict': {**{f'backbone.{k}': v for k, v in trained.state_dict().items()},
                               'head.fc.weight': torch.zeros(5, 64)}}, wrapped)
    figure = tool.run(tool.parse_args([image, 'vt_resnet18', wrapped, '--out',
                                       str(tmp_path / 'w.png'), '--img-size', '48', '--dpi', '40',
                                       '--colors', '64']))
    png = check_png(figure, [('VT module 1', 4), ('VT module 2', 4)])
    assert len(np.unique(png.reshape(-1, 3), axis=0)) <= 64  # a palette PNG


def test_classifier_config(tool, image, tmp_path):
    """An mmpretrain-style VT-ResNet classifier config: only its backbone is built."""
    from vtseg.mm import VTResNetBackbone
    config = tmp_path / 'vt-resnet18_cls.py'
    config.write_text(
        "custom_imports = dict(imports=['vtseg'], allow_failed_imports=False)\n"
        'model = dict(\n'
        "    type='ImageClassifier',\n"
        "    backbone=dict(type='mmseg.VTResNet', depth=18, num_tokens=4, token_channels=64,\n"
        '                  vt_cfg=dict(qk_channels=32, hidden_channels=48, '
        'projector_qk_channels=16),\n'
        '                  out_indices=(), out_tokens=True, project_last=False),\n'
        "    head=dict(type='TokenPoolingClsHead', num_classes=3, in_channels=64))\n"
        'data_preprocessor = dict(mean=[0, 0, 0], std=[255, 255, 255], to_rgb=False)\n')
    torch.manual_seed(3)
    trained = VTResNetBackbone(depth=18, num_tokens=4, token_channels=64, out_indices=(), out_tokens=True,
                               project_last=False, vt_cfg=NARROW['vt_cfg'])
    path = str(tmp_path / 'epoch_1.pth')
    torch.save({'state_dict': {**{f'backbone.{k}': v for k, v in trained.state_dict().items()},
                               'head.fc.weight': torch.zeros(3, 64)}}, path)
    from mmengine.config import Config
    cfg = Config.fromfile(str(config))
    model, kind = tool.build_from_config(cfg, path, 'cpu')
    assert kind == 'classifier' and isinstance(model, VTResNetBackbone)
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)
    assert tool._classifier_preprocessing(cfg) == dict(mean=(0, 0, 0), std=(255, 255, 255),
                                                       to_rgb=False)
    figure = tool.run(tool.parse_args([image, str(config), path, '--out', str(tmp_path / 'c.png'),
                                       '--img-size', '32', '--dpi', '40']))
    check_png(figure, [('VT module 1', 4), ('VT module 2', 4)])


def write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize('case', ['missing image', 'unreadable image', 'missing config',
                                  'bad config', 'missing checkpoint', 'corrupt checkpoint',
                                  'foreign checkpoint', 'not png', 'no tokens', 'tpu device',
                                  'meta device', 'cfg-options model=3', 'pickled code'])
def test_errors_are_one_line(tool, image, tmp_path, capsys, case):
    out = str(tmp_path / 'out.png')
    args = {
        'missing image': ([str(tmp_path / 'nope.jpg'), 'vt_resnet18'], 'does not exist'),
        'unreadable image': ([write(tmp_path / 'bad.jpg', b'not a jpeg'), 'vt_resnet18'],
                             'cannot read image'),
        'missing config': ([image, 'vt_resnet19'], 'neither a file nor an architecture name'),
        'bad config': ([image, write(tmp_path / 'bad.py', b'model = dict(\n')],
                       'cannot load config .*: SyntaxError'),
        'missing checkpoint': ([image, 'vt_resnet18', str(tmp_path / 'nope.pth')],
                               'checkpoint .* not found: pass a .pth file'),
        'corrupt checkpoint': ([image, 'vt_resnet18', write(tmp_path / 'bad.pth', b'junk')],
                               'cannot read checkpoint'),
        'foreign checkpoint': ([image, 'vt_resnet18', str(tmp_path / 'other.pth')],
                               'not a VT-ResNet-18 checkpoint'),
        'not png': ([image, 'vt_resnet18', '--out', str(tmp_path / 'out.jpg')], 'must name a .png'),
        'no tokens': ([image, FPN_R18], 'has no VT module'),
        'tpu device': ([image, 'vt_resnet18', '--device', 'tpu'], "unknown device 'tpu'"),
        'meta device': ([image, 'vt_resnet18', '--device', 'meta'],
                        r"device 'meta' cannot run inference here: use cpu or cuda\[:N\]"),
        'cfg-options model=3': ([image, VT_FPN_R18, '--cfg-options', 'model=3'],
                                '--cfg-options model=3 would replace the config section model'),
        'pickled code': ([image, 'vt_resnet18', str(tmp_path / 'evil.pth')],
                         r'cannot read checkpoint \S*evil.pth: it holds a pickled reference to '
                         r'(posix|os)\.system'),
    }
    argv, message = args[case]
    torch.save({'conv.weight': torch.zeros(1)}, str(tmp_path / 'other.pth'))
    save_pickled_code_checkpoint(tmp_path / 'evil.pth', tmp_path / 'PWNED')
    if '--out' not in argv:
        argv = [*argv, '--out', out]
    assert tool.main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith('visualize_tokens.py: error:')]
    assert len(errors) == 1
    assert re.search(message, errors[0]), errors[0]
    assert 'weights_only=False' not in errors[0] and not (tmp_path / 'PWNED').exists()
    assert not os.path.exists(out) and not glob.glob(str(tmp_path / '*.png'))


def test_script_exit_status(image, tmp_path):
    """As a script: status 2 and nothing but the error line."""
    proc = subprocess.run([sys.executable, 'tools/visualize_tokens.py', image, 'vt_resnet18',
                           str(tmp_path / 'nope.pth'), '--out', str(tmp_path / 'x.png')],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f'visualize_tokens.py: error: checkpoint {tmp_path / "nope.pth"} not found: pass a .pth file saved '
        'by training (e.g. work_dirs/<config>/iter_1500.pth)')
    assert not (tmp_path / 'x.png').exists()

"""mmseg's own analysis tools on vtseg configs and runs, and LIP's flip test through tools/test.py --tta.

- ``browse_dataset.py`` on the LIP config: the drawn labels of a mirrored image have
  Left-*/Right-* swapped (the training flip swaps them); it needs vtseg's
  ``ContiguousSegLocalVisualizer`` (``--cfg-options visualizer.type=...``), mmseg's own
  visualizer fails on every data set there (tests/test_mm/test_visualizer.py);
- ``confusion_matrix.py`` on the label maps that ``tools/test.py --out`` writes;
- ``analyze_logs.py`` on the json log of a ``tools/train.py`` run;
- TensorBoard as an opt-in visualisation backend through ``--cfg-options``.

The tools are mmseg 1.2.2's, as shipped inside the package (``mmseg/.mim/tools``), run unchanged.
"""
import importlib.util
import glob
import os.path as osp
import re

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

import vtseg  # noqa: F401  (registers vtseg's modules; checkpoints load with weights_only=True)
from mmseg.registry import DATASETS, MODELS, VISUALIZERS
from test_configs.test_train_configs import tiny_run_options
from vtseg_testing import REPO, as_cfg_options, make_lip, run_tool, vtshapes_options

LIP_CONFIG = osp.join(REPO, 'configs', 'lip', 'vt-fpn_r50_8xb12-50k_lip-473x473.py')
VTSHAPES_CONFIG = osp.join(REPO, 'configs', 'vtshapes', 'vt-fpn_r18_1xb8-1.5k_vtshapes-96x96.py')
# Shown in the README ("Train and test"): TensorBoard in place of the local json backend.
TENSORBOARD_OPTION = 'visualizer.vis_backends.0.type=TensorboardVisBackend'


def mmseg_tool(mmseg_tools: str, name: str) -> str:
    return osp.join(mmseg_tools, 'analysis_tools', f'{name}.py')


def load_module(path: str):
    spec = importlib.util.spec_from_file_location(f'mmseg_tool_{osp.basename(path)[:-3]}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def lip_root(tmp_path_factory) -> str:
    return make_lip(str(tmp_path_factory.mktemp('lip')))


@pytest.fixture(scope='module')
def vtshapes_run(vtshapes_root, tmp_path_factory) -> dict:
    """4 iterations of VT-FPN R-18 on the tiny VT-Shapes (validation at 2 and 4), then test.py --out."""
    tmp = tmp_path_factory.mktemp('vtshapes_run')
    work_dir, pred_dir = str(tmp / 'work'), str(tmp / 'pred')
    options = ['--cfg-options', *vtshapes_options(vtshapes_root), 'train_dataloader.batch_size=2',
               'train_cfg.max_iters=4', 'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=4']
    run_tool(['tools/train.py', VTSHAPES_CONFIG, '--work-dir', work_dir, *options])
    tested = run_tool(['tools/test.py', VTSHAPES_CONFIG, osp.join(work_dir, 'iter_4.pth'), '--work-dir',
                       str(tmp / 'test'), '--out', pred_dir, *options]).stdout
    return dict(work_dir=work_dir, pred_dir=pred_dir, test_log=tested, options=options)


def test_browse_dataset_shows_lip_flips_swapping_left_and_right(lip_root, mmseg_tools, tmp_path):
    cfg = Config.fromfile(LIP_CONFIG)
    # mmseg's own visualizer cannot draw on the view browse_dataset.py passes (upstream issue 3405)
    overrides = {'train_dataloader.dataset.data_root': lip_root, 'visualizer.type': 'ContiguousSegLocalVisualizer',
                 'visualizer.alpha': 1.0}  # alpha 1: the labels' colours only
    for i, step in enumerate(cfg.train_dataloader.dataset.pipeline):
        key = f'train_dataloader.dataset.pipeline.{i}'
        if step.type == 'RandomResize':  # a fixed scale: the drawing can be compared with the label file
            overrides.update({f'{key}.scale': (128, 128), f'{key}.ratio_range': (1.0, 1.0)})
        elif step.type == 'RandomFlip':
            assert i == 4  # as the README's browse_dataset.py command says
            overrides[f'{key}.prob'] = 1.0  # every image mirrored
    out_dir = tmp_path / 'browse'
    run_tool([mmseg_tool(mmseg_tools, 'browse_dataset'), LIP_CONFIG, '--output-dir', str(out_dir),
              '--not-show', '--cfg-options', *as_cfg_options(overrides)])

    init_default_scope('mmseg')
    meta = DATASETS.get('LIPDataset').METAINFO
    classes, palette = meta['classes'], np.array(meta['palette'])
    left, right = classes.index('Left-arm'), classes.index('Right-arm')
    drawn_files = sorted(out_dir.glob('*.jpg'))
    assert len(drawn_files) == len(glob.glob(osp.join(lip_root, 'img_dir', 'train', '*.jpg'))) == 4
    agree = unswapped = total = 0
    for drawn_file in drawn_files:
        drawn = np.asarray(Image.open(drawn_file).convert('RGB')).astype(int)
        # back to class ids: the nearest palette colour (the drawing is a JPEG)
        distance = np.abs(drawn[:, :, None, :] - palette[None, None]).sum(-1)
        decoded = distance.argmin(-1)
        decoded[distance.min(-1) > 60] = -1  # class-name captions and JPEG edges
        label = np.asarray(Image.open(osp.join(lip_root, 'ann_dir', 'train', drawn_file.stem + '.png')))
        h, w = decoded.shape
        expected = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)[:, ::-1].copy()  # mirrored
        arms = np.isin(expected, (left, right))
        # a mirrored left arm is drawn as a right arm, and the other way round
        swapped = np.where(expected == left, right, np.where(expected == right, left, expected))
        seen = arms & (decoded >= 0)
        agree += (decoded[seen] == swapped[seen]).sum()
        unswapped += (decoded[seen] == expected[seen]).sum()
        total += seen.sum()
    # (the rest: caption boxes drawn over the arms, and rounding where the resize differs from ours)
    assert total > 200 and agree / total > 0.85 and unswapped / total < 0.02


def test_confusion_matrix_of_test_py_out(vtshapes_run, mmseg_tools, tmp_path):
    preds = sorted(glob.glob(osp.join(vtshapes_run['pred_dir'], '*.png')))
    assert len(preds) == 8
    save_dir = tmp_path / 'matrix'
    save_dir.mkdir()
    tool = mmseg_tool(mmseg_tools, 'confusion_matrix')
    run_tool([tool, VTSHAPES_CONFIG, vtshapes_run['pred_dir'], str(save_dir), *vtshapes_run['options']])
    with Image.open(save_dir / 'confusion_matrix.png') as plot:
        assert plot.size[0] > 1000  # mmseg draws 2 inches per class at 300 dpi

    # The same tool's matrix, in this process: its accuracy is the aAcc test.py printed.
    module = load_module(tool)
    cfg = Config.fromfile(VTSHAPES_CONFIG)
    cfg.merge_from_dict(dict(o.split('=', 1) for o in vtshapes_run['options'][1:] if 'data_root' in o))
    init_default_scope('mmseg')
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    matrix = module.calculate_confusion_matrix(dataset, [np.array(Image.open(p)) for p in preds])
    assert matrix.sum() == 8 * 96 * 96
    a_acc = float(re.search(r'aAcc: ([\d.]+)', vtshapes_run['test_log']).group(1))
    assert 100 * np.trace(matrix) / matrix.sum() == pytest.approx(a_acc, abs=0.01)


def test_analyze_logs_on_a_training_log(vtshapes_run, mmseg_tools, tmp_path):
    pytest.importorskip('seaborn', reason="mmseg's analyze_logs.py imports seaborn (optional extra: "
                        'pip install -e .[mim], or bash tools/setup.sh)')
    json_logs = glob.glob(osp.join(vtshapes_run['work_dir'], '*', 'vis_data', '*.json'))
    json_logs = [p for p in json_logs if osp.basename(p) != 'scalars.json']
    assert len(json_logs) == 1
    out = tmp_path / 'curves.png'
    tool = mmseg_tool(mmseg_tools, 'analyze_logs')
    printed = run_tool([tool, json_logs[0], '--keys', 'loss', 'mIoU', '--out', str(out)]).stdout
    assert 'metric is loss' in printed and 'metric is mIoU' in printed
    with Image.open(out) as plot:
        assert plot.size[0] > 100
    # what it plotted: the loss of every iteration, mIoU at both validations
    log = load_module(tool).load_json_logs(json_logs)[0]
    assert sorted(step for step, values in log.items() if 'loss' in values) == [1, 2, 3, 4]
    assert sorted(step for step, values in log.items() if 'mIoU' in values) == [2, 4]


def test_tensorboard_is_one_cfg_option(tmp_path):
    """The README's option gives a TensorBoard backend; without tensorboard installed the
    visualiser still builds (mmengine imports tensorboard when the backend is first written to)."""
    import argparse
    from vtseg.mm.cli import add_cfg_options
    with open(osp.join(REPO, 'README.md')) as f:
        assert TENSORBOARD_OPTION in f.read()
    parser = argparse.ArgumentParser()
    add_cfg_options(parser)
    cfg = Config.fromfile(VTSHAPES_CONFIG)
    cfg.merge_from_dict(parser.parse_args(['--cfg-options', TENSORBOARD_OPTION]).cfg_options)
    assert [b.type for b in cfg.visualizer.vis_backends] == ['TensorboardVisBackend']
    init_default_scope('mmseg')
    visualizer = VISUALIZERS.build({**cfg.visualizer, 'name': 'tensorboard_check', 'save_dir': str(tmp_path)})
    assert [type(b).__name__ for b in visualizer._vis_backends.values()] == ['TensorboardVisBackend']


def test_tensorboard_run_writes_events(vtshapes_root, tmp_path):
    pytest.importorskip('tensorboard', reason='tensorboard is not installed (pip install tensorboard); '
                        'the option itself is checked by test_tensorboard_is_one_cfg_option')
    work_dir = str(tmp_path / 'work')
    run_tool(['tools/train.py', VTSHAPES_CONFIG, '--work-dir', work_dir, '--cfg-options',
              *vtshapes_options(vtshapes_root), 'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
              TENSORBOARD_OPTION])
    assert glob.glob(osp.join(work_dir, '*', 'vis_data', 'events.out.tfevents.*'))


def test_lip_flip_test_through_test_py(lip_root, tmp_path):
    """tools/test.py --tta on the LIP val images: the config's flip test with SwapLabelsSegTTAModel."""
    cfg = Config.fromfile(LIP_CONFIG)
    overrides = tiny_run_options(cfg, lip_root, str(tmp_path / 'work'))
    overrides['tta_pipeline.1.transforms.0.0.scale'] = (64, 64)
    init_default_scope('mmseg')
    model_cfg = cfg.model
    model_cfg.backbone.init_cfg = None
    model_cfg.pop('pretrained', None)
    checkpoint = str(tmp_path / 'vt-fpn_lip_init.pth')
    torch.save({'state_dict': MODELS.build(model_cfg).state_dict(), 'meta': {}}, checkpoint)
    tested = run_tool(['tools/test.py', LIP_CONFIG, checkpoint, '--tta', '--cfg-options',
                       *as_cfg_options(overrides)]).stdout
    assert "type='SwapLabelsSegTTAModel'" in tested
    assert 'Iter(test) [2/2]' in tested and 'mIoU:' in tested

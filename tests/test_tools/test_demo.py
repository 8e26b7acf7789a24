"""tools/demo.py end to end on the tiny VT-Shapes fixture: data, train, test, folder inference."""
import os.path as osp
import runpy
import sys

import pytest

from vtseg_testing import REPO, run_tool


def test_demo_runs_every_stage(vtshapes_root, tmp_path):
    work_dir = tmp_path / 'demo'
    out = run_tool([osp.join(REPO, 'tools', 'demo.py'), '--data-root', vtshapes_root,
                    '--num-train', '16', '--num-val', '8', '--work-dir', str(work_dir),
                    '--cfg-options', 'train_dataloader.batch_size=2', 'train_cfg.max_iters=2',
                    'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2']).stdout
    for stage in ('data', 'train', 'test', 'infer'):
        assert f'== {stage}' in out
    assert (work_dir / 'iter_2.pth').is_file()
    assert 'checkpoint: ' + str(work_dir / 'iter_2.pth') in out
    line = next(row for row in out.splitlines() if 'val mIoU:' in row)
    assert 0.0 <= float(line.split('val mIoU:')[1].split()[0]) <= 1.0
    assert 'overlays:   8 in' in out
    assert len(list((work_dir / 'infer' / 'vis').rglob('*.*'))) == 8


def test_missing_config_is_one_error_line(monkeypatch, capsys):
    main = runpy.run_path(osp.join(REPO, 'tools', 'demo.py'))['main']
    monkeypatch.setattr(sys, 'argv', ['demo.py', '--config', 'missing.py'])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err == 'demo.py: error: config file not found: missing.py'

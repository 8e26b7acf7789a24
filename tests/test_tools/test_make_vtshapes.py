"""tools/make_vtshapes.py: the data set on disk, and one error line for bad arguments."""
import os.path as osp
import runpy
import sys

import cv2
import numpy as np
import pytest

from vtseg_testing import REPO

MAIN = runpy.run_path(osp.join(REPO, 'tools', 'make_vtshapes.py'))['main']


def test_writes_mmseg_layout_deterministically(tmp_path, monkeypatch, capsys):
    for name in ('a', 'b'):
        monkeypatch.setattr(sys, 'argv', ['make_vtshapes.py', '--out', str(tmp_path / name),
                                          '--num-train', '3', '--num-val', '2', '--size', '48'])
        MAIN()
    assert '3 train + 2 val images of 48x48' in capsys.readouterr().out
    for split, names in (('train', ['00000', '00001', '00002']), ('val', ['100000', '100001'])):
        assert sorted(p.stem for p in (tmp_path / 'a' / 'img_dir' / split).iterdir()) == names
        for stem in names:
            img_a = cv2.imread(str(tmp_path / 'a' / 'img_dir' / split / f'{stem}.jpg'))
            label_a = cv2.imread(str(tmp_path / 'a' / 'ann_dir' / split / f'{stem}.png'), cv2.IMREAD_UNCHANGED)
            label_b = cv2.imread(str(tmp_path / 'b' / 'ann_dir' / split / f'{stem}.png'), cv2.IMREAD_UNCHANGED)
            assert img_a.shape == (48, 48, 3) and label_a.shape == (48, 48)
            assert label_a.max() <= 4 and np.array_equal(label_a, label_b)


@pytest.mark.parametrize('argv, message', [
    (['--num-train', '-1'], 'give counts >= 0'),
    (['--num-train', '0', '--num-val', '0'], 'at least one of them positive'),
    (['--size', '8'], '--size 8 is too small'),
])
def test_bad_arguments_are_one_error_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', ['make_vtshapes.py', '--out', str(tmp_path / 'd'), *argv])
    with pytest.raises(SystemExit) as exit_info:
        MAIN()
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and message in err and '\n' not in err
    assert not osp.exists(tmp_path / 'd')


def test_a_folder_of_another_data_set_is_refused_untouched(tmp_path, monkeypatch, capsys):
    root = tmp_path / 'd'
    for argv in (['--num-train', '3', '--num-val', '1'], ['--num-train', '2', '--num-val', '1'],
                 ['--num-train', '3', '--num-val', '1', '--size', '48']):
        monkeypatch.setattr(sys, 'argv', ['make_vtshapes.py', '--out', str(root), '--size', '32', *argv])
        if argv[1] == '3' and '48' not in argv and not root.exists():
            MAIN()
            before = sorted(p.name for p in root.rglob('*'))
            continue
        with pytest.raises(SystemExit) as exit_info:
            MAIN()
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and '\n' not in err and 'delete' in err
        assert ('00002.jpg' in err) if argv[1] == '2' else ("'size': 32" in err)
        assert sorted(p.name for p in root.rglob('*')) == before
    # more scenes of the same data set only fill the gaps
    monkeypatch.setattr(sys, 'argv', ['make_vtshapes.py', '--out', str(root), '--size', '32',
                                      '--num-train', '4', '--num-val', '2'])
    MAIN()
    assert len(list((root / 'img_dir' / 'train').iterdir())) == 4
    assert sorted(p.stem for p in (root / 'img_dir' / 'val').iterdir()) == ['100000', '100001']


def test_out_that_is_a_file_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / 'f').write_text('x')
    monkeypatch.setattr(sys, 'argv', ['make_vtshapes.py', '--out', str(tmp_path / 'f')])
    with pytest.raises(SystemExit):
        MAIN()
    assert 'exists and is not a folder' in capsys.readouterr().err

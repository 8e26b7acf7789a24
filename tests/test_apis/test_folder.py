"""Folder runs: which files are images, outputs per image, bad files, re-runs, interruptions."""
import glob
import os
import os.path as osp

import cv2
import numpy as np
import pytest
from PIL import Image

import vtseg.apis.folder as folder_module
from vtseg.apis import FolderRunner, InferenceSetupError, find_images, infer_folder, load_image

RNG = np.random.default_rng(2)


def _write(path, h: int, w: int) -> str:
    os.makedirs(osp.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return str(path)


def _leftovers(out_dir) -> list:
    """Temporary or hidden files under ``out_dir`` (there must be none after a run)."""
    return [p for p in glob.glob(osp.join(out_dir, '**', '*'), recursive=True)
            if p.endswith('.tmp') or osp.basename(p).startswith('.')] + \
        glob.glob(osp.join(out_dir, '**', '.*'), recursive=True)


@pytest.fixture
def mixed_folder(tmp_path):
    """Three good images (two sizes, one nested), a corrupt JPEG, a truncated PNG, a text file."""
    root = tmp_path / 'in'
    _write(root / 'a.jpg', 20, 30)
    _write(root / 'nested' / 'deeper' / 'b.png', 20, 30)
    _write(root / 'c.png', 16, 16)
    (root / 'corrupt.jpg').write_bytes(b'\xff\xd8\xff\xe0 garbage')
    png = open(_write(root / 'truncated.png', 32, 32), 'rb').read()
    (root / 'truncated.png').write_bytes(png[:len(png) // 2])
    (root / 'notes.txt').write_text('not an image, ignored')
    return str(root)


def test_find_images_walks_recursively_and_ignores_non_images(tmp_path):
    root = tmp_path / 'in'
    for rel in ['z.jpg', 'a/b.PNG', 'a/c/d.tiff', '.hidden.jpg', '.cache/e.jpg']:
        _write(root / rel, 4, 4)
    (root / 'a' / 'readme.md').write_text('x')
    tasks = find_images(str(root), str(tmp_path / 'out'))
    assert [t.rel for t in tasks] == ['z.jpg', osp.join('a', 'b.PNG'), osp.join('a', 'c', 'd.tiff')]
    assert tasks[1].pred_path == str(tmp_path / 'out' / 'pred' / 'a' / 'b.png')
    assert tasks[2].vis_path == str(tmp_path / 'out' / 'vis' / 'a' / 'c' / 'd.jpg')


def test_outputs_inside_the_input_folder_are_not_inputs(tmp_path):
    root = tmp_path / 'in'
    _write(root / 'x.jpg', 4, 4)
    out = root / 'out'
    _write(out / 'pred' / 'x.png', 4, 4)
    _write(out / 'vis' / 'x.jpg', 4, 4)
    _write(out / 'other' / 'y.jpg', 4, 4)  # only pred/ and vis/ are the tool's
    assert [t.rel for t in find_images(str(root), str(out))] == [
        'x.jpg', osp.join('out', 'other', 'y.jpg')]


def test_images_sharing_a_name_keep_their_extension(tmp_path):
    root = tmp_path / 'in'
    for name in ['a.jpg', 'a.png', 'b.jpg']:
        _write(root / name, 4, 4)
    outputs = [osp.basename(t.pred_path) for t in find_images(str(root), str(tmp_path / 'o'))]
    assert outputs == ['a.jpg.png', 'a.png.png', 'b.png']


def test_a_single_file_is_an_input(tmp_path):
    path = _write(tmp_path / 'one.jpg', 4, 4)
    task, = find_images(path, str(tmp_path / 'out'))
    assert task.src == path and task.pred_path == str(tmp_path / 'out' / 'pred' / 'one.png')


@pytest.mark.parametrize('make,message', [
    (lambda root: None, 'no images found in'),
    (lambda root: (root / 'notes.txt').write_text('x'), 'no images found in'),
    (lambda root: (root / '.hidden.jpg').write_bytes(b'x'), 'no images found in'),
])
def test_folders_without_images_are_a_setup_error(tmp_path, make, message):
    root = tmp_path / 'in'
    root.mkdir()
    make(root)
    with pytest.raises(InferenceSetupError, match=message):
        find_images(str(root), str(tmp_path / 'out'))


def test_missing_or_non_image_input_is_a_setup_error(tmp_path):
    with pytest.raises(InferenceSetupError, match='does not exist'):
        find_images(str(tmp_path / 'nope'), str(tmp_path / 'out'))
    (tmp_path / 'notes.txt').write_text('x')
    with pytest.raises(InferenceSetupError, match='is not an image file'):
        find_images(str(tmp_path / 'notes.txt'), str(tmp_path / 'out'))


def test_bad_files_fail_with_reasons_and_the_rest_is_done(inferencer, mixed_folder, tmp_path):
    out = str(tmp_path / 'out')
    logged = []
    summary = infer_folder(inferencer, mixed_folder, out, batch_size=2, log=logged.append)
    assert summary.total == 5 and len(summary.done) == 3 and not summary.skipped
    failed = dict(summary.failed)
    assert set(failed) == {osp.join(mixed_folder, 'corrupt.jpg'),
                           osp.join(mixed_folder, 'truncated.png')}
    assert all(reason.startswith('cannot decode image') for reason in failed.values())
    assert logged == [f'failed: {path}: {reason}' for path, reason in summary.failed]
    assert summary.exit_code == 1 and 'failed 2 of 5 images' in str(summary)
    for rel in ['a', osp.join('nested', 'deeper', 'b'), 'c']:
        pred = Image.open(osp.join(out, 'pred', rel + '.png'))
        assert pred.mode == 'P'
        assert pred.getpalette()[:15] == sum(inferencer.palette, [])
        image = load_image(osp.join(mixed_folder, rel + ('.jpg' if rel == 'a' else '.png')))
        assert pred.size == image.shape[1::-1]
        # the file holds the model's prediction for this image
        assert (np.array(pred) == inferencer.predict([image])[0]).mean() > 0.99
        assert Image.open(osp.join(out, 'vis', rel + '.jpg')).format == 'JPEG'
    assert not glob.glob(osp.join(out, '**', 'corrupt*'), recursive=True)
    assert not glob.glob(osp.join(out, '**', 'notes*'), recursive=True)
    assert _leftovers(out) == []


def test_rerun_skips_finished_images_unless_forced(inferencer, tmp_path):
    root, out = tmp_path / 'in', str(tmp_path / 'out')
    _write(root / 'a.png', 12, 12)
    _write(root / 'b.png', 12, 12)
    first = infer_folder(inferencer, str(root), out)
    assert len(first.done) == 2 and first.exit_code == 0
    pred_a = osp.join(out, 'pred', 'a.png')
    original = open(pred_a, 'rb').read()
    Image.new('P', (1, 1)).save(pred_a)  # a marker: skipping must leave it alone
    os.remove(osp.join(out, 'vis', 'b.jpg'))  # b is unfinished: it is done again

    second = infer_folder(inferencer, str(root), out)
    assert second.skipped == [str(root / 'a.png')] and second.done == [str(root / 'b.png')]
    assert Image.open(pred_a).size == (1, 1)

    forced = infer_folder(inferencer, str(root), out, force=True)
    assert len(forced.done) == 2 and not forced.skipped
    assert open(pred_a, 'rb').read() == original


def test_batches_of_mixed_sizes_give_the_same_outputs(inferencer, tmp_path):
    root = tmp_path / 'in'
    for i, size in enumerate([(10, 14), (12, 12), (10, 14), (10, 14), (12, 12)]):
        _write(root / f'{i}.png', *size)
    one = infer_folder(inferencer, str(root), str(tmp_path / 'one'), batch_size=1)
    three = infer_folder(inferencer, str(root), str(tmp_path / 'three'), batch_size=3)
    assert len(one.done) == len(three.done) == 5
    for i in range(5):
        a = np.array(Image.open(tmp_path / 'one' / 'pred' / f'{i}.png'))
        b = np.array(Image.open(tmp_path / 'three' / 'pred' / f'{i}.png'))
        assert (a == b).mean() > 0.99


def test_an_inference_error_fails_only_its_image(inferencer, tmp_path, monkeypatch):
    root = tmp_path / 'in'
    for name in ['a.png', 'b.png', 'c.png']:
        _write(root / name, 10, 10)
    _write(root / 'huge.png', 13, 13)
    real = inferencer.predict_with_mode

    def out_of_memory_on_13x13(images, slide=None):  # what a too-large image does to a GPU
        if any(image.shape[:2] == (13, 13) for image in images):
            raise RuntimeError('CUDA out of memory.\nTried to allocate 80 GiB')
        return real(images, slide)

    monkeypatch.setattr(inferencer, 'predict_with_mode', out_of_memory_on_13x13)
    runner = FolderRunner(inferencer, batch_size=4)
    summary = runner.run(find_images(str(root), str(tmp_path / 'out')))
    assert sorted(map(osp.basename, summary.done)) == ['a.png', 'b.png', 'c.png']
    assert summary.failed == [(str(root / 'huge.png'), 'inference failed (RuntimeError: CUDA out '
                               'of memory. Tried to allocate 80 GiB)')]


def test_unwritable_outputs_fail_per_image(inferencer, tmp_path):
    root, out = tmp_path / 'in', tmp_path / 'out'
    _write(root / 'a.png', 8, 8)
    out.mkdir()
    (out / 'pred').write_text('a file where the pred folder should be')
    summary = infer_folder(inferencer, str(root), str(out))
    (path, reason), = summary.failed
    assert path == str(root / 'a.png') and reason.startswith('cannot write outputs (')


def test_interrupted_run_keeps_finished_outputs_and_no_partial_files(inferencer, tmp_path,
                                                                     monkeypatch):
    root, out = tmp_path / 'in', str(tmp_path / 'out')
    for name in ['a.png', 'b.png', 'c.png']:
        _write(root / name, 8, 8)
    real_load = folder_module.load_image

    def ctrl_c_at_c(path):
        if path.endswith('c.png'):
            raise KeyboardInterrupt
        return real_load(path)

    monkeypatch.setattr(folder_module, 'load_image', ctrl_c_at_c)
    runner = FolderRunner(inferencer)
    with pytest.raises(KeyboardInterrupt):
        runner.run(find_images(str(root), out))
    assert [osp.basename(p) for p in runner.summary.done] == ['a.png', 'b.png']
    assert sorted(os.listdir(osp.join(out, 'pred'))) == ['a.png', 'b.png']
    for name in ['a', 'b']:
        Image.open(osp.join(out, 'pred', name + '.png')).load()  # complete files
        Image.open(osp.join(out, 'vis', name + '.jpg')).load()
    assert _leftovers(out) == []


def test_forced_slide_is_reported(inferencer, tmp_path):
    _write(tmp_path / 'in' / 'a.png', 8, 8)
    summary = infer_folder(inferencer, str(tmp_path / 'in'), str(tmp_path / 'out'), slide=True)
    assert summary.slid == summary.done == [str(tmp_path / 'in' / 'a.png')]
    assert str(summary).endswith('; 1 by sliding window')

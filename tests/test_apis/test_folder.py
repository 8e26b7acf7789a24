"""Folder runs: which files are images, outputs per image, bad files, re-runs, interruptions."""
import glob
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from vtseg_testing import kill_loader_workers_at, press_ctrl_c_when_loading

import vtseg.apis.folder as folder_module
from vtseg.apis import (FolderRunner, FolderSummary, InferenceSetupError, LoaderWorkerDied, find_images, infer_folder,
                        load_image)

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
    assert tasks[1].pred_path == str(tmp_path / 'out' / 'pred' / 'a' / 'b.PNG.png')
    assert tasks[2].vis_path == str(tmp_path / 'out' / 'vis' / 'a' / 'c' / 'd.tiff.jpg')


def test_outputs_inside_the_input_folder_are_not_inputs(tmp_path):
    root = tmp_path / 'in'
    _write(root / 'x.jpg', 4, 4)
    out = root / 'out'
    _write(out / 'pred' / 'x.png', 4, 4)
    _write(out / 'vis' / 'x.jpg', 4, 4)
    _write(out / 'other' / 'y.jpg', 4, 4)  # only pred/ and vis/ are the tool's
    assert [t.rel for t in find_images(str(root), str(out))] == [
        'x.jpg', osp.join('out', 'other', 'y.jpg')]


def test_outputs_keep_the_whole_image_name(tmp_path):
    root = tmp_path / 'in'
    for name in ['a.jpg', 'a.png', 'b.jpg']:
        _write(root / name, 4, 4)
    tasks = find_images(str(root), str(tmp_path / 'o'))
    assert [osp.basename(t.pred_path) for t in tasks] == ['a.jpg.png', 'a.png.png', 'b.jpg.png']
    assert [osp.basename(t.vis_path) for t in tasks] == ['a.jpg.jpg', 'a.png.jpg', 'b.jpg.jpg']


def test_a_single_file_is_an_input(tmp_path):
    path = _write(tmp_path / 'one.jpg', 4, 4)
    task, = find_images(path, str(tmp_path / 'out'))
    assert task.src == path and task.pred_path == str(tmp_path / 'out' / 'pred' / 'one.jpg.png')


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
    for rel in ['a.jpg', osp.join('nested', 'deeper', 'b.png'), 'c.png']:
        pred = Image.open(osp.join(out, 'pred', rel + '.png'))
        assert pred.mode == 'P'
        assert pred.getpalette()[:15] == sum(inferencer.palette, [])
        image = load_image(osp.join(mixed_folder, rel))
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
    pred_a = osp.join(out, 'pred', 'a.png.png')
    original = open(pred_a, 'rb').read()
    Image.new('P', (1, 1)).save(pred_a)  # a marker: skipping must leave it alone
    os.remove(osp.join(out, 'vis', 'b.png.jpg'))  # b is unfinished: it is done again

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
        a = np.array(Image.open(tmp_path / 'one' / 'pred' / f'{i}.png.png'))
        b = np.array(Image.open(tmp_path / 'three' / 'pred' / f'{i}.png.png'))
        assert (a == b).mean() > 0.99


def test_an_inference_error_fails_only_its_image(inferencer, tmp_path, monkeypatch):
    root = tmp_path / 'in'
    for name in ['a.png', 'b.png', 'c.png']:
        _write(root / name, 10, 10)
    _write(root / 'huge.png', 13, 13)
    real = inferencer.predict_with_mode

    def out_of_memory_on_13x13(images, slide=None, **kwargs):  # what a too-large image does to a GPU
        if any(image.shape[:2] == (13, 13) for image in images):
            raise RuntimeError('CUDA out of memory.\nTried to allocate 80 GiB')
        return real(images, slide, **kwargs)

    monkeypatch.setattr(inferencer, 'predict_with_mode', out_of_memory_on_13x13)
    runner = FolderRunner(inferencer, batch_size=4)
    summary = runner.run(find_images(str(root), str(tmp_path / 'out')))
    assert sorted(map(osp.basename, summary.done)) == ['a.png', 'b.png', 'c.png']
    assert summary.failed == [(str(root / 'huge.png'), 'inference failed (RuntimeError: CUDA out '
                               'of memory. Tried to allocate 80 GiB)')]


def test_unwritable_outputs_fail_per_image(inferencer, tmp_path):
    root, out = tmp_path / 'in', tmp_path / 'out'
    _write(root / 'sub' / 'a.png', 8, 8)
    _write(root / 'b.png', 8, 8)
    (out / 'pred').mkdir(parents=True)
    (out / 'pred' / 'sub').write_text('a file where the sub folder should be')
    summary = infer_folder(inferencer, str(root), str(out))
    (path, reason), = summary.failed
    assert path == str(root / 'sub' / 'a.png') and reason.startswith('cannot write outputs (')
    assert summary.done == [str(root / 'b.png')]


def test_interrupted_run_keeps_finished_outputs_and_no_partial_files(inferencer, tmp_path,
                                                                     monkeypatch):
    root, out = tmp_path / 'in', str(tmp_path / 'out')
    for name in ['a.png', 'b.png', 'c.png']:
        _write(root / name, 8, 8)
    press_ctrl_c_when_loading(monkeypatch, 'c.png')
    runner = FolderRunner(inferencer)
    with pytest.raises(KeyboardInterrupt):
        runner.run(find_images(str(root), out))
    assert [osp.basename(p) for p in runner.summary.done] == ['a.png', 'b.png']
    assert sorted(os.listdir(osp.join(out, 'pred'))) == ['a.png.png', 'b.png.png']
    for name in ['a.png', 'b.png']:
        Image.open(osp.join(out, 'pred', name + '.png')).load()  # complete files
        Image.open(osp.join(out, 'vis', name + '.jpg')).load()
    assert _leftovers(out) == []


def test_forced_slide_is_reported(inferencer, tmp_path):
    _write(tmp_path / 'in' / 'a.png', 8, 8)
    summary = infer_folder(inferencer, str(tmp_path / 'in'), str(tmp_path / 'out'), slide=True)
    assert summary.slid == summary.done == [str(tmp_path / 'in' / 'a.png')]
    assert str(summary).endswith('; 1 by sliding window')


# --- hostile folders -------------------------------------------------------------------------

def _check_one_to_one(rel_paths, names):
    """No two outputs equal case-insensitively; no output file where an output folder goes."""
    def key(path):
        return osp.normpath(path).casefold()
    folders = {key(osp.dirname(rel)) for rel in rel_paths if osp.dirname(rel)}
    folders |= {key(osp.dirname(f)) for f in folders if osp.dirname(f)}
    assert len({key(n) for n in names}) == len(names)
    for rel, name in zip(rel_paths, names):
        assert name == rel or (name.startswith(rel + '~') and name[len(rel) + 1:].isdigit())
        assert key(name + '.png') not in folders and key(name + '.jpg') not in folders


def test_output_names_are_one_to_one_for_adversarial_folders():
    files = ['a.jpg', 'a.png', 'a.jpg.png', 'A.JPG', 'a.JPG', 'a.jpg~1.png', 'a.png.png',
             'a.jpg.png.png', 'a.jpg.jpg', 'b.png', 'B.png']
    folders = ['a.jpg.png', 'a.png.png', 'A.JPG.png', 'a.jpg~1.png', 'a.jpg.jpg', 'b.png.jpg',
               'sub', 'SUB']
    rng = np.random.default_rng(0)
    for _ in range(400):
        chosen_folders = [f for f in folders if rng.random() < 0.4]
        chosen_files = [f for f in files if rng.random() < 0.6 and f not in chosen_folders]
        rel_paths = sorted(chosen_files + [osp.join(f, 'x.jpg') for f in chosen_folders] +
                           [osp.join(f, 'a.jpg') for f in chosen_folders if rng.random() < 0.5])
        _check_one_to_one(rel_paths, folder_module.output_names(rel_paths))
    # the folder: a.jpg's output name is a.jpg.png's file name, never its output
    assert folder_module.output_names(['a.jpg', 'a.jpg.png', 'a.png']) == [
        'a.jpg', 'a.jpg.png', 'a.png']
    assert folder_module.output_names(['A.JPG', 'a.jpg']) == ['A.JPG', 'a.jpg~1']
    assert folder_module.output_names([osp.join('a.png.png', 'x.jpg'), 'a.png']) == [
        osp.join('a.png.png', 'x.jpg'), 'a.png~1']


def test_every_image_of_an_adversarial_folder_gets_its_own_outputs(inferencer, tmp_path):
    """a.jpg, a.png, a.jpg.png, A.JPG and a folder a.png.png/: six images, twelve files."""
    root, out = tmp_path / 'in', str(tmp_path / 'out')
    sizes = {'a.jpg': (8, 9), 'a.png': (8, 10), 'a.jpg.png': (8, 11), 'A.JPG': (8, 12),
             osp.join('a.png.png', 'x.jpg'): (8, 13), osp.join('a.png.png', 'a.jpg'): (8, 14)}
    for rel, (h, w) in sizes.items():
        _write(root / rel, h, w)
    first = infer_folder(inferencer, str(root), out, batch_size=3)
    assert len(first.done) == 6 and not first.skipped and not first.failed

    def output_files():
        return sorted(p for p in glob.glob(osp.join(out, '**', '*'), recursive=True) if osp.isfile(p))
    outputs = output_files()
    assert len(outputs) == 12
    tasks = {t.src: t for t in find_images(str(root), out)}
    for rel, (h, w) in sizes.items():  # each output is its own image's (the sizes differ)
        task = tasks[str(root / rel)]
        assert Image.open(task.pred_path).size == (w, h) and task.pred_path in outputs
    assert tasks[str(root / 'a.png')].pred_path == osp.join(out, 'pred', 'a.png~1.png')
    second = infer_folder(inferencer, str(root), out)
    assert len(second.skipped) == 6 and not second.done
    forced = infer_folder(inferencer, str(root), out, force=True)
    assert len(forced.done) == 6
    assert output_files() == outputs


def _special_files(root):
    """A named pipe, a socket and a character device (a link to /dev/null), with image names."""
    import socket
    os.mkfifo(root / 'pipe.jpg')
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / 'socket.png'))
    os.symlink('/dev/null', root / 'device.jpg')
    return server


@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='no named pipes here')
def test_special_files_fail_without_being_opened(inferencer, tmp_path):
    import threading
    root, out = tmp_path / 'in', str(tmp_path / 'out')
    _write(root / 'good.png', 8, 8)
    server = _special_files(root)
    results = {}

    def run():  # a reader that opened the pipe would wait for a writer forever
        results['summary'] = infer_folder(inferencer, str(root), out)
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=120)
    server.close()
    assert not worker.is_alive(), 'the run blocked on a special file'
    summary = results['summary']
    assert summary.done == [str(root / 'good.png')] and summary.exit_code == 1
    assert dict(summary.failed) == {
        str(root / 'pipe.jpg'): 'not a regular file but a named pipe (FIFO): not opened',
        str(root / 'socket.png'): 'not a regular file but a socket: not opened',
        str(root / 'device.jpg'): 'not a regular file but a character device: not opened'}


UNREADABLE_SCRIPT = '''
import sys
from vtseg.apis import InferenceSetupError, find_images
unreadable = []
tasks = find_images(sys.argv[1], sys.argv[2], unreadable)
print([t.rel for t in tasks], unreadable)
try:
    find_images(sys.argv[1], sys.argv[2])
except InferenceSetupError as err:
    print(err)
'''


def test_an_unreadable_folder_is_reported_not_skipped(tmp_path):
    import subprocess
    import sys

    from os_testing import unprivileged
    root = tmp_path / 'in'
    _write(root / 'a.png', 4, 4)
    _write(root / 'locked' / 'b.png', 4, 4)
    os.chmod(root / 'locked', 0)
    try:
        proc = subprocess.run(unprivileged([sys.executable, '-c', UNREADABLE_SCRIPT, str(root),
                                            str(tmp_path / 'out')]),
                              capture_output=True, text=True, timeout=300)
    finally:
        os.chmod(root / 'locked', 0o755)
    assert proc.returncode == 0, proc.stderr[-3000:]
    listed, refused = proc.stdout.strip().splitlines()
    locked = str(root / 'locked')
    reason = 'cannot list this folder (Permission denied); its images were not processed'
    assert listed == f"{['a.png']} {[(locked, reason)]}"
    assert refused == f'{locked}: cannot list this folder (Permission denied); fix its permissions'

    summary = FolderSummary(total=1, done=['a.png'], unreadable_folders=[(locked, 'x')])
    assert summary.exit_code == 1 and str(summary).endswith('; 1 folder could not be read')


@pytest.mark.parametrize('case', ['a file', 'under a file', 'pred is a file', 'unwritable'])
def test_output_folder_is_checked_before_any_work(inferencer, tmp_path, case, monkeypatch):
    root = tmp_path / 'in'
    _write(root / 'a.png', 4, 4)
    loads = []
    monkeypatch.setattr(folder_module, 'load_image', lambda path: loads.append(path))
    (tmp_path / 'file').write_text('x')
    out = {'a file': tmp_path / 'file', 'under a file': tmp_path / 'file' / 'out',
           'pred is a file': tmp_path / 'out', 'unwritable': tmp_path / 'ro' / 'out'}[case]
    message = {'a file': 'is a file, not a folder', 'under a file': 'lies under the file',
               'pred is a file': 'holds a file pred where its pred/ folder goes',
               'unwritable': 'cannot be written'}[case]
    if case == 'pred is a file':
        out.mkdir()
        (out / 'pred').write_text('x')
    if case == 'unwritable':
        if os.geteuid() == 0:
            # root writes anywhere it may: use a file system that refuses everyone
            out = '/proc/vtseg-test-out'
        else:
            (tmp_path / 'ro').mkdir(mode=0o500)
    with pytest.raises(InferenceSetupError, match=message) as info:
        infer_folder(inferencer, str(root), str(out))
    assert '\n' not in str(info.value) and loads == []
    assert not osp.exists(tmp_path / 'file' / 'out')


def test_prepare_output_dir_creates_checks_and_undoes(tmp_path):
    from vtseg.apis import prepare_output_dir, remove_created_dirs
    out = tmp_path / 'new' / 'out'
    created = prepare_output_dir(str(out))
    assert created == [str(tmp_path / 'new'), str(out), str(out / 'pred'), str(out / 'vis')]
    assert sorted(os.listdir(out)) == ['pred', 'vis'] and not os.listdir(out / 'pred')
    assert prepare_output_dir(str(out)) == []  # nothing new the second time
    remove_created_dirs(created)
    assert not (tmp_path / 'new').exists()


# --- overlapped I/O, outputs on demand, many processes -----------------------------------------

def _files(out_dir) -> dict:
    """Relative path -> bytes of every output file."""
    return {osp.relpath(p, out_dir): open(p, 'rb').read()
            for p in glob.glob(osp.join(out_dir, '**', '*'), recursive=True) if osp.isfile(p)}


def test_loader_workers_and_writer_threads_write_the_same_bytes(inferencer, mixed_folder, tmp_path,
                                                                monkeypatch):
    """Decoding in 2 worker processes and writing in 2 threads changes nothing in the outputs,
    the failures or the counts; at most 2 * writers images ever wait for their writer."""
    plain = infer_folder(inferencer, mixed_folder, str(tmp_path / 'plain'), workers=0, writers=0)
    waiting = []
    real_submit = FolderRunner._submit_write

    def submit(self, *args):
        real_submit(self, *args)
        waiting.append(len(self._writes))
    monkeypatch.setattr(FolderRunner, '_submit_write', submit)
    overlapped = infer_folder(inferencer, mixed_folder, str(tmp_path / 'overlapped'), workers=2, writers=2)
    assert overlapped.done == plain.done and overlapped.failed == plain.failed
    assert len(plain.done) == 3 and len(plain.failed) == 2
    assert waiting and max(waiting) <= 4
    assert _files(tmp_path / 'overlapped') == _files(tmp_path / 'plain')
    for stage in ['decode', 'predict', 'encode', 'write']:
        assert overlapped.stage_seconds[stage] > 0, stage
    assert overlapped.time_line().startswith('time: decode ')


def test_interrupt_with_loader_workers_keeps_finished_outputs(inferencer, tmp_path, monkeypatch):
    """Ctrl-C in the main loop while workers decode ahead: the workers stop, what was predicted
    is written and counted, nothing is half-written."""
    root, out = tmp_path / 'in', str(tmp_path / 'out')
    for name in ['a.png', 'b.png', 'c.png', 'd.png']:
        _write(root / name, 8, 8)
    real = inferencer.predict_with_mode

    def ctrl_c_at_c(images, slide=None, **kwargs):
        if len(ctrl_c_at_c.calls) == 2:
            raise KeyboardInterrupt
        ctrl_c_at_c.calls.append(1)
        return real(images, slide, **kwargs)
    ctrl_c_at_c.calls = []
    monkeypatch.setattr(inferencer, 'predict_with_mode', ctrl_c_at_c)
    runner = FolderRunner(inferencer, workers=2, writers=2)
    with pytest.raises(KeyboardInterrupt):
        runner.run(find_images(str(root), out))
    assert [osp.basename(p) for p in runner.summary.done] == ['a.png', 'b.png']
    assert sorted(os.listdir(osp.join(out, 'pred'))) == ['a.png.png', 'b.png.png']
    assert _leftovers(out) == []


def test_a_dead_loader_worker_stops_the_run_and_a_rerun_resumes(inferencer, tmp_path, monkeypatch):
    """A loader worker killed (as the kernel kills for memory) while decoding d.png: the run stops
    with LoaderWorkerDied, no image is blamed, what was predicted is written and counted, nothing
    is half-written; a re-run does the rest."""
    root, out = tmp_path / 'in', str(tmp_path / 'out')
    names = ['a.png', 'b.png', 'c.png', 'd.png', 'e.png', 'f.png']
    for name in names:
        _write(root / name, 8, 8)
    real_load = folder_module.load_image
    kill_loader_workers_at(monkeypatch, 'd.png')
    runner = FolderRunner(inferencer, workers=1, writers=1)
    # torch's message, or the connection the worker broke when it died while handing over an image
    with pytest.raises(LoaderWorkerDied, match=r'^a loader worker process died \((DataLoader worker \(pid|'
                                               r'\w+Error while receiving an image from it)'):
        runner.run(find_images(str(root), out))
    done = sorted(osp.basename(p) for p in runner.summary.done)
    assert runner.summary.failed == [] and done == names[:len(done)] and len(done) <= 3
    assert sorted(os.listdir(osp.join(out, 'pred'))) == [name + '.png' for name in done]
    assert _leftovers(out) == []

    monkeypatch.setattr(folder_module, 'load_image', real_load)
    again = infer_folder(inferencer, str(root), out, workers=1)
    assert len(again.skipped) == len(done) and len(again.done) == len(names) - len(done)
    assert sorted(os.listdir(osp.join(out, 'pred'))) == [name + '.png' for name in names]


class _LoaderLosingItsWorker(torch.utils.data.DataLoader):
    """A DataLoader whose third fetch fails as a fetch from a worker killed mid-hand-over does."""

    def __iter__(self):
        for count, item in enumerate(super().__iter__()):
            if count == 2:
                raise ConnectionResetError(104, 'Connection reset by peer')
            yield item


def test_a_connection_lost_to_a_worker_is_a_dead_worker(inferencer, tmp_path, monkeypatch):
    root, out = tmp_path / 'in', str(tmp_path / 'out')
    for name in ('a.png', 'b.png', 'c.png', 'd.png'):
        _write(root / name, 8, 8)
    monkeypatch.setattr(folder_module, 'DataLoader', _LoaderLosingItsWorker)
    runner = FolderRunner(inferencer, workers=1, writers=1)
    with pytest.raises(LoaderWorkerDied, match=r'^a loader worker process died \(ConnectionResetError while '
                                               r'receiving an image from it: .*Connection reset by peer\); what '
                                               r'was written is kept: run again to resume'):
        runner.run(find_images(str(root), out))
    assert runner.summary.failed == [] and len(runner.summary.done) == 2
    assert sorted(os.listdir(osp.join(out, 'pred'))) == ['a.png.png', 'b.png.png']


def test_torchs_dead_worker_error_during_the_clean_up_is_a_dead_worker(inferencer, tmp_path, monkeypatch):
    """torch's SIGCHLD handler raises in whatever the main thread runs: here, finishing the writes."""
    root, out = tmp_path / 'in', str(tmp_path / 'out')
    _write(root / 'a.png', 8, 8)
    runner = FolderRunner(inferencer, workers=0, writers=1)
    finish_writes = runner._finish_writes

    def interrupted():
        finish_writes()
        raise RuntimeError('DataLoader worker (pid 12) is killed by signal: Killed.')
    monkeypatch.setattr(runner, '_finish_writes', interrupted)
    with pytest.raises(LoaderWorkerDied, match=r'^a loader worker process died \(DataLoader worker \(pid 12\)'):
        runner.run(find_images(str(root), out))
    assert runner._pool is None and len(runner.summary.done) == 1


def test_no_vis_writes_class_ids_only_and_resumes_on_them(inferencer, tmp_path):
    root, out = tmp_path / 'in', str(tmp_path / 'out')
    _write(root / 'a.png', 12, 12)
    _write(root / 'b.png', 12, 14)
    first = infer_folder(inferencer, str(root), out, vis=False)
    assert len(first.done) == 2 and sorted(os.listdir(out)) == ['pred']
    assert sorted(os.listdir(osp.join(out, 'pred'))) == ['a.png.png', 'b.png.png']
    again = infer_folder(inferencer, str(root), out, vis=False)
    assert len(again.skipped) == 2 and not again.done
    with_vis = infer_folder(inferencer, str(root), out)  # overlays now wanted: both are redone
    assert len(with_vis.done) == 2 and sorted(os.listdir(osp.join(out, 'vis'))) == ['a.png.jpg', 'b.png.jpg']


def test_saved_logits_and_probs_are_the_predictions_scores(inferencer, tmp_path):
    """(C, H, W) float16 at the image's size, whole and by sliding window: the class ids are
    their argmax, the probabilities their softmax."""
    root, out = tmp_path / 'in', str(tmp_path / 'out')
    _write(root / 'small.png', 20, 30)
    large = cv2.resize(RNG.integers(0, 256, (30, 28, 3), dtype=np.uint8), (220, 240))
    cv2.imwrite(str(root / 'large.png'), large)  # more than twice the 96x96 crop: slides
    summary = infer_folder(inferencer, str(root), out, save_logits=True, save_probs=True, vis=False)
    assert summary.slid == [str(root / 'large.png')] and len(summary.done) == 2
    for name, hw in [('small.png', (20, 30)), ('large.png', (240, 220))]:
        logits = np.load(osp.join(out, 'logits', name + '.npy'))
        probs = np.load(osp.join(out, 'probs', name + '.npy'))
        assert logits.dtype == probs.dtype == np.float16
        assert logits.shape == probs.shape == (len(inferencer.classes), *hw)
        pred = np.array(Image.open(osp.join(out, 'pred', name + '.png')))
        assert (logits.argmax(0) == pred).mean() > 0.99  # float16 rounding may tie two classes
        np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=1e-2)
        expected = torch.from_numpy(logits.astype(np.float32)).softmax(0).numpy()
        np.testing.assert_allclose(probs.astype(np.float32), expected, atol=2e-3)
    assert _leftovers(out) == []
    # a rerun that also wants overlays redoes them; one that wants only the scores skips
    assert len(infer_folder(inferencer, str(root), out, save_logits=True, vis=False).skipped) == 2


def test_palette_choices(inferencer, tmp_path):
    from mmseg.utils import get_palette

    from vtseg.apis import named_palette
    num_classes = len(inferencer.classes)
    assert named_palette('model', num_classes, inferencer.palette) == inferencer.palette
    assert named_palette('cityscapes', num_classes, inferencer.palette) == \
        [list(c) for c in get_palette('cityscapes')[:num_classes]]
    assert named_palette('random', num_classes, []) == named_palette('random', num_classes, [])
    with pytest.raises(InferenceSetupError, match="unknown palette 'rainbow': choose one of model, random, cityscapes"):
        named_palette('rainbow', num_classes, [])
    with pytest.raises(InferenceSetupError, match='palette voc has 21 colours but the model predicts 30 classes'):
        named_palette('voc', 30, [])
    _write(tmp_path / 'in' / 'a.png', 8, 8)
    colours = named_palette('ade', num_classes, [])
    infer_folder(inferencer, str(tmp_path / 'in'), str(tmp_path / 'out'), palette=colours)
    pred = Image.open(tmp_path / 'out' / 'pred' / 'a.png.png')
    assert pred.getpalette()[:3 * num_classes] == sum(colours, [])


def test_finished_images_are_found_with_one_listing_per_output_folder(inferencer, tmp_path, monkeypatch):
    root, out = tmp_path / 'in', str(tmp_path / 'out')
    for folder in ['x', 'y', 'z']:
        for i in range(4):
            _write(root / folder / f'{i}.png', 6, 6)
    infer_folder(inferencer, str(root), out)
    tasks = find_images(str(root), out)
    listed = []
    real_scandir = os.scandir
    monkeypatch.setattr(os, 'scandir', lambda path: listed.append(path) or real_scandir(path))
    monkeypatch.setattr(os.path, 'isfile', lambda path: pytest.fail(f'stat of {path}'))
    summary = FolderRunner(inferencer).run(tasks)
    assert len(summary.skipped) == 12
    assert sorted(listed) == sorted(osp.join(out, kind, folder) for kind in ['pred', 'vis'] for folder in 'xyz')


def test_a_killed_runs_temporary_files_are_removed(inferencer, tmp_path):
    root, out = tmp_path / 'in', tmp_path / 'out'
    _write(root / 'a.png', 6, 6)
    (out / 'pred').mkdir(parents=True)
    stale = out / 'pred' / '.a.png.png.4242.0123abcd.tmp'  # as atomic_write_bytes names them
    stale.write_bytes(b'half a PNG')
    (out / 'pred' / '.keep').write_text('not ours')
    summary = infer_folder(inferencer, str(root), str(out))
    assert len(summary.done) == 1 and not stale.exists()
    assert sorted(os.listdir(out / 'pred')) == ['.keep', 'a.png.png']


def test_shards_cover_every_image_once_and_depend_only_on_sorted_paths(tmp_path):
    from vtseg.apis import shard_tasks, tasks_digest
    root = tmp_path / 'in'
    rels = ['b.png', 'a/z.png', 'a/b.png', 'c/d/e.png', 'A.png', 'x.jpg', 'a.jpg']
    for rel in rels:
        _write(root / rel, 4, 4)
    tasks = find_images(str(root), str(tmp_path / 'out'))
    shuffled = [tasks[i] for i in np.random.default_rng(1).permutation(len(tasks))]
    assert tasks_digest(shuffled) == tasks_digest(tasks)
    for world in [1, 2, 3, 8]:
        shards = [shard_tasks(tasks, rank, world) for rank in range(world)]
        assert shards == [shard_tasks(shuffled, rank, world) for rank in range(world)]
        together = [t.rel for shard in shards for t in shard]
        assert sorted(together) == sorted(rels) and len(set(together)) == len(rels)
    assert [t.rel for t in shard_tasks(tasks, 1, 3)] == sorted(rels)[1::3]


def test_an_image_list_selects_images_and_keeps_their_full_run_names(tmp_path):
    from vtseg.apis import read_image_list, select_listed
    root = tmp_path / 'in'
    for rel in ['A.JPG', 'a.jpg', 'sub/b.png', 'c.png']:
        _write(root / rel, 4, 4)
    tasks = find_images(str(root), str(tmp_path / 'out'))
    listing = tmp_path / 'list.txt'
    listing.write_text('a.jpg\n\nsub/b.png\nmissing.png\n./c.png\n')
    chosen, missing = select_listed(tasks, read_image_list(str(listing)), str(listing))
    assert [t.rel for t in chosen] == ['a.jpg', 'c.png', osp.join('sub', 'b.png')]
    assert osp.basename(chosen[0].pred_path) == 'a.jpg~1.png'  # as in a run over the whole folder
    assert missing == [('missing.png', f'listed in {listing} but not an image found in the input')]
    (tmp_path / 'empty.txt').write_text('\n\n')
    with pytest.raises(InferenceSetupError, match='names no image'):
        read_image_list(str(tmp_path / 'empty.txt'))
    with pytest.raises(InferenceSetupError, match='cannot read the image list'):
        read_image_list(str(tmp_path / 'nope.txt'))


def test_merged_summaries_add_up():
    from vtseg.apis import MergedSummary
    rank0 = FolderSummary(total=3, done=['a', 'b'], skipped=['c'], slid=['b'], seconds=2.0,
                          stage_seconds={'predict': 1.0})
    rank1 = FolderSummary(total=2, done=['d'], failed=[('e', 'cannot decode image')], seconds=4.0,
                          stage_seconds={'predict': 0.5, 'decode': 0.25})
    merged = MergedSummary.of([MergedSummary.of([rank0]), MergedSummary.of([rank1])])
    assert str(merged) == ('done 3, skipped 1, failed 1 of 5 images in 4.0 s (0.8 img/s); '
                           '1 by sliding window')
    assert merged.exit_code == 1 and merged.stage_seconds == {'predict': 1.5, 'decode': 0.25}
    assert MergedSummary.of([rank0]).exit_code == 0

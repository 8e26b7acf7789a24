"""tools/infer.py on a real folder: every kind of file, re-runs, and one-line setup errors."""
import glob
import importlib.util
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from vtseg_testing import (assert_says, kill_loader_workers_at, press_ctrl_c_when_loading, read,
                           save_pickled_code_checkpoint, section)

from vtseg.apis import SegInferencer, load_image, vis_scale
from vtseg.datasets import VTSHAPES_CLASSES, VTSHAPES_PALETTE

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO, 'tools', 'infer.py')
CONFIG = osp.join(REPO, 'configs', 'vtshapes', 'vt-fpn_r18_1xb8-1.5k_vtshapes-96x96.py')
FPN_CONFIG = osp.join(REPO, 'configs', 'vtshapes', 'fpn_r18_1xb8-1.5k_vtshapes-96x96.py')
# On a shared 2-core machine OpenMP's second thread makes small forwards 20x slower.
ONE_THREAD_ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}
RNG = np.random.default_rng(3)

# relative path -> (height, width) as displayed; the EXIF JPEG is stored 24 high, 40 wide
GOOD_IMAGES = {
    'gray.png': (30, 20), 'rgba.png': (18, 22), 'gray16.png': (25, 25), 'colour16.png': (16, 28),
    'photos/exif.jpg': (40, 24), 'tiny/one.png': (1, 1), 'tiny/eight.jpg': (8, 8),
    'large.png': (200, 200),  # more than twice the config's 96x96 crop: sliding window
}
CORRUPT = 'broken/corrupt.jpg'


def save_checkpoint(path: str, config: str = CONFIG) -> str:
    """A freshly built (untrained, seeded) model of ``config``, saved as mmengine would."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(config).model)
    meta = {'dataset_meta': {'classes': VTSHAPES_CLASSES, 'palette': VTSHAPES_PALETTE}}
    torch.save({'state_dict': model.state_dict(), 'meta': meta}, path)
    return path


def exif_raw(path: str) -> np.ndarray:
    """The EXIF JPEG's stored pixels (BGR), orientation NOT applied."""
    with Image.open(path) as image:
        return np.ascontiguousarray(np.asarray(image.convert('RGB'))[:, :, ::-1])


def leftovers(out_dir: str) -> list:
    return (glob.glob(osp.join(out_dir, '**', '*.tmp'), recursive=True) +
            glob.glob(osp.join(out_dir, '**', '.*'), recursive=True))


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def infer_tool():
    spec = importlib.util.spec_from_file_location('vtseg_tools_infer', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> str:
    return save_checkpoint(str(tmp_path_factory.mktemp('ckpt') / 'vtfpn.pth'))


@pytest.fixture(scope='module')
def real_folder(tmp_path_factory) -> str:
    """A folder as users have them: every kind of image, plus a text file and a corrupt JPEG."""
    root = tmp_path_factory.mktemp('photos_in')
    for sub in ['photos', 'tiny', 'broken']:
        (root / sub).mkdir()
    Image.fromarray(RNG.integers(0, 256, (30, 20), dtype=np.uint8)).save(root / 'gray.png')
    Image.fromarray(RNG.integers(0, 256, (18, 22, 4), dtype=np.uint8)).save(root / 'rgba.png')
    cv2.imwrite(str(root / 'gray16.png'), RNG.integers(0, 65536, (25, 25), dtype=np.uint16))
    cv2.imwrite(str(root / 'colour16.png'), RNG.integers(0, 65536, (16, 28, 3), dtype=np.uint16))
    stored = RNG.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    stored[:12] //= 4  # a dark top half: the orientation is visible in the overlay
    exif_image = Image.fromarray(stored)
    exif = exif_image.getexif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: 40 high, 24 wide
    exif_image.save(root / 'photos' / 'exif.jpg', exif=exif.tobytes(), quality=95)
    Image.fromarray(RNG.integers(0, 256, (1, 1, 3), dtype=np.uint8)).save(root / 'tiny' / 'one.png')
    cv2.imwrite(str(root / 'tiny' / 'eight.jpg'), RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    cv2.imwrite(str(root / 'large.png'), RNG.integers(0, 256, (200, 200, 3), dtype=np.uint8))
    (root / 'notes.txt').write_text('not an image: ignored')
    (root / CORRUPT).write_bytes(b'\xff\xd8\xff\xe0\x00\x10JFIF' + bytes(RNG.integers(0, 256, 64)))
    return str(root)


@pytest.fixture(scope='module')
def first_run(real_folder, checkpoint, tmp_path_factory):
    """The real command, in its own process, once for the module."""
    out = str(tmp_path_factory.mktemp('infer_out'))
    proc = subprocess.run(
        [sys.executable, TOOL, real_folder, CONFIG, checkpoint, '--out-dir', out,
         '--batch-size', '2', '--device', 'cpu'],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=ONE_THREAD_ENV)
    return proc, out


def test_command_survives_a_real_folder(first_run, real_folder):
    proc, out = first_run
    assert proc.returncode == 1, proc.stderr  # one image failed
    assert 'Traceback' not in proc.stderr
    # no dependency notices, no mmengine log lines: the tool's own lines only
    assert 'Warning:' not in proc.stderr and ' - mmengine - ' not in proc.stdout + proc.stderr
    assert 'done 8, skipped 0, failed 1 of 9 images' in proc.stdout
    assert '1 by sliding window' in proc.stdout
    assert f'failed: {osp.join(real_folder, CORRUPT)}: cannot decode image' in proc.stderr
    assert 'img/s' in proc.stderr  # the progress bar
    assert 'sliding window' in proc.stderr and 'window/s' in proc.stderr  # the windows of large.png
    for rel, (height, width) in GOOD_IMAGES.items():
        pred = Image.open(osp.join(out, 'pred', rel + '.png'))
        assert pred.mode == 'P' and pred.size == (width, height), rel
        assert pred.getpalette()[:15] == sum(VTSHAPES_PALETTE, [])
        assert np.array(pred).max() < len(VTSHAPES_CLASSES)
        vis = Image.open(osp.join(out, 'vis', rel + '.jpg'))
        vis.load()
        scale = vis_scale(height, width)
        assert vis.format == 'JPEG' and vis.width > width * scale and vis.height >= height * scale
    assert sorted(glob.glob(osp.join(out, '**', '*.*'), recursive=True)) == sorted(
        osp.join(out, kind, rel + ext)
        for rel in GOOD_IMAGES for kind, ext in [('pred', '.png'), ('vis', '.jpg')])
    assert leftovers(out) == []


def test_verbose_shows_the_dependencies_notices(checkpoint, tmp_path):
    """--verbose: the known harmless warnings of mmseg that a default run hides (see
    test_command_survives_a_real_folder), and mmengine's DEBUG lines."""
    folder = tmp_path / 'in'
    folder.mkdir()
    Image.fromarray(RNG.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / 'a.png')
    proc = subprocess.run([sys.executable, TOOL, str(folder), CONFIG, checkpoint, '--out-dir',
                           str(tmp_path / 'out'), '--verbose'],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=ONE_THREAD_ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'UserWarning: ``build_loss`` would be deprecated soon' in proc.stderr
    assert 'UserWarning: Default ``avg_non_ignore`` is False' in proc.stderr
    assert ' - mmengine - DEBUG - ' in proc.stdout
    assert 'done 1, skipped 0, failed 0 of 1 images' in proc.stdout


def test_exif_outputs_follow_the_displayed_image(first_run, real_folder, checkpoint, infer_tool,
                                                 tmp_path, capsys):
    _, out = first_run
    path = osp.join(real_folder, 'photos', 'exif.jpg')
    displayed = np.rot90(exif_raw(path), -1)  # orientation 6: rotate clockwise to display
    inferencer = SegInferencer(CONFIG, checkpoint, device='cpu')
    expected = inferencer.predict([np.ascontiguousarray(displayed)])[0]
    wrong_way = inferencer.predict([np.ascontiguousarray(np.rot90(displayed, 2))])[0]
    assert not np.array_equal(np.rot90(wrong_way, 2), expected)  # the check below can fail
    np.testing.assert_array_equal(np.array(Image.open(osp.join(out, 'pred', 'photos', 'exif.jpg.png'))),
                                  expected)

    # The overlay shows the image the right way up (no class colours at opacity 0).
    assert infer_tool.main([path, CONFIG, checkpoint, '--out-dir', str(tmp_path), '--opacity', '0',
                            '--device', 'cpu']) == 0
    vis = cv2.imread(str(tmp_path / 'vis' / 'exif.jpg.jpg'))
    scale = vis_scale(40, 24)
    shown = cv2.resize(vis[:40 * scale, :24 * scale], (24, 40), interpolation=cv2.INTER_AREA)
    assert np.abs(shown.astype(int) - displayed.astype(int)).mean() < 8
    assert shown[:, 16:].mean() < shown[:, :8].mean() / 2  # the dark stored top is now on the right


def test_rerun_skips_unless_forced(first_run, real_folder, checkpoint, infer_tool, tmp_path,
                                   capsys):
    out = str(tmp_path / 'out')
    shutil.copytree(first_run[1], out)
    args = [real_folder, CONFIG, checkpoint, '--out-dir', out, '--device', 'cpu']
    before = {p: os.stat(p).st_mtime_ns for p in glob.glob(osp.join(out, '**', '*.*'), recursive=True)}
    assert len(before) == 16
    assert infer_tool.main(args) == 1  # the corrupt file still fails
    assert 'done 0, skipped 8, failed 1 of 9 images' in capsys.readouterr().out
    assert {p: os.stat(p).st_mtime_ns for p in before} == before
    assert infer_tool.main(args + ['--force', '--batch-size', '3']) == 1
    assert 'done 8, skipped 0, failed 1 of 9 images' in capsys.readouterr().out
    assert all(os.stat(p).st_mtime_ns != t for p, t in before.items())
    assert leftovers(out) == []


@pytest.fixture(scope='module')
def fpn_checkpoint(tmp_path_factory) -> str:
    return save_checkpoint(str(tmp_path_factory.mktemp('ckpt_fpn') / 'fpn.pth'), FPN_CONFIG)


@pytest.mark.parametrize('case,message', [
    ('missing config', r'config \S*nope\.py not found'),
    ('missing checkpoint', r'checkpoint \S*nope\.pth not found'),
    ('checkpoint of another model', r'checkpoint \S*fpn\.pth does not fit config \S*vt-fpn_r18'),
    ('unreadable checkpoint', r'cannot read checkpoint \S*notes\.pth'),
    ('empty folder', r'no images found in \S*empty'),
    ('folder without images', r'no images found in \S*texts'),
    ('missing input', r'input \S*nowhere does not exist'),
    ('cuda without a GPU', r"device 'cuda' asked for, but torch sees no CUDA GPU"),
])
def test_setup_errors_are_one_line_and_exit_2(case, message, infer_tool, real_folder, checkpoint,
                                              fpn_checkpoint, tmp_path, capsys):
    if case == 'cuda without a GPU' and torch.cuda.is_available():
        pytest.skip('this machine has a GPU')
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'texts').mkdir()
    (tmp_path / 'texts' / 'a.txt').write_text('x')
    (tmp_path / 'notes.pth').write_text('not a checkpoint')
    config, ckpt, inputs, extra = CONFIG, checkpoint, real_folder, []
    if case == 'missing config':
        config = str(tmp_path / 'nope.py')
    elif case == 'missing checkpoint':
        ckpt = str(tmp_path / 'nope.pth')
    elif case == 'checkpoint of another model':
        ckpt = fpn_checkpoint
    elif case == 'unreadable checkpoint':
        ckpt = str(tmp_path / 'notes.pth')
    elif case == 'empty folder':
        inputs = str(tmp_path / 'empty')
    elif case == 'folder without images':
        inputs = str(tmp_path / 'texts')
    elif case == 'missing input':
        inputs = str(tmp_path / 'nowhere')
    else:
        extra = ['--device', 'cuda']
    out = tmp_path / 'out'
    assert infer_tool.main([inputs, config, ckpt, '--out-dir', str(out), *extra]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('infer.py: error: '), captured.err
    assert re.search(message, lines[0]), lines[0]
    assert captured.out == '' and not out.exists()


def test_wrong_checkpoint_in_a_real_process_is_one_line(real_folder, fpn_checkpoint, tmp_path):
    proc = subprocess.run([sys.executable, TOOL, real_folder, CONFIG, fpn_checkpoint, '--out-dir',
                           str(tmp_path / 'out')], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=ONE_THREAD_ENV)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and proc.stdout == ''
    assert len(lines) == 1 and 'does not fit config' in lines[0], proc.stderr


@pytest.mark.parametrize('option,message', [
    (['--out-dir', 'o', '--batch-size', '0'], 'must be at least 1'),
    (['--out-dir', 'o', '--opacity', '1.5'], 'must be in [0, 1]'),
    ([], 'the following arguments are required: --out-dir'),
])
def test_bad_arguments_exit_2(option, message, infer_tool, capsys):
    with pytest.raises(SystemExit) as info:
        infer_tool.main(['in', 'config.py', 'ckpt.pth', *option])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_ctrl_c_reports_what_was_done(infer_tool, checkpoint, tmp_path, monkeypatch, capsys):
    for name in ['a.png', 'b.png', 'c.png']:
        cv2.imwrite(str(tmp_path / name), RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    press_ctrl_c_when_loading(monkeypatch, 'b.png')
    out = tmp_path / 'out'
    # --workers 0: the patched decoder raises in this process (a real Ctrl-C with loader
    # workers: test_a_real_ctrl_c_with_loader_workers)
    assert infer_tool.main([str(tmp_path), CONFIG, checkpoint, '--out-dir', str(out), '--workers', '0']) == 130
    assert 'interrupted: done 1, skipped 0, failed 0 of 3 images' in capsys.readouterr().err
    assert os.listdir(out / 'pred') == ['a.png.png'] and leftovers(str(out)) == []
    assert load_image(str(out / 'pred' / 'a.png.png')).shape == (8, 8, 3)


def test_a_dead_loader_worker_is_one_error_line_and_exit_1(infer_tool, checkpoint, tmp_path, monkeypatch, capsys):
    """A loader worker killed while decoding (the kernel's OOM killer): what was done is said, one
    error line says what happened and what to do, no image is blamed, no traceback."""
    for name in ['a.png', 'b.png', 'c.png', 'd.png']:
        cv2.imwrite(str(tmp_path / name), RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    kill_loader_workers_at(monkeypatch, 'c.png')
    out = tmp_path / 'out'
    assert infer_tool.main([str(tmp_path), CONFIG, checkpoint, '--out-dir', str(out), '--workers', '1']) == 1
    err = capsys.readouterr().err
    assert re.search(r'done [0-2], skipped 0, failed 0 of 4 images', err)
    errors = [line for line in err.splitlines() if line.startswith('infer.py: error: ')]
    assert len(errors) == 1 and 'a loader worker process died' in errors[0] and 'run again to resume' in errors[0]
    assert 'Traceback' not in err and leftovers(str(out)) == []


# --- hostile inputs ----------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='no named pipes here')
def test_a_named_pipe_called_jpg_does_not_hang_the_tool(checkpoint, tmp_path):
    root = tmp_path / 'in'
    root.mkdir()
    cv2.imwrite(str(root / 'good.png'), RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    os.mkfifo(root / 'x.jpg')
    proc = subprocess.run([sys.executable, TOOL, str(root), CONFIG, checkpoint, '--out-dir',
                           str(tmp_path / 'out')], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=ONE_THREAD_ENV)
    assert proc.returncode == 1, proc.stderr
    assert 'done 1, skipped 0, failed 1 of 2 images' in proc.stdout
    assert (f'failed: {root / "x.jpg"}: not a regular file but a named pipe (FIFO): not opened'
            in proc.stderr)


def test_unreadable_subfolder_is_listed_as_failed(checkpoint, tmp_path):
    from os_testing import unprivileged
    root = tmp_path / 'in'
    (root / 'locked').mkdir(parents=True)
    cv2.imwrite(str(root / 'a.png'), RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    cv2.imwrite(str(root / 'locked' / 'b.png'), RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    os.chmod(root / 'locked', 0)
    try:
        proc = subprocess.run(unprivileged([sys.executable, TOOL, str(root), CONFIG, checkpoint,
                                            '--out-dir', str(tmp_path / 'out')]),
                              cwd=REPO, capture_output=True, text=True, timeout=300, env=ONE_THREAD_ENV)
    finally:
        os.chmod(root / 'locked', 0o755)
    assert proc.returncode == 1, proc.stderr
    assert f'failed: {root / "locked"}: cannot list this folder (Permission denied)' in proc.stderr
    assert 'done 1, skipped 0, failed 0 of 1 images' in proc.stdout
    assert '1 folder could not be read' in proc.stdout


@pytest.mark.parametrize('case,message', [
    ('out-dir is a file', r'output folder \S*notes\.txt is a file, not a folder'),
    ('out-dir under a file', r'output folder \S*notes\.txt/out lies under the file \S*notes\.txt'),
    ('out-dir not writable', r'output folder \S* cannot be written'),
    ('device mps', r"device 'mps' asked for, but torch has no MPS|device 'mps' cannot"),
    ('device meta', r"device 'meta' cannot run inference here: use cpu or cuda\[:N\]"),
    ('device tpu', r"unknown device 'tpu'"),
    ('cfg-options model=3', r'--cfg-options model=3 would replace the config section model'),
    ('pickled code', r'cannot read checkpoint \S*evil\.pth: it holds a pickled reference to '
                     r'(posix|os)\.system'),
])
def test_hostile_arguments_are_one_line_before_any_work(case, message, infer_tool, real_folder,
                                                        checkpoint, tmp_path, capsys, monkeypatch):
    import vtseg.apis.folder as folder_module
    monkeypatch.setattr(folder_module, 'load_image', lambda path: pytest.fail('an image was read'))
    (tmp_path / 'notes.txt').write_text('x')
    out, extra, ckpt = str(tmp_path / 'out'), [], checkpoint
    if case == 'out-dir is a file':
        out = str(tmp_path / 'notes.txt')
    elif case == 'out-dir under a file':
        out = str(tmp_path / 'notes.txt' / 'out')
    elif case == 'out-dir not writable':
        if os.geteuid() == 0:
            out = '/proc/vtseg-test-out'  # refused even to root
        else:
            (tmp_path / 'ro').mkdir(mode=0o500)
            out = str(tmp_path / 'ro' / 'out')
    elif case.startswith('device'):
        extra = ['--device', case.split()[1]]
    elif case.startswith('cfg-options'):
        extra = ['--cfg-options', 'model=3']
    elif case == 'pickled code':
        ckpt = save_pickled_code_checkpoint(tmp_path / 'evil.pth', tmp_path / 'PWNED')
    assert infer_tool.main([real_folder, CONFIG, ckpt, '--out-dir', out, *extra]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('infer.py: error: '), captured.err
    assert re.search(message, lines[0]), lines[0]
    assert 'weights_only=False' not in lines[0] and 'Re-running' not in lines[0]
    assert captured.out == '' and not (tmp_path / 'PWNED').exists()
    assert not (tmp_path / 'out').exists()  # a failed start leaves no output folder


def test_cfg_options_that_are_not_key_value_exit_2(infer_tool, capsys):
    with pytest.raises(SystemExit) as info:
        infer_tool.main(['in', CONFIG, 'ckpt.pth', '--out-dir', 'o', '--cfg-options', 'foo'])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "'foo' is not key=value" in err and 'Traceback' not in err


# --- outputs on demand, overlapped I/O, several processes ----------------------------------------

def output_files(out_dir: str) -> dict:
    """Relative path -> bytes of every file under ``out_dir`` (hidden ones included)."""
    return {osp.relpath(p, out_dir): open(p, 'rb').read()
            for p in glob.glob(osp.join(out_dir, '**', '*'), recursive=True) + leftovers(out_dir)
            if osp.isfile(p)}


def test_only_what_is_wanted(infer_tool, real_folder, checkpoint, tmp_path, capsys):
    """--no-vis --save-probs --palette --list: class-id PNGs in the chosen colours and
    probabilities, for the listed images only; a listed path that is no image fails alone."""
    from mmseg.utils import get_palette
    listing = tmp_path / 'list.txt'
    listing.write_text('gray.png\nphotos/exif.jpg\nnotes.txt\n')
    out = str(tmp_path / 'out')
    assert infer_tool.main([real_folder, CONFIG, checkpoint, '--out-dir', out, '--no-vis', '--save-probs',
                            '--palette', 'cityscapes', '--list', str(listing), '--device', 'cpu']) == 1
    captured = capsys.readouterr()
    assert 'done 2, skipped 0, failed 1 of 3 images' in captured.out
    assert 'time: decode ' in captured.out
    assert f'failed: notes.txt: listed in {listing} but not an image found in the input' in captured.err
    assert sorted(output_files(out)) == sorted(osp.join(kind, rel + ext) for rel in ['gray.png', 'photos/exif.jpg']
                                               for kind, ext in [('pred', '.png'), ('probs', '.npy')])
    pred = Image.open(osp.join(out, 'pred', 'gray.png.png'))
    assert pred.getpalette()[:15] == sum(map(list, get_palette('cityscapes')[:5]), [])
    probs = np.load(osp.join(out, 'probs', 'photos', 'exif.jpg.npy'))
    assert probs.shape == (len(VTSHAPES_CLASSES), 40, 24) and probs.dtype == np.float16


def test_no_auto_slide_predicts_large_images_whole_as_mmseg_does(infer_tool, checkpoint, tmp_path, capsys):
    """The demo config's crop is 96 and its test_cfg 'whole': a 250x210 image slides by default,
    and is predicted whole (mmseg's own choice) with --no-auto-slide."""
    root = tmp_path / 'in'
    root.mkdir()
    cv2.imwrite(str(root / 'large.png'), RNG.integers(0, 256, (250, 210, 3), dtype=np.uint8))
    for option, slid in [([], True), (['--no-auto-slide'], False)]:
        out = str(tmp_path / f'out{len(option)}')
        assert infer_tool.main([str(root), CONFIG, checkpoint, '--out-dir', out, '--no-vis', '--device', 'cpu']
                               + option) == 0
        printed = capsys.readouterr().out
        assert 'done 1, skipped 0, failed 0 of 1 images' in printed
        assert ('1 by sliding window' in printed) is slid, printed


def test_channels_last_is_the_cpu_default_and_can_be_switched_off(infer_tool, real_folder, checkpoint,
                                                                  tmp_path, monkeypatch, capsys):
    built = []

    def recorded(*args, **kwargs):
        built.append(SegInferencer(*args, **kwargs))
        return built[-1]
    monkeypatch.setattr(infer_tool, 'SegInferencer', recorded)
    listing = tmp_path / 'list.txt'
    listing.write_text('gray.png\n')
    for option, expected in [([], True), (['--no-channels-last'], False)]:
        out = str(tmp_path / f'out{len(built)}')
        assert infer_tool.main([real_folder, CONFIG, checkpoint, '--out-dir', out, '--list', str(listing),
                                '--no-vis', '--device', 'cpu'] + option) == 0
        assert 'done 1, skipped 0, failed 0 of 1 images' in capsys.readouterr().out
        stem = built[-1].model.backbone.stem[0].weight  # 3x3: its two layouts differ
        assert built[-1].channels_last is expected
        assert stem.is_contiguous(memory_format=torch.channels_last if expected else torch.contiguous_format)


@pytest.mark.parametrize('option,message', [
    (['--palette', 'rainbow'], r"unknown palette 'rainbow': choose one of model, random, cityscapes"),
    (['--list', 'nope.txt'], r'cannot read the image list nope\.txt'),
])
def test_bad_output_options_are_one_line_before_any_work(option, message, infer_tool, real_folder,
                                                         checkpoint, tmp_path, capsys):
    out = tmp_path / 'out'
    assert infer_tool.main([real_folder, CONFIG, checkpoint, '--out-dir', str(out), *option]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), captured.err
    assert not out.exists()


def test_a_real_ctrl_c_with_loader_workers(checkpoint, tmp_path):
    """SIGINT to the tool's process group (what Ctrl-C in a terminal sends, loader workers
    included) while it runs: exit 130, the summary of what was done, no partial file."""
    import signal
    import time
    root, out = tmp_path / 'in', tmp_path / 'out'
    root.mkdir()
    # enough images that the run outlasts a busy machine's delay in noticing the first output
    # (80 were all done, in 2.7 s, before the SIGINT came while mmcv compiled beside the tests)
    for i in range(600):
        cv2.imwrite(str(root / f'{i:03d}.png'), RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    proc = subprocess.Popen([sys.executable, TOOL, str(root), CONFIG, checkpoint, '--out-dir', str(out),
                             '--workers', '2'], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ONE_THREAD_ENV, start_new_session=True)
    deadline = time.monotonic() + 240
    while not glob.glob(str(out / 'pred' / '*.png')) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr[-3000:]
    match = re.search(r'interrupted: done (\d+), skipped 0, failed 0 of 600 images', stderr)
    assert match and 0 < int(match.group(1)) < 600, stderr[-3000:]
    preds = glob.glob(str(out / 'pred' / '*.png'))
    assert len(preds) == int(match.group(1))
    for path in preds:
        Image.open(path).load()  # complete
    assert leftovers(str(out)) == [] and 'Traceback' not in stderr


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def torchrun_env() -> dict:
    """dist_infer.sh's ``python`` is this interpreter; CPU processes (gloo) even where GPUs exist."""
    return {**ONE_THREAD_ENV, 'PORT': str(free_port()), 'CUDA_VISIBLE_DEVICES': '',
            'PATH': osp.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', '')}


@pytest.mark.slow
def test_two_processes_write_the_bytes_one_process_writes(infer_tool, real_folder, checkpoint, tmp_path, capsys):
    """dist_infer.sh with 2 gloo processes on the real folder (corrupt file, EXIF, 16-bit, one
    image by sliding window): the same files, byte for byte, and one summary, from rank 0."""
    single = str(tmp_path / 'single')
    assert infer_tool.main([real_folder, CONFIG, checkpoint, '--out-dir', single, '--device', 'cpu',
                            '--workers', '0']) == 1
    capsys.readouterr()
    two = str(tmp_path / 'two')
    proc = subprocess.run(['bash', osp.join(REPO, 'tools', 'dist_infer.sh'), real_folder, CONFIG, checkpoint, '2',
                           '--out-dir', two], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=torchrun_env())
    assert proc.returncode == 1, proc.stdout + proc.stderr[-4000:]  # the corrupt image
    assert proc.stdout.count('done 8, skipped 0, failed 1 of 9 images') == 1, proc.stdout
    assert '1 by sliding window' in proc.stdout and 'on cpu, 2 processes' in proc.stdout
    assert proc.stderr.count(f'failed: {osp.join(real_folder, CORRUPT)}: cannot decode image') == 1
    reference = output_files(single)
    assert len(reference) == 16 and output_files(two) == reference


@pytest.mark.slow
def test_two_nodes_write_the_bytes_one_process_writes(infer_tool, real_folder, checkpoint, tmp_path, capsys):
    """Multi-node as torchrun does it: two "nodes" (NNODES=2, NODE_RANK 0 and 1, one process each,
    so both have LOCAL_RANK 0) meet at MASTER_ADDR; the images are split by global rank, rank 0
    on node 0 prints the one summary, and the files are those of one process."""
    single = str(tmp_path / 'single')
    assert infer_tool.main([real_folder, CONFIG, checkpoint, '--out-dir', single, '--device', 'cpu',
                            '--workers', '0']) == 1
    capsys.readouterr()
    two = str(tmp_path / 'two')
    env = dict(torchrun_env(), NNODES='2', MASTER_ADDR='127.0.0.1')
    nodes = [subprocess.Popen(['bash', osp.join(REPO, 'tools', 'dist_infer.sh'), real_folder, CONFIG, checkpoint, '1',
                               '--out-dir', two], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(env, NODE_RANK=str(node))) for node in (0, 1)]
    (out0, err0), (out1, err1) = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [1, 1], err0[-3000:] + err1[-3000:]  # the corrupt image
    assert out0.count('done 8, skipped 0, failed 1 of 9 images') == 1 and 'on cpu, 2 processes' in out0, out0
    assert 'done ' not in out1
    assert output_files(two) == output_files(single)


@pytest.mark.slow
def test_a_killed_rank_resumes_with_another_process_count(infer_tool, checkpoint, tmp_path, capsys):
    """Rank 1 of 2 is killed (SIGKILL) while it predicts a large image and writes its logits; a
    run with 1 process finishes the rest, redoing nothing that was finished, and the outputs
    are those of one uninterrupted run, byte for byte, with no temporary file left."""
    import signal
    import time
    root = tmp_path / 'in'
    root.mkdir()
    for i in range(5):
        cv2.imwrite(str(root / f'a{i}.png'), RNG.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    # sorted 6th: rank 1's last image; 700x700 slides over 121 windows of 96x96
    smooth = cv2.resize(RNG.integers(0, 256, (40, 40, 3), dtype=np.uint8), (700, 700))
    cv2.imwrite(str(root / 'b.png'), smooth)
    args = [str(root), CONFIG, checkpoint, '--save-logits', '--out-dir']
    reference = str(tmp_path / 'reference')
    assert infer_tool.main([*args, reference, '--device', 'cpu', '--workers', '0']) == 0
    capsys.readouterr()

    out = tmp_path / 'out'
    proc = subprocess.Popen(['bash', osp.join(REPO, 'tools', 'dist_infer.sh'), *args[:3], '2', *args[3:], str(out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=torchrun_env())
    deadline, temporary = time.monotonic() + 300, []
    while not temporary and proc.poll() is None and time.monotonic() < deadline:
        temporary = glob.glob(str(out / 'logits' / '.b.png.npy.*.tmp'))  # b.png's logits are being written
        time.sleep(0.01)
    assert temporary, 'rank 1 never started b.png'
    rank1 = int(osp.basename(temporary[0]).split('.')[4])  # .b.png.npy.<pid>.<hex>.tmp
    os.kill(rank1, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode != 0 and not (out / 'pred' / 'b.png.png').exists()
    finished = len(glob.glob(str(out / 'pred' / '*.png')))
    assert finished < 6 and leftovers(str(out))  # b.png's temporary logits file is still there

    assert infer_tool.main([*args, str(out), '--device', 'cpu']) == 0
    assert f'done {6 - finished}, skipped {finished}, failed 0 of 6 images' in capsys.readouterr().out
    assert output_files(str(out)) == output_files(reference)  # nothing partial, nothing left over


def test_readme_throughput_table_is_the_benchmark_result():
    """README "Dense inference on folders": the throughput table and the sentences about it show
    benchmarks/results/infer-throughput.json (benchmarks/infer_throughput.py's output)."""
    import json
    text = section(read('README.md'), 'Dense inference on folders')
    with open(osp.join(REPO, 'benchmarks', 'results', 'infer-throughput.json')) as f:
        summary = json.load(f)['summary']
    table = text.split('| way | img/s | vs `MMSegInferencer` |', 1)[1].split('\n\n', 1)[0]
    rows = [[cell.strip().strip('*') for cell in line.strip('|').split('|')] for line in table.strip().splitlines()[2:]]
    ways = ['infer', 'infer --no-vis', 'infer --no-vis --no-channels-last', 'infer 2 proc', 'infer 2 proc --no-vis',
            'mmseg']
    assert len(rows) == len(ways)
    mmseg = summary['mmseg']['images_per_second']
    for row, way in zip(rows, ways):
        result = summary[way]
        assert row[1] == f'{result["images_per_second"]:.1f}', way
        assert row[2] == f'{result["images_per_second"] / mmseg:.2f}x', way
        stages = result.get('stages')
        expected = [f'{stages[s]:.1f}' for s in ['decode', 'predict', 'encode', 'write', 'waited']] if stages \
            else ['-'] * 5
        assert row[3:] == expected, way
    one = summary['infer']
    plain = summary['infer --no-vis --no-channels-last']['stages']['predict']
    assert_says(text, [
        f'predicting takes {one["stages"]["predict"]:.1f} of its {one["seconds"]:.1f} seconds',
        f'the forward passes take {summary["infer --no-vis"]["stages"]["predict"]:.1f} s instead of {plain:.1f} s',
        f"mmseg's whole loop is {summary['mmseg']['seconds']:.1f} s, our forward passes alone "
        f"{summary['infer --no-vis']['stages']['predict']:.0f} s",
    ], 'README.md "Dense inference on folders" (benchmarks/results/infer-throughput.json)')


def test_readme_real_photo_numbers_are_the_benchmark_result():
    """README "Dense inference on folders": the real-photo ratios are those of
    benchmarks/results/infer-throughput-real-photos.json."""
    import json
    with open(osp.join(REPO, 'benchmarks', 'results', 'infer-throughput-real-photos.json')) as f:
        result = json.load(f)
    summary = result['summary']
    ratio = {way: summary[way]['images_per_second'] / summary['mmseg']['images_per_second'] for way in summary}
    assert_says(read('README.md'), [
        f'builds a folder of {result["meta"]["images"]} ',
        f"`tools/infer.py` {ratio['infer']:.2f}x `MMSegInferencer`'s images/s, `--no-vis` "
        f"{ratio['infer --no-vis']:.2f}x, two processes {ratio['infer 2 proc']:.2f}x",
        f"the forward passes {summary['infer --no-vis']['stages']['predict']:.1f} s channels-last against "
        f"{summary['infer --no-vis --no-channels-last']['stages']['predict']:.1f} s without",
    ], 'README.md (benchmarks/results/infer-throughput-real-photos.json)')

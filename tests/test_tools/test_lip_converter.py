"""tools/dataset_converters/lip.py on miniature official LIP downloads."""
import contextlib
import fcntl
import functools
import glob
import importlib.util
import io
import os
import os.path as osp
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from typing import Tuple

import numpy as np
import pytest
from PIL import Image

from vtseg_testing import REPO, run_tool
from test_configs.fake_datasets import LIP_TRAIN_IDS, LIP_VAL_IDS, write_lip_download

TOOL = osp.join(REPO, 'tools', 'dataset_converters', 'lip.py')


@functools.lru_cache(maxsize=None)
def _tool():
    """The converter as a module: most tests call its main here (a process start imports
    torch and mmseg through vtseg, several seconds each); the tests of signals, named pipes
    and memory run it as a real process."""
    spec = importlib.util.spec_from_file_location('vtseg_tools_lip', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_converter(lip_root: str, out_dir: str) -> Tuple[int, str, str]:
    """``lip.py LIP_ROOT -o OUT_DIR`` in this process: (exit status, stdout, stderr) as a shell
    would see them."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stdout, stderr, status, argv = io.StringIO(), io.StringIO(), 0, sys.argv
    try:
        sys.argv = [TOOL, lip_root, '-o', out_dir]
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                _tool().main()
            except SystemExit as done:
                status = done.code or 0
    finally:
        sys.argv = argv
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return status, stdout.getvalue(), stderr.getvalue()


def convert(lip_root: str, out_dir: str) -> str:
    status, stdout, stderr = run_converter(lip_root, out_dir)
    assert status == 0, stderr
    return stdout


def fails(lip_root: str, out_dir: str) -> str:
    """Run the converter, expect it to fail, return its one error line."""
    status, stdout, stderr = run_converter(lip_root, out_dir)
    assert status == 2, stdout  # bad input, as argparse's exit status
    err = stderr.strip()
    assert err.startswith('lip.py: error: ') and '\n' not in err, stderr
    return err


def tree(root: str) -> dict:
    """``{relative path: bytes}`` of every file under ``root``."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            with open(osp.join(d, f), 'rb') as fh:
                out[osp.relpath(osp.join(d, f), root)] = fh.read()
    return out


def expected_files() -> set:
    return {osp.join(kind, split, i + ext)
            for split, ids in (('train', LIP_TRAIN_IDS), ('val', LIP_VAL_IDS))
            for i in ids for kind, ext in (('img_dir', '.jpg'), ('ann_dir', '.png'))}


@pytest.mark.parametrize('variant', ['folders', 'zips', 'nested folders', 'nested zips'])
def test_converts_every_download_variant(tmp_path, variant):
    lip = write_lip_download(str(tmp_path / 'LIP_download'), as_zip='zips' in variant,
                             nested='nested' in variant)
    out = str(tmp_path / 'LIP')
    assert 'LIP: 4 train / 2 val image/mask pairs' in convert(lip, out)
    files = tree(out)
    assert set(files) == expected_files()  # and no staging folder left behind

    # copied byte for byte: compare with a plain download of the same content
    plain = write_lip_download(str(tmp_path / 'plain'))
    src = osp.join(plain, 'TrainVal_images', 'train_images', LIP_TRAIN_IDS[0] + '.jpg')
    with open(src, 'rb') as f:
        assert files[osp.join('img_dir', 'train', LIP_TRAIN_IDS[0] + '.jpg')] == f.read()
    src = osp.join(plain, 'TrainVal_parsing_annotations', 'val_segmentations',
                   LIP_VAL_IDS[1] + '.png')
    with open(src, 'rb') as f:
        assert files[osp.join('ann_dir', 'val', LIP_VAL_IDS[1] + '.png')] == f.read()


def test_output_is_what_the_config_reads(tmp_path, repo_root):
    """mmseg's LIPDataset, configured by the LIP dataset config, finds every pair."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    out = str(tmp_path / 'LIP')
    convert(write_lip_download(str(tmp_path / 'dl')), out)
    cfg = Config.fromfile(osp.join(repo_root, 'configs', '_base_', 'datasets', 'lip_473x473.py'))
    init_default_scope('mmseg')
    for loader, ids in ((cfg.train_dataloader, LIP_TRAIN_IDS), (cfg.val_dataloader, LIP_VAL_IDS)):
        dataset = DATASETS.build({**loader.dataset, 'data_root': out, 'pipeline': []})
        masks = sorted(osp.basename(d['seg_map_path']) for d in dataset)
        assert masks == sorted(i + '.png' for i in ids)
        assert all(osp.isfile(d['img_path']) for d in dataset)


def test_rerun_replaces_output_and_keeps_other_files(tmp_path):
    lip, out = write_lip_download(str(tmp_path / 'dl')), str(tmp_path / 'LIP')
    convert(lip, out)
    first = tree(out)
    with open(osp.join(out, 'img_dir', 'train', 'stale.jpg'), 'wb') as f:
        f.write(b'left over from another download')
    with open(osp.join(out, 'notes.txt'), 'w') as f:
        f.write('mine')
    convert(lip, out)
    again = tree(out)
    assert again.pop('notes.txt') == b'mine'
    assert again == first


def test_missing_download(tmp_path):
    assert 'is not a folder' in fails(str(tmp_path / 'nowhere'), str(tmp_path / 'out'))
    lip = write_lip_download(str(tmp_path / 'dl'))
    os.rename(osp.join(lip, 'TrainVal_parsing_annotations'), osp.join(lip, 'elsewhere'))
    err = fails(lip, str(tmp_path / 'out'))
    assert 'has neither TrainVal_parsing_annotations/ nor TrainVal_parsing_annotations.zip' in err
    assert 'http://sysu-hcp.net/lip/' in err
    assert not osp.exists(tmp_path / 'out')


def test_truncated_zip(tmp_path):
    lip = write_lip_download(str(tmp_path / 'dl'), as_zip=True)
    archive = osp.join(lip, 'TrainVal_images.zip')
    with open(archive, 'rb') as f:
        data = f.read()
    with open(archive, 'wb') as f:
        f.write(data[:len(data) // 2])
    assert 'TrainVal_images.zip is not a readable zip file' in fails(lip, str(tmp_path / 'out'))


def test_unpaired_files_are_reported(tmp_path):
    lip = write_lip_download(str(tmp_path / 'dl'))
    images = osp.join(lip, 'TrainVal_images')
    masks = osp.join(lip, 'TrainVal_parsing_annotations')
    os.remove(osp.join(images, 'train_images', '77_471474.jpg'))
    os.remove(osp.join(masks, 'val_segmentations', '10005_205677.png'))
    err = fails(lip, str(tmp_path / 'out'))
    assert 'train split is incomplete: 1 mask(s) without an image (77_471474.png)' in err

    os.remove(osp.join(masks, 'train_segmentations', '77_471474.png'))
    err = fails(lip, str(tmp_path / 'out'))
    assert '1 id(s) of train_id.txt with neither image nor mask (77_471474)' in err

    with open(osp.join(images, 'train_id.txt'), 'w') as f:
        f.write('\n'.join(LIP_TRAIN_IDS[1:]) + '\n')
    err = fails(lip, str(tmp_path / 'out'))
    assert 'val split is incomplete: 1 image(s) without a mask (10005_205677.jpg)' in err

    os.remove(osp.join(images, 'val_id.txt'))  # without a list, pairing is by file name
    assert 'image(s) without a mask (10005_205677.jpg)' in fails(lip, str(tmp_path / 'out'))
    assert not osp.exists(tmp_path / 'out')


def test_pairs_missing_from_the_id_list_are_reported(tmp_path):
    lip = write_lip_download(str(tmp_path / 'dl'))
    with open(osp.join(lip, 'TrainVal_images', 'val_id.txt'), 'w') as f:
        f.write(LIP_VAL_IDS[0] + '\n')
    err = fails(lip, str(tmp_path / 'out'))
    assert f'1 image/mask pair(s) not in val_id.txt ({LIP_VAL_IDS[1]})' in err


@pytest.mark.parametrize('damage, message', [
    ('label', 'holds label(s) [30]; LIP labels are 0-19'),
    ('size', 'is 10x12 but its image is'),
    ('rgb', 'has image mode RGB; LIP masks are single-channel'),
    ('truncated', f'cannot decode train_images/{LIP_TRAIN_IDS[2]}.jpg'),
])
def test_bad_content_leaves_earlier_output_untouched(tmp_path, damage, message):
    lip, out = write_lip_download(str(tmp_path / 'dl')), str(tmp_path / 'LIP')
    convert(lip, out)
    before = tree(out)
    stem = LIP_TRAIN_IDS[2]
    mask_path = osp.join(lip, 'TrainVal_parsing_annotations', 'train_segmentations', stem + '.png')
    image_path = osp.join(lip, 'TrainVal_images', 'train_images', stem + '.jpg')
    mask = np.array(Image.open(mask_path))
    if damage == 'label':
        mask[0, 0] = 30
        Image.fromarray(mask).save(mask_path)
    elif damage == 'size':
        Image.fromarray(np.zeros((12, 10), np.uint8)).save(mask_path)
    elif damage == 'rgb':
        Image.fromarray(np.stack([mask] * 3, axis=-1)).save(mask_path)
    else:
        with open(image_path, 'rb') as f:
            data = f.read()
        with open(image_path, 'wb') as f:
            f.write(data[:len(data) // 2])
    assert message in fails(lip, out)
    assert tree(out) == before  # no staging folder left, nothing half-replaced


# --- hostile downloads -------------------------------------------------------------------------

def _patch_central_entry(archive: str, member: str, offset: int, value: bytes) -> None:
    """Overwrite bytes of ``member``'s central-directory record (offset from its signature)."""
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(member)
    with open(archive, 'r+b') as f:
        data = f.read()
        record = data.rindex(b'PK\x01\x02', 0, data.rindex(member.encode()))
        f.seek(record + offset)
        f.write(value)
    assert info is not None


@pytest.mark.parametrize('damage, reason', [
    ('corrupt deflate data', r'(Error -3 while decompressing|Bad CRC-32|invalid)'),
    ('encrypted entry', 'encrypted, password required'),
    ('unknown compression', 'compression method is not supported'),
])
def test_damaged_zip_entries_are_one_line(tmp_path, damage, reason):
    lip = write_lip_download(str(tmp_path / 'dl'), as_zip=True)
    archive = osp.join(lip, 'TrainVal_images.zip')
    member = f'TrainVal_images/train_images/{LIP_TRAIN_IDS[1]}.jpg'
    if damage == 'corrupt deflate data':
        with zipfile.ZipFile(archive) as zf:
            info = zf.getinfo(member)
        with open(archive, 'r+b') as f:
            f.seek(info.header_offset + 26)
            name_len, extra_len = np.frombuffer(f.read(4), dtype='<u2')
            f.seek(info.header_offset + 30 + int(name_len) + int(extra_len) + 8)
            f.write(bytes(range(200, 248)))  # garbage in the middle of the deflate stream
    elif damage == 'encrypted entry':
        _patch_central_entry(archive, member, 8, b'\x01\x00')  # general purpose flag: encrypted
    else:
        _patch_central_entry(archive, member, 10, b'\x63\x00')  # method 99 (AES)
    out = str(tmp_path / 'out')
    err = fails(lip, out)
    assert err.startswith(f'lip.py: error: cannot read {member} from TrainVal_images.zip (')
    assert re.search(reason, err), err
    assert err.endswith('the download is damaged: download it again')
    assert not osp.exists(out)  # a failed run leaves no output folder it made


def _zip_with_a_huge_member(root: str, padding: int) -> str:
    """A zipped download whose first train image is a JPEG followed by ``padding`` zero bytes
    (a valid JPEG: decoders stop at its end marker), deflated to almost nothing."""
    lip = write_lip_download(root)
    images = osp.join(lip, 'TrainVal_images')
    first = osp.join(images, 'train_images', LIP_TRAIN_IDS[0] + '.jpg')
    with open(first, 'ab') as f:
        for _ in range(padding // (1 << 20)):
            f.write(bytes(1 << 20))
    with zipfile.ZipFile(images + '.zip', 'w', zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for d, _, files in sorted(os.walk(images)):
            for name in sorted(files):
                path = osp.join(d, name)
                zf.write(path, osp.join('TrainVal_images', osp.relpath(path, images)))
    shutil.rmtree(images)
    return lip


RSS_WRAPPER = '''
import resource, runpy, sys
import numpy, PIL.Image, vtseg.apis.io, vtseg.utils.errors  # what the tool imports
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name='__main__')
finally:
    print('grown_mb', (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
'''


HUGE_MEMBER = 150 << 20


@pytest.fixture(scope='module')
def huge_download(tmp_path_factory) -> str:
    """A zipped download with a 150 MB image member."""
    return _zip_with_a_huge_member(str(tmp_path_factory.mktemp('huge')), HUGE_MEMBER)


def test_members_are_streamed_not_read_whole(huge_download, tmp_path):
    lip = huge_download
    out = str(tmp_path / 'LIP')
    proc = run_tool(['-c', RSS_WRAPPER, TOOL, lip, '-o', out])
    grown = int(proc.stdout.split('grown_mb')[1])
    assert grown < 60, proc.stdout  # reading the 150 MB member whole would add 150-300 MB
    assert os.path.getsize(osp.join(out, 'img_dir', 'train', LIP_TRAIN_IDS[0] + '.jpg')) > HUGE_MEMBER


def test_id_lists_cannot_flood_the_error_line(tmp_path):
    lip = write_lip_download(str(tmp_path / 'dl'))
    id_list = osp.join(lip, 'TrainVal_images', 'train_id.txt')
    with open(id_list, 'wb') as f:
        f.write(bytes(1 << 20))  # 1 MB of NULs: one "id"
    err = fails(lip, str(tmp_path / 'out'))
    assert '1 id(s) of train_id.txt with neither image nor mask (' in err
    assert len(err) < 1100 and '\x00' not in err and '\\x00' in err
    with open(id_list, 'wb') as f:
        f.write(bytes(20 << 20))
    err = fails(lip, str(tmp_path / 'out'))
    assert "train_id.txt in TrainVal_images/ is 21 MB; LIP's id lists are under 1 MB" in err


def test_validation_error_leaves_no_output_folder(tmp_path):
    lip = write_lip_download(str(tmp_path / 'dl'))
    mask_path = osp.join(lip, 'TrainVal_parsing_annotations', 'val_segmentations',
                         LIP_VAL_IDS[1] + '.png')
    mask = np.array(Image.open(mask_path))
    mask[0, 0] = 30
    Image.fromarray(mask).save(mask_path)
    out = tmp_path / 'new' / 'LIP'
    assert 'holds label(s) [30]' in fails(lip, str(out))
    assert not (tmp_path / 'new').exists()


def _start_and_wait_for_staging(lip: str, out: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, TOOL, lip, '-o', out], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for _ in range(1200):
        if glob.glob(osp.join(out, '.lip-staging-*', 'img_dir', 'train', '*.jpg')):
            return proc
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    pytest.fail('the converter never started writing')


def test_sigterm_cleans_up_and_sigkill_leftovers_go_on_the_next_run(huge_download, tmp_path):
    lip = huge_download  # copying its huge member takes a while: time to send signals
    out = str(tmp_path / 'LIP')
    proc = _start_and_wait_for_staging(lip, out)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and stderr.strip() == f'lip.py: error: interrupted; {out} is as it was before'
    assert not osp.exists(out)  # it made the folder, and removed it with its staging folder

    proc = _start_and_wait_for_staging(lip, out)
    proc.kill()  # SIGKILL: nothing runs
    proc.communicate()
    left = [n for n in os.listdir(out) if n.startswith('.lip-staging-')]
    assert len(left) == 1
    live = osp.join(out, '.lip-staging-live')  # one a running converter holds: kept
    os.mkdir(live)
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        stdout = convert(write_lip_download(str(tmp_path / 'small')), out)
    finally:
        os.close(fd)
    assert f'removed 1 staging folder(s) that killed runs left in {out}' in stdout
    assert sorted(n for n in os.listdir(out)) == ['.lip-staging-live', 'ann_dir', 'img_dir']


@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='no named pipes here')
def test_named_pipes_in_an_extracted_folder_are_listed_never_opened(tmp_path):
    lip = write_lip_download(str(tmp_path / 'dl'))
    images = osp.join(lip, 'TrainVal_images')
    os.mkfifo(osp.join(images, 'README'))
    out = str(tmp_path / 'LIP')
    proc = subprocess.run([sys.executable, TOOL, lip, '-o', out], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ('warning: TrainVal_images/ holds 1 entries that are not regular '
                                   'files, skipped without opening them: README (named pipe (FIFO))')
    assert set(tree(out)) == expected_files()

    first = osp.join(images, 'train_images', LIP_TRAIN_IDS[0] + '.jpg')
    os.remove(first)
    os.mkfifo(first)  # a pipe where an image should be: skipped, so the image is missing
    proc = subprocess.run([sys.executable, TOOL, lip, '-o', out], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert f'1 mask(s) without an image ({LIP_TRAIN_IDS[0]}.png)' in proc.stderr.splitlines()[-1]

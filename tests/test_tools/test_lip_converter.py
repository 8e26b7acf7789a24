"""tools/dataset_converters/lip.py on miniature official LIP downloads."""
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vtseg_testing import REPO, run_tool
from test_configs.fake_datasets import LIP_TRAIN_IDS, LIP_VAL_IDS, write_lip_download

TOOL = osp.join(REPO, 'tools', 'dataset_converters', 'lip.py')


def convert(lip_root: str, out_dir: str) -> str:
    return run_tool([TOOL, lip_root, '-o', out_dir]).stdout


def fails(lip_root: str, out_dir: str) -> str:
    """Run the converter, expect it to fail, return its one error line."""
    proc = subprocess.run([sys.executable, TOOL, lip_root, '-o', out_dir],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stdout
    err = proc.stderr.strip()
    assert err.startswith('error: ') and '\n' not in err, proc.stderr
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

"""benchmarks/real_photos.py builds its mixed folder, and its --mmcv-readable variant, from the
sample images (here stand-ins with the same names: the tests download nothing)."""
import os
import os.path as osp
import sys

import numpy as np
import pytest
from PIL import Image
from vtseg_testing import REPO

sys.path.insert(0, REPO)
from benchmarks.real_photos import keep_mmcv_readable, make_folder  # noqa: E402
from vtseg.apis import ImageDecodeError, find_images, load_image  # noqa: E402

NAMES = ['astronaut', 'chelsea', 'china', 'coffee', 'flower', 'hubble_deep_field', 'motorcycle_left', 'rocket']


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    paths = {}
    for name in NAMES:
        paths[name] = str(tmp_path / 'samples' / f'{name}.jpg')
        os.makedirs(osp.dirname(paths[name]), exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(paths[name], quality=90)
    return paths


def test_the_mixed_folder_has_each_kind_and_the_broken_files_fail(photos, tmp_path):
    out = str(tmp_path / 'photos')
    make_folder(out, photos)
    files = {osp.relpath(osp.join(root, f), out) for root, _, names in os.walk(out) for f in names}
    assert {'converted/china.webp', 'converted/coffee_16bit.png', 'converted/motorcycle_exif6.jpg',
            'large/china_1707x1281.jpg', 'odd/notes.txt', 'odd/UPPER CASE & space.JPG'} <= files
    assert len([f for f in files if f.startswith('as_shipped/')]) == len(NAMES)
    assert Image.open(osp.join(out, 'converted', 'coffee_16bit.png')).mode.startswith('I')
    # the EXIF image displays rotated: vtseg reads it the displayed way up (h, w swapped)
    assert load_image(osp.join(out, 'converted', 'motorcycle_exif6.jpg')).shape == (56, 40, 3)
    for broken in ['empty.png', 'truncated.jpg']:
        with pytest.raises(ImageDecodeError):
            load_image(osp.join(out, 'odd', broken))
    assert 'odd/notes.txt' not in {osp.relpath(t.src, out) for t in find_images(out, str(tmp_path / 'o'))}


def test_mmcv_readable_keeps_what_both_decode_under_unique_flat_names(photos, tmp_path):
    out = str(tmp_path / 'photos')
    make_folder(out, photos)
    keep_mmcv_readable(out)
    names = sorted(os.listdir(out))
    assert 'as_shipped_china.jpg' in names and 'converted_china.webp' in names
    assert 'odd_UPPER_CASE_&_space.JPG' in names
    assert not any(n.startswith(('odd_notes', 'odd_empty', 'odd_truncated')) for n in names)
    assert all(osp.isfile(osp.join(out, n)) for n in names)  # no sub-folders left
    for name in names:
        load_image(osp.join(out, name))

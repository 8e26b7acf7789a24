"""A folder of real photos in mixed formats and sizes, for checking and timing folder inference.

Usage::

    python benchmarks/real_photos.py /tmp/photos                    # mixed, with broken files
    python benchmarks/real_photos.py /tmp/photos-ok --mmcv-readable  # only what mmcv decodes, flat
    python benchmarks/infer_throughput.py --folder /tmp/photos-ok --out /tmp/real-photos

The photos are the sample images that scikit-image and scikit-learn ship inside their wheels
(astronaut, coffee, chelsea, motorcycle, rocket, retina, Hubble deep field, china, flower, ...,
plus textures, scans and microscopy), fetched with ``pip download`` from the package index, so
no data set is needed. Next to them as shipped (PNG, JPEG, 8/16-bit, gray, RGBA, TIFF, GIF),
the folder holds conversions of them (WebP, BMP, TIFF, palette PNG, 16-bit gray PNG, RGBA PNG, a
JPEG with EXIF orientation 6, a low-quality JPEG, a 97x61 thumbnail), two large images (1707x1281
and 2048x640, more than twice the demo config's crop) and, in ``odd/``, files that must fail
on their own (a text file, an empty PNG, a truncated JPEG) or be found despite their name
(``UPPER CASE & space.JPG``).

``--mmcv-readable`` leaves out what mmcv (and so ``MMSegInferencer``) or vtseg cannot decode
(mmcv decodes the truncated JPEG, padding it with gray; ``tools/infer.py`` reports it) and puts
every image in one folder under a unique name (``MMSegInferencer`` names its outputs by base
name), so that both tools process the same images.
"""
import argparse
import glob
import os
import os.path as osp
import shutil
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
from PIL import Image

WHEELS = ('scikit-image', 'scikit-learn')
IMAGE_SUFFIXES = ('.png', '.jpg', '.tif', '.gif')


def download_samples(folder: str) -> dict:
    """Sample images of the wheels in ``WHEELS``, extracted into ``folder``: stem -> path."""
    subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary', ':all:',
                    '--dest', folder, '--quiet', *WHEELS], check=True)
    photos = {}
    for wheel in glob.glob(osp.join(folder, '*.whl')):
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                in_data = name.startswith(('skimage/data/', 'sklearn/datasets/images/'))
                if in_data and name.lower().endswith(IMAGE_SUFFIXES):
                    photos[osp.splitext(osp.basename(name))[0]] = archive.extract(name, folder)
    if not photos:
        raise RuntimeError(f'no sample images found in the wheels of {", ".join(WHEELS)}')
    return photos


def make_folder(out: str, photos: dict) -> None:
    """The mixed folder described in the module docstring."""
    shipped, converted, odd, large = (osp.join(out, sub) for sub in ('as_shipped', 'converted', 'odd', 'large'))
    for sub in (shipped, converted, odd, large):
        os.makedirs(sub)
    for path in photos.values():
        shutil.copy(path, shipped)
    Image.open(photos['china']).save(osp.join(converted, 'china.webp'), quality=80)
    Image.open(photos['flower']).save(osp.join(converted, 'flower.bmp'))
    Image.open(photos['chelsea']).save(osp.join(converted, 'chelsea.tiff'))
    Image.open(photos['rocket']).convert('L').save(osp.join(converted, 'rocket_gray.jpg'), quality=90)
    Image.open(photos['coffee']).convert('RGBA').save(osp.join(converted, 'coffee_rgba.png'))
    Image.open(photos['astronaut']).convert('P', palette=Image.ADAPTIVE).save(
        osp.join(converted, 'astronaut_palette.png'))
    gray16 = np.asarray(Image.open(photos['coffee']).convert('L')).astype(np.uint16) * 257
    Image.fromarray(gray16).save(osp.join(converted, 'coffee_16bit.png'))
    motorcycle = Image.open(photos['motorcycle_left']).convert('RGB')
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    motorcycle.save(osp.join(converted, 'motorcycle_exif6.jpg'), exif=exif.tobytes(), quality=90)
    motorcycle.save(osp.join(converted, 'motorcycle_q40.jpg'), quality=40)
    Image.open(photos['hubble_deep_field']).resize((97, 61)).save(osp.join(converted, 'hubble_tiny.jpg'))
    Image.open(photos['china']).resize((1707, 1281), Image.BICUBIC).save(
        osp.join(large, 'china_1707x1281.jpg'), quality=92)
    Image.open(photos['astronaut']).resize((2048, 640)).save(osp.join(large, 'astronaut_wide.png'))
    with open(osp.join(odd, 'notes.txt'), 'w') as f:
        f.write('not an image\n')
    open(osp.join(odd, 'empty.png'), 'wb').close()
    with open(photos['china'], 'rb') as f:
        data = f.read()
    with open(osp.join(odd, 'truncated.jpg'), 'wb') as f:
        f.write(data[:len(data) // 3])
    shutil.copy(photos['flower'], osp.join(odd, 'UPPER CASE & space.JPG'))


def keep_mmcv_readable(out: str) -> None:
    """Flatten ``out`` to ``<sub>_<name>`` files that both mmcv and vtseg decode; remove the rest."""
    import mmcv

    from vtseg.apis import load_image
    for path in sorted(glob.glob(osp.join(out, '*', '*'))):
        try:
            readable = mmcv.imread(path) is not None and load_image(path) is not None
        except Exception:  # mmcv raises on some files and returns None for others; vtseg raises ImageDecodeError
            readable = False
        if readable:
            sub = osp.basename(osp.dirname(path))
            os.replace(path, osp.join(out, f'{sub}_{osp.basename(path)}'.replace(' ', '_')))
        else:
            os.remove(path)
    for sub in glob.glob(osp.join(out, '*', '')):
        os.rmdir(sub)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out', help='folder to create (must not exist)')
    parser.add_argument('--mmcv-readable', action='store_true',
                        help='only images both mmcv and vtseg decode, in one folder with unique names')
    args = parser.parse_args(argv)
    if osp.exists(args.out):
        parser.error(f'{args.out} exists: choose a new folder')
    with tempfile.TemporaryDirectory(prefix='vtseg-photos-') as work:
        photos = download_samples(work)
        building = tempfile.mkdtemp(prefix='.building-', dir=osp.dirname(osp.abspath(args.out)))
        try:
            make_folder(building, photos)
            if args.mmcv_readable:
                keep_mmcv_readable(building)
            os.replace(building, args.out)  # the folder appears whole, or not at all
        finally:
            shutil.rmtree(building, ignore_errors=True)
    count = sum(len(files) for _, _, files in os.walk(args.out))
    print(f'{count} files in {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

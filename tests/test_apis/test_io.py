"""Decoding the files real folders hold, atomic writes, label PNGs."""
import io
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from vtseg.apis import ImageDecodeError, atomic_write_bytes, encode_label_png, is_image_file, load_image

RNG = np.random.default_rng(0)


def _exif_jpeg(path, rgb: np.ndarray, orientation: int) -> None:
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = orientation  # the Orientation tag
    image.save(path, exif=exif.tobytes(), quality=95)


def _raw_bgr(path) -> np.ndarray:
    """The stored pixels, EXIF orientation NOT applied."""
    with Image.open(path) as image:
        return np.asarray(image.convert('RGB'))[:, :, ::-1]


def test_grayscale_is_expanded_to_three_equal_channels(tmp_path):
    gray = RNG.integers(0, 256, (9, 14), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / 'g.png')
    image = load_image(str(tmp_path / 'g.png'))
    assert image.shape == (9, 14, 3) and image.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(image[:, :, channel], gray)


def test_rgba_drops_alpha_and_returns_bgr(tmp_path):
    rgba = RNG.integers(0, 256, (7, 5, 4), dtype=np.uint8)
    rgba[:3, :, 3] = 0  # fully transparent rows keep their colour, as mmcv's loader does
    Image.fromarray(rgba).save(tmp_path / 'a.png')
    np.testing.assert_array_equal(load_image(str(tmp_path / 'a.png')), rgba[:, :, 2::-1])


def test_palette_image_is_looked_up(tmp_path):
    ids = RNG.integers(0, 3, (6, 6), dtype=np.uint8)
    colours = np.array([[10, 20, 30], [200, 100, 0], [0, 255, 128]], np.uint8)
    image = Image.fromarray(ids)
    image.putpalette(colours.flatten().tolist())
    image.save(tmp_path / 'p.png')
    np.testing.assert_array_equal(load_image(str(tmp_path / 'p.png')), colours[ids][:, :, ::-1])


def test_16bit_grayscale_png_keeps_the_high_byte(tmp_path):
    gray16 = RNG.integers(0, 65536, (10, 12), dtype=np.uint16)
    assert cv2.imwrite(str(tmp_path / 'g16.png'), gray16)
    image = load_image(str(tmp_path / 'g16.png'))
    high_byte = (gray16 >> 8).astype(np.uint8)
    np.testing.assert_array_equal(image, np.repeat(high_byte[:, :, None], 3, axis=2))


def test_16bit_colour_png_matches_opencv(tmp_path):
    bgr16 = RNG.integers(0, 65536, (8, 11, 3), dtype=np.uint16)
    assert cv2.imwrite(str(tmp_path / 'c16.png'), bgr16)
    image = load_image(str(tmp_path / 'c16.png'))
    # what mmcv's loader (cv2.IMREAD_COLOR) gives a model during training
    np.testing.assert_array_equal(image, cv2.imread(str(tmp_path / 'c16.png'), cv2.IMREAD_COLOR))
    np.testing.assert_array_equal(image, (bgr16 >> 8).astype(np.uint8))


@pytest.mark.parametrize('orientation,rotation', [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied(tmp_path, orientation, rotation):
    stored = np.zeros((32, 48, 3), np.uint8)
    stored[:16] = 255  # top half white, as stored
    path = str(tmp_path / 'r.jpg')
    _exif_jpeg(path, stored, orientation)
    image = load_image(path)
    np.testing.assert_array_equal(image, np.rot90(_raw_bgr(path), rotation))
    if orientation == 6:  # rotate 90 degrees clockwise to display: the top goes to the right
        assert image.shape == (48, 32, 3)
        assert image[:, 24:].mean() > 200 and image[:, :8].mean() < 50


@pytest.mark.parametrize('content,reason', [
    (b'this is not an image', 'cannot identify image file'),
    (b'', 'cannot identify image file'),
])
def test_non_images_with_image_extension_fail_with_reason(tmp_path, content, reason):
    path = tmp_path / 'x.jpg'
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=reason):
        load_image(str(path))


@pytest.mark.parametrize('ext', ['.png', '.jpg'])
def test_truncated_files_fail_instead_of_decoding_half(tmp_path, ext):
    path = str(tmp_path / f'full{ext}')
    cv2.imwrite(path, RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = open(path, 'rb').read()
    cut = tmp_path / f'cut{ext}'
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(ImageDecodeError, match='cannot decode image'):
        load_image(str(cut))


def test_missing_file_fails_with_reason(tmp_path):
    with pytest.raises(ImageDecodeError, match='No such file'):
        load_image(str(tmp_path / 'gone.png'))


def test_image_extensions_are_case_insensitive():
    assert is_image_file('a/B.JPG') and is_image_file('x.tiff') and is_image_file('y.webp')
    assert not any(map(is_image_file, ['notes.txt', 'jpg', 'a.pth', 'a.jpg.txt']))


def test_atomic_write_leaves_only_the_file(tmp_path):
    target = tmp_path / 'sub' / 'out.png'
    atomic_write_bytes(str(target), b'complete')
    assert target.read_bytes() == b'complete'
    assert os.listdir(tmp_path / 'sub') == ['out.png']


@pytest.mark.parametrize('existed', [False, True])
def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch, existed):
    target = tmp_path / 'out.png'
    if existed:
        target.write_bytes(b'old complete content')
    data = b'x' * 100_000
    written = []

    def interrupted_fsync(fd):
        written.append(os.fstat(fd).st_size)  # the new bytes are in the temporary file ...
        raise KeyboardInterrupt  # ... when Ctrl-C arrives

    monkeypatch.setattr(os, 'fsync', interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(str(target), data)
    assert written == [len(data)]
    if existed:
        assert target.read_bytes() == b'old complete content'
        assert os.listdir(tmp_path) == ['out.png']
    else:
        assert os.listdir(tmp_path) == []


def test_label_png_is_a_palette_image_holding_the_ids():
    ids = RNG.integers(0, 5, (13, 17)).astype(np.int64)
    palette = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48]]
    image = Image.open(io.BytesIO(encode_label_png(ids, palette)))
    assert image.mode == 'P' and image.size == (17, 13)
    np.testing.assert_array_equal(np.array(image), ids)
    assert image.getpalette()[:15] == sum(palette, [])


def test_label_png_refuses_ids_beyond_a_byte():
    with pytest.raises(ValueError, match='0..255'):
        encode_label_png(np.full((2, 2), 300), [[0, 0, 0]])


def test_npy_stream_writer_appears_only_when_committed(tmp_path):
    from vtseg.apis import NpyStreamWriter, temporary_target
    data = RNG.standard_normal((3, 7, 5)).astype(np.float16)
    path = str(tmp_path / 'sub' / 'x.jpg.npy')
    writer = NpyStreamWriter(path, data.shape)
    writer.write(0, 0, data[:, :4])  # rows 0-3
    writer.write(0, 4, data[:, 4:])  # rows 4-6
    (temporary,) = os.listdir(tmp_path / 'sub')
    assert not os.path.exists(path) and temporary_target(temporary) == 'x.jpg.npy'
    writer.commit()
    assert os.listdir(tmp_path / 'sub') == ['x.jpg.npy']
    loaded = np.load(path)
    assert loaded.dtype == np.float16
    np.testing.assert_array_equal(loaded, data)

    by_columns = NpyStreamWriter(str(tmp_path / 'columns.npy'), data.shape)
    by_columns.write(1, 0, data[:, :, :2])
    by_columns.write(1, 2, data[:, :, 2:])
    by_columns.commit()
    np.testing.assert_array_equal(np.load(tmp_path / 'columns.npy'), data)
    os.remove(tmp_path / 'columns.npy')

    other = NpyStreamWriter(path, (1, 2, 2))
    other.discard()
    assert os.listdir(tmp_path / 'sub') == ['x.jpg.npy']
    np.testing.assert_array_equal(np.load(path), data)  # the earlier file is untouched


def test_temporary_names_are_those_of_the_atomic_writer(tmp_path, monkeypatch):
    """temporary_target recognises atomic_write_bytes' own temporary files (a killed run's)."""
    from vtseg.apis import temporary_target
    seen = []
    real_replace = os.replace

    def record(src, dst):
        seen.append(os.path.basename(src))
        return real_replace(src, dst)
    monkeypatch.setattr(os, 'replace', record)
    atomic_write_bytes(str(tmp_path / 'a.jpg.png'), b'x')
    assert [temporary_target(name) for name in seen] == ['a.jpg.png']
    for name in ['a.png', '.a.png', '.a.png.tmp', '.a.png.12.zz.tmp', '.a.png.12.0123456789.tmp',
                 '.a.png.x1.01234567.tmp']:
        assert temporary_target(name) is None, name
    assert temporary_target('.a.b.png.99.0123abcd.tmp') == 'a.b.png'


@pytest.mark.parametrize('shape,dtype,error', [((2, -2), np.float16, 'negative dimensions'),
                                               ((2, 2), object, 'Python objects')])
def test_npy_stream_writer_that_cannot_start_leaves_nothing(tmp_path, shape, dtype, error):
    from vtseg.apis import NpyStreamWriter
    (tmp_path / 'x.npy').write_bytes(b'earlier')
    with pytest.raises(ValueError, match=error):
        NpyStreamWriter(str(tmp_path / 'x.npy'), shape, dtype)
    assert os.listdir(tmp_path) == ['x.npy'] and (tmp_path / 'x.npy').read_bytes() == b'earlier'


def test_npy_stream_writer_failing_to_commit_leaves_the_old_file(tmp_path, monkeypatch):
    from vtseg.apis import NpyStreamWriter
    path = tmp_path / 'x.npy'
    np.save(path, np.zeros((1, 2, 2), np.float16))
    writer = NpyStreamWriter(str(path), (1, 2, 2))
    writer.write(0, 0, np.ones((1, 2, 2), np.float16))

    def full_disk(fd):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(os, 'fsync', full_disk)
    with pytest.raises(OSError, match='No space left'):
        writer.commit()
    writer.discard()  # what FolderRunner does after a failure: a no-op now
    assert os.listdir(tmp_path) == ['x.npy']
    np.testing.assert_array_equal(np.load(path), np.zeros((1, 2, 2), np.float16))

"""Reading the images real folders hold, and writing outputs that are never half-written.

:func:`load_image` turns whatever a user's folder holds (grayscale, RGBA,
palette, 16-bit, CMYK, EXIF-rotated) into the 8-bit BGR array that mmcv's
``LoadImageFromFile`` gives a model during training, in the orientation an
image viewer shows, and fails with the decoder's reason instead of returning
garbage; it never opens what is not a regular file (a named pipe called ``x.jpg``
would block a reader forever). :func:`atomic_write_bytes` writes through a temporary file in the
target's directory and ``os.replace``, so an output path either holds a complete
file or is left as it was, even when the process is interrupted mid-write;
:class:`NpyStreamWriter` does the same for an array written piece by piece (class
scores of a large image, never whole in memory). Their temporary files are named
``.<name>.<pid>.<hex>.tmp`` beside the target (:func:`temporary_target`), so a later
run can remove those a killed process left.
"""
import io
import os
import os.path as osp
import stat
from typing import BinaryIO, List, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image, ImageOps

from vtseg.utils.errors import one_line
from vtseg.utils.files import AtomicWriter, atomic_write_bytes, temporary_target

__all__ = [
    'IMAGE_EXTENSIONS', 'ImageDecodeError', 'is_image_file', 'file_kind', 'open_regular_file',
    'load_image', 'make_dirs', 'remove_created_dirs', 'atomic_write_bytes', 'encode_label_png',
    'encode_jpeg', 'NpyStreamWriter', 'temporary_target'
]

# Files are picked by extension (case-insensitive); everything else in a folder is ignored.
IMAGE_EXTENSIONS = ('.bmp', '.gif', '.jpeg', '.jpg', '.pbm', '.pgm', '.png', '.ppm', '.tif',
                    '.tiff', '.webp')
# PIL modes holding more than 8 bits per sample; their values are mapped to 8 bits by hand
# because Image.convert('RGB') clips them at 255 instead of scaling.
_WIDE_INTEGER_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I')


class ImageDecodeError(ValueError):
    """A file with an image extension that does not decode to an image."""


def is_image_file(path: str) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_EXTENSIONS`."""
    return osp.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def file_kind(mode: int) -> str:
    """What a ``st_mode`` describes, in words (``'regular file'``, ``'named pipe (FIFO)'``, ...)."""
    kinds = ((stat.S_ISREG, 'regular file'), (stat.S_ISDIR, 'folder'),
             (stat.S_ISFIFO, 'named pipe (FIFO)'), (stat.S_ISSOCK, 'socket'),
             (stat.S_ISCHR, 'character device'), (stat.S_ISBLK, 'block device'))
    return next((name for is_kind, name in kinds if is_kind(mode)), 'special file')


def open_regular_file(path: str) -> BinaryIO:
    """Open ``path`` for reading in binary mode if it is a regular file, never opening anything else.

    A named pipe, socket or device with an image's name would block a reader or have side
    effects when opened, so its type is checked first (``stat``, which follows symbolic
    links), and checked again on the opened descriptor, which is opened non-blocking, in
    case the path was swapped in between.

    Raises:
        OSError: ``path`` is missing or cannot be opened (no permission, ...).
        ValueError: ``path`` is not a regular file; the message names what it is.
    """
    kind = file_kind(os.stat(path).st_mode)
    if kind != 'regular file':
        raise ValueError(f'not a regular file but a {kind}: not opened')
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0) | getattr(os, 'O_BINARY', 0))
    try:
        kind = file_kind(os.fstat(fd).st_mode)
        if kind != 'regular file':
            raise ValueError(f'not a regular file but a {kind}: not read')
        return os.fdopen(fd, 'rb')
    except BaseException:
        os.close(fd)
        raise


def _to_bgr(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 BGR from a decoded PIL image of any mode."""
    if image.mode in _WIDE_INTEGER_MODES:
        # 16-bit samples (mode 'I' is how older Pillow opens 16-bit PNGs): keep the high byte,
        # as OpenCV's IMREAD_COLOR (and so mmcv) does for 16-bit files.
        wide = np.asarray(image).astype(np.int64)
        gray = (np.clip(wide, 0, 65535) >> 8).astype(np.uint8)
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
    elif image.mode == 'F':
        gray = np.clip(np.asarray(image), 0, 255).astype(np.uint8)
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
    else:
        # Gray and palette images are expanded, alpha is dropped (as mmcv's loader does),
        # CMYK / YCbCr are converted by Pillow.
        rgb = np.asarray(image.convert('RGB'))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def load_image(path: str) -> np.ndarray:
    """Decode an image file as it is displayed, in the channel order mmcv uses.

    Args:
        path: Image file (any format Pillow reads; the first frame of animations).

    Returns:
        (H, W, 3) uint8 array in BGR order, EXIF orientation applied, alpha dropped,
        16-bit samples reduced to their high byte.

    Raises:
        ImageDecodeError: The file is missing, not a regular file (never opened then),
            corrupt, truncated or not an image; the message says why.
    """
    try:
        image_file = open_regular_file(path)
    except ValueError as err:  # a named pipe, socket or device
        raise ImageDecodeError(str(err)) from err
    except OSError as err:
        raise ImageDecodeError(f'cannot open image ({type(err).__name__}: {err.strerror})') from err
    try:
        with image_file, Image.open(image_file) as image:
            image.load()  # decode everything now, so that a truncated file fails here
            displayed = ImageOps.exif_transpose(image)
            return _to_bgr(displayed)
    except Exception as err:  # any decoder failure is this file's problem, not the run's
        raise ImageDecodeError(f'cannot decode image ({type(err).__name__}: {one_line(err, 300)})') from err


def make_dirs(path: str) -> List[str]:
    """``os.makedirs(path, exist_ok=True)`` that says what it created, so that a run that
    fails later can leave no empty folder behind (:func:`remove_created_dirs`).

    Returns:
        The folders created, outermost first (empty when ``path`` existed).

    Raises:
        OSError: As ``os.makedirs``; folders this call created before the error are removed.
    """
    missing = []
    probe = osp.abspath(path)
    while not osp.exists(probe) and osp.dirname(probe) != probe:
        missing.append(probe)
        probe = osp.dirname(probe)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        remove_created_dirs([d for d in missing[::-1] if osp.isdir(d)])
        raise
    return missing[::-1]


def remove_created_dirs(created: Sequence[str]) -> None:
    """Remove folders that :func:`make_dirs` created, innermost first, where they are empty."""
    for folder in reversed(list(created)):
        try:
            os.rmdir(folder)
        except OSError:
            pass


def encode_label_png(label_map: np.ndarray, palette: Sequence[Sequence[int]]) -> bytes:
    """A palette ('P' mode) PNG whose pixel values are the class ids.

    Args:
        label_map: (H, W) class ids in [0, 255].
        palette: RGB colour per class id (at most 256 entries).

    Returns:
        The PNG file content; reading it with ``np.array(Image.open(f))`` gives the
        ids back, viewers show the palette colours.
    """
    if label_map.ndim != 2:
        raise ValueError(f'label_map must be (H, W), got shape {label_map.shape}')
    if label_map.size and (label_map.min() < 0 or label_map.max() > 255):
        raise ValueError('a palette PNG holds class ids 0..255 only')
    colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if len(colours) > 256:
        raise ValueError(f'a palette PNG holds at most 256 colours, got {len(colours)}')
    image = Image.fromarray(label_map.astype(np.uint8))
    image.putpalette(colours.flatten().tolist())  # 'L' becomes 'P', pixel values unchanged
    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    return buffer.getvalue()


def encode_jpeg(image_bgr: np.ndarray, quality: int = 90) -> bytes:
    """JPEG file content of an (H, W, 3) uint8 BGR image."""
    ok, encoded = cv2.imencode('.jpg', image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f'OpenCV could not encode a JPEG of shape {image_bgr.shape}')
    return encoded.tobytes()


class NpyStreamWriter:
    """A ``.npy`` file written piece by piece, seen at its path only once complete.

    The array lives in a memory-mapped temporary file beside ``path`` (an
    :class:`~vtseg.utils.files.AtomicWriter`, the one mechanism of :func:`atomic_write_bytes`),
    is filled strip by strip and renamed to ``path`` by :meth:`commit`; :meth:`discard` (or an
    error) removes it. The process holds no copy of the array: written pages belong to the
    file, and the kernel writes them out and drops them as it needs memory.

    Args:
        path: Destination ``.npy`` file; missing parent folders are created.
        shape: Shape of the array, e.g. ``(C, H, W)``.
        dtype: Its element type.
    """

    def __init__(self, path: str, shape: Tuple[int, ...], dtype: np.dtype = np.float16) -> None:
        dtype = np.dtype(dtype)
        if dtype.hasobject:
            raise ValueError(f'{path}: an array of {dtype} holds Python objects and cannot be memory-mapped')
        self.path = path
        self._target = AtomicWriter(path)
        self.tmp_path = self._target.tmp_path
        try:
            # the header open_memmap writes, then the data mapped after it and filled in by write()
            np.lib.format.write_array_header_1_0(self._target.file, dict(
                descr=np.lib.format.dtype_to_descr(dtype), fortran_order=False, shape=tuple(shape)))
            offset = self._target.file.tell()
            self.array = np.memmap(self._target.file, dtype=dtype, mode='r+', shape=tuple(shape), offset=offset)
        except BaseException:
            self._target.discard()
            raise

    def write(self, axis: int, start: int, strip: np.ndarray) -> None:
        """Store ``strip`` at rows (``axis=0``) or columns (``axis=1``) ``start``.. of a
        ``(C, H, W)`` array: ``strip`` is ``(C, n, W)`` or ``(C, H, n)``."""
        if axis == 0:
            self.array[:, start:start + strip.shape[1]] = strip
        else:
            self.array[:, :, start:start + strip.shape[2]] = strip

    def commit(self) -> None:
        """Flush the array to disk and rename it to :attr:`path`."""
        try:
            self.array.flush()
            del self.array  # unmapped before the file is closed and renamed
        except BaseException:
            self.discard()
            raise
        self._target.commit()  # fsync, rename; removes the temporary file if that fails

    def discard(self) -> None:
        """Remove the temporary file (the destination is left as it was); a no-op once committed."""
        self.__dict__.pop('array', None)
        self._target.discard()

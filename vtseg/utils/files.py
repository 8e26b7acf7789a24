"""Writing files so that no reader ever sees half of one (no OpenMMLab import: the data set
generator and the tools use it too).

:class:`AtomicWriter` is the one mechanism: every vtseg file that must never be seen
half-written (images, ``.npy`` scores, checkpoints, ONNX graphs, benchmark results) is
written through it, whole (:func:`atomic_write_bytes`) or piece by piece
(:class:`vtseg.apis.io.NpyStreamWriter`).
"""
import os
import os.path as osp
import secrets
from types import TracebackType
from typing import BinaryIO, Optional, Type

__all__ = ['AtomicWriter', 'atomic_write_bytes', 'temporary_target']


class AtomicWriter:
    """A file that appears at ``path`` complete, or not at all.

    The bytes go to a hidden temporary file in the same folder (same file system, so the
    rename is atomic), named ``.<name>.<pid>.<8 hex digits>.tmp`` so that a later run can
    recognise what a killed process left (:func:`temporary_target`).
    :meth:`commit` flushes it to disk and renames it to ``path``; :meth:`discard` removes it
    and leaves ``path`` as it was (or absent). Used as a context manager it commits when the
    block ends normally and discards on any exception, ``KeyboardInterrupt`` included.

    Args:
        path: Destination file; missing parent folders are created.

    Attributes:
        file: The temporary file, open for reading and writing in binary mode (readable, so
            that it can also be memory-mapped).
        tmp_path: Its path.

    Example:
        >>> with AtomicWriter('out/scores.bin') as out:
        ...     for chunk in chunks:
        ...         out.write(chunk)  # an error here leaves neither the file nor a temporary one
    """

    def __init__(self, path: str) -> None:
        self.path = path
        directory = osp.dirname(osp.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self.tmp_path = osp.join(directory, f'.{osp.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp')
        # O_EXCL: never reuse someone else's file; mode 0o666 lets the umask apply as for open().
        fd = os.open(self.tmp_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, 'O_BINARY', 0), 0o666)
        try:
            self.file: BinaryIO = os.fdopen(fd, 'w+b')
        except BaseException:
            os.close(fd)
            os.remove(self.tmp_path)
            raise
        self._finished = False

    def commit(self) -> None:
        """Flush the temporary file to disk and rename it to :attr:`path`.

        Raises:
            ValueError: Already committed or discarded.
            OSError: Writing or renaming failed; the temporary file is removed then.
        """
        if self._finished:
            raise ValueError(f'{self.path}: already committed or discarded')
        try:
            self.file.flush()
            os.fsync(self.file.fileno())  # the data is on disk before the name points at it
            self.file.close()
            os.replace(self.tmp_path, self.path)
        except BaseException:  # KeyboardInterrupt included: never leave the temporary file
            self.discard()
            raise
        self._finished = True

    def discard(self) -> None:
        """Remove the temporary file (``path`` is left as it was); a no-op once committed."""
        if self._finished:
            return
        self._finished = True
        try:
            self.file.close()  # may flush buffered bytes and fail (disk full): they are dropped anyway
        except OSError:
            pass
        try:
            os.remove(self.tmp_path)
        except OSError:
            pass

    def __enter__(self) -> BinaryIO:
        return self.file

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is never seen half-written (:class:`AtomicWriter`).

    Args:
        path: Destination file; missing parent directories are created.
        data: The complete file content.
    """
    with AtomicWriter(path) as out:
        out.write(data)


def temporary_target(entry_name: str) -> Optional[str]:
    """The file name a temporary file of :class:`AtomicWriter` (so of :func:`atomic_write_bytes`
    and :class:`~vtseg.apis.io.NpyStreamWriter`) was to become, from its name
    (``.<name>.<pid>.<hex>.tmp`` -> ``<name>``); None for other names."""
    if not (entry_name.startswith('.') and entry_name.endswith('.tmp')):
        return None
    parts = entry_name[1:-len('.tmp')].rsplit('.', 2)
    if len(parts) != 3 or not parts[1].isdigit() or len(parts[2]) != 8 or not parts[0]:
        return None
    return parts[0] if all(c in '0123456789abcdef' for c in parts[2]) else None

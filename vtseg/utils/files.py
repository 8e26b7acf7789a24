"""Writing files so that no reader ever sees half of one (no OpenMMLab import: the data set
generator and the tools use it too)."""
import os
import os.path as osp
import secrets

__all__ = ['atomic_write_bytes']


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is never seen half-written.

    The bytes go to a hidden temporary file in the same directory (same file
    system, so the rename is atomic), are flushed to disk, and then replace
    ``path``. On any error or interruption the temporary file is removed and
    ``path`` keeps its previous content (or stays absent).

    Args:
        path: Destination file; missing parent directories are created.
        data: The complete file content.
    """
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp_path = osp.join(directory,
                        f'.{osp.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp')
    # O_EXCL: never reuse someone else's file; mode 0o666 lets the umask apply as for open().
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_BINARY', 0),
                 0o666)
    try:
        with os.fdopen(fd, 'wb') as tmp_file:
            tmp_file.write(data)
            tmp_file.flush()
            os.fsync(tmp_file.fileno())  # the data is on disk before the name points at it
        os.replace(tmp_path, path)
    except BaseException:  # KeyboardInterrupt included: never leave the temporary file
        try:
            os.remove(tmp_path)
        except OSError:
            pass
        raise

"""vtseg.utils.files: a file appears at its path complete or not at all, written whole or piece by
piece, and nothing of a failed write stays behind (no partial file, no temporary file)."""
import os

import pytest

from vtseg.utils.files import AtomicWriter, atomic_write_bytes, temporary_target


class Interrupted(Exception):
    """Stands for whatever stops a write half-way (an encoder error, a full disk, Ctrl-C)."""


def test_pieces_appear_together_only_when_the_block_ends(tmp_path):
    target = tmp_path / 'sub' / 'out.bin'
    with AtomicWriter(str(target)) as out:
        out.write(b'first piece, ')
        (temporary,) = os.listdir(tmp_path / 'sub')
        assert not target.exists() and temporary_target(temporary) == 'out.bin'
        out.write(b'second piece')
    assert target.read_bytes() == b'first piece, second piece'
    assert os.listdir(tmp_path / 'sub') == ['out.bin']


@pytest.mark.parametrize('stop', [Interrupted, KeyboardInterrupt])
def test_an_error_mid_write_leaves_no_file_and_no_temporary(tmp_path, stop):
    target = tmp_path / 'out.bin'
    with pytest.raises(stop):
        with AtomicWriter(str(target)) as out:
            out.write(b'x' * 100_000)  # more than the buffer: bytes reached the temporary file
            assert len(os.listdir(tmp_path)) == 1
            raise stop
    assert os.listdir(tmp_path) == []


def test_an_existing_file_is_untouched_by_a_failed_write(tmp_path):
    target = tmp_path / 'out.bin'
    target.write_bytes(b'old complete content')
    with pytest.raises(Interrupted):
        with AtomicWriter(str(target)) as out:
            out.write(b'new, but only half of it')
            raise Interrupted
    assert target.read_bytes() == b'old complete content'
    assert os.listdir(tmp_path) == ['out.bin']
    atomic_write_bytes(str(target), b'new content')  # a write that succeeds replaces it
    assert target.read_bytes() == b'new content' and os.listdir(tmp_path) == ['out.bin']


def test_a_failed_rename_removes_the_temporary_file(tmp_path):
    target = tmp_path / 'taken'
    (target / 'inside').mkdir(parents=True)  # a non-empty folder: os.replace onto it fails
    with pytest.raises(OSError):
        atomic_write_bytes(str(target), b'data')
    assert os.listdir(tmp_path) == ['taken'] and os.listdir(target) == ['inside']


def test_data_is_on_disk_before_the_name_points_at_it(tmp_path, monkeypatch):
    """fsync of the complete temporary file comes before the rename."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(('fsync', os.fstat(fd).st_size))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append(('replace', os.path.basename(dst)))
        real_replace(src, dst)
    monkeypatch.setattr(os, 'fsync', fsync)
    monkeypatch.setattr(os, 'replace', replace)
    atomic_write_bytes(str(tmp_path / 'a.txt'), b'12345')
    assert events == [('fsync', 5), ('replace', 'a.txt')]


def test_commit_and_discard_by_hand(tmp_path):
    """The form a writer whose file outlives one call uses (NpyStreamWriter)."""
    kept = AtomicWriter(str(tmp_path / 'kept.bin'))
    dropped = AtomicWriter(str(tmp_path / 'dropped.bin'))
    kept.file.write(b'kept')
    dropped.file.write(b'dropped')
    kept.commit()
    dropped.discard()
    kept.discard()  # once committed: a no-op, the file stays
    assert os.listdir(tmp_path) == ['kept.bin'] and (tmp_path / 'kept.bin').read_bytes() == b'kept'
    with pytest.raises(ValueError, match='already committed or discarded'):
        dropped.commit()
    assert os.listdir(tmp_path) == ['kept.bin']


def test_the_umask_applies_as_for_open(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_bytes(str(tmp_path / 'a'), b'')
        with open(tmp_path / 'b', 'wb'):
            pass
    finally:
        os.umask(old)
    assert os.stat(tmp_path / 'a').st_mode == os.stat(tmp_path / 'b').st_mode

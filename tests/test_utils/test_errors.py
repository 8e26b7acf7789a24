"""One-line error messages, and checkpoint errors without torch's unsafe-loading advice."""
import fractions

import pytest
import torch
from vtseg_testing import PickledCommand

import vtseg  # noqa: F401  (the loader allowlists exactly what mmengine checkpoints hold)
from vtseg.utils.errors import checkpoint_error_reason, exit_with_error, one_line, print_error

ADVICE = ('weights_only=False', 'set to `False`', 'Re-running', 'add_safe_globals', 'safe_globals',
          'trust', 'file an issue')


def _load_error(path) -> Exception:
    with pytest.raises(Exception) as info:
        torch.load(path, map_location='cpu', weights_only=True)
    return info.value


@pytest.mark.parametrize('payload, refused', [
    (lambda tmp: PickledCommand(tmp / 'PWNED'), r'(posix|os)\.system'),
    (lambda tmp: fractions.Fraction(1, 3), r'fractions\.Fraction'),
])
def test_refused_checkpoints_name_what_they_hold_not_how_to_load_them(tmp_path, payload, refused):
    import re
    path = tmp_path / 'c.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'extra': payload(tmp_path)}, path)
    err = _load_error(path)
    assert 'Re-running' in str(err)  # torch's own text advises the unsafe way ...
    reason = checkpoint_error_reason(err)
    assert re.match(r'it holds a pickled reference to ' + refused, reason), reason
    assert "torch's weights_only loader refused it" in reason
    assert not any(advice in reason for advice in ADVICE), reason  # ... ours never does
    assert '\n' not in reason and '\x1b' not in reason and not (tmp_path / 'PWNED').exists()


def test_other_checkpoint_errors_keep_their_reason(tmp_path):
    (tmp_path / 'junk.pth').write_bytes(b'not a checkpoint\nat all')
    reason = checkpoint_error_reason(_load_error(tmp_path / 'junk.pth'))
    assert reason == "torch's weights_only loader refused it: Unsupported operand 110"
    missing = _load_error(tmp_path / 'nope.pth')
    assert checkpoint_error_reason(missing) == one_line(missing) and 'No such file' in one_line(missing)


def test_one_line_collapses_escapes_and_cuts():
    assert one_line(ValueError('two\nlines  and\ttabs')) == 'two lines and tabs'
    assert one_line(ValueError('')) == 'ValueError'
    flood = one_line(ValueError('id ' + '\x00' * 10_000_000), limit=100)
    assert len(flood) == 100 and flood.endswith('...') and '\x00' not in flood
    assert flood.startswith('id \\x00\\x00')
    assert one_line('a name\nwith a newline', 9) == 'a name...'


def test_tools_report_one_line_whatever_the_message_holds(capsys):
    """The message is usually one line already; one from a dependency's exception may not be."""
    print_error('/repo/tools/infer.py', 'cannot read image a.jpg:\n  libjpeg said\x1b[31m no')
    assert capsys.readouterr().err == 'infer.py: error: cannot read image a.jpg: libjpeg said\\x1b[31m no\n'
    with pytest.raises(SystemExit) as info:
        exit_with_error('train.py', 'training failed', status=1)
    assert info.value.code == 1 and capsys.readouterr().err == 'train.py: error: training failed\n'
    long = 'x' * 1000  # a long message (a list of mismatched weights) is not cut
    print_error('test.py', long)
    assert capsys.readouterr().err == f'test.py: error: {long}\n'

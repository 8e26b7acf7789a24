"""Error messages as the tools show them: one line, of bounded length, saying what is wrong.

:func:`one_line` turns any exception into such a line. :func:`checkpoint_error_reason`
does it for an error raised while reading a checkpoint: torch's ``weights_only``
loader puts its reason (say, the pickled ``posix.system`` a file refers to) after
paragraphs of advice to load the file with ``weights_only=False``, which would
run the code in it. The reason is kept, the advice is dropped.

:func:`print_error` and :func:`exit_with_error` are how every tool reports a problem: one
``TOOL: error: MESSAGE`` line on stderr, worded as argparse words a usage error, and exit
status 2 for bad input (as argparse), 1 for a run that failed.
"""
import os.path as osp
import re
import sys
from typing import NoReturn, Optional, Union

__all__ = ['one_line', 'checkpoint_error_reason', 'print_error', 'exit_with_error']

ERROR_LINE_LIMIT = 400
_ANSI_ESCAPE = re.compile(r'\x1b\[[0-9;]*m')
# The inner reasons torch's weights_only unpickler gives for a pickled global it refuses.
_REFUSED_GLOBAL = (re.compile(r'GLOBAL (\S+) was not an allowed global by default'),
                   re.compile(r'unsupported GLOBAL (\S+) whose module (\S+) is blocked'))


def one_line(err: Union[BaseException, str], limit: Optional[int] = ERROR_LINE_LIMIT) -> str:
    """An exception's message (or a text to quote) as one line of at most ``limit`` characters.

    Whitespace runs (newlines included) become one space, control characters are shown
    escaped, and a text longer than ``limit`` (``None``: no limit) is cut with ``...``; the
    type name stands in for an empty message.
    """
    text = str(err) if limit is None else str(err)[:limit * 4]
    text = ' '.join(text.split()) or type(err).__name__
    text = ''.join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if limit is None or len(text) <= limit else text[:limit - 3] + '...'


def checkpoint_error_reason(err: BaseException, limit: int = ERROR_LINE_LIMIT) -> str:
    """Why reading a checkpoint failed, in one line, without torch's unsafe-loading advice.

    Args:
        err: What ``torch.load`` (or mmengine's loader around it) raised.
        limit: Longest line returned.

    Returns:
        For a file that torch's ``weights_only`` loader refused: the object it refers to,
        e.g. ``it holds a pickled reference to posix.system, which weights never need;
        torch's weights_only loader refused it, and vtseg loads no other way``; for other
        errors, :func:`one_line` of the error.
    """
    text = _ANSI_ESCAPE.sub('', str(err))
    if 'Weights only load failed' not in text:
        return one_line(err, limit)
    for pattern in _REFUSED_GLOBAL:
        match = pattern.search(text)
        if match:
            blocked = f' (module {match.group(2)} is blocked)' if match.lastindex == 2 else ''
            return one_line(ValueError(
                f'it holds a pickled reference to {match.group(1)}{blocked}, which weights never '
                "need; torch's weights_only loader refused it, and vtseg loads no other way"), limit)
    # Other refusals: torch's inner message, after its advice paragraphs.
    inner = text.rsplit('WeightsUnpickler error:', 1)[-1]
    inner = re.sub(r'Check the documentation of torch\.load.*', '', inner, flags=re.S)
    inner = re.sub(r'Weights only load failed\.|In PyTorch 2\.6, we changed.*?trusted source\.|'
                   r'Please file an issue.*?use case:', '', inner, flags=re.S)
    return one_line(ValueError(f"torch's weights_only loader refused it: {' '.join(inner.split())}"),
                    limit)


def print_error(tool: str, message: str) -> None:
    """``TOOL: error: MESSAGE`` on stderr, always one line.

    Args:
        tool: The tool's file (its ``__file__``) or name; its base name is printed.
        message: What is wrong and what to do. Newlines and control characters (from a
            dependency's exception text) are folded as :func:`one_line` folds them; the
            message is not cut short.
    """
    print(f'{osp.basename(tool)}: error: {one_line(message, limit=None)}', file=sys.stderr, flush=True)


def exit_with_error(tool: str, message: str, status: int = 2) -> NoReturn:
    """:func:`print_error`, then exit with ``status``: 2 for bad input, 1 for a failed run."""
    print_error(tool, message)
    sys.exit(status)

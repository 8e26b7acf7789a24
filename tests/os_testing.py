"""Operating-system situations for tests: permissions that hold even for root, named pipes.

Test machines often run as root, for whom ``chmod 000`` changes nothing (root has
CAP_DAC_OVERRIDE). :func:`unprivileged` prefixes a command so that it runs with no
capabilities (``setpriv``), as root but bound by file permissions like any user.
"""
import os
import shutil
from typing import List

import pytest

__all__ = ['unprivileged', 'skip_without_fifo']


def unprivileged(command: List[str]) -> List[str]:
    """``command``, run so that file permissions bind it (skips the test where impossible)."""
    if os.geteuid() != 0:
        return list(command)
    setpriv = shutil.which('setpriv')
    if setpriv is None:
        pytest.skip('running as root without setpriv: permissions cannot be tested')
    return [setpriv, '--bounding-set=-all', '--inh-caps=-all', '--', *command]


skip_without_fifo = pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='no named pipes here')

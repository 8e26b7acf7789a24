"""The known dependency warnings are hidden by message and category, each is really the text the
dependency raises, anything else still shows, and ``python -W`` shows everything."""
import os
import re
import subprocess
import sys
import warnings
from itertools import count

import pytest
from vtseg_testing import REPO

from vtseg.utils.dependency_warnings import KNOWN_HARMLESS_WARNINGS, hide_known_dependency_warnings

_names = count()  # mmengine's instances are unique by name


def raise_each_known_warning() -> None:
    """Make mmseg/mmengine emit each known warning the way a tool or the API does."""
    from mmengine.visualization import Visualizer
    from mmseg.engine.hooks import SegVisualizationHook
    from mmseg.models.builder import build_loss
    Visualizer.get_instance(f'vtseg-test-warnings-{next(_names)}', vis_backends=[dict(type='LocalVisBackend')])
    SegVisualizationHook(draw=False)
    build_loss(dict(type='mmseg.CrossEntropyLoss'))  # also warns about avg_non_ignore


def test_each_known_warning_is_raised_and_hidden():
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter('always')
        raise_each_known_warning()
    messages = [str(w.message) for w in shown]
    for pattern, category, _ in KNOWN_HARMLESS_WARNINGS[1:]:  # pkg_resources: see the subprocess test
        assert any(re.match(pattern, m) and issubclass(w.category, category)
                   for m, w in zip(messages, shown)), f'{pattern} is no longer what the dependency says'
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter('always')
        assert hide_known_dependency_warnings(force=True)
        raise_each_known_warning()
        warnings.warn('Default ``avg_non_ignore`` is False', DeprecationWarning)  # another category
        warnings.warn('a warning that matters', UserWarning)
    assert [str(w.message) for w in shown] == ['Default ``avg_non_ignore`` is False', 'a warning that matters']


REGISTRY_SCRIPT = """
import logging, re
from mmengine.logging import MMLogger
from mmengine.registry import FUNCTIONS, DefaultScope
from vtseg.utils.dependency_warnings import KNOWN_HARMLESS_LOGS, hide_known_dependency_warnings
records = []
handler = logging.Handler()
handler.emit = records.append
logger = MMLogger.get_instance('mmengine')
logger.addHandler(handler)


def build_collate():
    with DefaultScope.overwrite_default_scope('mmseg'):
        assert FUNCTIONS.build(dict(type='pseudo_collate', data_batch=[1])) == [1]


logger.filters.clear()
build_collate()
assert any(re.match(KNOWN_HARMLESS_LOGS[0][0], r.getMessage()) for r in records), records
records.clear()
hide_known_dependency_warnings(force=True)
build_collate()
logger.warning('Failed to search registry with scope "mmseg" in the "model" registry tree')
assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == [
    'Failed to search registry with scope "mmseg" in the "model" registry tree'], records
"""


def test_the_registry_fallback_line_is_hidden():
    """mmengine logs the fallback (mmseg has no "function" registry) when a collate function is
    built in mmseg's scope; with the filter it is gone, other lines at WARNING stay. In a fresh
    process: print_log(logger='current') writes to the newest MMLogger, which in a test session
    can be a runner's logger made by an earlier test instead of 'mmengine'."""
    proc = subprocess.run([sys.executable, '-c', REGISTRY_SCRIPT], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


SCRIPT = ("import vtseg, mmseg.models\n"
          "from mmengine.utils import is_installed\n"
          "assert is_installed('mmsegmentation')  # imports pkg_resources, as mmengine's runner does\n"
          "from mmseg.registry import MODELS\n"
          "MODELS.build(dict(type='FPNHead', in_channels=[8], in_index=[0], feature_strides=[4], channels=8, "
          "num_classes=3, loss_decode=dict(type='CrossEntropyLoss')))\n")


@pytest.mark.parametrize('options', [[], ['-W', 'default']])
def test_a_fresh_process_prints_nothing_unless_asked(options):
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONWARNINGS'}
    proc = subprocess.run([sys.executable, *options, '-c', SCRIPT], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if options:
        for text in ('pkg_resources is deprecated', 'build_loss', 'avg_non_ignore'):
            assert text in proc.stderr
    else:
        assert proc.stderr == ''


def test_a_tool_error_is_the_only_line(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'test.py'), 'missing.py', 'x.pth'],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ['test.py: error: config file not found: missing.py']

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


LOGS_SCRIPT = """
import logging, re, warnings
from mmengine.evaluator.metric import BaseMetric
from mmengine.fileio import FileClient, HardDiskBackend
from mmengine.logging import MMLogger
from mmengine.registry import FUNCTIONS, DefaultScope
from mmseg.evaluation import IoUMetric
from vtseg.utils.dependency_warnings import (KNOWN_HARMLESS_LOGS, filter_known_dependency_logs,
                                             hide_known_dependency_warnings, show_all_warnings)
records = []
handler = logging.Handler()
handler.emit = records.append


def log_each_known_line():
    with DefaultScope.overwrite_default_scope('mmseg'):
        assert FUNCTIONS.build(dict(type='pseudo_collate', data_batch=[1])) == [1]  # registry fallback
    IoUMetric()  # no prefix
    FileClient.infer_client(None, '/tmp')  # as CheckpointHook does: FileClient (HardDiskBackend once, cached)
    HardDiskBackend()  # what that FileClient builds


def warnings_shown():
    return [r.getMessage() for r in records if r.levelno >= logging.WARNING]


mmengine_logger = MMLogger.get_instance('mmengine')
mmengine_logger.addHandler(handler)
mmengine_logger.filters.clear()
log_each_known_line()
for pattern, _ in KNOWN_HARMLESS_LOGS:
    assert any(re.match(pattern, m) for m in warnings_shown()), (pattern, warnings_shown())
records.clear()

hide_known_dependency_warnings(force=True)
other = 'Failed to search registry with scope "mmseg" in the "model" registry tree'
log_each_known_line()
mmengine_logger.warning(other)
mmengine_logger.error('"FileClient" will be deprecated in future.')  # at another level: shown
assert warnings_shown() == [other, '"FileClient" will be deprecated in future.'], warnings_shown()
records.clear()

# a runner's logger, made after vtseg was imported, is filtered once handed to the filter
runner_logger = MMLogger.get_instance('a-runner', log_level='INFO')
runner_logger.addHandler(handler)
assert filter_known_dependency_logs(runner_logger)
log_each_known_line()
runner_logger.warning(other)
assert warnings_shown() == [other], warnings_shown()
records.clear()

# --verbose: every line again, on both loggers, and no logger is filtered from now on
show_all_warnings()
log_each_known_line()  # to the runner's logger, the current one
mmengine_logger.warning('"FileClient" will be deprecated in future.')
assert len(warnings_shown()) == len(KNOWN_HARMLESS_LOGS) + 1, warnings_shown()
records.clear()
later_runner_logger = MMLogger.get_instance('another-runner')
later_runner_logger.addHandler(handler)
assert not filter_known_dependency_logs(later_runner_logger)
log_each_known_line()
assert len(warnings_shown()) == len(KNOWN_HARMLESS_LOGS), warnings_shown()
"""


def test_the_known_log_lines_are_hidden_until_show_all():
    """mmengine logs each known line (the registry fallback when a collate function is built in
    mmseg's scope, IoUMetric's missing prefix, FileClient's deprecation twice) where vtseg's tools
    meet them; with the filter they are gone, on the logger mmengine uses outside a runner and on a
    runner's logger handed to the filter, while other lines at WARNING stay; show_all_warnings
    brings them back. In a fresh process: print_log(logger='current') writes to the newest
    MMLogger, which in a test session can be a runner's logger made by an earlier test."""
    proc = subprocess.run([sys.executable, '-c', LOGS_SCRIPT], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


SHOW_ALL_SCRIPT = """
import warnings
import vtseg
from vtseg.utils.dependency_warnings import show_all_warnings
from mmseg.models.builder import build_loss
show_all_warnings()
build_loss(dict(type='mmseg.CrossEntropyLoss'))
warnings.warn('a deprecation notice', DeprecationWarning)  # hidden by Python's own defaults before
"""


def test_show_all_warnings_shows_every_warning_like_python_W_default():
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONWARNINGS'}
    proc = subprocess.run([sys.executable, '-c', SHOW_ALL_SCRIPT], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for text in ('``build_loss`` would be deprecated', 'Default ``avg_non_ignore`` is False',
                 'DeprecationWarning: a deprecation notice'):
        assert text in proc.stderr


def test_vtseg_own_warnings_fail_the_tests_dependency_ones_do_not():
    """setup.cfg's filterwarnings: a warning raised from a vtseg module is an error in the test suite,
    the same warning from a dependency's module is not."""
    with pytest.raises(UserWarning, match='from vtseg'):
        warnings.warn_explicit('from vtseg', UserWarning, 'vtseg/layers/tokenizer.py', 1,
                               module='vtseg.layers.tokenizer')
    with pytest.raises(DeprecationWarning):
        warnings.warn_explicit('old', DeprecationWarning, 'vtseg/mm/cli.py', 1, module='vtseg.mm.cli')
    with warnings.catch_warnings(record=True) as shown:
        warnings.warn_explicit('from mmseg', UserWarning, 'mmseg/models/builder.py', 1,
                               module='mmseg.models.builder')
    assert [str(w.message) for w in shown] == ['from mmseg']


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
    assert proc.stderr.splitlines() == ['test.py: error: config missing.py not found: pass the config file the '
                                        'model was trained with']

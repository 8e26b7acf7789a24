"""Known, harmless warnings of vtseg's dependencies, hidden by message and category.

Every tool run and every use of the Python API used to print the same notices from
setuptools, mmseg and mmengine, none of which asks the user to do anything; a line
that matters was lost among them. Each entry of :data:`KNOWN_HARMLESS_WARNINGS`
names one warning exactly (its message's start and its category, not a whole
module) and why it is harmless; :data:`KNOWN_HARMLESS_LOGS` does the same for one
line mmengine logs at WARNING level. Anything else still shows.

``import vtseg`` calls :func:`hide_known_dependency_warnings` before it imports any
OpenMMLab package, unless Python was given warning options (``python -W default``,
``-W always`` or ``PYTHONWARNINGS``): then every warning shows as those options say.
"""
import logging
import re
import sys
import warnings
from typing import Tuple, Type

__all__ = ['KNOWN_HARMLESS_WARNINGS', 'KNOWN_HARMLESS_LOGS', 'hide_known_dependency_warnings']

# (start of the message as a regular expression, category, why it is harmless)
KNOWN_HARMLESS_WARNINGS: Tuple[Tuple[str, Type[Warning], str], ...] = (
    (r'pkg_resources is deprecated as an API', UserWarning,
     'setuptools, about mmengine/mmcv importing pkg_resources; vtseg pins setuptools<81, '
     'which still has it'),
    (r'``build_loss`` would be deprecated soon', UserWarning,
     "mmseg's decode heads call mmseg's own deprecated builder; the loss built is the same"),
    (r'Default ``avg_non_ignore`` is False', UserWarning,
     "mmseg's CrossEntropyLoss describing its default; vtseg's configs keep mmseg's setting on purpose"),
    (r'The draw is False, it means that the hook for visualization will not take effect', UserWarning,
     "mmseg's visualization hook is off unless test.py gets --show/--show-dir: nothing to draw"),
    (r"Failed to add <class 'mmengine\.visualization\.vis_backend\.LocalVisBackend'>, "
     r'please provide the `save_dir` argument', UserWarning,
     "the inferencer's visualizer has no save_dir; vtseg's API writes its outputs itself"),
)

# Lines mmengine logs (print_log at WARNING) that are harmless, as regular expressions.
KNOWN_HARMLESS_LOGS: Tuple[Tuple[str, str], ...] = (
    (r'Failed to search registry with scope "mmseg" in the "function" registry tree',
     'mmseg 1.2.2 has no "function" registry: the collate function is mmengine\'s, found in '
     "mmengine's registry, which is exactly where the fallback looks"),
)


class _KnownHarmlessLogFilter(logging.Filter):
    """Drops the records whose message starts like one of :data:`KNOWN_HARMLESS_LOGS`."""

    patterns = [re.compile(pattern) for pattern, _ in KNOWN_HARMLESS_LOGS]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(pattern.match(message) for pattern in self.patterns)


def hide_known_dependency_warnings(force: bool = False) -> bool:
    """Ignore the warnings of :data:`KNOWN_HARMLESS_WARNINGS` and the mmengine log lines of
    :data:`KNOWN_HARMLESS_LOGS` (on the logger mmengine uses outside a runner).

    Args:
        force: Hide them even when Python was given warning options.

    Returns:
        Whether they are hidden: not when ``sys.warnoptions`` is set (``python -W ...`` or
        ``PYTHONWARNINGS``) and ``force`` is false, so that those options show everything.
    """
    if sys.warnoptions and not force:
        return False
    for message, category, _ in KNOWN_HARMLESS_WARNINGS:
        warnings.filterwarnings('ignore', message=message, category=category)
    if 'mmengine' in sys.modules or _importable('mmengine'):
        from mmengine.logging import MMLogger
        logger = MMLogger.get_instance('mmengine')  # print_log(logger='current') outside a runner
        if not any(isinstance(f, _KnownHarmlessLogFilter) for f in logger.filters):
            logger.addFilter(_KnownHarmlessLogFilter())
    return True


def _importable(name: str) -> bool:
    from importlib.util import find_spec
    return find_spec(name) is not None

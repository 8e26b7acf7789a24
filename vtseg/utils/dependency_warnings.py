"""Known, harmless warnings of vtseg's dependencies, hidden by message and category.

Every tool run and every use of the Python API used to print the same notices from
setuptools, mmseg and mmengine, none of which asks the user to do anything; a line
that matters was lost among them. Each entry of :data:`KNOWN_HARMLESS_WARNINGS`
names one warning exactly (its message's start and its category, not a whole
module) and why it is harmless; :data:`KNOWN_HARMLESS_LOGS` does the same for the
lines mmengine logs at WARNING level, :data:`KNOWN_HARMLESS_EXPORT_WARNINGS` and
:data:`KNOWN_HARMLESS_STATIC_EXPORT_WARNINGS` for the warnings of torch's ONNX exporter
(hidden only while :func:`vtseg.utils.export.export_onnx` runs:
:func:`hiding_known_export_warnings`). Anything else still shows.

``import vtseg`` calls :func:`hide_known_dependency_warnings` before it imports any
OpenMMLab package, unless Python was given warning options (``python -W default``,
``-W always`` or ``PYTHONWARNINGS``): then every warning shows as those options say.
The log lines are hidden on the logger mmengine uses outside a runner; a tool that
builds a runner hands its logger to :func:`filter_known_dependency_logs`.
:func:`show_all_warnings` (the tools' ``--verbose``) turns all of it off again.
"""
import contextlib
import logging
import re
import sys
import warnings
import weakref
from typing import Iterator, Tuple, Type

from torch.jit import TracerWarning

__all__ = ['KNOWN_HARMLESS_WARNINGS', 'KNOWN_HARMLESS_LOGS', 'KNOWN_HARMLESS_EXPORT_WARNINGS',
           'KNOWN_HARMLESS_STATIC_EXPORT_WARNINGS', 'hide_known_dependency_warnings', 'filter_known_dependency_logs',
           'hiding_known_export_warnings', 'show_all_warnings']

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

# Lines mmengine logs (print_log at WARNING) that are harmless: (start of the message as a regular
# expression, why it is harmless).
KNOWN_HARMLESS_LOGS: Tuple[Tuple[str, str], ...] = (
    (r'Failed to search registry with scope "mmseg" in the "function" registry tree',
     'mmseg 1.2.2 has no "function" registry: the collate function is mmengine\'s, found in '
     "mmengine's registry, which is exactly where the fallback looks"),
    (r'The prefix is not set in metric class IoUMetric\.$',
     "mmseg's IoUMetric has no default prefix: its results are logged as aAcc, mIoU and mAcc, the "
     'names vtseg and mmseg use everywhere'),
    (r'"FileClient" will be deprecated in future\.',
     "mmengine's own CheckpointHook builds a FileClient in every training; no config asks for it"),
    (r'"HardDiskBackend" is the alias of "LocalBackend" and the former will be deprecated in future\.$',
     'the same FileClient, choosing its local-disk backend inside mmengine'),
)

# Warnings torch.onnx.export raises while it traces a model: (start of the message as a regular
# expression, category, the module the warning is attributed to as a regular expression, why it is
# harmless). Hidden only during an export (hiding_known_export_warnings), not for a whole process.
KNOWN_HARMLESS_EXPORT_WARNINGS: Tuple[Tuple[str, Type[Warning], str, str], ...] = (
    (r'You are using the legacy TorchScript-based ONNX export', DeprecationWarning, r'vtseg\.utils\.export$',
     'vtseg.utils.export picks the TorchScript exporter (dynamo=False) on purpose: it needs only the onnx '
     'package, where the torch.export-based one also needs onnxscript'),
    (r'The feature will be removed\. Please remove usage of this function', DeprecationWarning, r'torch\.onnx\.',
     "torch's TorchScript exporter calling its own deprecated exporter_context: nothing the caller passes"),
)

# Harmless only in a graph exported for one input size (no dynamic axes). With dynamic axes the same
# warnings say that the traced height and width became constants of the graph (mmseg's resize sizes:
# the output would keep the traced size for any other input), the one thing a dynamic export must
# not hide, so hiding_known_export_warnings shows them then.
KNOWN_HARMLESS_STATIC_EXPORT_WARNINGS: Tuple[Tuple[str, Type[Warning], str, str], ...] = (
    (r'Converting a tensor to a Python integer', TracerWarning, r'mmseg\.models\.utils\.wrappers$',
     "mmseg's Upsample and resize() turn the input's height and width into Python ints: constants, as "
     'every shape is in a graph for one input size'),
)

# Whether the filters are on (hide_known_dependency_warnings ran, show_all_warnings did not since),
# and the loggers that carry the log filter.
_hiding = False
_filtered_loggers: 'weakref.WeakSet[logging.Logger]' = weakref.WeakSet()


class _KnownHarmlessLogFilter(logging.Filter):
    """Drops the WARNING records whose message starts like one of :data:`KNOWN_HARMLESS_LOGS`."""

    patterns = [re.compile(pattern) for pattern, _ in KNOWN_HARMLESS_LOGS]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
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
    global _hiding
    if sys.warnoptions and not force:
        return False
    for message, category, _ in KNOWN_HARMLESS_WARNINGS:
        warnings.filterwarnings('ignore', message=message, category=category)
    _hiding = True
    if 'mmengine' in sys.modules or _importable('mmengine'):
        from mmengine.logging import MMLogger

        # the logger of print_log(logger='current') outside a runner
        filter_known_dependency_logs(MMLogger.get_instance('mmengine'))
    return True


def filter_known_dependency_logs(logger: logging.Logger) -> bool:
    """Drop the lines of :data:`KNOWN_HARMLESS_LOGS` from ``logger`` (e.g. ``runner.logger``:
    each mmengine runner logs through an ``MMLogger`` of its own), while the known warnings are
    hidden.

    Returns:
        Whether the filter is on ``logger``: not after :func:`show_all_warnings`, nor when
        :func:`hide_known_dependency_warnings` did not hide anything.
    """
    if not _hiding:
        return False
    if not any(isinstance(f, _KnownHarmlessLogFilter) for f in logger.filters):
        logger.addFilter(_KnownHarmlessLogFilter())
        _filtered_loggers.add(logger)
    return True


@contextlib.contextmanager
def hiding_known_export_warnings(static_shapes: bool) -> Iterator[None]:
    """Within the block, ignore :data:`KNOWN_HARMLESS_EXPORT_WARNINGS`, and
    :data:`KNOWN_HARMLESS_STATIC_EXPORT_WARNINGS` too when ``static_shapes``; the warning filters
    are restored afterwards. Hides nothing while every warning is shown (``python -W ...``,
    ``PYTHONWARNINGS``, :func:`show_all_warnings`).

    Args:
        static_shapes: The export fixes every input shape (no dynamic axes).
    """
    with warnings.catch_warnings():
        if _hiding:
            known = KNOWN_HARMLESS_EXPORT_WARNINGS + (KNOWN_HARMLESS_STATIC_EXPORT_WARNINGS if static_shapes else ())
            for message, category, module, _ in known:
                warnings.filterwarnings('ignore', message=message, category=category, module=module)
        yield


def show_all_warnings() -> None:
    """Show every warning and log line again (the tools' ``--verbose``).

    Each warning shows once per place it is raised from, as with ``python -W default``
    (deprecation warnings of every module included), and the log filter leaves the loggers
    it was put on; :func:`filter_known_dependency_logs` then adds it to none.
    """
    global _hiding
    warnings.simplefilter('default')  # first in the list: matches before the 'ignore' entries
    _hiding = False
    for logger in list(_filtered_loggers):
        for log_filter in [f for f in logger.filters if isinstance(f, _KnownHarmlessLogFilter)]:
            logger.removeFilter(log_filter)
    _filtered_loggers.clear()


def _importable(name: str) -> bool:
    from importlib.util import find_spec
    return find_spec(name) is not None

"""Command-line arguments that vtseg's OpenMMLab tools share, spelt as mmseg's tools spell them."""
import argparse
import logging
import os
import os.path as osp
from typing import Any, Mapping, Optional, Sequence, Union

from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger

from vtseg.utils.dependency_warnings import show_all_warnings
from vtseg.utils.errors import one_line

__all__ = ['add_cfg_options', 'merge_cfg_options', 'add_launcher', 'export_local_rank', 'apply_runner_args',
           'LOG_LEVELS', 'add_verbosity', 'apply_verbosity', 'set_log_level']

# The levels --log-level offers (those of Python's logging that mmengine's MMLogger uses).
LOG_LEVELS = ('DEBUG', 'INFO', 'WARNING', 'ERROR')


class _CfgOptionsAction(DictAction):
    """mmengine's ``DictAction``, with a usage error instead of a traceback for an item
    that is not ``key=value``."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Union[str, Sequence[Any], None], option_string: Optional[str] = None) -> None:
        for item in values or []:
            key, equals, _ = item.partition('=')
            if not equals or not key.strip():
                raise argparse.ArgumentError(self, f'{item[:80]!r} is not key=value (e.g. '
                                             'model.decode_head.num_classes=5)')
        super().__call__(parser, namespace, values, option_string)


def add_cfg_options(parser: argparse.ArgumentParser) -> None:
    """``--cfg-options key=value ...``: overrides merged into the config."""
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=_CfgOptionsAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')


def merge_cfg_options(cfg: Config, options: Optional[Mapping[str, Any]]) -> None:
    """Merge ``--cfg-options`` into ``cfg`` (in place), refusing what would break it.

    An option may set a value or drop a section (``None``, e.g.
    ``model.backbone.init_cfg=None``), but not replace a whole section by a number,
    string or list (``model=3``): every tool would then fail far from the cause.

    Raises:
        ValueError: One line saying which option is wrong and what to write instead.
    """
    for key, value in (options or {}).items():
        node: Any = cfg
        for part in key.split('.'):
            node = node.get(part) if isinstance(node, (Mapping, Config)) else None
        if isinstance(node, Mapping) and value is not None and not isinstance(value, Mapping):
            example = next(iter(node), 'type')
            raise ValueError(f'--cfg-options {key}={str(value)[:40]} would replace the config '
                             f'section {key} (a dict) by a {type(value).__name__}: set one of '
                             f'its keys instead, e.g. {key}.{example}=...')
    try:
        cfg.merge_from_dict(dict(options or {}))
    except Exception as err:  # mmengine raises several types for keys it cannot merge
        raise ValueError(f'cannot apply --cfg-options: {one_line(err, 300)}') from err


def add_launcher(parser: argparse.ArgumentParser) -> None:
    """``--launcher`` and the ``--local-rank`` that ``torch.distributed.launch`` passes."""
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher (without CUDA, pytorch uses the gloo backend)')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def export_local_rank(args: argparse.Namespace) -> None:
    """Make ``--local-rank`` visible as ``LOCAL_RANK`` (what mmengine reads) unless set."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)


def apply_runner_args(cfg: Config, args: argparse.Namespace, log_level: Optional[str] = None) -> None:
    """Put what a runner tool's command line says about the run into ``cfg`` (in place).

    As mmseg's ``tools/train.py`` and ``tools/test.py``: ``--launcher``; the work dir from
    ``--work-dir``, else the config's ``work_dir``, else ``./work_dirs/<config file name>``;
    and ``log_level`` for the runner's logger when :func:`apply_verbosity` returned one.

    Args:
        cfg: The tool's config.
        args: Its parsed arguments, with ``config``, ``work_dir`` and ``launcher``.
        log_level: What :func:`apply_verbosity` returned.
    """
    cfg.launcher = args.launcher
    if log_level is not None:
        cfg.log_level = log_level
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])


def add_verbosity(parser: argparse.ArgumentParser, default_level: Optional[str] = None) -> None:
    """``--verbose`` and ``--log-level``: how much of the dependencies' output shows.

    Args:
        parser: The tool's parser.
        default_level: The level the tool logs at without either option, for the help text
            (``None``: the config's ``log_level``, mmengine's ``INFO`` unless it says otherwise).
    """
    parser.add_argument(
        '--verbose', action='store_true',
        help="show every warning, the dependencies' known harmless ones too (hidden by default, "
        'see vtseg/utils/dependency_warnings.py), and log at DEBUG unless --log-level says otherwise')
    parser.add_argument(
        '--log-level', choices=LOG_LEVELS, default=None,
        help="lowest level of the lines mmengine's logger prints (default: "
        + (default_level or "the config's log_level, INFO") + ')')


def set_log_level(logger: logging.Logger, level: Union[str, int]) -> None:
    """Make ``logger`` (an mmengine ``MMLogger``) print lines from ``level`` up.

    The logger's own level drops the lines below ``level``; handlers that would drop lines of
    ``level`` (``MMLogger``'s print from ``INFO`` up) are lowered to it, except those kept at
    ``ERROR`` (``MMLogger``'s console on ranks other than 0).
    """
    levelno = logging.getLevelName(level) if isinstance(level, str) else level  # the name's number
    logger.setLevel(levelno)
    for handler in logger.handlers:
        if levelno < handler.level < logging.ERROR:
            handler.setLevel(levelno)


def apply_verbosity(args: argparse.Namespace, default_level: Optional[str] = None) -> Optional[str]:
    """Act on ``--verbose`` and ``--log-level`` (see :func:`add_verbosity`).

    ``--verbose`` shows every warning (:func:`vtseg.utils.dependency_warnings.show_all_warnings`:
    the filters of the known harmless ones are off) and sets the log level to ``DEBUG``, unless
    ``--log-level`` gives one. The log level (``--log-level``, else ``DEBUG`` for ``--verbose``,
    else ``default_level``) goes to mmengine's current logger, which prints what is logged before
    a runner exists; a tool with a runner also puts it into the config's ``log_level``.
    Call it first, before a config is read: mmengine warns while reading one, and a warning
    raised before is not raised again.

    Returns:
        The log level set, or ``None`` when none was asked for (a config's ``log_level`` stays).
    """
    if args.verbose:
        show_all_warnings()
    level = args.log_level or ('DEBUG' if args.verbose else default_level)
    if level is not None:
        set_log_level(MMLogger.get_current_instance(), level)
    return level

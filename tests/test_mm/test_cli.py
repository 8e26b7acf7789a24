"""The command-line arguments tools/train.py, test.py and infer.py share."""
import argparse
import logging
import os
from itertools import count

import pytest
from mmengine.config import Config
from mmengine.logging import MMLogger

from vtseg.mm.cli import (add_cfg_options, add_launcher, add_verbosity, apply_runner_args, apply_verbosity,
                          export_local_rank, merge_cfg_options, set_log_level)
from vtseg.utils.dependency_warnings import filter_known_dependency_logs, hide_known_dependency_warnings

_names = count()  # MMLogger instances are unique by name


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_cfg_options(p)
    add_launcher(p)
    add_verbosity(p)
    return p


def test_cfg_options_become_a_nested_dict_of_values():
    args = parser().parse_args(['--cfg-options', 'train_cfg.max_iters=20',
                                'model.decode_head.num_classes=5', 'crop=[64,64]'])
    assert args.cfg_options == {'train_cfg.max_iters': 20, 'model.decode_head.num_classes': 5,
                                'crop': [64, 64]}
    assert parser().parse_args([]).cfg_options is None


@pytest.mark.parametrize('flag', ['--local-rank', '--local_rank'])
def test_launcher_and_both_spellings_of_local_rank(flag):
    args = parser().parse_args(['--launcher', 'pytorch', flag, '3'])
    assert (args.launcher, args.local_rank) == ('pytorch', 3)
    with pytest.raises(SystemExit):
        parser().parse_args(['--launcher', 'kubernetes'])


def test_local_rank_is_exported_unless_the_launcher_set_it(monkeypatch):
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    export_local_rank(argparse.Namespace(local_rank=2))
    assert os.environ['LOCAL_RANK'] == '2'
    monkeypatch.setenv('LOCAL_RANK', '5')  # torchrun's value wins
    export_local_rank(argparse.Namespace(local_rank=0))
    assert os.environ['LOCAL_RANK'] == '5'


@pytest.mark.parametrize('item', ['foo', '=3', 'model'])
def test_cfg_options_that_are_not_key_value_are_usage_errors(item, capsys):
    with pytest.raises(SystemExit) as info:
        parser().parse_args(['--cfg-options', 'a=1', item])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f'argument --cfg-options: {item!r} is not key=value' in err and 'Traceback' not in err


def test_merge_refuses_replacing_a_section_by_a_value():
    cfg = Config(dict(model=dict(type='EncoderDecoder', backbone=dict(depth=50, init_cfg=dict(
        type='Pretrained'))), crop_size=(64, 64)))
    for key, value in [('model', 3), ('model.backbone', 'resnet'), ('model.backbone', [1, 2])]:
        with pytest.raises(ValueError, match=f'--cfg-options {key}=.* would replace the config '
                                             f'section {key} .a dict. by a '):
            merge_cfg_options(cfg, {key: value})
    assert cfg.model.backbone.depth == 50  # nothing merged
    merge_cfg_options(cfg, {'model.backbone.init_cfg': None, 'model.backbone.depth': 18,
                            'crop_size': (32, 32), 'model.new': dict(a=1)})
    assert cfg.model.backbone.init_cfg is None and cfg.model.backbone.depth == 18
    assert cfg.crop_size == (32, 32) and cfg.model.new.a == 1
    merge_cfg_options(cfg, None)  # no options: nothing to do


def test_runner_args_go_into_the_config_as_mmsegs_tools_put_them():
    p = parser()
    p.add_argument('config')
    p.add_argument('--work-dir')
    args = p.parse_args(['configs/lip/vt-fpn_r50_8xb12-50k_lip-473x473.py', '--launcher', 'pytorch'])
    cfg = Config(dict(log_level='INFO'))
    apply_runner_args(cfg, args)
    # no --work-dir and none in the config: ./work_dirs/<config file name>
    assert cfg.work_dir == os.path.join('./work_dirs', 'vt-fpn_r50_8xb12-50k_lip-473x473')
    assert cfg.launcher == 'pytorch' and cfg.log_level == 'INFO'  # no level asked for: the config's

    cfg = Config(dict(work_dir='runs/from_config', log_level='INFO'))
    apply_runner_args(cfg, args, 'WARNING')
    assert cfg.work_dir == 'runs/from_config' and cfg.log_level == 'WARNING'

    args = p.parse_args(['any.py', '--work-dir', 'runs/from_cli'])
    apply_runner_args(cfg, args)
    assert cfg.work_dir == 'runs/from_cli' and cfg.launcher == 'none'


def test_verbosity_arguments():
    args = parser().parse_args([])
    assert (args.verbose, args.log_level) == (False, None)
    args = parser().parse_args(['--verbose', '--log-level', 'WARNING'])
    assert (args.verbose, args.log_level) == (True, 'WARNING')
    with pytest.raises(SystemExit) as info:
        parser().parse_args(['--log-level', 'LOUD'])
    assert info.value.code == 2


def fresh_logger() -> MMLogger:
    """A new MMLogger, printing from INFO up as mmengine makes them; the current one from now on."""
    return MMLogger.get_instance(f'vtseg-test-cli-{next(_names)}', log_level='INFO')


def test_log_level_goes_to_the_current_mmengine_logger():
    logger = fresh_logger()
    assert apply_verbosity(parser().parse_args([])) is None  # nothing asked: left as it is
    assert logger.level == logging.NOTSET and logger.isEnabledFor(logging.INFO)
    assert apply_verbosity(parser().parse_args([]), default_level='WARNING') == 'WARNING'
    assert not logger.isEnabledFor(logging.INFO) and logger.isEnabledFor(logging.WARNING)
    assert apply_verbosity(parser().parse_args(['--log-level', 'ERROR']), default_level='WARNING') == 'ERROR'
    assert not logger.isEnabledFor(logging.WARNING) and logger.isEnabledFor(logging.ERROR)


def test_verbose_turns_the_filters_off_and_logs_at_debug():
    logger = fresh_logger()
    try:
        assert apply_verbosity(parser().parse_args(['--verbose'])) == 'DEBUG'
        assert logger.isEnabledFor(logging.DEBUG) and logger.handlers[0].level == logging.DEBUG
        assert not filter_known_dependency_logs(logger)  # a runner's logger is not filtered either
        assert apply_verbosity(parser().parse_args(['--verbose', '--log-level', 'INFO'])) == 'INFO'
        assert not logger.isEnabledFor(logging.DEBUG)
    finally:
        hide_known_dependency_warnings()  # back to the session's filters (tests/conftest.py)


def test_debug_lowers_the_console_but_not_a_console_kept_at_error():
    logger = fresh_logger()
    console = logger.handlers[0]
    rank_console = logging.StreamHandler()
    rank_console.setLevel(logging.ERROR)  # as MMLogger's console on ranks other than 0
    logger.addHandler(rank_console)
    set_log_level(logger, 'DEBUG')
    assert logger.level == logging.DEBUG and console.level == logging.DEBUG
    assert rank_console.level == logging.ERROR
    set_log_level(logger, logging.WARNING)  # raised on the logger: its handlers need not change
    assert logger.level == logging.WARNING and not logger.isEnabledFor(logging.INFO)

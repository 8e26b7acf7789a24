"""The command-line arguments tools/train.py, test.py and infer.py share."""
import argparse
import os

import pytest

from mmengine.config import Config

from vtseg.mm.cli import add_cfg_options, add_launcher, export_local_rank, merge_cfg_options


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_cfg_options(p)
    add_launcher(p)
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

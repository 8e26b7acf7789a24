"""The command-line arguments tools/train.py, test.py and infer.py share."""
import argparse
import os

import pytest

from vtseg.mm.cli import add_cfg_options, add_launcher, export_local_rank


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

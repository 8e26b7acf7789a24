"""The ``Example:`` blocks of the layer, model and adapter docstrings run and print
what they claim. (vtseg.apis's examples need image and checkpoint files: usage
sketches, not run.)"""
import doctest
import importlib

import pytest
import torch

MODULES = [
    'vtseg.layers.tokenizer', 'vtseg.layers.transformer', 'vtseg.layers.projector',
    'vtseg.layers.vt_module', 'vtseg.layers.attention', 'vtseg.models.vt_resnet',
    'vtseg.models.vt_fpn', 'vtseg.mm.backbones', 'vtseg.mm.necks', 'vtseg.mm.pretrain',
    'vtseg.visualization.token_maps',
]


@pytest.mark.parametrize('name', MODULES)
def test_docstring_examples(name, one_torch_thread):
    module = importlib.import_module(name)
    torch.manual_seed(0)
    result = doctest.testmod(module, extraglobs={'torch': torch}, report=True,
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f'{name} has no example to run'
    assert result.failed == 0, f'{result.failed} of {result.attempted} example lines in {name} failed'

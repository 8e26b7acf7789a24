"""token_maps: the tokenizer and projector attention of every VT module / VT-FPN level,
read through vtseg.layers.record_attention; and the inputs a model sees."""
import os

import cv2
import numpy as np
import pytest
import torch

from vtseg.models import VTFPN, vt_resnet18
from vtseg.visualization import classifier_inputs, segmentor_inputs, token_maps

# VT-ResNet-18 (stages and VT modules as the paper has them) with narrow tokens: quick to build.
NARROW = dict(token_channels=64, vt_cfg=dict(qk_channels=32, hidden_channels=64,
                                             projector_qk_channels=32))


@pytest.fixture(scope='module')
def classifier():
    torch.manual_seed(0)
    return vt_resnet18(num_classes=10, **NARROW).eval()


@pytest.fixture(scope='module')
def backbone():
    torch.manual_seed(0)
    return vt_resnet18(num_classes=0, **NARROW).eval()


def small_fpn(**kwargs) -> VTFPN:
    kwargs = dict(dict(num_outs=5), **kwargs)
    return VTFPN(in_channels=[8, 16, 32, 32], out_channels=16, num_tokens=4, token_channels=32, **kwargs).eval()


def fpn_inputs(batch: int = 2):
    return [torch.randn(batch, c, s, s) for c, s in zip([8, 16, 32, 32], [16, 8, 4, 4])]


def assert_softmax(attn: torch.Tensor, dims) -> None:
    assert (attn >= 0).all()
    sums = attn.sum(dims)
    torch.testing.assert_close(sums, torch.ones_like(sums))


def test_vt_resnet18_maps_shapes_and_sums(classifier):
    maps = token_maps(classifier, torch.randn(2, 3, 64, 96))
    assert [m.label for m in maps] == ['VT module 1', 'VT module 2']
    assert [m.name for m in maps] == ['vt_modules.0', 'vt_modules.1']
    for m in maps:
        assert m.size == (4, 6) and m.num_tokens == 16
        assert m.tokenizer.shape == (2, 16, 4, 6)
        assert m.tokenizer.device.type == 'cpu' and m.tokenizer.dtype == torch.float32
        assert_softmax(m.tokenizer, dims=(2, 3))  # each token: a distribution over the pixels
    assert maps[0].projector.shape == (2, 16, 4, 6)
    assert_softmax(maps[0].projector, dims=1)  # each pixel: a distribution over the tokens
    # A classifier's last module has no projector, so there is nothing it projects.
    assert maps[1].projector is None


def test_vt_resnet18_backbone_has_projector_maps(backbone):
    maps = token_maps(backbone, torch.randn(1, 3, 32, 32))
    assert all(m.projector is not None and m.projector.shape == (1, 16, 2, 2) for m in maps)


def test_vt_fpn_maps_shapes_and_sums():
    torch.manual_seed(0)
    maps = token_maps(small_fpn(), fpn_inputs())
    # One entry per input level; the max-pooled 5th output has no tokens.
    assert [m.label for m in maps] == [f'VT-FPN level {i}' for i in (1, 2, 3, 4)]
    assert [m.size for m in maps] == [(16, 16), (8, 8), (4, 4), (4, 4)]
    for m in maps:
        assert m.tokenizer.shape == m.projector.shape == (2, 4, *m.size)
        assert_softmax(m.tokenizer, dims=(2, 3))
        assert_softmax(m.projector, dims=1)


def test_vt_fpn_levels_are_named_by_input_level():
    torch.manual_seed(0)
    maps = token_maps(small_fpn(start_level=1, num_outs=3, add_extra_convs=False), fpn_inputs(1))
    assert [(m.label, m.size) for m in maps] == [('VT-FPN level 2', (8, 8)), ('VT-FPN level 3', (4, 4)),
                                                 ('VT-FPN level 4', (4, 4))]


def test_tokenizer_map_is_equation_1_and_the_model_is_unchanged(backbone):
    """The first module's map is softmax_HW(X W_A) of its input, computed here from the
    layer's weights; the model's output does not change for being observed, and no hook
    is left behind."""
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        plain = backbone.forward_features(x)
        c4 = backbone.forward_stages(x)[-1]  # (1, C, 4, 4): the first VT module's input
        maps = token_maps(backbone, x)
        again = backbone.forward_features(x)
    filters = backbone.vt_modules[0].tokenizer.filters.weight  # W_A^T: (L, C)
    expected = torch.einsum('lc,bchw->blhw', filters, c4).flatten(2).softmax(-1).reshape(maps[0].tokenizer.shape)
    torch.testing.assert_close(maps[0].tokenizer, expected)
    for a, b in zip(plain[0] + [plain[1]], again[0] + [again[1]]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in backbone.modules())


def test_model_without_tokens():
    with pytest.raises(ValueError, match='no VT module'):
        token_maps(torch.nn.Conv2d(3, 4, 3), torch.randn(1, 3, 8, 8))


def test_classifier_inputs_crop_and_normalise():
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, :, 0] = 255  # blue in BGR
    x, shown = classifier_inputs(image, img_size=32)
    assert x.shape == (1, 3, 32, 32) and shown.shape == (32, 32, 3)
    assert (shown[..., 2] == 255).all() and (shown[..., :2] == 0).all()  # RGB: blue is last
    torch.testing.assert_close(x[0, 2], torch.full((32, 32), (255 - 103.53) / 57.375))
    torch.testing.assert_close(x[0, 0], torch.full((32, 32), -123.675 / 58.395))


def test_segmentor_inputs_with_padding(vtshapes_root, repo_root):
    """An mmseg segmentor: its test pipeline and preprocessor (which pads here) feed the
    tokens; the maps are those of the padded input."""
    from vtseg.apis import build_model
    config = os.path.join(repo_root, 'configs/vtshapes/vt-fpn_vt-r18_1xb8-1.5k_vtshapes-96x96.py')
    segmentor = build_model(config, cfg_options={'model.data_preprocessor.test_cfg': dict(size_divisor=64)})
    image = cv2.imread(os.path.join(vtshapes_root, 'img_dir', 'val', '100000.jpg'))
    assert image.shape == (96, 96, 3)
    inputs, shown = segmentor_inputs(segmentor, image)
    assert inputs.shape == (1, 3, 128, 128)  # padded to a multiple of 64
    np.testing.assert_array_equal(shown, image[..., ::-1])  # what the model saw, in RGB
    maps = token_maps(segmentor, inputs)
    # the backbone's two VT modules at 1/16, then the four VT-FPN levels
    assert [(m.label, m.size) for m in maps] == [
        ('VT module 1', (8, 8)), ('VT module 2', (8, 8)), ('VT-FPN level 1', (32, 32)),
        ('VT-FPN level 2', (16, 16)), ('VT-FPN level 3', (8, 8)), ('VT-FPN level 4', (8, 8))]
    assert [m.name for m in maps][::2] == ['backbone.vt_modules.0', 'neck', 'neck']

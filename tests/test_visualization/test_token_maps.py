import os

import cv2
import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from vtseg.layers import VisualTransformer
from vtseg.models import VTFPN, vt_resnet18
from vtseg.visualization import (TokenAttention, classifier_inputs, draw_token_attention,
                                 record_token_attention, segmentor_inputs, token_attention,
                                 visualize_tokens)
from vtseg.visualization.tokens import _token_colours


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


def small_fpn() -> VTFPN:
    return VTFPN(in_channels=[8, 16, 32, 32], out_channels=16, num_outs=5, num_tokens=4,
                 token_channels=32).eval()


def fpn_inputs(batch: int = 2):
    return [torch.randn(batch, c, s, s) for c, s in zip([8, 16, 32, 32], [16, 8, 4, 4])]


def assert_softmax(attn: torch.Tensor, dim: int) -> None:
    assert (attn >= 0).all()
    torch.testing.assert_close(attn.sum(dim), torch.ones_like(attn.sum(dim)))


def test_vt_resnet18_maps_shapes_and_sums(classifier):
    records = token_attention(classifier, torch.randn(2, 3, 64, 96))
    assert [r.label for r in records] == ['VT module 1', 'VT module 2']
    assert [r.name for r in records] == ['vt_modules.0', 'vt_modules.1']
    for r in records:
        assert r.size == (4, 6) and r.num_tokens == 16
        assert r.tokenizer.shape == (2, 24, 16)
        assert_softmax(r.tokenizer, dim=1)  # each token: a distribution over the pixels
        assert r.spatial('tokenizer').shape == (2, 16, 4, 6)
    assert records[0].projector.shape == (2, 24, 16)
    assert_softmax(records[0].projector, dim=2)  # each pixel: a distribution over the tokens
    # A classifier's last module has no projector, so there is nothing it projects.
    assert records[1].projector is None
    with pytest.raises(ValueError, match='no projector'):
        records[1].spatial('projector')


def test_vt_resnet18_backbone_has_projector_maps(backbone):
    records = token_attention(backbone, torch.randn(1, 3, 32, 32))
    assert all(r.projector is not None and r.projector.shape == (1, 4, 16) for r in records)


def test_vt_fpn_maps_shapes_and_sums():
    torch.manual_seed(0)
    records = token_attention(small_fpn(), fpn_inputs())
    # One record per input level; the max-pooled 5th output has no tokens.
    assert [r.label for r in records] == [f'VT-FPN level {i}' for i in (1, 2, 3, 4)]
    assert [r.size for r in records] == [(16, 16), (8, 8), (4, 4), (4, 4)]
    for r in records:
        hw = r.size[0] * r.size[1]
        assert r.tokenizer.shape == r.projector.shape == (2, hw, 4)
        assert_softmax(r.tokenizer, dim=1)
        assert_softmax(r.projector, dim=2)
        assert r.tokenizer.device.type == 'cpu' and r.tokenizer.dtype == torch.float32


def test_records_are_the_layers_own_maps_and_change_nothing(backbone):
    model = backbone
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        c4 = model.forward_stages(x)[-1]
        direct = []
        expected_map, expected_tokens = model.forward_vt(c4, attn_maps=direct)
        plain_map, _ = model.forward_vt(c4)
        with record_token_attention(model) as records:
            vt_map, tokens = model.forward_vt(c4)
    torch.testing.assert_close(vt_map, plain_map)
    torch.testing.assert_close(tokens, expected_tokens)
    for r, maps in zip(records, direct):
        torch.testing.assert_close(r.tokenizer, maps['tokenizer'])
        torch.testing.assert_close(r.projector, maps['projector'])
    # The hooks are gone after the block.
    for module in model.vt_modules:
        assert not module._forward_pre_hooks and not module._forward_hooks


def test_callers_own_container_is_kept():
    model = small_fpn()
    inputs = fpn_inputs(1)
    mine = [{'earlier': None}]
    with torch.no_grad(), record_token_attention(model) as records:
        model(inputs, attn_maps=mine)
    assert len(mine) == 5 and len(records) == 4  # the caller's list got its 4 levels
    for r, maps in zip(records, mine[1:]):
        assert r.tokenizer.data_ptr() == maps['tokenizer'].data_ptr()  # the same memory
    vt = VisualTransformer(16, num_tokens=4, token_channels=32).eval()
    maps = {}
    with torch.no_grad(), record_token_attention(vt) as records:
        vt(torch.randn(1, 16, 3, 5), None, maps)  # attn_maps given positionally
    assert records[0].tokenizer.data_ptr() == maps['tokenizer'].data_ptr()
    assert records[0].size == (3, 5)


class _TorchCalls(TorchFunctionMode):
    """The torch functions and tensor methods a block calls, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls.append(getattr(func, '__name__', repr(func)))
        return func(*args, **(kwargs or {}))


def test_asking_for_maps_adds_no_work(backbone):
    """The attention is computed anyway: asking for it adds no torch call (no copy,
    no detach, no transfer), and not asking computes nothing extra either."""
    model = backbone
    vt = model.vt_modules[0]
    fpn = small_fpn()
    x = torch.randn(1, 256, 4, 6)
    inputs = fpn_inputs(1)
    with torch.no_grad():
        runs = {}
        for asked in (False, True):
            with _TorchCalls() as vt_calls:
                vt(x, attn_maps={} if asked else None)
            with _TorchCalls() as chain_calls:
                model.forward_vt(x, attn_maps=[] if asked else None)
            with _TorchCalls() as fpn_calls:
                fpn(inputs, attn_maps=[] if asked else None)
            runs[asked] = (vt_calls.calls, chain_calls.calls, fpn_calls.calls)
    assert all(runs[False])
    assert runs[False] == runs[True]


def test_model_without_tokens():
    with pytest.raises(ValueError, match='no VT module'):
        token_attention(torch.nn.Conv2d(3, 4, 3), torch.randn(1, 3, 8, 8))


def test_classifier_inputs_crop_and_normalise():
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, :, 0] = 255  # blue in BGR
    x, shown = classifier_inputs(image, img_size=32)
    assert x.shape == (1, 3, 32, 32) and shown.shape == (32, 32, 3)
    assert (shown[..., 2] == 255).all() and (shown[..., :2] == 0).all()  # RGB: blue is last
    torch.testing.assert_close(x[0, 2], torch.full((32, 32), (255 - 103.53) / 57.375))
    torch.testing.assert_close(x[0, 0], torch.full((32, 32), -123.675 / 58.395))


# ----------------------------------------------------------------------------------------------
# Drawing

def halves_attention(with_projector: bool = True, num_tokens: int = 3) -> TokenAttention:
    """A 4x4 map: token 0 owns the left half, token 1 the right half (and token 1's
    tokenizer attention sits on one pixel, top right)."""
    h = w = 4
    tokenizer = torch.full((1, h * w, num_tokens), 1.0 / (h * w))
    tokenizer[0, :, 1] = 0
    tokenizer[0, w - 1, 1] = 1  # pixel (0, 3)
    projector = torch.zeros(1, h, w, num_tokens)
    projector[0, :, :w // 2, 0] = 1
    projector[0, :, w // 2:, 1] = 1
    return TokenAttention(name='m', label='VT module 1', size=(h, w), tokenizer=tokenizer,
                          projector=projector.reshape(1, h * w, num_tokens) if with_projector
                          else None)


def read_rgb(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    assert image is not None
    return image[..., ::-1]


def inner(image: np.ndarray, box, frac: float = 0.25) -> np.ndarray:
    """The middle of a panel, away from its frame."""
    x0, y0, x1, y1 = box
    dx, dy = int((x1 - x0) * frac), int((y1 - y0) * frac)
    return image[y0 + dy:y1 - dy, x0 + dx:x1 - dx]


def test_draw_layout_and_panels(tmp_path):
    image = np.full((32, 32, 3), 128, np.uint8)
    out = str(tmp_path / 'sub' / 'tokens.png')
    rows = [halves_attention(), halves_attention(with_projector=False, num_tokens=2)]
    figure = draw_token_attention(image, rows, out, dpi=60)
    png = read_rgb(out)
    assert png.shape == (figure.height, figure.width, 3)
    assert (figure.rows, figure.cols) == (2, 5)  # image, argmax, 3 tokens
    kinds = [(p.row, p.col, p.kind, p.token) for p in figure.panels]
    assert kinds == [(0, 0, 'image', None), (0, 1, 'argmax', None), (0, 2, 'token', 0),
                     (0, 3, 'token', 1), (0, 4, 'token', 2),
                     (1, 0, 'image', None), (1, 1, 'no-projector', None), (1, 2, 'token', 0),
                     (1, 3, 'token', 1)]
    for p in figure.panels:
        x0, y0, x1, y1 = p.box
        assert 0 <= x0 < x1 <= figure.width and 0 <= y0 < y1 <= figure.height
        assert (x1 - x0) == (y1 - y0) == 60
        assert not (png[y0:y1, x0:x1] == 255).all(), p  # something drawn
    # The grid cell past row 1's two tokens stays empty.
    x0, _, x1, _ = figure.panels[4].box
    _, y0, _, y1 = figure.panels[5].box
    assert (png[y0:y1, x0:x1] == 255).all()
    assert [f for f in os.listdir(tmp_path / 'sub')] == ['tokens.png']  # no temporary left


def test_draw_argmax_and_heat_maps(tmp_path):
    image = np.full((32, 32, 3), 128, np.uint8)
    figure = draw_token_attention(image, [halves_attention()], str(tmp_path / 't.png'), alpha=0.5,
                                  dpi=80)
    png = read_rgb(figure.path).astype(float)
    panels = {(p.kind, p.token): p.box for p in figure.panels}
    colours = _token_colours(3) * 255
    x0, y0, x1, y1 = panels[('argmax', None)]
    left = png[y0 + 20:y1 - 20, x0 + 5:x0 + 30].reshape(-1, 3)
    right = png[y0 + 20:y1 - 20, x1 - 30:x1 - 5].reshape(-1, 3)
    # The left half is blended with token 0's colour, the right half with token 1's.
    np.testing.assert_allclose(left.mean(0), 0.5 * 128 + 0.5 * colours[0], atol=3)
    np.testing.assert_allclose(right.mean(0), 0.5 * 128 + 0.5 * colours[1], atol=3)
    # Token 1 attends to the top-right pixel only: hot there, cold (blue) far from it.
    x0, y0, x1, y1 = panels[('token', 1)]
    hot, cold = png[y0 + 3, x1 - 4], png[y1 - 4, x0 + 3]
    assert hot[0] - hot[2] > 40  # jet's top: red
    assert cold[2] - cold[0] > 40  # jet's bottom: blue
    # Token 0 attends to every pixel alike: one colour across the panel.
    assert np.ptp(inner(png, panels[('token', 0)]).reshape(-1, 3), axis=0).max() <= 2


def test_draw_palette_png(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    full = draw_token_attention(image, [halves_attention()], str(tmp_path / 'full.png'))
    small = draw_token_attention(image, [halves_attention()], str(tmp_path / 'small.png'),
                                 colors=64)
    assert (small.width, small.height) == (full.width, full.height)
    assert os.path.getsize(small.path) < os.path.getsize(full.path)
    assert len(np.unique(read_rgb(small.path).reshape(-1, 3), axis=0)) <= 64


def test_draw_bad_arguments_write_nothing(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    out = tmp_path / 'x.png'
    with pytest.raises(ValueError, match='uint8 RGB'):
        draw_token_attention(image.astype(np.float32), [halves_attention()], str(out))
    with pytest.raises(ValueError, match='no token attention'):
        draw_token_attention(image, [], str(out))
    with pytest.raises(ValueError, match='sample 1'):
        draw_token_attention(image, [halves_attention()], str(out), sample=1)
    with pytest.raises(ValueError, match='2 to 256'):
        draw_token_attention(image, [halves_attention()], str(out), colors=1000)
    # The target is a folder: moving the finished file into place fails, no temporary is left.
    out.mkdir()
    with pytest.raises(OSError):
        draw_token_attention(image, [halves_attention()], str(out))
    assert os.listdir(tmp_path) == ['x.png'] and not os.listdir(out)


def test_visualize_tokens_segmentor_with_padding(vtshapes_root, repo_root, tmp_path):
    """An mmseg segmentor: its test pipeline and preprocessor (which pads here) feed the
    tokens; the maps are cropped back to the image."""
    from mmseg.apis import init_model
    config = os.path.join(repo_root, 'configs/vtshapes/vt-fpn_r18_1xb8-1.5k_vtshapes-96x96.py')
    segmentor = init_model(config, device='cpu',
                           cfg_options={'model.data_preprocessor.test_cfg': dict(size_divisor=64)})
    image = cv2.imread(os.path.join(vtshapes_root, 'img_dir', 'val', '100000.jpg'))
    assert image.shape == (96, 96, 3)
    inputs, shown = segmentor_inputs(segmentor, image)
    assert inputs.shape == (1, 3, 128, 128)  # padded to a multiple of 64
    np.testing.assert_array_equal(shown, image[..., ::-1])  # what the model saw, in RGB
    records = token_attention(segmentor, inputs)
    assert [r.size for r in records] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    figure = visualize_tokens(segmentor, image, str(tmp_path / 'seg.png'), dpi=30)
    assert (figure.rows, figure.cols) == (4, 10)
    assert cv2.imread(figure.path).shape == (figure.height, figure.width, 3)


def test_visualize_tokens_vt_resnet(classifier, tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    figure = visualize_tokens(classifier, image, str(tmp_path / 'cls.png'), img_size=32, dpi=30)
    assert (figure.rows, figure.cols) == (2, 18)
    assert [p.kind for p in figure.panels if p.col == 1] == ['argmax', 'no-projector']

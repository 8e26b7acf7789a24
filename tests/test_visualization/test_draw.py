"""The drawing module: label overlays with a legend, and token figures, over one blend."""
import os

import cv2
import numpy as np
import pytest
import torch

from vtseg.visualization import TokenMaps, blend_labels, draw_overlay, draw_token_attention, token_colours, vis_scale

RNG = np.random.default_rng(0)


def test_blend_is_the_weighted_mean_of_image_and_colours():
    image = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    labels = RNG.integers(0, 3, (5, 7))
    colours = np.array([[0, 0, 0], [255, 0, 0], [10, 200, 30]], np.uint8)
    blend = blend_labels(image, labels, colours, 0.25)
    expected = np.rint(0.75 * image + 0.25 * colours[labels].astype(float))
    np.testing.assert_array_equal(blend, expected)
    assert blend.dtype == np.uint8


# --- overlays (folder inference) ------------------------------------------------------------

def test_vis_scale_enlarges_small_images_only():
    assert vis_scale(1, 1) == 256
    assert vis_scale(8, 8) == 32
    assert vis_scale(300, 400) == 1
    assert vis_scale(1, 5000) == 1  # never past 4096 on the long side


def test_overlay_shows_image_colours_and_a_legend_of_present_classes():
    palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]
    classes = ['bg', 'red', 'green', 'blue']
    image = RNG.integers(0, 256, (300, 320, 3), dtype=np.uint8)
    labels = np.zeros((300, 320), np.int64)
    labels[:, 160:] = 2  # classes present: bg and green; red and blue absent

    plain = draw_overlay(image, labels, palette, classes, opacity=0.0)
    assert plain.shape[0] == 300 and plain.shape[1] > 320  # legend panel to the right
    np.testing.assert_array_equal(plain[:, :320], image)

    colours = draw_overlay(image, labels, palette, classes, opacity=1.0)
    assert (colours[:, 160:320] == [0, 255, 0]).all()  # BGR green
    legend = colours[:, 320:].reshape(-1, 3)
    has = {name: bool((legend == np.array(rgb[::-1])).all(1).any())
           for name, rgb in zip(classes, palette)}
    assert has['green'] and not has['red'] and not has['blue']


def test_overlay_of_a_tiny_image_is_enlarged_pixel_exactly():
    image = np.array([[[10, 20, 30]]], np.uint8)
    vis = draw_overlay(image, np.zeros((1, 1), np.int64), [[0, 0, 0]], ['bg'], opacity=0.0)
    assert vis.shape[0] == 256 and (vis[:256, :256] == [10, 20, 30]).all()


# --- token figures ----------------------------------------------------------------------------

def halves_maps(with_projector: bool = True, num_tokens: int = 3) -> TokenMaps:
    """A 4x4 map: token 0 owns the left half, token 1 the right half (and token 1's
    tokenizer attention sits on one pixel, top right)."""
    h = w = 4
    tokenizer = torch.full((1, num_tokens, h, w), 1.0 / (h * w))
    tokenizer[0, 1] = 0
    tokenizer[0, 1, 0, w - 1] = 1  # pixel (0, 3)
    projector = torch.zeros(1, num_tokens, h, w)
    projector[0, 0, :, :w // 2] = 1
    projector[0, 1, :, w // 2:] = 1
    return TokenMaps(name='m', label='VT module 1', tokenizer=tokenizer,
                     projector=projector if with_projector else None)


def read_rgb(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    assert image is not None
    return image[..., ::-1]


def inner(image: np.ndarray, box, frac: float = 0.25) -> np.ndarray:
    """The middle of a panel, away from its frame."""
    x0, y0, x1, y1 = box
    dx, dy = int((x1 - x0) * frac), int((y1 - y0) * frac)
    return image[y0 + dy:y1 - dy, x0 + dx:x1 - dx]


def test_token_colours_are_distinct():
    for num_tokens in (3, 16, 32):
        colours = token_colours(num_tokens)
        assert colours.shape == (num_tokens, 3) and colours.dtype == np.uint8
        assert len(np.unique(colours, axis=0)) == num_tokens


def test_draw_layout_and_panels(tmp_path):
    image = np.full((32, 32, 3), 128, np.uint8)
    out = str(tmp_path / 'sub' / 'tokens.png')
    rows = [halves_maps(), halves_maps(with_projector=False, num_tokens=2)]
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
    # The no-projector panel is the image faded towards white, 0.35 * 128 + 0.65 * 255
    # (a corner: its middle says 'no projector').
    x0, y0, _, _ = figure.panels[6].box
    np.testing.assert_allclose(png[y0 + 3:y0 + 12, x0 + 3:x0 + 12].reshape(-1, 3), 210.55, atol=1)
    assert [f for f in os.listdir(tmp_path / 'sub')] == ['tokens.png']  # no temporary left


def test_draw_argmax_and_heat_maps(tmp_path):
    image = np.full((32, 32, 3), 128, np.uint8)
    figure = draw_token_attention(image, [halves_maps()], str(tmp_path / 't.png'), alpha=0.5,
                                  dpi=80)
    png = read_rgb(figure.path).astype(float)
    panels = {(p.kind, p.token): p.box for p in figure.panels}
    colours = token_colours(3).astype(float)
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
    image = RNG.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    full = draw_token_attention(image, [halves_maps()], str(tmp_path / 'full.png'))
    small = draw_token_attention(image, [halves_maps()], str(tmp_path / 'small.png'), colors=64)
    assert (small.width, small.height) == (full.width, full.height)
    assert os.path.getsize(small.path) < os.path.getsize(full.path)
    assert len(np.unique(read_rgb(small.path).reshape(-1, 3), axis=0)) <= 64


def test_draw_bad_arguments_write_nothing(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    out = tmp_path / 'x.png'
    with pytest.raises(ValueError, match='uint8 RGB'):
        draw_token_attention(image.astype(np.float32), [halves_maps()], str(out))
    with pytest.raises(ValueError, match='no token attention'):
        draw_token_attention(image, [], str(out))
    with pytest.raises(ValueError, match='sample 1'):
        draw_token_attention(image, [halves_maps()], str(out), sample=1)
    with pytest.raises(ValueError, match='2 to 256'):
        draw_token_attention(image, [halves_maps()], str(out), colors=1000)
    # The target is a folder: moving the finished file into place fails, no temporary is left.
    out.mkdir()
    with pytest.raises(OSError):
        draw_token_attention(image, [halves_maps()], str(out))
    assert os.listdir(tmp_path) == ['x.png'] and not os.listdir(out)

"""The layers' speed paths compute the same numbers as the plain ones.

VisualTransformer and VTFPN hand the layers channel-major views of (B, C, HW) maps;
the projector may overwrite its input during inference. Neither may change a result.
"""
import torch

from vtseg.layers import FilterTokenizer, Projector, RecurrentTokenizer, VisualTransformer


def channel_major(x: torch.Tensor) -> torch.Tensor:
    """The same (B, HW, C) values, laid out as a (B, C, HW) map (what the VT modules pass)."""
    return x.transpose(1, 2).contiguous().transpose(1, 2)


def test_layers_agree_on_both_pixel_layouts():
    torch.manual_seed(0)
    x = torch.randn(2, 30, 8, dtype=torch.double)
    t = torch.randn(2, 4, 12, dtype=torch.double)
    view = channel_major(x)
    assert not view.is_contiguous()
    for layer, args in [(FilterTokenizer(8, 4, 12), ()), (RecurrentTokenizer(8, 12), (t,)),
                        (Projector(8, 12, qk_channels=6), (t,))]:
        layer = layer.double()
        torch.testing.assert_close(layer(view, *args), layer(x, *args))


def test_projector_overwrites_its_input_only_when_allowed_and_not_recording():
    torch.manual_seed(0)
    proj = Projector(8, 12)
    x, t = channel_major(torch.randn(2, 30, 8)), torch.randn(2, 4, 12)
    expected = proj(x, t)
    with torch.no_grad():
        kept = x.clone()
        out = proj(x, t)  # not allowed: x untouched
        torch.testing.assert_close(x, kept)
        out = proj(x, t, overwrite_input=True)
    assert out.data_ptr() == x.data_ptr()  # the result lives in x's memory
    torch.testing.assert_close(out, expected)
    x2 = channel_major(torch.randn(2, 30, 8, requires_grad=True))
    before = x2.detach().clone()
    proj(x2, t, overwrite_input=True).sum().backward()  # recording: ignored, backward works
    torch.testing.assert_close(x2.detach(), before)


def test_vt_module_inference_equals_training_graph():
    torch.manual_seed(0)
    vt = VisualTransformer(16, num_tokens=4, token_channels=32).eval()
    x = torch.randn(2, 16, 7, 9)
    ref_x, ref_t = vt(x)
    with torch.no_grad():
        out_x, out_t = vt(x)
    torch.testing.assert_close(out_x, ref_x)
    torch.testing.assert_close(out_t, ref_t)
    assert out_x.is_contiguous()  # (B, C, H, W) out, no transposed copy left behind

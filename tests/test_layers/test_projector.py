import pytest
import torch
from layer_testing import as_map, as_pixels
from vtseg_testing import gradcheck_inputs_and_weights

from vtseg.layers import Projector, record_attention
from vtseg.utils.complexity import measure


def reference_projector(x, t, w_q, w_k, w_v, scale=1.0):
    """Eq. 5 written out per image: X_out = X_in + softmax_L((X W_Q)(T W_K)^T) (T W_V)."""
    out = []
    for xb, tb in zip(x, t):  # (HW, C), (L, C_T)
        attn = torch.softmax(scale * (xb @ w_q) @ (tb @ w_k).t(), dim=1)  # (HW, L)
        out.append(xb + attn @ (tb @ w_v))
    return torch.stack(out)


def test_projector_matches_equation_in_float64():
    torch.manual_seed(0)
    for qk_scale in (1.0, None):
        proj = Projector(in_channels=6, token_channels=10, qk_channels=5, qk_scale=qk_scale).double()
        x = torch.randn(2, 30, 6, dtype=torch.double)
        t = torch.randn(2, 4, 10, dtype=torch.double)
        out = proj(as_map(x, 5, 6), t)
        assert out.shape == (2, 6, 5, 6) and out.dtype == torch.double
        expected = reference_projector(x, t, proj.query_weight.t(), proj.key.weight.t(), proj.value.weight.t(),
                                       scale=proj.scale)
        # float64 to the last bits: a float32 softmax would leave errors near 1e-7
        torch.testing.assert_close(as_pixels(out), expected, rtol=1e-12, atol=1e-12)


def test_gradcheck_in_float64():
    torch.manual_seed(0)
    proj = Projector(in_channels=5, token_channels=7, qk_channels=3).double()
    x = torch.randn(2, 5, 3, 4, dtype=torch.double, requires_grad=True)
    t = torch.randn(2, 3, 7, dtype=torch.double, requires_grad=True)
    assert gradcheck_inputs_and_weights(proj, x, t)


def test_projector_is_pixelwise_and_token_order_free():
    torch.manual_seed(1)
    proj = Projector(in_channels=8, token_channels=8)
    x, t = torch.randn(2, 8, 4, 5), torch.randn(2, 5, 8)
    pix, tok = torch.randperm(20), torch.randperm(5)
    shuffled = x.flatten(2)[:, :, pix].view(2, 8, 4, 5)
    torch.testing.assert_close(proj(x, t).flatten(2)[:, :, pix], proj(shuffled, t[:, tok]).flatten(2),
                               rtol=1e-5, atol=1e-5)


def test_recorded_attention_sums_to_one_over_tokens():
    proj = Projector(in_channels=8, token_channels=16)
    with record_attention(proj) as attention:
        out = proj(torch.randn(3, 8, 3, 4), torch.randn(3, 5, 16))
    assert out.shape == (3, 8, 3, 4) and attention[''].shape == (3, 5, 3, 4)
    torch.testing.assert_close(attention[''].sum(1), torch.ones(3, 3, 4))


def test_identical_tokens_add_that_token_to_every_pixel():
    proj = Projector(in_channels=4, token_channels=4)  # C == C_T: W_V is the identity
    token = torch.randn(4)
    x = torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(proj(x, token.expand(1, 3, 4)), x + token.view(1, 4, 1, 1), rtol=1e-5, atol=1e-6)


def test_bfloat16_autocast_matches_float32():
    torch.manual_seed(0)
    proj = Projector(in_channels=16, token_channels=32)
    x, t = torch.randn(2, 16, 8, 8), torch.randn(2, 4, 32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = proj(x, t)
    assert out.dtype == torch.bfloat16  # as a convolution's output under autocast
    torch.testing.assert_close(out.float(), proj(x, t), rtol=0.02, atol=0.05)


def test_gradients_reach_every_parameter():
    proj = Projector(in_channels=8, token_channels=12, qk_channels=6)
    proj(torch.randn(2, 8, 2, 5), torch.randn(2, 3, 12)).square().sum().backward()
    for name, p in proj.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_macs_count_every_projector_product():
    torch.manual_seed(0)
    b, h, w, c, c_t, tokens = 2, 8, 8, 12, 20, 3
    proj = Projector(c, c_t).eval()
    x, t = torch.randn(b, c, h, w), torch.randn(b, tokens, c_t)
    per_token = (c_t * c  # keys T W_K
                 + c * c  # per-token filters (T W_K) W_Q^T
                 + c * h * w  # logits
                 + c_t * c  # values T W_V
                 + c * h * w)  # (T W_V)^T A^T, the residual update
    assert measure(proj, (x, t)).gmacs * 1e9 == b * tokens * per_token


def test_in_place_writes_the_same_result_into_the_input():
    torch.manual_seed(0)
    proj = Projector(in_channels=8, token_channels=12)
    x, t = torch.randn(2, 8, 5, 6), torch.randn(2, 4, 12)
    expected = proj(x, t)
    with torch.no_grad():
        out = proj(x, t, in_place=True)
    assert out.data_ptr() == x.data_ptr()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(x, expected)


def test_in_place_with_autograd_on_is_refused_before_x_changes():
    """Overwriting X_in, which autograd saved, would otherwise fail only in backward."""
    proj = Projector(in_channels=8, token_channels=12)
    x, t = torch.randn(2, 8, 5, 6), torch.randn(2, 4, 12)
    before = x.clone()
    with pytest.raises(ValueError, match=r'in_place=True\) overwrites x, which autograd may need'):
        proj(x, t, in_place=True)
    torch.testing.assert_close(x, before, rtol=0, atol=0)


def test_in_place_and_out_of_place_agree_inside_an_autocast_model():
    # Inside an autocast model the map comes from a convolution, already in bfloat16:
    # both paths then return bfloat16 and the same numbers up to its rounding.
    torch.manual_seed(0)
    proj = Projector(in_channels=16, token_channels=32)
    conv = torch.nn.Conv2d(3, 16, 1)
    image, t = torch.randn(2, 3, 8, 8), torch.randn(2, 4, 32)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        x = conv(image)
        assert x.dtype == torch.bfloat16
        out = proj(x, t)
        in_place = proj(x.clone(), t, in_place=True)
    assert out.dtype == in_place.dtype == torch.bfloat16
    torch.testing.assert_close(in_place.float(), out.float(), rtol=0.02, atol=0.02)

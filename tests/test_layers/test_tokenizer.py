import pytest
import torch
from layer_testing import as_map
from vtseg_testing import gradcheck_inputs_and_weights

from vtseg.layers import FilterTokenizer, RecurrentTokenizer, record_attention


def reference_filter_tokens(x, w_a, w_v):
    """Eq. 1 written out per image: A = softmax_HW(X W_A), T = A^T X (then C -> C_T)."""
    out = []
    for xb in x:  # (HW, C)
        a = torch.softmax(xb @ w_a, dim=0)  # (HW, L)
        out.append((a.t() @ xb) @ w_v)
    return torch.stack(out)


def reference_recurrent_tokens(x, t_in, w_tr, w_v):
    """Eq. 2 written out per image: W_R = T_in W_TR, T = softmax_HW(X W_R^T)^T X."""
    out = []
    for xb, tb in zip(x, t_in):
        w_r = tb @ w_tr  # (L, C)
        a = torch.softmax(xb @ w_r.t(), dim=0)  # (HW, L)
        out.append((a.t() @ xb) @ w_v)
    return torch.stack(out)


def exact(actual, expected):
    """float64 to the last bits: a float32 step anywhere would leave errors near 1e-7."""
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


def test_filter_tokenizer_matches_equation_in_float64():
    torch.manual_seed(0)
    tok = FilterTokenizer(in_channels=8, num_tokens=4, token_channels=12).double()
    x = torch.randn(3, 25, 8, dtype=torch.double) * 3  # logits of a few units
    out = tok(as_map(x, 5, 5))
    assert out.dtype == torch.double
    exact(out, reference_filter_tokens(x, tok.filters.weight.t(), tok.value.weight.t()))


def test_recurrent_tokenizer_matches_equation_in_float64():
    torch.manual_seed(0)
    tok = RecurrentTokenizer(in_channels=8, token_channels=12).double()
    x = torch.randn(2, 30, 8, dtype=torch.double)
    t_in = torch.randn(2, 5, 12, dtype=torch.double)
    out = tok(as_map(x, 5, 6), t_in)
    assert out.shape == (2, 5, 12)  # the incoming token count is kept
    exact(out, reference_recurrent_tokens(x, t_in, tok.token_to_filter.weight.t(), tok.value.weight.t()))


@pytest.mark.parametrize('make', [
    lambda: (FilterTokenizer(6, 3, 5), ()),
    lambda: (RecurrentTokenizer(6, 5), (torch.randn(2, 3, 5, dtype=torch.double, requires_grad=True),)),
])
def test_gradcheck_in_float64(make):
    torch.manual_seed(0)
    tok, extra = make()
    tok = tok.double()
    x = torch.randn(2, 6, 3, 4, dtype=torch.double, requires_grad=True)
    assert gradcheck_inputs_and_weights(tok, x, *extra)


@pytest.mark.parametrize('make', [
    lambda: (FilterTokenizer(16, 6, 32), ()),
    lambda: (RecurrentTokenizer(16, 32), (torch.randn(2, 6, 32),)),
])
def test_tokenizer_invariant_to_pixel_permutation(make):
    torch.manual_seed(1)
    tok, t_in = make()
    x = torch.randn(2, 16, 7, 7)
    shuffled = x.flatten(2)[:, :, torch.randperm(49)].view(2, 16, 7, 7)
    torch.testing.assert_close(tok(x, *t_in), tok(shuffled, *t_in), rtol=1e-5, atol=1e-5)


def test_constant_map_gives_the_pixel_as_every_token():
    tok = FilterTokenizer(in_channels=8, num_tokens=5, token_channels=8)  # C == C_T: no value map
    pixel = torch.randn(8)
    x = pixel.view(1, 8, 1, 1).expand(2, 8, 6, 6)
    torch.testing.assert_close(tok(x), pixel.expand(2, 5, 8), rtol=1e-5, atol=1e-6)


def test_recorded_attention_is_a_softmax_over_pixels():
    tok = FilterTokenizer(in_channels=8, num_tokens=4, token_channels=16)
    with record_attention(tok) as attention:
        tok(torch.randn(3, 8, 4, 5))
    attn = attention['']  # the tokenizer itself is the model here
    assert attn.shape == (3, 4, 4, 5)
    assert (attn >= 0).all()
    torch.testing.assert_close(attn.sum(dim=(2, 3)), torch.ones(3, 4))


def test_bfloat16_logits_get_a_float32_softmax():
    torch.manual_seed(0)
    tok = FilterTokenizer(in_channels=16, num_tokens=4, token_channels=16)
    x = torch.randn(1, 16, 64, 64)
    with record_attention(tok) as attention, torch.autocast('cpu', dtype=torch.bfloat16):
        tok(x)
    assert attention[''].dtype == torch.float32
    # 4096 small weights per token: a bfloat16 sum would drift by far more than 1e-4
    torch.testing.assert_close(attention[''].sum(dim=(2, 3)), torch.ones(1, 4), rtol=0, atol=1e-4)


def test_large_logits_stay_finite():
    tok = FilterTokenizer(in_channels=4, num_tokens=3, token_channels=4)
    x = torch.randn(1, 4, 5, 10) * 1e4  # logits around 1e4: exp() would overflow naively
    assert torch.isfinite(tok(x)).all()


@pytest.mark.parametrize('cls,args', [(FilterTokenizer, (8, 4, 16)), (RecurrentTokenizer, (8, 16))])
def test_gradients_reach_every_parameter(cls, args):
    tok = cls(*args)
    x = torch.randn(2, 8, 3, 4, requires_grad=True)
    t_in = (torch.randn(2, 4, 16),) if cls is RecurrentTokenizer else ()
    tok(x, *t_in).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in tok.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name

import pytest
import torch

from vtseg.layers import FilterTokenizer, RecurrentTokenizer


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


def test_filter_tokenizer_matches_equation():
    torch.manual_seed(0)
    tok = FilterTokenizer(in_channels=8, num_tokens=4, token_channels=12).double()
    x = torch.randn(3, 25, 8, dtype=torch.double)
    expected = reference_filter_tokens(x, tok.filters.weight.t(), tok.value.weight.t())
    torch.testing.assert_close(tok(x), expected)


def test_recurrent_tokenizer_matches_equation():
    torch.manual_seed(0)
    tok = RecurrentTokenizer(in_channels=8, token_channels=12).double()
    x = torch.randn(2, 30, 8, dtype=torch.double)
    t_in = torch.randn(2, 5, 12, dtype=torch.double)
    expected = reference_recurrent_tokens(x, t_in, tok.token_to_filter.weight.t(), tok.value.weight.t())
    out = tok(x, t_in)
    assert out.shape == (2, 5, 12)  # the incoming token count is kept
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize('make', [
    lambda: (FilterTokenizer(16, 6, 32), None),
    lambda: (RecurrentTokenizer(16, 32), torch.randn(2, 6, 32)),
])
def test_tokenizer_invariant_to_pixel_permutation(make):
    torch.manual_seed(1)
    tok, t_in = make()
    x = torch.randn(2, 49, 16)
    perm = torch.randperm(49)
    torch.testing.assert_close(tok(x, t_in), tok(x[:, perm], t_in), rtol=1e-5, atol=1e-5)


def test_constant_map_gives_the_pixel_as_every_token():
    tok = FilterTokenizer(in_channels=8, num_tokens=5, token_channels=8)  # C == C_T: no value map
    pixel = torch.randn(8)
    x = pixel.expand(2, 36, 8)
    tokens = tok(x)
    torch.testing.assert_close(tokens, pixel.expand(2, 5, 8), rtol=1e-5, atol=1e-6)


def test_attention_is_a_softmax_over_pixels():
    tok = FilterTokenizer(in_channels=8, num_tokens=4, token_channels=16)
    tokens, attn = tok(torch.randn(3, 20, 8), return_attn=True)
    assert attn.shape == (3, 20, 4)
    assert (attn >= 0).all()
    torch.testing.assert_close(attn.sum(dim=1), torch.ones(3, 4))


def test_large_logits_stay_finite():
    tok = FilterTokenizer(in_channels=4, num_tokens=3, token_channels=4)
    x = torch.randn(1, 50, 4) * 1e4  # logits around 1e4: exp() would overflow naively
    assert torch.isfinite(tok(x)).all()


def test_recurrent_tokenizer_requires_tokens():
    with pytest.raises(ValueError, match='previous module'):
        RecurrentTokenizer(8, 8)(torch.randn(1, 4, 8))


@pytest.mark.parametrize('cls,args', [(FilterTokenizer, (8, 4, 16)), (RecurrentTokenizer, (8, 16))])
def test_gradients_reach_every_parameter(cls, args):
    tok = cls(*args)
    x = torch.randn(2, 12, 8, requires_grad=True)
    t_in = torch.randn(2, 4, 16) if cls is RecurrentTokenizer else None
    tok(x, t_in).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in tok.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name

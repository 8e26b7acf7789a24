import torch

from vtseg.layers import Projector
from vtseg.utils.complexity import measure


def reference_projector(x, t, w_q, w_k, w_v):
    """Eq. 5 written out: X_out = X_in + softmax_L((X W_Q)(T W_K)^T) (T W_V)."""
    out = []
    for xb, tb in zip(x, t):
        attn = torch.softmax((xb @ w_q) @ (tb @ w_k).t(), dim=1)  # (HW, L)
        out.append(xb + attn @ (tb @ w_v))
    return torch.stack(out)


def test_projector_matches_equation():
    torch.manual_seed(0)
    proj = Projector(in_channels=6, token_channels=10, qk_channels=5, qk_scale=1.0).double()
    x = torch.randn(2, 30, 6, dtype=torch.double)
    t = torch.randn(2, 4, 10, dtype=torch.double)
    expected = reference_projector(x, t, proj.query_weight.t(), proj.key.weight.t(), proj.value.weight.t())
    torch.testing.assert_close(proj(x, t), expected)


def test_projector_is_pixelwise_and_token_order_free():
    torch.manual_seed(1)
    proj = Projector(in_channels=8, token_channels=8)
    x, t = torch.randn(2, 20, 8), torch.randn(2, 5, 8)
    pix, tok = torch.randperm(20), torch.randperm(5)
    torch.testing.assert_close(proj(x, t)[:, pix], proj(x[:, pix], t[:, tok]), rtol=1e-5, atol=1e-5)


def test_attention_rows_sum_to_one_over_tokens():
    proj = Projector(in_channels=8, token_channels=16)
    out, attn = proj(torch.randn(3, 12, 8), torch.randn(3, 4, 16), return_attn=True)
    assert out.shape == (3, 12, 8) and attn.shape == (3, 12, 4)
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 12))


def test_identical_tokens_add_that_token_to_every_pixel():
    proj = Projector(in_channels=4, token_channels=4)  # C == C_T: W_V is the identity
    token = torch.randn(4)
    x = torch.randn(1, 9, 4)
    torch.testing.assert_close(proj(x, token.expand(1, 3, 4)), x + token, rtol=1e-5, atol=1e-6)


def test_gradients_reach_every_parameter():
    proj = Projector(in_channels=8, token_channels=12, qk_channels=6)
    proj(torch.randn(2, 10, 8), torch.randn(2, 3, 12)).square().sum().backward()
    for name, p in proj.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_macs_count_every_projector_product():
    torch.manual_seed(0)
    b, hw, c, c_t, tokens = 2, 64, 12, 20, 3
    proj = Projector(c, c_t).eval()
    x, t = torch.randn(b, hw, c), torch.randn(b, tokens, c_t)
    per_token = (c_t * c  # keys T W_K
                 + c * c  # per-token filters (T W_K) W_Q^T
                 + c * hw  # logits
                 + c_t * c  # values T W_V
                 + c * hw)  # (T W_V)^T A^T, the residual update
    expected = b * tokens * per_token
    assert measure(proj, (x, t)).gmacs * 1e9 == expected

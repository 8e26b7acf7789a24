import pytest
import torch
from vtseg_testing import gradcheck_inputs_and_weights

from vtseg.layers import TokenFeedForward, TokenSelfAttention, TokenTransformer, record_attention


def reference_transformer(t, k, q, f1, f2):
    """Eqs. 3-4 written out (literal: single head, no scale)."""
    out = []
    for tb in t:  # (L, C)
        attn = torch.softmax((tb @ k) @ (tb @ q).t(), dim=1)  # (L, L), softmax over L
        t1 = tb + attn @ tb
        out.append(t1 + torch.relu(t1 @ f1) @ f2)
    return torch.stack(out)


def test_transformer_matches_equations_in_float64():
    torch.manual_seed(0)
    tf = TokenTransformer(channels=12, qk_channels=6, hidden_channels=20, qk_scale=1.0).double()
    t = torch.randn(3, 7, 12, dtype=torch.double)
    expected = reference_transformer(t, tf.attn.key.weight.t(), tf.attn.query.weight.t(),
                                     tf.ffn.fc1.weight.t(), tf.ffn.fc2.weight.t())
    out = tf(t)
    assert out.dtype == torch.double
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('num_heads', [1, 2])
def test_gradcheck_in_float64(num_heads):
    torch.manual_seed(0)
    tf = TokenTransformer(channels=6, qk_channels=4, hidden_channels=5, num_heads=num_heads).double()
    t = torch.randn(2, 3, 6, dtype=torch.double, requires_grad=True)
    assert gradcheck_inputs_and_weights(tf, t)


@pytest.mark.parametrize('layer', ['attention', 'feed-forward'])
def test_each_half_passes_gradcheck_in_float64(layer):
    """Eq. 3 and eq. 4 alone, inputs and weights."""
    torch.manual_seed(0)
    module = (TokenSelfAttention(channels=6, qk_channels=4, num_heads=2) if layer == 'attention'
              else TokenFeedForward(channels=6, hidden_channels=5)).double()
    t = torch.randn(2, 3, 6, dtype=torch.double, requires_grad=True)
    assert gradcheck_inputs_and_weights(module, t)


def test_default_scale_is_inverse_sqrt_head_width():
    attn = TokenSelfAttention(channels=16, qk_channels=64, num_heads=4)
    assert attn.scale == pytest.approx(16 ** -0.5)


def test_multi_head_equals_per_head_attention():
    torch.manual_seed(0)
    attn = TokenSelfAttention(channels=8, qk_channels=6, num_heads=2).double()
    t = torch.randn(1, 5, 8, dtype=torch.double)
    k = (t @ attn.key.weight.t()).view(5, 2, 3)
    q = (t @ attn.query.weight.t()).view(5, 2, 3)
    v = t.view(5, 2, 4)
    heads = [torch.softmax(k[:, h] @ q[:, h].t() * attn.scale, dim=1) @ v[:, h] for h in range(2)]
    torch.testing.assert_close(attn(t), t + torch.cat(heads, dim=1).unsqueeze(0), rtol=1e-12, atol=1e-12)


def test_transformer_is_equivariant_to_token_permutation():
    torch.manual_seed(2)
    tf = TokenTransformer(channels=16, num_heads=2)
    t = torch.randn(2, 9, 16)
    perm = torch.randperm(9)
    torch.testing.assert_close(tf(t)[:, perm], tf(t[:, perm]), rtol=1e-5, atol=1e-5)


def test_recorded_attention_rows_sum_to_one():
    attn = TokenSelfAttention(channels=16, qk_channels=8, num_heads=2)
    with record_attention(attn) as attention:
        attn(torch.randn(3, 6, 16))
    assert attention[''].shape == (3, 2, 6, 6)
    torch.testing.assert_close(attention[''].sum(-1), torch.ones(3, 2, 6))


def test_large_logits_stay_finite():
    tf = TokenTransformer(channels=8, qk_scale=1.0)
    assert torch.isfinite(tf(torch.randn(2, 4, 8) * 1e3)).all()


def test_head_count_must_divide_widths():
    with pytest.raises(ValueError, match='num_heads'):
        TokenSelfAttention(channels=10, qk_channels=8, num_heads=3)


def test_gradients_reach_every_parameter():
    tf = TokenTransformer(channels=8, qk_channels=4, hidden_channels=16)
    tf(torch.randn(2, 5, 8)).square().sum().backward()
    for name, p in tf.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_feed_forward_is_residual_relu_mlp():
    ffn = TokenFeedForward(channels=4, hidden_channels=3)
    torch.nn.init.zeros_(ffn.fc2.weight)
    t = torch.randn(1, 2, 4)
    torch.testing.assert_close(ffn(t), t)

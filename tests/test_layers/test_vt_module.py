import pytest
import torch

from vtseg.layers import VisualTransformer


@pytest.mark.parametrize('hw', [(14, 14), (7, 23), (1, 1), (33, 5)])
@pytest.mark.parametrize('batch', [1, 3])
def test_any_size_and_batch(hw, batch):
    vt = VisualTransformer(in_channels=16, num_tokens=4, token_channels=32)
    x, t = vt(torch.randn(batch, 16, *hw))
    assert x.shape == (batch, 16, *hw) and t.shape == (batch, 4, 32)


def test_recurrent_chain_and_attention_maps():
    first = VisualTransformer(16, num_tokens=4, token_channels=32)
    second = VisualTransformer(16, token_channels=32, recurrent=True, with_projector=False)
    maps = {}
    x, t = first(torch.randn(2, 16, 5, 6), attn_maps=maps)
    assert maps['tokenizer'].shape == (2, 30, 4) and maps['projector'].shape == (2, 30, 4)
    torch.testing.assert_close(maps['tokenizer'].sum(1), torch.ones(2, 4))
    torch.testing.assert_close(maps['projector'].sum(2), torch.ones(2, 30))
    x2, t2 = second(x, t)
    assert x2 is x and t2.shape == (2, 4, 32)  # no projector: pixels pass through


def test_attention_maps_do_not_change_output():
    torch.manual_seed(0)
    vt = VisualTransformer(16, num_tokens=4, token_channels=32)
    x = torch.randn(2, 16, 6, 6)
    a = vt(x)
    b = vt(x, attn_maps={})
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


def test_bfloat16_autocast_on_cpu_matches_float32():
    torch.manual_seed(0)
    vt = VisualTransformer(32, num_tokens=8, token_channels=64)
    x = torch.randn(2, 32, 14, 14)
    ref_x, ref_t = vt(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out_x, out_t = vt(x)
    assert torch.isfinite(out_x.float()).all() and torch.isfinite(out_t.float()).all()
    torch.testing.assert_close(out_x.float(), ref_x, rtol=0.05, atol=0.05)
    torch.testing.assert_close(out_t.float(), ref_t, rtol=0.05, atol=0.05)


def test_gradients_reach_every_parameter():
    vt = VisualTransformer(8, num_tokens=3, token_channels=16)
    x, t = vt(torch.randn(2, 8, 4, 4))
    (x.square().sum() + t.square().sum()).backward()
    for name, p in vt.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name

import pytest
import torch

from vtseg.layers import VT_CFG_KEYS, VisualTransformer, check_vt_cfg, record_attention


@pytest.mark.parametrize('hw', [(14, 14), (7, 23), (1, 1), (33, 5)])
@pytest.mark.parametrize('batch', [1, 3])
def test_any_size_and_batch(hw, batch):
    vt = VisualTransformer(in_channels=16, num_tokens=4, token_channels=32)
    x, t = vt(torch.randn(batch, 16, *hw))
    assert x.shape == (batch, 16, *hw) and t.shape == (batch, 4, 32)


def test_module_is_its_three_layers_in_order():
    torch.manual_seed(0)
    vt = VisualTransformer(8, num_tokens=3, token_channels=12).double()
    x = torch.randn(2, 8, 4, 5, dtype=torch.double)
    tokens = vt.transformer(vt.tokenizer(x))
    out_x, out_t = vt(x)
    torch.testing.assert_close(out_t, tokens, rtol=0, atol=0)
    torch.testing.assert_close(out_x, vt.projector(x, tokens), rtol=0, atol=0)


def test_recurrent_chain_and_recorded_attention():
    first = VisualTransformer(16, num_tokens=4, token_channels=32)
    second = VisualTransformer(16, token_channels=32, recurrent=True, with_projector=False)
    x = torch.randn(2, 16, 5, 6)
    with record_attention(first) as attention:
        x1, t1 = first(x)
    assert attention['tokenizer'].shape == (2, 4, 5, 6) and attention['projector'].shape == (2, 4, 5, 6)
    torch.testing.assert_close(attention['tokenizer'].sum((2, 3)), torch.ones(2, 4))
    torch.testing.assert_close(attention['projector'].sum(1), torch.ones(2, 5, 6))
    x2, t2 = second(x1, t1)
    assert x2 is x1 and t2.shape == (2, 4, 32)  # no projector: pixels pass through
    with pytest.raises(ValueError, match='previous module'):
        second(x1)


def test_recording_does_not_change_output_and_stops_with_the_context():
    torch.manual_seed(0)
    vt = VisualTransformer(16, num_tokens=4, token_channels=32)
    x = torch.randn(2, 16, 6, 6)
    a = vt(x)
    with record_attention(vt) as attention, torch.no_grad():
        b = vt(x)
    assert set(attention) == {'tokenizer', 'transformer.attn', 'projector'}
    vt(x)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in vt.modules())
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


def test_gradcheck_in_float64():
    torch.manual_seed(0)
    vt = VisualTransformer(4, num_tokens=2, token_channels=6, qk_channels=2, hidden_channels=3,
                           projector_qk_channels=3).double()
    x = torch.randn(1, 4, 3, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: vt(x), (x,))


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


def test_vt_cfg_takes_the_module_options_and_names_any_other_key():
    assert check_vt_cfg(None) == {}
    options = dict(qk_channels=8, hidden_channels=16, projector_qk_channels=4, num_heads=2, qk_scale=1.0)
    assert set(options) == set(VT_CFG_KEYS)
    checked = check_vt_cfg(options)
    assert checked == options and checked is not options
    VisualTransformer(8, num_tokens=3, token_channels=16, **checked)  # every key is a module argument
    with pytest.raises(ValueError, match='vt_cfg cannot set in_channels, num_tokens: it takes qk_channels'):
        check_vt_cfg(dict(num_tokens=4, in_channels=8, qk_scale=1.0))

import pytest
import torch
import torch.nn.functional as F

from vtseg.layers import record_attention
from vtseg.models import VTFPN

IN_CHANNELS = [8, 16, 32, 64]


def pyramid(batch=2, size=32, dtype=torch.float32):
    return [torch.randn(batch, c, size // 2 ** i, size // 2 ** i, dtype=dtype) for i, c in enumerate(IN_CHANNELS)]


def make(**kwargs):
    torch.manual_seed(0)
    return VTFPN(IN_CHANNELS, out_channels=12, num_outs=kwargs.pop('num_outs', 4), num_tokens=3,
                 token_channels=20, **kwargs)


def restatement(neck, feats, **upsample):
    """Sec. 5 of the paper on FPN's laterals, written out level by level."""
    upsample = upsample or dict(mode='nearest')
    lat = [conv(x) for conv, x in zip(neck.lateral_convs, feats)]
    for i in (3, 2, 1):
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], **upsample)
    # the tokens of all levels through ONE transformer, then each level's projector
    tokens = neck.transformers[0](torch.cat([t(x) for t, x in zip(neck.tokenizers, lat)], dim=1))
    return [proj(x, t) for proj, x, t in zip(neck.projectors, lat, tokens.split(3, dim=1))]


def test_matches_a_direct_restatement_in_float64():
    neck = make().double()
    feats = pyramid(dtype=torch.double)
    for out, expected in zip(neck(feats), restatement(neck, feats)):
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('upsample_cfg', [dict(mode='bilinear', align_corners=True),
                                          dict(mode='bilinear', align_corners=False), dict(mode='nearest')])
def test_upsample_cfg_is_honoured(upsample_cfg):
    neck = make(upsample_cfg=upsample_cfg).double()
    feats = [torch.randn(1, c, s, s + 3, dtype=torch.double) for c, s in zip(IN_CHANNELS, (29, 15, 8, 4))]
    for out, expected in zip(neck(feats), restatement(neck, feats, **upsample_cfg)):
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_upsample_by_scale_factor():
    neck = make(upsample_cfg=dict(mode='nearest', scale_factor=2))
    outs = neck(pyramid(size=32))
    assert [o.shape[-1] for o in outs] == [32, 16, 8, 4]
    with pytest.raises(RuntimeError):  # a scale factor that does not fit the pyramid fails loudly
        neck([torch.randn(1, c, s, s) for c, s in zip(IN_CHANNELS, (29, 15, 8, 4))])


def test_gradcheck_in_float64():
    torch.manual_seed(0)
    neck = VTFPN([3, 4], out_channels=4, num_outs=3, num_tokens=2, token_channels=6, qk_channels=2,
                 hidden_channels=3, projector_qk_channels=3).double()
    feats = (torch.randn(1, 3, 4, 4, dtype=torch.double, requires_grad=True),
             torch.randn(1, 4, 2, 2, dtype=torch.double, requires_grad=True))
    # fast mode (random projections of the Jacobian): the full one takes minutes for the 3 outputs
    assert torch.autograd.gradcheck(lambda *f: neck(list(f)), feats, fast_mode=True)


@pytest.mark.parametrize('shared', [True, False])
def test_shared_transformer_lets_fine_levels_inform_coarse_ones(shared):
    neck = make(share_transformer=shared).eval()
    feats = pyramid()
    changed = [f.clone() for f in feats]
    changed[0] = changed[0] + torch.randn_like(changed[0])  # only the finest level changes
    with torch.no_grad():
        coarse_before, coarse_after = neck(feats)[3], neck(changed)[3]
    # FPN's top-down path only flows coarse -> fine; fine -> coarse needs the shared transformer.
    assert (not torch.allclose(coarse_before, coarse_after)) == shared
    assert len(neck.transformers) == (1 if shared else 4)


def test_extra_levels_and_recorded_attention():
    neck = make(num_outs=6)
    with record_attention(neck) as attention:
        outs = neck(pyramid(size=32))
    assert [tuple(o.shape) for o in outs] == [(2, 12, s, s) for s in (32, 16, 8, 4, 2, 1)]
    torch.testing.assert_close(outs[4], F.max_pool2d(outs[3], 1, stride=2))
    assert sorted(attention) == sorted([f'tokenizers.{i}' for i in range(4)] + [f'projectors.{i}' for i in range(4)]
                                       + ['transformers.0.attn'])
    for level in range(4):
        size = 32 // 2 ** level
        tok, proj = attention[f'tokenizers.{level}'], attention[f'projectors.{level}']
        assert tok.shape == proj.shape == (2, 3, size, size)
        torch.testing.assert_close(tok.sum((2, 3)), torch.ones(2, 3))
        torch.testing.assert_close(proj.sum(1), torch.ones(2, size, size))
    assert attention['transformers.0.attn'].shape == (2, 1, 12, 12)  # 4 levels x 3 tokens


@pytest.mark.parametrize('source', ['on_input', 'on_lateral', 'on_output'])
def test_extra_convolutions(source):
    neck = make(num_outs=6, add_extra_convs=source, relu_before_extra_convs=True)
    assert len(neck.extra_convs) == 2
    assert neck.extra_convs[0].in_channels == (64 if source == 'on_input' else 12)
    outs = neck(pyramid(size=32))
    assert [tuple(o.shape) for o in outs] == [(2, 12, s, s) for s in (32, 16, 8, 4, 2, 1)]


def test_start_and_end_level_select_the_inputs():
    neck = make(start_level=1, end_level=3, num_outs=2)
    assert [conv.in_channels for conv in neck.lateral_convs] == [16, 32]
    outs = neck(pyramid(size=32))
    assert [tuple(o.shape) for o in outs] == [(2, 12, 16, 16), (2, 12, 8, 8)]
    # levels outside the selection are not read
    feats = pyramid(size=32)
    changed = [feats[0] * 0, feats[1], feats[2], feats[3] * 0]
    for a, b in zip(neck(feats), neck(changed)):
        torch.testing.assert_close(a, b)


def test_odd_sizes_and_gradients():
    neck = make()
    feats = [torch.randn(1, c, s, s + 1) for c, s in zip(IN_CHANNELS, (29, 15, 8, 4))]
    outs = neck(feats)
    assert [o.shape[2:] for o in outs] == [f.shape[2:] for f in feats]
    sum(o.square().sum() for o in outs).backward()
    for name, p in neck.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_arguments():
    with pytest.raises(ValueError, match='built for 4 levels'):
        make()(pyramid()[:3])
    with pytest.raises(ValueError, match='num_outs'):
        VTFPN(IN_CHANNELS, 8, num_outs=2)
    with pytest.raises(ValueError, match='no extra levels'):
        VTFPN(IN_CHANNELS, 8, num_outs=4, end_level=3)
    with pytest.raises(ValueError, match='select no levels'):
        VTFPN(IN_CHANNELS, 8, num_outs=4, start_level=4)
    with pytest.raises(ValueError, match='add_extra_convs'):
        VTFPN(IN_CHANNELS, 8, num_outs=5, add_extra_convs='on_top')


# Inference writes into the laterals and adds nearest-2x upsampling as a broadcast (the neck's
# measured fast paths); these tests hold them to the plain formulation.

@pytest.mark.parametrize('args', [dict(), dict(num_outs=6, add_extra_convs='on_lateral'),
                                  dict(num_outs=5, add_extra_convs='on_input'),
                                  dict(upsample_cfg=dict(mode='bilinear', align_corners=False))])
@pytest.mark.parametrize('sizes', [(32, 16, 8, 4), (29, 15, 8, 4)])
def test_inference_equals_the_recorded_forward(args, sizes):
    neck = make(**args).eval()
    feats = [torch.randn(2, c, s, s) for c, s in zip(IN_CHANNELS, sizes)]
    copies = [f.clone() for f in feats]
    expected = neck(feats)  # autograd recording: nothing is written in place
    with torch.no_grad():
        got = neck(feats)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)
    for f, c in zip(feats, copies):
        torch.testing.assert_close(f, c, rtol=0, atol=0)  # the caller's maps are never written


def test_top_down_sum_equals_interpolation():
    neck = make()
    cases = [(torch.randn(2, 12, 16, 16), torch.randn(2, 12, 8, 8)),  # exact 2x: broadcast
             (torch.randn(1, 12, 15, 9), torch.randn(1, 12, 8, 5)),  # odd: interpolation
             (torch.randn(1, 12, 16, 16).contiguous(memory_format=torch.channels_last), torch.randn(1, 12, 8, 8))]
    for fine, coarse in cases:
        expected = fine + F.interpolate(coarse, size=fine.shape[2:], mode='nearest')
        torch.testing.assert_close(neck.add_upsampled(fine, coarse), expected, rtol=0, atol=0)
        out = neck.add_upsampled(fine, coarse, in_place=True)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        assert out.data_ptr() == fine.data_ptr()  # written into fine, no new map


def test_a_pass_through_lateral_keeps_the_callers_map():
    neck = VTFPN([12, 12], out_channels=12, num_outs=2, num_tokens=3, token_channels=20,
                 lateral_conv=lambda cin, cout: torch.nn.Identity())
    feats = [torch.randn(1, 12, 8, 8), torch.randn(1, 12, 4, 4)]
    copies = [f.clone() for f in feats]
    with torch.no_grad():
        neck(feats)
    for f, c in zip(feats, copies):
        torch.testing.assert_close(f, c, rtol=0, atol=0)

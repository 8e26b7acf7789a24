import pytest
import torch
import torch.nn.functional as F

from vtseg.models import VTFPN

IN_CHANNELS = [8, 16, 32, 64]


def pyramid(batch=2, size=32):
    return [torch.randn(batch, c, size // 2 ** i, size // 2 ** i) for i, c in enumerate(IN_CHANNELS)]


def make(**kwargs):
    torch.manual_seed(0)
    return VTFPN(IN_CHANNELS, out_channels=12, num_outs=kwargs.pop('num_outs', 4), num_tokens=3,
                 token_channels=20, **kwargs)


def test_matches_a_direct_restatement():
    neck = make().double()
    feats = [f.double() for f in pyramid()]
    # FPN laterals and top-down sum
    lat = [conv(x) for conv, x in zip(neck.lateral_convs, feats)]
    for i in (3, 2, 1):
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], mode='nearest')
    pix = [x.flatten(2).transpose(1, 2) for x in lat]
    # tokens of all levels through ONE transformer, then each level's projector
    tokens = neck.transformers[0](torch.cat([t(p) for t, p in zip(neck.tokenizers, pix)], dim=1))
    expected = [proj(p, t).transpose(1, 2).reshape(x.shape)
                for proj, p, t, x in zip(neck.projectors, pix, tokens.split(3, dim=1), lat)]
    for out, exp in zip(neck(feats), expected):
        torch.testing.assert_close(out, exp)


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


def test_extra_levels_and_attention_maps():
    neck = make(num_outs=6)
    maps = []
    outs = neck(pyramid(size=32), attn_maps=maps)
    assert [tuple(o.shape) for o in outs] == [(2, 12, s, s) for s in (32, 16, 8, 4, 2, 1)]
    assert len(maps) == 4
    for level, m in enumerate(maps):
        hw = (32 // 2 ** level) ** 2
        assert m['tokenizer'].shape == m['projector'].shape == (2, hw, 3)
        torch.testing.assert_close(m['tokenizer'].sum(1), torch.ones(2, 3))
        torch.testing.assert_close(m['projector'].sum(2), torch.ones(2, hw))


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

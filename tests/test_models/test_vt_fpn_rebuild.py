"""VTFPN(rebuild_inputs=True): in training the pre-projector maps are not kept for the
backward pass but rebuilt from the outputs; the gradients are those of the plain graph."""
import gc

import pytest
import torch
import torch.nn as nn
from torch.multiprocessing.reductions import StorageWeakRef

from vtseg.models import VTFPN

IN_CHANNELS = [8, 16, 32, 64]
SIZES = (16, 8, 4, 2)


def make(**kwargs) -> VTFPN:
    torch.manual_seed(0)
    return VTFPN(IN_CHANNELS, out_channels=12, num_outs=5, num_tokens=3, token_channels=20,
                 **kwargs).double()


def pyramid():
    torch.manual_seed(1)
    return [torch.randn(2, c, s, s, dtype=torch.float64, requires_grad=True)
            for c, s in zip(IN_CHANNELS, SIZES)]


def loss_of(outs):
    # a different weight per level and position, so every path to every input matters
    return sum((o.pow(2) * (i + 1) + o * torch.linspace(-1, 1, o.shape[-1], dtype=o.dtype)).sum()
               for i, o in enumerate(outs))


def gradients(neck: VTFPN):
    feats = pyramid()
    neck.zero_grad()
    loss_of(neck(feats)).backward()
    return [p.grad.clone() for p in neck.parameters()] + [f.grad for f in feats]


@pytest.mark.parametrize('kwargs', [dict(), dict(share_transformer=False),
                                    dict(lateral_conv=lambda cin, cout: nn.Sequential(
                                        nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU()))])
def test_gradients_equal_the_kept_maps(kwargs):
    neck = make(**kwargs).train()
    assert neck.rebuild_inputs  # the default
    rebuilt = gradients(neck)
    neck.rebuild_inputs = False
    kept = gradients(neck)
    for got, expected in zip(rebuilt, kept):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_the_pre_projector_maps_are_not_kept():
    gc.collect()
    gc.disable()
    try:
        for rebuild, kept in ((False, True), (True, False)):
            neck = make(rebuild_inputs=rebuild)
            refs = []
            add = neck._add_upsampled

            def recording_add(*args, **kw):
                out = add(*args, **kw)
                refs.append(StorageWeakRef(out.untyped_storage()))
                return out
            neck._add_upsampled = recording_add
            neck.lateral_convs[-1].register_forward_hook(  # the top level's map: no sum
                lambda module, args, out: refs.append(StorageWeakRef(out.untyped_storage())))
            outs = neck(pyramid())
            assert len(refs) == len(IN_CHANNELS)  # every level's map
            alive = [not r.expired() for r in refs]  # each map's storage
            assert alive == [kept] * len(refs)
            loss_of(outs).backward()  # and the backward pass still has what it needs
    finally:
        gc.enable()


def test_torch_func_grad_works_and_agrees():
    # torch.func refuses saved-tensor hooks: there the maps are simply kept
    neck = make()
    feats = pyramid()
    expected = torch.autograd.grad(loss_of(neck(feats)), feats[0])[0]
    got = torch.func.grad(lambda f0: loss_of(neck([f0, *feats[1:]])))(feats[0].detach())
    torch.testing.assert_close(got, expected)


def test_an_output_changed_in_place_stops_the_backward():
    neck = make()
    outs = neck(pyramid())
    with torch.no_grad():
        outs[1].mul_(2)
    with pytest.raises(RuntimeError, match='modified in place'):
        loss_of(outs).backward()


def test_pass_through_laterals_are_left_alone():
    # the maps are the caller's own tensors: nothing to drop, gradients as usual
    neck = VTFPN([12, 12], out_channels=12, num_outs=2, num_tokens=3, token_channels=20,
                 lateral_conv=lambda cin, cout: nn.Identity()).double()
    feats = [torch.randn(1, 12, 8, 8, dtype=torch.float64, requires_grad=True),
             torch.randn(1, 12, 4, 4, dtype=torch.float64, requires_grad=True)]
    grads = []
    for rebuild in (True, False):
        neck.rebuild_inputs = rebuild
        for f in feats:
            f.grad = None
        loss_of(neck(feats)).backward()
        grads.append([f.grad for f in feats])
    for got, expected in zip(*grads):
        torch.testing.assert_close(got, expected)


def test_autocast_training_rebuilds_with_the_forward_casts():
    # the backward pass runs outside the autocast region: the rebuild must cast as
    # the forward did (bfloat16 here), or its linear maps meet mixed dtypes
    torch.manual_seed(0)
    neck = VTFPN(IN_CHANNELS, out_channels=12, num_outs=4, num_tokens=3, token_channels=20)
    feats = [f.detach().float().requires_grad_() for f in pyramid()]
    grads = []
    for rebuild in (True, False):
        neck.rebuild_inputs = rebuild
        neck.zero_grad()
        for f in feats:
            f.grad = None
        with torch.autocast('cpu', dtype=torch.bfloat16):
            outs = neck(feats)
        assert outs[0].dtype == torch.bfloat16
        loss_of([o.float() for o in outs]).backward()
        grads.append([p.grad for p in neck.parameters()] + [f.grad for f in feats])
    for got, expected in zip(*grads):
        # the rebuilt maps differ from the kept ones by bfloat16 rounding (~1 ulp)
        assert (got - expected).norm() <= 2e-2 * expected.norm()

"""SavedInputRebuild: registered maps leave autograd's saved tensors and come back,
rebuilt, in the backward pass; Projector.reconstruct_input inverts the projector."""
import gc
import weakref

import pytest
import torch

from vtseg.layers import Projector, SavedInputRebuild


@pytest.fixture
def no_gc():
    """Objects must die by reference counting alone (a cycle would survive this)."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


def residual_net(x, w, v, rebuild=None):
    """``h = 2x``, ``y = h + softmax(h w) v``: h is saved by the product and the
    softmax saves its own output (the case that makes reference cycles)."""
    h = x * 2
    slot = rebuild.register(h) if rebuild is not None else None
    with rebuild if rebuild is not None else torch.enable_grad():
        a = (h @ w).softmax(-1)
        y = h + a @ v
        if slot is not None:
            slot.rebuild_from(lambda y, a, v: y - a @ v, y, a, v)
    return h, y, slot


def inputs(dtype=torch.float64):
    torch.manual_seed(0)
    x = torch.randn(5, 6, dtype=dtype, requires_grad=True)
    w = torch.randn(6, 3, dtype=dtype, requires_grad=True)
    v = torch.randn(3, 6, dtype=dtype, requires_grad=True)
    return x, w, v


def grads(rebuild):
    x, w, v = inputs()
    _, y, _ = residual_net(x, w, v, SavedInputRebuild() if rebuild else None)
    (y * torch.arange(6.0, dtype=y.dtype)).sum().backward()
    return [x.grad, w.grad, v.grad]


def test_gradients_equal_the_plain_backward():
    for got, expected in zip(grads(True), grads(False)):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_the_registered_map_is_not_kept(no_gc):
    x, w, v = inputs()
    for rebuild, kept in ((None, True), (SavedInputRebuild(), False)):
        h, y, _ = residual_net(x, w, v, rebuild)
        ref = weakref.ref(h)
        del h
        assert (ref() is not None) == kept
        del y


def test_the_docstring_example():
    x = torch.rand(3, 4, requires_grad=True)
    w, v = torch.rand(4, 2, requires_grad=True), torch.rand(2, 4)
    h = x * 2
    rebuild = SavedInputRebuild()
    slot = rebuild.register(h)
    with rebuild:
        a = h @ w
        y = h + a @ v
        slot.rebuild_from(lambda y, a, v: y - a @ v, y, a, v)
    y.sum().backward()
    torch.testing.assert_close(x.grad, 2 * (1 + (w @ v).sum(1)).expand(3, 4))


def test_nothing_outlives_the_graph(no_gc):
    """Forward only, or forward and backward: once the outputs are gone, so is the
    graph with everything the hooks stored. (Had the hook kept a saved tensor
    itself, the softmax's saved output would tie its own node into a reference
    cycle that only gc, or never, frees; the slot, referenced from that graph,
    would then still be alive.)"""
    x, w, v = inputs()
    for backward in (False, True):
        rebuild = SavedInputRebuild()
        h, y, slot = residual_net(x, w, v, rebuild)
        slot = weakref.ref(slot)
        if backward:
            y.sum().backward()
        del h, y, rebuild
        assert slot() is None


def test_a_map_that_does_not_own_its_storage_is_saved_as_usual():
    base = torch.randn(4, 6)
    assert SavedInputRebuild().register(base[1:]) is None  # a view into a larger tensor
    assert SavedInputRebuild().register(base.t()) is None  # not contiguous
    assert SavedInputRebuild().register(torch.empty(0, 6)) is None  # no memory to tell apart
    assert SavedInputRebuild().register(base) is not None


def test_not_available_inside_torch_func_transforms():
    # torch.func.grad refuses saved-tensor hooks: callers must save as usual there
    seen = []

    def loss(x):
        seen.append(SavedInputRebuild.available())
        return (x * 2).sum()
    torch.func.grad(loss)(torch.randn(3))
    assert seen == [False] and SavedInputRebuild.available()


class Wrapper(torch.Tensor):
    """A tensor subclass without a storage of its own (as DTensor and friends)."""

    @staticmethod
    def __new__(cls, elem):
        return torch.Tensor._make_wrapper_subclass(cls, elem.shape, dtype=elem.dtype,
                                                   device=elem.device)

    def __init__(self, elem):
        self.elem = elem

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        from torch.utils._pytree import tree_map
        out = func(*tree_map(lambda t: t.elem if isinstance(t, Wrapper) else t, args),
                   **tree_map(lambda t: t.elem if isinstance(t, Wrapper) else t, kwargs or {}))
        return tree_map(lambda t: Wrapper(t) if isinstance(t, torch.Tensor) else t, out)


def test_tensors_without_a_plain_storage_are_saved_as_usual():
    w = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    x = Wrapper(torch.randn(5, 6, dtype=torch.float64))
    rebuild = SavedInputRebuild()
    assert rebuild.register(x) is None
    rebuild.register(torch.randn(2, 2))  # something registered: every save is looked up
    with rebuild:
        y = (x @ w).softmax(-1)  # saves x (storage-less) and the softmax output
    y.sum().backward()
    expected = torch.autograd.grad((x.elem @ w).softmax(-1).sum(), w)[0]
    torch.testing.assert_close(getattr(w.grad, 'elem', w.grad), expected)


def test_an_output_modified_in_place_stops_the_backward():
    x, w, v = inputs()
    _, y, _ = residual_net(x, w, v, SavedInputRebuild())
    out = y * 1  # the next layer's own output: fine to change
    out.add_(1)
    with torch.no_grad():
        y.add_(1)  # but y is what h is rebuilt from
    with pytest.raises(RuntimeError, match='modified in place'):
        out.sum().backward()


def test_double_backward_is_refused():
    x, w, v = inputs()
    _, y, _ = residual_net(x, w, v, SavedInputRebuild())
    with pytest.raises(RuntimeError, match='double backward'):
        torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)


@pytest.mark.parametrize('c, c_t', [(12, 20), (16, 16)])
def test_projector_reconstructs_its_input(c, c_t):
    torch.manual_seed(0)
    proj = Projector(c, c_t).double()
    x = torch.randn(2, c, 50, dtype=torch.float64).transpose(1, 2)  # (B, HW, C) channel-major view
    tokens = torch.randn(2, 4, c_t, dtype=torch.float64)
    out, attn = proj(x, tokens, return_attn=True)
    back = proj.reconstruct_input(out, tokens, attn)
    torch.testing.assert_close(back, x, rtol=0, atol=1e-12)
    assert back.transpose(1, 2).is_contiguous()  # the layout of a (B, C, HW) map

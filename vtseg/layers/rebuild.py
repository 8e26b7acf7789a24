"""Keep a layer's input out of autograd's saved tensors; rebuild it from the output.

The projector (eq. 5 of Wu et al., arXiv 2006.03677) is a residual update of rank L:
``Y = X + V A`` with ``V = T W_V`` (C x L) and ``A`` (L x HW) the pixel-to-token
attention. In training, autograd keeps the input map ``X`` from the forward to the
backward pass, because the products that read it (tokenizer logits and pooling,
projector logits) need it for their gradients. It need not: ``X = Y - V A`` is one
product with inner size L away from ``Y``, which the next layer keeps for its own
backward anyway, and from ``V`` and ``A``, which autograd keeps anyway. For VT-FPN
that is one whole feature pyramid less at the peak of a training step, for one
small product per level in the backward pass. (FPN's 3x3 convolutions have no such
inverse.)

:class:`SavedInputRebuild` does this with autograd's saved-tensor hooks: inside its
context, a tensor saved for backward that lives in a registered map's storage is
stored as "view (size, stride, offset) of map i"; the map is rebuilt once, on first
use in the backward pass, by a function the caller registers.
"""
from typing import Callable, Dict, List, Optional, Tuple

import torch

__all__ = ['SavedInputRebuild', 'RebuildSlot']


class RebuildSlot:
    """One registered map: where it lives, and how to rebuild it.

    Created by :meth:`SavedInputRebuild.register`; call :meth:`rebuild_from` once the
    tensors the map can be rebuilt from exist (before the backward pass).
    """

    def __init__(self, x: torch.Tensor) -> None:
        self.shape = x.shape
        self.dtype = x.dtype
        self._fn: Optional[Callable[..., torch.Tensor]] = None
        self._args: List[torch.Tensor] = []
        self._versions: List[int] = []
        self._rebuilt: Optional[torch.Tensor] = None
        self._device_type = 'cpu'
        self._autocast: Tuple[bool, torch.dtype] = (False, torch.float32)

    def rebuild_from(
            self,
            fn: Callable[..., torch.Tensor],
            *tensors: torch.Tensor,
    ) -> None:
        """Register ``fn(*tensors)`` as the rebuild of the map.

        The tensors are kept detached (so the slot holds no graph: no reference
        cycle through autograd nodes) and their version counters are checked before
        the rebuild: modified in place after this call, they would rebuild a
        different map, and the backward pass stops with an error instead.

        Args:
            fn: Returns the map, contiguous, with the registered map's shape and dtype.
            tensors: Its inputs (typically the layer's output and the small factors of
                its update).
        """
        self._fn = fn
        self._args = [t.detach() for t in tensors]
        self._versions = [t._version for t in tensors]
        # The backward pass runs outside the forward's autocast region; the rebuild
        # must see the same casts as the forward did (e.g. a linear map in float16).
        self._device_type = tensors[0].device.type if tensors else 'cpu'
        self._autocast = (torch.is_autocast_enabled(self._device_type),
                          torch.get_autocast_dtype(self._device_type))

    def view(
            self,
            size: torch.Size,
            stride: Tuple[int, ...],
            offset: int,
    ) -> torch.Tensor:
        """The rebuilt map seen through one saved view of the original (built on first use)."""
        if self._rebuilt is None:
            if torch.is_grad_enabled():
                raise RuntimeError(
                    'a map rebuilt for the backward pass has no autograd history, so double '
                    'backward (create_graph=True) through it is not supported; turn the rebuild '
                    'off (VTFPN(rebuild_inputs=False)) for higher-order gradients')
            if self._fn is None:
                raise RuntimeError('SavedInputRebuild: the backward pass needs a registered map '
                                   'whose rebuild_from() was never called')
            if any(t._version != v for t, v in zip(self._args, self._versions)):
                raise RuntimeError(
                    'a tensor needed to rebuild a saved map for the backward pass (e.g. a VTFPN '
                    'output) was modified in place after the forward pass; work on a copy '
                    '(out = out.clone()) or build VTFPN with rebuild_inputs=False')
            enabled, dtype = self._autocast
            with torch.autocast(self._device_type, dtype=dtype, enabled=enabled):
                rebuilt = self._fn(*self._args)
            if rebuilt.shape != self.shape or rebuilt.dtype != self.dtype or not rebuilt.is_contiguous():
                raise RuntimeError(
                    f'SavedInputRebuild: the rebuild gave {tuple(rebuilt.shape)} {rebuilt.dtype} '
                    f'(contiguous: {rebuilt.is_contiguous()}), the map was {tuple(self.shape)} '
                    f'{self.dtype}, contiguous')
            self._rebuilt = rebuilt
        return self._rebuilt.as_strided(size, stride, offset)


def _storage_key(t: torch.Tensor) -> Optional[Tuple[int, torch.device]]:
    """Where ``t``'s memory lives, or ``None`` for tensors without a plain storage
    (wrapper subclasses such as DTensor): those are never dropped."""
    try:
        return t.untyped_storage().data_ptr(), t.device
    except (RuntimeError, NotImplementedError):
        return None


class _SavedView:
    """What autograd stores instead of a view of a registered map."""

    __slots__ = ('slot', 'size', 'stride', 'offset')

    def __init__(self, slot: RebuildSlot, t: torch.Tensor) -> None:
        self.slot = slot
        self.size, self.stride, self.offset = t.size(), t.stride(), t.storage_offset()


class SavedInputRebuild(torch.autograd.graph.saved_tensors_hooks):
    """Context manager: registered maps are not kept for backward, but rebuilt.

    Register maps with :meth:`register` before the code that saves them, run that
    forward code inside the context, and call :meth:`RebuildSlot.rebuild_from` for
    every registered map before the backward pass. Saved tensors that are not in a
    registered map are stored as usual (detached: autograd re-attaches their
    history; keeping the tensor itself would make a reference cycle through its
    own grad_fn whenever an op saves its output, leaked if backward never runs).

    The rebuilt map is computed once, with autograd off, on first use in the
    backward pass, and freed with the graph. Double backward through it is not
    supported (it has no history) and raises.

    Example:
        >>> x = torch.rand(3, 4, requires_grad=True)
        >>> w, v = torch.rand(4, 2, requires_grad=True), torch.rand(2, 4)
        >>> h = x * 2  # the map to drop: owns its storage
        >>> rebuild = SavedInputRebuild()
        >>> slot = rebuild.register(h)
        >>> with rebuild:
        ...     a = h @ w  # saves h
        ...     y = h + a @ v  # a residual update of rank 2
        ...     slot.rebuild_from(lambda y, a, v: y - a @ v, y, a, v)
        >>> y.sum().backward()
        >>> torch.allclose(x.grad, 2 * (1 + (w @ v).sum(1)).expand(3, 4))
        True
    """

    def __init__(self) -> None:
        self._slots: Dict[Tuple[int, torch.device], RebuildSlot] = {}
        super().__init__(self._pack, self._unpack)

    def __exit__(self, *exc_info) -> None:
        super().__exit__(*exc_info)
        # Packing is over. Drop the registry: the hooks (bound methods of self) and
        # self form a reference cycle, which would otherwise keep every slot, and
        # the rebuilt maps, alive after the backward pass until the next gc run.
        # From here on a slot lives exactly as long as the saved views that use it.
        self._slots.clear()

    @staticmethod
    def available() -> bool:
        """Whether saved-tensor hooks can be used here: not inside ``torch.func``
        transforms (``grad``, ``vjp``, ...), which refuse them."""
        active = getattr(torch._C, '_are_functorch_transforms_active', None)
        return not (active is not None and active())

    def register(self, x: torch.Tensor) -> Optional[RebuildSlot]:
        """Stop keeping ``x`` (and views of it) for backward.

        Args:
            x: A contiguous, non-empty map that owns its whole storage (a fresh
                result, not a view into a larger tensor: only then is every saved
                view of that storage a view of ``x``). It must stay alive while the
                context is open, so that no other tensor takes over its memory.

        Returns:
            The slot to call :meth:`RebuildSlot.rebuild_from` on, or ``None`` when
            ``x`` does not own its storage, or has no plain one (a wrapper subclass):
            it is then saved as usual.
        """
        key = _storage_key(x)
        if (key is None or x.numel() == 0 or not x.is_contiguous() or x.storage_offset() != 0
                or x.untyped_storage().nbytes() != x.numel() * x.element_size()):
            return None
        slot = RebuildSlot(x)
        self._slots[key] = slot
        return slot

    def _pack(self, t: torch.Tensor):
        if t.layout == torch.strided and self._slots:
            slot = self._slots.get(_storage_key(t))
            if slot is not None and t.dtype == slot.dtype:
                return _SavedView(slot, t)
        return t.detach()

    @staticmethod
    def _unpack(packed) -> torch.Tensor:
        if isinstance(packed, _SavedView):
            return packed.slot.view(packed.size, packed.stride, packed.offset)
        return packed

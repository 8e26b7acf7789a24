"""The attention weights of the VT layers, and how to read them.

Every VT layer turns its logits into attention weights with one
:class:`AttentionWeights` submodule, named ``attend``. Its output *is* the layer's
attention, so reading it needs nothing from the layer's ``forward``: a forward hook
on ``attend`` (PyTorch's public way to observe a submodule), or
:func:`record_attention`, which sets those hooks for a whole model. With no hook
registered the submodule costs one module call, and it works alike under
``torch.no_grad``, autocast, tracing and ONNX export.
"""
import contextlib
from typing import Dict, Iterator, Tuple

import torch
import torch.nn as nn

__all__ = ['AttentionWeights', 'record_attention']


class AttentionWeights(nn.Module):
    """``softmax(logits, dim)`` in at least float32, and in the logits' dtype when wider.

    Half-precision logits (autocast) are widened first: a softmax over thousands of
    pixels summed in bfloat16 loses the small weights that make up most of the
    attention. float64 logits stay float64, so the layers' ``gradcheck`` is exact.

    Args:
        dim: The axis the weights sum to 1 over.

    Example:
        >>> attend = AttentionWeights(dim=-1)
        >>> attend(torch.zeros(1, 2, 4, dtype=torch.bfloat16))
        tensor([[[0.2500, 0.2500, 0.2500, 0.2500],
                 [0.2500, 0.2500, 0.2500, 0.2500]]])
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """logits: any shape -> weights of the same shape, float32 or wider."""
        return logits.softmax(self.dim, dtype=torch.promote_types(logits.dtype, torch.float32))

    def extra_repr(self) -> str:
        return f'dim={self.dim}'


@contextlib.contextmanager
def record_attention(model: nn.Module) -> Iterator[Dict[str, torch.Tensor]]:
    """Record the attention of every VT layer in ``model`` while the context is open.

    Yields a dict that each forward call fills: the qualified name of the layer
    (e.g. ``'vt_modules.0.tokenizer'``, ``'projectors.2'``) -> its attention from
    the latest call, as computed (float32 or wider; part of the autograd graph when
    recording gradients). Layouts, by layer:

    - tokenizers (eq. 1, 2): ``(B, L, H, W)``, each token's weights sum to 1 over H, W;
    - projectors (eq. 5): ``(B, L, H, W)``, each pixel's weights sum to 1 over L;
    - token self-attention (eq. 3): ``(B, heads, L, L)``, rows sum to 1.

    Args:
        model: Any module that contains VT layers (a layer, a VT-ResNet, a VT-FPN,
            an mmseg segmentor).

    Example:
        >>> from vtseg.layers import VisualTransformer
        >>> vt = VisualTransformer(in_channels=32, num_tokens=4, token_channels=64)
        >>> with record_attention(vt) as attention:
        ...     _ = vt(torch.rand(2, 32, 5, 6))
        >>> {name: tuple(a.shape) for name, a in attention.items()}
        {'tokenizer': (2, 4, 5, 6), 'transformer.attn': (2, 1, 4, 4), 'projector': (2, 4, 5, 6)}
    """
    recorded: Dict[str, torch.Tensor] = {}
    spatial: Dict[str, Tuple[int, ...]] = {}  # layer name -> (H, W) of its feature-map input, this call
    handles = []

    def remember_map_size(name: str):
        def hook(layer: nn.Module, args: tuple) -> None:
            # the first input is a feature map (B, C, H, W) or tokens (B, L, C_T)
            x = args[0]
            spatial[name] = tuple(x.shape[2:]) if x.dim() == 4 else ()
        return hook

    def store(name: str):
        def hook(attend: nn.Module, args: tuple, weights: torch.Tensor) -> None:
            size = spatial.get(name, ())
            # pixel layers compute (B, L, H*W); give it back in the map's shape
            recorded[name] = weights.unflatten(-1, size) if size else weights
        return hook

    for name, module in model.named_modules():
        attend = getattr(module, 'attend', None)
        if isinstance(attend, AttentionWeights):
            handles.append(module.register_forward_pre_hook(remember_map_size(name)))
            handles.append(attend.register_forward_hook(store(name)))
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()

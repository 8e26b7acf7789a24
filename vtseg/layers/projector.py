"""Projector: fuse visual tokens back into the pixels they came from.

Equation 5 of Wu et al., "Visual Transformers" (arXiv 2006.03677), evaluated on
channel-major maps: a ``(B, C, H, W)`` map flattened to ``(B, C, HW)`` is ``X^T``.
"""
import math
from typing import Optional

import torch
import torch.nn as nn

from .attention import AttentionWeights

__all__ = ['Projector']


class Projector(nn.Module):
    """``X_out = X_in + softmax_L((X_in W_Q)(T W_K)^T) (T W_V)`` (eq. 5).

    Every pixel reads a convex mix of the L tokens. ``W_V`` maps tokens of width C_T
    back to the C pixel channels (the paper notes the need, not the form; a
    bias-free linear map here, the identity when C == C_T).

    The logits are evaluated as ``X_in (W_Q K^T)`` with ``K = T W_K``: the same
    numbers by associativity, for ``L*D*C + HW*C*L`` multiply-adds per image instead
    of ``HW*C*D + HW*D*L`` (``(X_in W_Q) K^T``). With L much smaller than D and HW,
    that is what keeps the projector cheap on large maps.

    Args:
        in_channels: Pixel channels C.
        token_channels: Token width C_T.
        qk_channels: Width D of ``W_Q: (C, D)`` and ``W_K: (C_T, D)``; defaults to C.
        qk_scale: Logit multiplier; ``None`` means ``D ** -0.5`` (see
            :class:`~vtseg.layers.TokenSelfAttention` for why), 1.0 is literal.

    Example:
        >>> proj = Projector(in_channels=256, token_channels=1024)
        >>> proj(torch.rand(2, 256, 14, 14), torch.rand(2, 16, 1024)).shape
        torch.Size([2, 256, 14, 14])
    """

    def __init__(
            self,
            in_channels: int,
            token_channels: int,
            qk_channels: Optional[int] = None,
            qk_scale: Optional[float] = None,
    ) -> None:
        super().__init__()
        qk_channels = qk_channels or in_channels
        self.scale = qk_scale if qk_scale is not None else qk_channels ** -0.5
        # W_Q is only ever used folded into per-token filters, never applied to
        # pixels, so it is a bare parameter (laid out and initialised like nn.Linear's).
        self.query_weight = nn.Parameter(torch.empty(qk_channels, in_channels))  # W_Q^T: (D, C)
        nn.init.kaiming_uniform_(self.query_weight, a=math.sqrt(5))
        self.key = nn.Linear(token_channels, qk_channels, bias=False)  # W_K
        self.value = (nn.Identity() if in_channels == token_channels
                      else nn.Linear(token_channels, in_channels, bias=False))  # W_V
        self.attend = AttentionWeights(dim=1)  # softmax over L of (B, L, HW)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, in_place: bool = False) -> torch.Tensor:
        """
        Args:
            x: Feature map ``X_in``, ``(B, C, H, W)``.
            tokens: ``(B, L, C_T)``.
            in_place: Write ``X_out`` into ``x``'s memory, for a caller that owns ``x`` and
                no longer needs it, with autograd off (see :class:`~vtseg.models.VTFPN`;
                a ``ValueError`` with autograd on).

        Returns:
            ``X_out``, ``(B, C, H, W)``. Out of place it is a new contiguous map in the
            product's dtype: under autocast a float32 ``x`` gives a half-precision result, as
            a convolution's output would (inside an autocast model ``x`` already is one). In
            place it is ``x``, in ``x``'s dtype and memory format.
        """
        if in_place and torch.is_grad_enabled():
            # autograd saves X_in for the backward pass; overwriting it would fail there, far from here
            raise ValueError('Projector(in_place=True) overwrites x, which autograd may need: run it '
                             'under torch.no_grad() or pass in_place=False')
        pixels = x.flatten(2)  # X_in^T: (B, C, H, W) -> (B, C, HW), a view
        keys = self.key(tokens)  # K = T W_K: (B, L, D)
        # scale * K W_Q^T, one C-wide filter per token: (B, L, D) @ (D, C) -> (B, L, C)
        filters = keys @ self.query_weight * self.scale
        # logits^T = K W_Q^T X_in^T: (B, L, C) @ (B, C, HW) -> (B, L, HW)
        attn = self.attend(filters @ pixels).to(x.dtype)  # A^T, softmax over L
        values = self.value(tokens).to(x.dtype).transpose(1, 2)  # (T W_V)^T: (B, C, L)
        # X_out^T = X_in^T + (T W_V)^T A^T: (B, C, L) @ (B, L, HW) -> (B, C, HW). The residual is
        # added into the product's own memory (into x's with in_place), so only one new map is made.
        # (Out of place, torch.baddbmm would first copy X_in into its result: one more pass over the map.)
        out = pixels.baddbmm_(values, attn) if in_place else torch.bmm(values, attn).add_(pixels)
        return out.view_as(x)  # (B, C, HW) -> (B, C, H, W)

"""Projector: fuse visual tokens back into the pixels they came from.

Equation 5 of Wu et al., "Visual Transformers" (arXiv 2006.03677).
"""
import math
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn

from .transformer import scaled_logits

__all__ = ['Projector']


class Projector(nn.Module):
    """``X_out = X_in + softmax_L((X_in W_Q)(T W_K)^T) (T W_V)`` (eq. 5).

    Every pixel reads a convex mix of the L tokens. ``W_V`` maps tokens of
    width C_T back to the C pixel channels (the paper notes the need, not the
    form; a bias-free linear map here, the identity when C == C_T).

    The logits are evaluated as ``X_in (W_Q K^T)`` with ``K = T W_K``: the same
    numbers by associativity, but ``HW*C*L`` multiply-adds per image instead of
    ``HW*C*D``, which is what keeps the projector cheap on large maps.

    Args:
        in_channels: Pixel channels C.
        token_channels: Token width C_T.
        qk_channels: Width D of ``W_Q: (C, D)`` and ``W_K: (C_T, D)``; defaults to C.
        qk_scale: Logit multiplier; ``None`` means ``D ** -0.5`` (see
            :class:`~vtseg.layers.TokenSelfAttention` for why), 1.0 is literal.

    Example:
        >>> proj = Projector(in_channels=256, token_channels=1024)
        >>> proj(torch.rand(2, 196, 256), torch.rand(2, 16, 1024)).shape
        torch.Size([2, 196, 256])
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
        self.query_weight = nn.Parameter(torch.empty(qk_channels, in_channels))  # W_Q^T
        nn.init.kaiming_uniform_(self.query_weight, a=math.sqrt(5))
        self.key = nn.Linear(token_channels, qk_channels, bias=False)  # W_K
        self.value = (nn.Identity() if in_channels == token_channels
                      else nn.Linear(token_channels, in_channels, bias=False))  # W_V

    def forward(
            self,
            x: torch.Tensor,
            tokens: torch.Tensor,
            return_attn: bool = False,
            overwrite_input: bool = False,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            x: Pixels, ``(B, HW, C)``.
            tokens: ``(B, L, C_T)``.
            return_attn: Also return the pixel-to-token attention ``(B, HW, L)``.
            overwrite_input: The caller no longer needs ``x``: when autograd is not
                recording (inference), the result is written into ``x``'s memory
                instead of a new map. Ignored while recording, where ``x`` is
                saved for the backward pass, and while tracing.

        Returns:
            pixels ``(B, HW, C)`` [, attention ``(B, HW, L)``, softmax over L].
        """
        keys = self.key(tokens)  # T W_K: (B, L, D)
        # (W_Q K^T)^T, one C-dim filter per token: (B, L, D) @ (D, C) -> (B, L, C)
        filters = keys @ self.query_weight.to(keys.dtype)
        # Everything below is evaluated token-/channel-major, i.e. transposed:
        # logits^T = K W_Q^T X^T and out^T = X^T + V^T A^T. With x a channel-major
        # view of a (B, C, HW) map (as VisualTransformer and VTFPN pass it) every
        # operand is then contiguous, the softmax over L is a cheap strided one
        # over a few rows, and the result is already in the layout of a
        # (B, C, H, W) map, so no (HW x C) map is copied or transposed.
        attn = scaled_logits(filters, x, self.scale)  # (B, L, C) @ (B, C, HW) -> (B, L, HW)
        attn = attn.softmax(dim=1).to(x.dtype)  # softmax over L
        values = self.value(tokens).to(x.dtype).transpose(1, 2)  # (T W_V)^T: (B, C, L)
        if torch.is_autocast_enabled(x.device.type):
            # autocast would run baddbmm, residual included, in low precision;
            # keep the residual in x's dtype.
            out = x.transpose(1, 2) + values @ attn  # (B, C, L) @ (B, L, HW) -> (B, C, HW)
        elif overwrite_input and not torch.is_grad_enabled() and not torch.jit.is_tracing():
            # In place, the residual costs no new map at all (the same sums). Not
            # while tracing for export: traced graphs do not carry writes through views.
            out = x.transpose(1, 2).baddbmm_(values, attn)  # (B, C, HW)
        else:
            # The product, then the residual added into it: one new map. (An
            # out-of-place baddbmm first copies x into its result and then runs a
            # beta=1 batched GEMM, ~2x slower on CPU for batches of small maps.)
            out = torch.bmm(values, attn).add_(x.transpose(1, 2))  # (B, C, L) @ (B, L, HW) -> (B, C, HW)
        out, attn = out.transpose(1, 2), attn.transpose(1, 2)  # (B, HW, C), (B, HW, L) views
        return (out, attn) if return_attn else out

    def reconstruct_input(
            self,
            out: torch.Tensor,
            tokens: torch.Tensor,
            attn: torch.Tensor,
    ) -> torch.Tensor:
        """Invert the residual: ``X_in = X_out - A (T W_V)``, given the attention used.

        Exact up to rounding (one ulp of ``X_out``); lets training drop ``X_in``
        from the saved tensors (see :mod:`vtseg.layers.rebuild`).

        Args:
            out: The projector's output ``(B, HW, C)``.
            tokens: The tokens it was given, ``(B, L, C_T)``.
            attn: The attention it returned, ``(B, HW, L)``.

        Returns:
            ``X_in`` ``(B, HW, C)``, a view of a contiguous ``(B, C, HW)`` map.
        """
        values = self.value(tokens).to(out.dtype).transpose(1, 2)  # (T W_V)^T: (B, C, L)
        # X_in^T = X_out^T - V^T A^T: (B, C, HW) - (B, C, L) @ (B, L, HW)
        x = torch.baddbmm(out.transpose(1, 2), values, attn.to(out.dtype).transpose(1, 2), alpha=-1)
        return x.transpose(1, 2)  # (B, C, HW) -> (B, HW, C) view

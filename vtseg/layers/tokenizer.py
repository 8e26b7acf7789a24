"""Tokenizers: group the pixels of a feature map into a few visual tokens.

Equations 1 and 2 of Wu et al., "Visual Transformers" (arXiv 2006.03677).
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn

__all__ = ['FilterTokenizer', 'RecurrentTokenizer', 'pool_pixels']


def pool_pixels(
        x: torch.Tensor,
        logits: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Turn per-pixel token logits into tokens: ``T = softmax_HW(logits)^T @ X``.

    Args:
        x: Pixels, ``(B, HW, C)``.
        logits: One logit per pixel and token, ``(B, HW, L)``.

    Returns:
        tokens ``(B, L, C)`` and the spatial attention ``A`` ``(B, HW, L)``
        (every column sums to 1 over HW).
    """
    # The softmax over HW runs along the last axis of the token-major (B, L, HW)
    # view: the tokenizers compute their logits token-major, so that view is
    # contiguous and the softmax is the fast last-axis kernel (a softmax over
    # dim 1 of a (B, HW, L) layout is several times slower on CPU).
    # It runs in float32 even under autocast: over thousands of pixels a
    # bfloat16 exponent sum loses the small weights that make up most of A.
    attn = logits.transpose(1, 2).float().softmax(dim=-1).to(x.dtype)  # (B, HW, L) -> (B, L, HW)
    # (B, L, HW) @ (B, HW, C) -> (B, L, C); x may be a channel-major view, BLAS reads it transposed.
    tokens = attn @ x
    return tokens, attn.transpose(1, 2)  # A as a (B, HW, L) view


class _Tokenizer(nn.Module):
    """Shared tail of both tokenizers: pooled pixels of width C -> tokens of width C_T.

    Pooling first and projecting afterwards is ``(A^T X) W_V = A^T (X W_V)``:
    the same tokens for ``L * C * C_T`` instead of ``HW * C * C_T`` multiply-adds.
    """

    def __init__(self, in_channels: int, token_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.token_channels = token_channels
        # With C == C_T the paper's equations need no value map; keep none.
        self.value = (nn.Identity() if in_channels == token_channels
                      else nn.Linear(in_channels, token_channels, bias=False))

    def _tokens(
            self,
            x: torch.Tensor,
            logits: torch.Tensor,
            return_attn: bool,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        tokens, attn = pool_pixels(x, logits)  # (B, L, C), (B, HW, L)
        tokens = self.value(tokens)  # (B, L, C_T)
        return (tokens, attn) if return_attn else tokens


class FilterTokenizer(_Tokenizer):
    """Filter-based tokenizer (eq. 1): ``A = softmax_HW(X W_A)``, ``T = A^T X``.

    Each of the L tokens is an attention-weighted average of the pixels; ``W_A``
    is a fixed set of L "filters", one per semantic group.

    Args:
        in_channels: Pixel channels C.
        num_tokens: Number of visual tokens L.
        token_channels: Token width C_T; pooled pixels are mapped C -> C_T by a
            bias-free linear layer when C != C_T.

    Example:
        >>> tok = FilterTokenizer(in_channels=256, num_tokens=16, token_channels=1024)
        >>> tok(torch.rand(2, 14 * 14, 256)).shape
        torch.Size([2, 16, 1024])
    """

    def __init__(
            self,
            in_channels: int,
            num_tokens: int = 16,
            token_channels: int = 1024,
    ) -> None:
        super().__init__(in_channels, token_channels)
        self.num_tokens = num_tokens
        self.filters = nn.Linear(in_channels, num_tokens, bias=False)  # W_A: (C, L)

    def forward(
            self,
            x: torch.Tensor,
            tokens: Optional[torch.Tensor] = None,
            return_attn: bool = False,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            x: Pixels, ``(B, HW, C)``.
            tokens: Ignored; present so both tokenizers share one call signature.
            return_attn: Also return the spatial attention ``A``, ``(B, HW, L)``.

        Returns:
            tokens ``(B, L, C_T)`` [, attention ``(B, HW, L)``, softmax over HW].
        """
        # X W_A evaluated token-major, (B, L, C) @ (B, C, HW) -> (B, L, HW): with x a
        # channel-major view (as VisualTransformer and VTFPN pass it) both operands
        # are contiguous, where nn.Linear on that view runs a transposed GEMM ~10x
        # slower. An explicit bmm, because matmul folds a 2-D weight that requires
        # grad into that same slow GEMM.
        filters = self.filters.weight.expand(x.shape[0], -1, -1)  # W_A^T: (L, C) -> (B, L, C)
        logits = torch.bmm(filters, x.transpose(1, 2))
        return self._tokens(x, logits.transpose(1, 2), return_attn)  # logits: (B, HW, L) view


class RecurrentTokenizer(_Tokenizer):
    """Recurrent tokenizer (eq. 2): the previous tokens choose the new groups.

    ``W_R = T_in W_TR`` (one filter per incoming token), then
    ``T = softmax_HW(X W_R^T)^T X``.

    Args:
        in_channels: Pixel channels C.
        token_channels: Width C_T of both incoming and outgoing tokens;
            ``W_TR`` maps C_T -> C so the filters live in pixel space.

    Example:
        >>> tok = RecurrentTokenizer(in_channels=256, token_channels=1024)
        >>> tok(torch.rand(2, 196, 256), torch.rand(2, 16, 1024)).shape
        torch.Size([2, 16, 1024])
    """

    def __init__(
            self,
            in_channels: int,
            token_channels: int = 1024,
    ) -> None:
        super().__init__(in_channels, token_channels)
        self.token_to_filter = nn.Linear(token_channels, in_channels, bias=False)  # W_TR

    def forward(
            self,
            x: torch.Tensor,
            tokens: Optional[torch.Tensor] = None,
            return_attn: bool = False,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            x: Pixels, ``(B, HW, C)``.
            tokens: Previous module's tokens, ``(B, L, C_T)``.
            return_attn: Also return the spatial attention ``A``, ``(B, HW, L)``.

        Returns:
            tokens ``(B, L, C_T)`` [, attention ``(B, HW, L)``, softmax over HW].
        """
        if tokens is None:
            raise ValueError('RecurrentTokenizer needs the previous module\'s tokens; '
                             'use FilterTokenizer for the first VT module')
        filters = self.token_to_filter(tokens)  # W_R: (B, L, C)
        # X W_R^T evaluated token-major (see FilterTokenizer.forward):
        # (B, L, C) @ (B, C, HW) -> (B, L, HW)
        logits = filters @ x.transpose(1, 2)
        return self._tokens(x, logits.transpose(1, 2), return_attn)  # logits: (B, HW, L) view

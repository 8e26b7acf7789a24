"""Tokenizers: group the pixels of a feature map into a few visual tokens.

Equations 1 and 2 of Wu et al., "Visual Transformers" (arXiv 2006.03677), which write
the pixels as ``X: (HW, C)``. Feature maps here are channel-major, ``(B, C, H, W)``,
so a map flattened to ``(B, C, HW)`` is ``X^T`` without a copy, and the equations are
evaluated in that transposed form.
"""
import torch
import torch.nn as nn

from .attention import AttentionWeights

__all__ = ['FilterTokenizer', 'RecurrentTokenizer']


class _Tokenizer(nn.Module):
    """What both tokenizers share: ``T = A^T X``, then C -> C_T.

    Pooling first and mapping afterwards is ``(A^T X) W_V = A^T (X W_V)``: the same
    tokens for ``L * C * C_T`` instead of ``HW * C * C_T`` multiply-adds.
    """

    def __init__(self, in_channels: int, token_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.token_channels = token_channels
        self.attend = AttentionWeights(dim=-1)  # softmax over HW
        # With C == C_T the paper's equations need no value map; keep none.
        self.value = (nn.Identity() if in_channels == token_channels
                      else nn.Linear(in_channels, token_channels, bias=False))

    def pool(self, pixels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``T = softmax_HW(X W)^T X``, mapped to width C_T.

        Args:
            pixels: ``X^T``, ``(B, C, HW)``.
            logits: ``(X W)^T``, ``(B, L, HW)``.

        Returns:
            tokens ``(B, L, C_T)``.
        """
        attn = self.attend(logits).to(pixels.dtype)  # A^T: (B, L, HW), rows sum to 1
        tokens = attn @ pixels.transpose(1, 2)  # A^T X: (B, L, HW) @ (B, HW, C) -> (B, L, C)
        return self.value(tokens)  # (B, L, C_T)


class FilterTokenizer(_Tokenizer):
    """Filter-based tokenizer (eq. 1): ``A = softmax_HW(X W_A)``, ``T = A^T X``.

    Each of the L tokens is an attention-weighted average of the pixels; ``W_A`` is
    a fixed set of L "filters", one per semantic group.

    Args:
        in_channels: Pixel channels C.
        num_tokens: Number of visual tokens L.
        token_channels: Token width C_T; pooled pixels are mapped C -> C_T by a
            bias-free linear layer when C != C_T.

    Example:
        >>> tok = FilterTokenizer(in_channels=256, num_tokens=16, token_channels=1024)
        >>> tok(torch.rand(2, 256, 14, 14)).shape
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
        self.filters = nn.Linear(in_channels, num_tokens, bias=False)  # W_A^T: (L, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: Feature map, ``(B, C, H, W)``.

        Returns:
            tokens ``(B, L, C_T)``.
        """
        pixels = x.flatten(2)  # X^T: (B, C, H, W) -> (B, C, HW), a view
        # (X W_A)^T = W_A^T X^T: (B, L, C) @ (B, C, HW) -> (B, L, HW). A batched product
        # of the expanded weight: matmul would fold a 2-D weight that requires grad into
        # one GEMM over the transposed map, which reads it with a stride of HW.
        logits = torch.bmm(self.filters.weight.expand(x.shape[0], -1, -1), pixels)
        return self.pool(pixels, logits)


class RecurrentTokenizer(_Tokenizer):
    """Recurrent tokenizer (eq. 2): the previous tokens choose the new groups.

    ``W_R = T_in W_TR`` (one filter per incoming token), then
    ``T = softmax_HW(X W_R^T)^T X``.

    Args:
        in_channels: Pixel channels C.
        token_channels: Width C_T of both incoming and outgoing tokens; ``W_TR``
            maps C_T -> C so that the filters live in pixel space.

    Example:
        >>> tok = RecurrentTokenizer(in_channels=256, token_channels=1024)
        >>> tok(torch.rand(2, 256, 14, 14), torch.rand(2, 16, 1024)).shape
        torch.Size([2, 16, 1024])
    """

    def __init__(
            self,
            in_channels: int,
            token_channels: int = 1024,
    ) -> None:
        super().__init__(in_channels, token_channels)
        self.token_to_filter = nn.Linear(token_channels, in_channels, bias=False)  # W_TR

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: Feature map, ``(B, C, H, W)``.
            tokens: The previous module's tokens, ``(B, L, C_T)``.

        Returns:
            tokens ``(B, L, C_T)``.
        """
        pixels = x.flatten(2)  # X^T: (B, C, H, W) -> (B, C, HW), a view
        filters = self.token_to_filter(tokens)  # W_R = T_in W_TR: (B, L, C)
        logits = filters @ pixels  # (X W_R^T)^T = W_R X^T: (B, L, C) @ (B, C, HW) -> (B, L, HW)
        return self.pool(pixels, logits)

"""Token transformer: self-attention and feed-forward over a few visual tokens.

Equations 3 and 4 of Wu et al., "Visual Transformers" (arXiv 2006.03677).
"""
from typing import Optional

import torch
import torch.nn as nn

from .attention import AttentionWeights

__all__ = ['TokenSelfAttention', 'TokenFeedForward', 'TokenTransformer']


class TokenSelfAttention(nn.Module):
    """Self-attention over tokens (eq. 3): ``T + softmax_L((T K)(T Q)^T) T``.

    The paper writes no value projection, no scale and no norm. We keep the first
    two choices configurable:

    * ``qk_scale``: ``None`` (default) scales logits by ``1/sqrt(d_head)``. Unscaled
      logits grow with sqrt(width): with unit-variance tokens and nn.Linear's default
      initialisation, width-512 keys and queries give logits of standard deviation ~7.5,
      which saturates the softmax and starves its gradient; pass ``qk_scale=1.0`` for
      the literal equation.
    * ``num_heads``: 1 is the paper's single attention. With h heads the key/query
      width and the (projection-free) values are split into h groups.

    Args:
        channels: Token width C_T.
        qk_channels: Width of the keys and queries (``K, Q: (C_T, qk_channels)``).
        num_heads: Attention heads; must divide ``qk_channels`` and ``channels``.
        qk_scale: Logit multiplier; ``None`` means ``(qk_channels / num_heads) ** -0.5``.

    Example:
        >>> attn = TokenSelfAttention(channels=1024, qk_channels=512)
        >>> attn(torch.rand(2, 16, 1024)).shape
        torch.Size([2, 16, 1024])
    """

    def __init__(
            self,
            channels: int,
            qk_channels: int,
            num_heads: int = 1,
            qk_scale: Optional[float] = None,
    ) -> None:
        super().__init__()
        if qk_channels % num_heads or channels % num_heads:
            raise ValueError(f'num_heads={num_heads} must divide qk_channels={qk_channels} '
                             f'and channels={channels}')
        self.num_heads = num_heads
        self.scale = qk_scale if qk_scale is not None else (qk_channels // num_heads) ** -0.5
        self.key = nn.Linear(channels, qk_channels, bias=False)  # K
        self.query = nn.Linear(channels, qk_channels, bias=False)  # Q
        self.attend = AttentionWeights(dim=-1)  # softmax over L

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        return t.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # (B, h, L, c/h)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: ``(B, L, C_T)`` -> ``(B, L, C_T)``."""
        b, n, c = tokens.shape
        # The paper's row i reads (T K)_i against every (T Q)_j: its "keys" T K play the
        # part that most transformer code calls the queries (the side the softmax rows belong to).
        keys = self._split_heads(self.key(tokens))  # T K: (B, h, L, d)
        queries = self._split_heads(self.query(tokens))  # T Q: (B, h, L, d)
        values = self._split_heads(tokens)  # T: (B, h, L, C_T/h)
        attn = self.attend(keys @ queries.transpose(-2, -1) * self.scale)  # (B, h, L, L)
        out = attn.to(values.dtype) @ values  # (B, h, L, C_T/h)
        return tokens + out.transpose(1, 2).reshape(b, n, c)  # (B, h, L, C_T/h) -> (B, L, C_T)


class TokenFeedForward(nn.Module):
    """Feed-forward over tokens (eq. 4): ``T + ReLU(T F1) F2``.

    Args:
        channels: Token width C_T.
        hidden_channels: Width of ``F1``'s output.

    Example:
        >>> ffn = TokenFeedForward(channels=1024, hidden_channels=1024)
        >>> ffn(torch.rand(2, 16, 1024)).shape
        torch.Size([2, 16, 1024])
    """

    def __init__(self, channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden_channels, bias=False)  # F1
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden_channels, channels, bias=False)  # F2

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: ``(B, L, C_T)`` -> ``(B, L, C_T)``."""
        return tokens + self.fc2(self.act(self.fc1(tokens)))


class TokenTransformer(nn.Module):
    """One transformer layer over visual tokens: eq. 3 then eq. 4.

    The tokens of several pyramid levels of an image are related by one instance
    when concatenated along L (VT-FPN); images of a batch never attend to each other.

    Args:
        channels: Token width C_T.
        qk_channels: Key/query width; defaults to ``channels // 2`` as in the
            common re-implementations of the paper.
        hidden_channels: Feed-forward width; defaults to ``channels``.
        num_heads: Attention heads (paper: 1).
        qk_scale: See :class:`TokenSelfAttention`.

    Example:
        >>> t = TokenTransformer(channels=1024)
        >>> t(torch.rand(2, 16, 1024)).shape
        torch.Size([2, 16, 1024])
    """

    def __init__(
            self,
            channels: int,
            qk_channels: Optional[int] = None,
            hidden_channels: Optional[int] = None,
            num_heads: int = 1,
            qk_scale: Optional[float] = None,
    ) -> None:
        super().__init__()
        self.attn = TokenSelfAttention(
            channels,
            qk_channels or channels // 2,
            num_heads=num_heads,
            qk_scale=qk_scale,
        )
        self.ffn = TokenFeedForward(channels, hidden_channels or channels)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: ``(B, L, C_T)`` -> ``(B, L, C_T)``."""
        return self.ffn(self.attn(tokens))

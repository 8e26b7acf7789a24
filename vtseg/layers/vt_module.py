"""The VT module: tokenizer -> token transformer -> projector, on a feature map."""
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn

from .projector import Projector
from .tokenizer import FilterTokenizer, RecurrentTokenizer
from .transformer import TokenTransformer

__all__ = ['VisualTransformer']


class VisualTransformer(nn.Module):
    """One VT module (Fig. 1 of the paper) on a ``(B, C, H, W)`` feature map.

    Args:
        in_channels: Pixel channels C of the feature map.
        num_tokens: Tokens L (filter-based tokenizer only; a recurrent one keeps
            the incoming token count).
        token_channels: Token width C_T.
        recurrent: Use the recurrent tokenizer (eq. 2), fed by the previous
            module's tokens, instead of the filter-based one (eq. 1).
        with_projector: Project the tokens back into the pixels (eq. 5). A
            classifier's last module has nothing to project into.
        qk_channels: Key/query width of the transformer (default ``C_T // 2``).
        hidden_channels: Feed-forward width of the transformer (default ``C_T``).
        projector_qk_channels: Key/query width of the projector (default C).
        num_heads: Heads of the token self-attention.
        qk_scale: Logit multiplier for transformer and projector; ``None`` is
            ``1/sqrt(width)``, ``1.0`` the literal equations.

    Example:
        >>> vt = VisualTransformer(in_channels=256, num_tokens=16, token_channels=1024)
        >>> x, tokens = vt(torch.rand(2, 256, 14, 14))
        >>> x.shape, tokens.shape
        (torch.Size([2, 256, 14, 14]), torch.Size([2, 16, 1024]))
    """

    def __init__(
            self,
            in_channels: int,
            num_tokens: int = 16,
            token_channels: int = 1024,
            recurrent: bool = False,
            with_projector: bool = True,
            qk_channels: Optional[int] = None,
            hidden_channels: Optional[int] = None,
            projector_qk_channels: Optional[int] = None,
            num_heads: int = 1,
            qk_scale: Optional[float] = None,
    ) -> None:
        super().__init__()
        self.recurrent = recurrent
        if recurrent:
            self.tokenizer = RecurrentTokenizer(in_channels, token_channels)
        else:
            self.tokenizer = FilterTokenizer(in_channels, num_tokens, token_channels)
        self.transformer = TokenTransformer(
            token_channels,
            qk_channels=qk_channels,
            hidden_channels=hidden_channels,
            num_heads=num_heads,
            qk_scale=qk_scale,
        )
        self.projector = Projector(
            in_channels,
            token_channels,
            qk_channels=projector_qk_channels,
            qk_scale=qk_scale,
        ) if with_projector else None

    def forward(
            self,
            x: torch.Tensor,
            tokens: Optional[torch.Tensor] = None,
            attn_maps: Optional[Dict[str, torch.Tensor]] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: Feature map, ``(B, C, H, W)``.
            tokens: Previous module's tokens ``(B, L, C_T)``; required when recurrent.
            attn_maps: If a dict is given, it receives ``'tokenizer'`` (``(B, HW, L)``,
                softmax over HW) and, with a projector, ``'projector'``
                (``(B, HW, L)``, softmax over L). Nothing is kept otherwise.

        Returns:
            ``(x_out, tokens_out)``: ``(B, C, H, W)`` (``x`` itself without a
            projector) and ``(B, L, C_T)``.
        """
        b, c, h, w = x.shape
        want = attn_maps is not None
        pixels = x.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, HW, C)
        out = self.tokenizer(pixels, tokens, return_attn=want)
        tokens, attn = out if want else (out, None)  # (B, L, C_T), (B, HW, L)
        if want:
            attn_maps['tokenizer'] = attn
        tokens = self.transformer(tokens)  # (B, L, C_T)
        if self.projector is None:
            return x, tokens
        out = self.projector(pixels, tokens, return_attn=want)
        pixels, attn = out if want else (out, None)  # (B, HW, C), (B, HW, L)
        if want:
            attn_maps['projector'] = attn
        x = pixels.transpose(1, 2).reshape(b, c, h, w)  # (B, HW, C) -> (B, C, H, W)
        return x, tokens

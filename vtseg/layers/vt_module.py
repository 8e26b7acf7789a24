"""The VT module: tokenizer -> token transformer -> projector, on a feature map."""
from typing import Optional, Tuple

import torch
import torch.nn as nn

from .projector import Projector
from .tokenizer import FilterTokenizer, RecurrentTokenizer
from .transformer import TokenTransformer

__all__ = ['VisualTransformer', 'VT_CFG_KEYS', 'check_vt_cfg']

#: What a model's ``vt_cfg`` may set: the VT module's arguments other than its sizes
#: (the token count and width are arguments of the models themselves).
VT_CFG_KEYS = ('qk_channels', 'hidden_channels', 'projector_qk_channels', 'num_heads', 'qk_scale')


def check_vt_cfg(vt_cfg: Optional[dict]) -> dict:
    """A copy of a model's ``vt_cfg`` (``{}`` for None).

    Raises:
        ValueError: A key that is not in :data:`VT_CFG_KEYS`.
    """
    vt_cfg = dict(vt_cfg or {})
    unknown = sorted(set(vt_cfg) - set(VT_CFG_KEYS))
    if unknown:
        raise ValueError(f'vt_cfg cannot set {", ".join(unknown)}: it takes {", ".join(VT_CFG_KEYS)} '
                         '(the token count and width are arguments of the model)')
    return vt_cfg


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
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: Feature map, ``(B, C, H, W)``.
            tokens: The previous module's tokens ``(B, L, C_T)``; required when recurrent.

        Returns:
            ``(x_out, tokens_out)``: ``(B, C, H, W)`` (``x`` itself without a
            projector) and ``(B, L, C_T)``.
        """
        if self.recurrent:
            if tokens is None:
                raise ValueError('a recurrent VT module needs the previous module\'s tokens; '
                                 'build the first module with recurrent=False')
            tokens = self.tokenizer(x, tokens)  # eq. 2: (B, L, C_T)
        else:
            tokens = self.tokenizer(x)  # eq. 1: (B, L, C_T)
        tokens = self.transformer(tokens)  # eq. 3, 4: (B, L, C_T)
        if self.projector is not None:
            x = self.projector(x, tokens)  # eq. 5: (B, C, H, W)
        return x, tokens

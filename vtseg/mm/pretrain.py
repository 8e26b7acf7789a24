"""VT-ResNet as an mmpretrain image classifier: the paper's token-pooling head.

Imported by ``import vtseg`` when mmpretrain is installed (e.g. through a
config's ``custom_imports=dict(imports=['vtseg'])``). The backbone needs no
mmpretrain wrapper: an ``ImageClassifier`` reaches the mmseg adapter through
the registry scope, and this module adds only the head::

    model = dict(
        type='ImageClassifier',
        backbone=dict(type='mmseg.VTResNet', depth=18, out_indices=(), out_tokens=True,
                      project_last=False),
        head=dict(type='TokenPoolingClsHead', num_classes=1000, in_channels=1024))

The classifier's state dict is then ``backbone.*`` (the keys of
:class:`vtseg.models.VTResNet`) plus ``head.fc.*``, so its checkpoints
initialise a segmentor's or detector's VT-ResNet through
``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``.
"""
from typing import Optional, Sequence

import torch
import torch.nn as nn
from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS

from vtseg.models import pool_tokens

__all__ = ['TokenPoolingClsHead']


@MODELS.register_module()
class TokenPoolingClsHead(ClsHead):
    """The VT-ResNet classifier (Wu et al. 2020, Sec. 4.1) as an mmpretrain head.

    Averages the backbone's last tokens over L, then one linear layer: the same
    computation as :meth:`vtseg.models.VTResNet.forward_head` (both call
    :func:`vtseg.models.pool_tokens`).

    Args:
        num_classes: Number of categories.
        in_channels: Token width C_T of the backbone.
        drop_rate: Dropout before the linear layer (0: none, the paper's
            default recipe).
        init_cfg: Initialisation of the linear layer; mmpretrain's
            ``LinearClsHead`` default.
        **kwargs: ``loss``, ``topk``, ``cal_acc`` of :class:`ClsHead`.

    Example:
        >>> head = TokenPoolingClsHead(num_classes=10, in_channels=1024)
        >>> head((torch.rand(2, 16, 1024),)).shape
        torch.Size([2, 10])
    """

    def __init__(
            self,
            num_classes: int,
            in_channels: int = 1024,
            drop_rate: float = 0.0,
            init_cfg: Optional[dict] = dict(type='Normal', layer='Linear', std=0.01),
            **kwargs,
    ) -> None:
        super().__init__(init_cfg=init_cfg, **kwargs)
        if num_classes <= 0:
            raise ValueError(f'num_classes must be positive, got {num_classes}')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels, num_classes)

    def pre_logits(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Backbone outputs, the last being tokens ``(B, L, C_T)`` -> pooled ``(B, C_T)``."""
        tokens = feats[-1]
        if tokens.dim() != 3 or tokens.size(-1) != self.in_channels:
            raise ValueError(
                f'TokenPoolingClsHead reads tokens (B, L, {self.in_channels}) as the last backbone '
                f'output but got shape {tuple(tokens.shape)}; build the backbone with '
                f'out_tokens=True and set in_channels to its token_channels')
        return pool_tokens(tokens)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Backbone outputs -> logits ``(B, num_classes)``."""
        return self.fc(self.drop(self.pre_logits(feats)))

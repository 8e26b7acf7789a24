"""VT-ResNet as an mmseg backbone, registered as ``VTResNet``: VT-ResNet stages for decode heads and necks."""
import copy
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from mmseg.registry import MODELS
from vtseg.models.vt_resnet import VTResNet

__all__ = ['VTResNetBackbone']


@MODELS.register_module(name='VTResNet')
class VTResNetBackbone(VTResNet, BaseModule):
    """VT-ResNet backbone for dense prediction (registered in mmseg's ``MODELS`` as ``VTResNet``).

    The same module as :class:`vtseg.models.VTResNet` (same parameter names, so
    torchvision ResNet weights and VT-ResNet classifier checkpoints load through
    ``init_cfg``), built without a classifier and with a projector in the last
    VT module. Outputs, by index:

    ==== ===================================== ========= ===================
    idx  map                                    stride    channels (R18/R50)
    ==== ===================================== ========= ===================
    0    stage 2 (``layer1``)                  4         64 / 256
    1    stage 3 (``layer2``)                  8         128 / 512
    2    stage 4 (``layer3``)                  16        256 / 1024
    3    VT-enhanced stage 4 (last projector)  16        256 / 1024
    ==== ===================================== ========= ===================

    Args:
        depth: 18, 34, 50 or 101.
        num_tokens: Visual tokens per VT module.
        token_channels: Token width C_T.
        out_indices: Which of the maps above to return.
        out_tokens: Also return the last tokens ``(B, L, C_T)`` as the final
            element (what a token-pooling classification head reads).
        project_last: Give the last VT module a projector (map 3). A
            classifier (``out_indices=(), out_tokens=True``) reads only the
            tokens, so it sets False and has no unused parameters; map 3 then
            equals map 2.
        frozen_stages: Stages with frozen parameters and BN statistics: -1 none,
            0 the stem, ``i`` the stem and stages ``layer1``..``layer{i}``
            (1-3), 4 also the VT modules.
        norm_cfg: Normalisation of the ResNet stages (e.g. ``dict(type='SyncBN')``).
        norm_eval: Keep BN layers in eval mode (frozen statistics) while training.
        vt_cfg: Overrides of the VT module widths (see ``vtseg.models.vt_resnet.arch_settings``).
        pretrained: Deprecated shortcut for ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
        init_cfg: mmengine initialisation config, e.g.
            ``dict(type='Pretrained', checkpoint='torchvision://resnet50')``.

    Example:
        >>> import torch
        >>> from vtseg.mm import VTResNetBackbone
        >>> model = VTResNetBackbone(depth=18).eval()
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 64, 64))]
        [(1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4), (1, 256, 4, 4)]
    """

    def __init__(
            self,
            depth: int,
            num_tokens: int = 16,
            token_channels: int = 1024,
            out_indices: Sequence[int] = (0, 1, 2, 3),
            out_tokens: bool = False,
            project_last: bool = True,
            frozen_stages: int = -1,
            norm_cfg: dict = dict(type='BN', requires_grad=True),
            norm_eval: bool = False,
            vt_cfg: Optional[dict] = None,
            pretrained: Optional[str] = None,
            init_cfg: Optional[dict] = None,
    ) -> None:
        VTResNet.__init__(
            self,
            depth=depth,
            num_classes=0,
            num_tokens=num_tokens,
            token_channels=token_channels,
            project_last=project_last,
            norm_layer=lambda channels: build_norm_layer(norm_cfg, channels)[1],
            vt_cfg=vt_cfg,
        )
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError('give init_cfg or pretrained, not both')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        self.init_cfg = copy.deepcopy(init_cfg)
        if any(not 0 <= i < 4 for i in out_indices):
            raise ValueError(f'out_indices must lie in 0..3, got {tuple(out_indices)}')
        if not out_indices and not out_tokens:
            raise ValueError('VTResNet would output nothing: give out_indices or set '
                             'out_tokens=True')
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f'frozen_stages must lie in -1..4, got {frozen_stages}')
        self.out_indices = tuple(out_indices)
        self.out_tokens = out_tokens
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self._freeze_stages()

    def _frozen_modules(self):
        stages = [nn.ModuleList([self.conv1, self.bn1]), self.layer1, self.layer2, self.layer3,
                  self.vt_modules]
        return stages[:self.frozen_stages + 1]

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'VTResNetBackbone':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """x: ``(B, 3, H, W)`` -> the maps of ``out_indices`` [+ tokens ``(B, L, C_T)``]."""
        feats, tokens = self.forward_features(x)
        outs = [feats[i] for i in self.out_indices]
        if self.out_tokens:
            outs.append(tokens)
        return tuple(outs)

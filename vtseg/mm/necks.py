"""``VTFPN`` as an mmseg neck: a drop-in replacement for mmseg's ``FPN``."""
import copy
from typing import Optional, Sequence

from mmcv.cnn import ConvModule
from mmengine.model import BaseModule

from mmseg.registry import MODELS
from vtseg.models import vt_fpn

__all__ = ['VTFPN']


@MODELS.register_module()
class VTFPN(vt_fpn.VTFPN, BaseModule):
    """VT-FPN neck (registered in mmseg's ``MODELS``); see :class:`vtseg.models.VTFPN`.

    Takes mmseg ``FPN``'s core arguments, so a Semantic FPN config switches by
    changing ``type='FPN'`` to ``type='VTFPN'``; the VT arguments are extra.

    Args:
        in_channels: Channels of each input level.
        out_channels: Channels of every output level.
        num_outs: Number of output levels (extra levels are max-pooled).
        num_tokens: Visual tokens per level (paper: 8).
        token_channels: Token width (paper: 1024).
        share_transformer: One transformer across all levels (paper) or one per level.
        add_extra_convs: Only ``False`` (FPN's default) is supported.
        conv_cfg: Convolution config of the lateral convolutions.
        norm_cfg: Normalisation after the lateral convolutions (FPN default: none).
        act_cfg: Activation after the lateral convolutions (FPN default: none).
        upsample_cfg: Interpolation of the top-down pathway (FPN's ``mode`` key).
        rebuild_inputs: In training, rebuild each level's pre-projector map in the
            backward pass from the level's output instead of keeping it (one feature
            pyramid less memory; see :class:`vtseg.models.VTFPN`). Turn off if a head
            modifies the neck outputs in place, or for double backward.
        vt_cfg: Extra token-transformer/projector arguments (``qk_channels``,
            ``hidden_channels``, ``projector_qk_channels``, ``num_heads``, ``qk_scale``).
        init_cfg: mmengine initialisation config (FPN's default: Xavier on convs).

    Example:
        >>> import torch
        >>> from vtseg.mm import VTFPN
        >>> neck = VTFPN(in_channels=[64, 128, 256, 256], out_channels=64, num_outs=4)
        >>> feats = [torch.rand(1, 64, 32, 32), torch.rand(1, 128, 16, 16),
        ...          torch.rand(1, 256, 8, 8), torch.rand(1, 256, 8, 8)]
        >>> [tuple(o.shape) for o in neck(feats)]
        [(1, 64, 32, 32), (1, 64, 16, 16), (1, 64, 8, 8), (1, 64, 8, 8)]
    """

    def __init__(
            self,
            in_channels: Sequence[int],
            out_channels: int,
            num_outs: int,
            num_tokens: int = 8,
            token_channels: int = 1024,
            share_transformer: bool = True,
            add_extra_convs: bool = False,
            conv_cfg: Optional[dict] = None,
            norm_cfg: Optional[dict] = None,
            act_cfg: Optional[dict] = None,
            upsample_cfg: dict = dict(mode='nearest'),
            rebuild_inputs: bool = True,
            vt_cfg: Optional[dict] = None,
            init_cfg: Optional[dict] = dict(type='Xavier', layer='Conv2d', distribution='uniform'),
    ) -> None:
        if add_extra_convs:
            raise NotImplementedError('VTFPN supports add_extra_convs=False only (extra levels '
                                      'are max-pooled); Semantic FPN configs do not use it')

        def lateral_conv(cin: int, cout: int) -> ConvModule:
            return ConvModule(cin, cout, 1, conv_cfg=conv_cfg, norm_cfg=norm_cfg,
                              act_cfg=act_cfg, inplace=False)

        super().__init__(
            in_channels,
            out_channels,
            num_outs,
            num_tokens=num_tokens,
            token_channels=token_channels,
            share_transformer=share_transformer,
            lateral_conv=lateral_conv,
            upsample_mode=upsample_cfg.get('mode', 'nearest'),
            rebuild_inputs=rebuild_inputs,
            **(vt_cfg or {}),
        )
        self.init_cfg = copy.deepcopy(init_cfg)

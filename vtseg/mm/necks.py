"""VT-FPN as an mmseg neck, registered as ``VTFPN``: a drop-in replacement for mmseg's ``FPN``."""
import copy
from typing import List, Optional, Union

from mmcv.cnn import ConvModule
from mmengine.model import BaseModule

from mmseg.registry import MODELS
from vtseg.layers import check_vt_cfg
from vtseg.models.vt_fpn import VTFPN

__all__ = ['VTFPNNeck']


@MODELS.register_module(name='VTFPN')
class VTFPNNeck(VTFPN, BaseModule):
    """:class:`vtseg.models.VTFPN` with mmseg ``FPN``'s arguments and ``init_cfg``.

    Every argument of mmseg 1.2.2's ``FPN.__init__`` is accepted, so a Semantic FPN
    or UPerNet-style config switches by changing ``type='FPN'`` to ``type='VTFPN'``;
    the token arguments are extra. What FPN does with its 3x3 output convolutions,
    VT-FPN does with tokens. So ``conv_cfg``, ``norm_cfg`` and ``act_cfg`` apply to the
    convolutions both have, the lateral and extra ones, and not after the outputs:
    where FPN's output convolutions end in a norm and an activation, VT-FPN's outputs
    are the projections, ``X + A (T W_V)``, of lateral maps that had them.

    Args:
        in_channels: Channels of each input level.
        out_channels: Channels of every output level.
        num_outs: Number of output levels.
        start_level: First input level used.
        end_level: One past the last input level used (-1: all); no extra levels then.
        add_extra_convs: Extra levels by stride-2 3x3 convolutions
            (``'on_input'``, ``'on_lateral'``, ``'on_output'`` or ``True``) instead
            of max-pooling (``False``, FPN's default).
        extra_convs_on_inputs: FPN's older spelling: with ``add_extra_convs=True``,
            ``True`` means ``'on_input'``, ``False`` ``'on_output'``.
        relu_before_extra_convs: ReLU before every extra convolution but the first.
        no_norm_on_lateral: No ``norm_cfg`` layer after the lateral convolutions.
        conv_cfg: Convolution config of the lateral and extra convolutions.
        norm_cfg: Normalisation after them (FPN default: none).
        act_cfg: Activation after them (FPN default: none).
        upsample_cfg: ``F.interpolate`` arguments of the top-down pathway (``mode``,
            ``align_corners``, or ``scale_factor`` instead of the finer level's size).
        num_tokens: Visual tokens per level (paper: 8).
        token_channels: Token width (paper: 1024).
        share_transformer: One transformer across all levels (paper) or one per level.
        vt_cfg: Extra token-transformer/projector arguments (``qk_channels``,
            ``hidden_channels``, ``projector_qk_channels``, ``num_heads``, ``qk_scale``).
        init_cfg: mmengine initialisation config (FPN's default: Xavier on convs).

    Example:
        >>> import torch
        >>> from vtseg.mm import VTFPNNeck
        >>> neck = VTFPNNeck(in_channels=[64, 128, 256, 256], out_channels=64, num_outs=4)
        >>> feats = [torch.rand(1, 64, 32, 32), torch.rand(1, 128, 16, 16),
        ...          torch.rand(1, 256, 8, 8), torch.rand(1, 256, 8, 8)]
        >>> [tuple(o.shape) for o in neck(feats)]
        [(1, 64, 32, 32), (1, 64, 16, 16), (1, 64, 8, 8), (1, 64, 8, 8)]
    """

    def __init__(
            self,
            in_channels: List[int],
            out_channels: int,
            num_outs: int,
            start_level: int = 0,
            end_level: int = -1,
            add_extra_convs: Union[bool, str] = False,
            extra_convs_on_inputs: bool = False,
            relu_before_extra_convs: bool = False,
            no_norm_on_lateral: bool = False,
            conv_cfg: Optional[dict] = None,
            norm_cfg: Optional[dict] = None,
            act_cfg: Optional[dict] = None,
            upsample_cfg: dict = dict(mode='nearest'),
            num_tokens: int = 8,
            token_channels: int = 1024,
            share_transformer: bool = True,
            vt_cfg: Optional[dict] = None,
            init_cfg: Optional[dict] = dict(type='Xavier', layer='Conv2d', distribution='uniform'),
    ) -> None:
        if add_extra_convs is True:
            add_extra_convs = 'on_input' if extra_convs_on_inputs else 'on_output'

        def lateral_conv(cin: int, cout: int) -> ConvModule:
            return ConvModule(cin, cout, 1, conv_cfg=conv_cfg,
                              norm_cfg=None if no_norm_on_lateral else norm_cfg,
                              act_cfg=act_cfg, inplace=False)

        def extra_conv(cin: int, cout: int) -> ConvModule:
            return ConvModule(cin, cout, 3, stride=2, padding=1, conv_cfg=conv_cfg,
                              norm_cfg=norm_cfg, act_cfg=act_cfg, inplace=False)

        VTFPN.__init__(
            self,
            in_channels,
            out_channels,
            num_outs,
            start_level=start_level,
            end_level=end_level,
            add_extra_convs=add_extra_convs,
            relu_before_extra_convs=relu_before_extra_convs,
            num_tokens=num_tokens,
            token_channels=token_channels,
            share_transformer=share_transformer,
            upsample_cfg=upsample_cfg,
            lateral_conv=lateral_conv,
            extra_conv=extra_conv,
            **check_vt_cfg(vt_cfg),
        )
        self.init_cfg = copy.deepcopy(init_cfg)

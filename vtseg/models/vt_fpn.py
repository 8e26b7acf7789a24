"""VT-FPN: a feature pyramid whose 3x3 convolutions are replaced by visual tokens.

Wu et al., "Visual Transformers" (arXiv 2006.03677), Sec. 5: from each pyramid
level extract a few visual tokens, relate the tokens of all levels with one
shared transformer, and project them back into each level's feature map.
Compared with FPN's 3x3 output convolutions (most of its cost) the token work
scales with ``HW * C * L`` instead of ``HW * C * C * 9``.
"""
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from vtseg.layers import FilterTokenizer, Projector, TokenTransformer

__all__ = ['VTFPN']

ConvFactory = Callable[[int, int], nn.Module]


def conv1x1(in_channels: int, out_channels: int) -> nn.Module:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1)


def conv3x3_stride2(in_channels: int, out_channels: int) -> nn.Module:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1)


class VTFPN(nn.Module):
    """FPN's lateral 1x1 convolutions and top-down sum, then tokens per level, one
    transformer across levels, and a projector per level (where FPN has its 3x3
    output convolutions).

    The level selection and the extra levels follow mmseg's ``FPN`` argument for
    argument, so that VT-FPN replaces it in any config.

    Args:
        in_channels: Channels of each input level (e.g. ``[256, 512, 1024, 2048]``).
        out_channels: Channels of every output level.
        num_outs: Output levels. Levels past the used inputs are max-pooled from the
            last output with stride 2, or made by ``add_extra_convs``.
        start_level: First input level used.
        end_level: One past the last input level used; -1 means all. With an
            ``end_level`` there are no extra levels (``num_outs == end_level - start_level``).
        add_extra_convs: Extra levels by stride-2 3x3 convolutions instead of
            max-pooling, on ``'on_input'`` (the last used input), ``'on_lateral'``
            (its lateral map) or ``'on_output'`` (its output); ``True`` is ``'on_output'``.
        relu_before_extra_convs: Apply ReLU before every extra convolution but the first.
        num_tokens: Visual tokens per level (paper: 8).
        token_channels: Token width C_T (paper: 1024).
        share_transformer: Relate the tokens of all levels in one transformer
            (paper); ``False`` gives each level its own transformer.
        qk_channels: Transformer key/query width (default ``C_T // 2``).
        hidden_channels: Transformer feed-forward width (default ``C_T``).
        projector_qk_channels: Projector key/query width (default ``out_channels``).
        num_heads: Heads of the token self-attention.
        qk_scale: Attention logit multiplier; ``None`` is ``1/sqrt(width)``.
        upsample_cfg: Keyword arguments of ``F.interpolate`` for the top-down pathway
            (``mode``, ``align_corners``, or ``scale_factor`` instead of the finer
            level's size), as in mmseg's ``FPN``.
        lateral_conv: ``f(in_channels, out_channels) -> nn.Module`` building each
            lateral 1x1 convolution (the mmseg adapter adds norm/activation here).
        extra_conv: ``f(in_channels, out_channels) -> nn.Module`` building each
            stride-2 extra convolution.

    Example:
        >>> neck = VTFPN(in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=4)
        >>> feats = [torch.rand(1, c, 128 // 2**i, 128 // 2**i)
        ...          for i, c in enumerate([256, 512, 1024, 2048])]
        >>> [tuple(o.shape) for o in neck(feats)]
        [(1, 256, 128, 128), (1, 256, 64, 64), (1, 256, 32, 32), (1, 256, 16, 16)]
    """

    def __init__(
            self,
            in_channels: Sequence[int],
            out_channels: int,
            num_outs: int,
            start_level: int = 0,
            end_level: int = -1,
            add_extra_convs: Union[bool, str] = False,
            relu_before_extra_convs: bool = False,
            num_tokens: int = 8,
            token_channels: int = 1024,
            share_transformer: bool = True,
            qk_channels: Optional[int] = None,
            hidden_channels: Optional[int] = None,
            projector_qk_channels: Optional[int] = None,
            num_heads: int = 1,
            qk_scale: Optional[float] = None,
            upsample_cfg: Optional[dict] = None,
            lateral_conv: ConvFactory = conv1x1,
            extra_conv: ConvFactory = conv3x3_stride2,
    ) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.start_level = start_level
        self.end_level = len(self.in_channels) if end_level == -1 else end_level
        if not 0 <= start_level < self.end_level <= len(self.in_channels):
            raise ValueError(f'start_level={start_level}, end_level={end_level} select no levels '
                             f'of the {len(self.in_channels)} inputs')
        levels = self.end_level - start_level
        if end_level != -1 and num_outs != levels:
            raise ValueError(f'with end_level={end_level} there are no extra levels: num_outs must be '
                             f'{levels}, got {num_outs}')
        if num_outs < levels:
            raise ValueError(f'num_outs={num_outs} is smaller than the {levels} input levels used')
        if add_extra_convs is True:
            add_extra_convs = 'on_output'
        if add_extra_convs not in (False, 'on_input', 'on_lateral', 'on_output'):
            raise ValueError(f"add_extra_convs must be False, True, 'on_input', 'on_lateral' or "
                             f"'on_output', got {add_extra_convs!r}")
        self.add_extra_convs = add_extra_convs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.upsample_cfg = dict(mode='nearest') if upsample_cfg is None else dict(upsample_cfg)
        self.num_tokens = num_tokens
        self.share_transformer = share_transformer

        self.lateral_convs = nn.ModuleList(
            lateral_conv(c, out_channels) for c in self.in_channels[start_level:self.end_level])
        self.tokenizers = nn.ModuleList(
            FilterTokenizer(out_channels, num_tokens, token_channels) for _ in range(levels))
        self.transformers = nn.ModuleList(
            TokenTransformer(token_channels, qk_channels=qk_channels, hidden_channels=hidden_channels,
                             num_heads=num_heads, qk_scale=qk_scale)
            for _ in range(1 if share_transformer else levels))
        self.projectors = nn.ModuleList(
            Projector(out_channels, token_channels, qk_channels=projector_qk_channels, qk_scale=qk_scale)
            for _ in range(levels))
        extra_in = [self.in_channels[self.end_level - 1] if i == 0 and add_extra_convs == 'on_input'
                    else out_channels for i in range(num_outs - levels)]
        self.extra_convs = nn.ModuleList(
            extra_conv(c, out_channels) for c in (extra_in if add_extra_convs else []))

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        """
        Args:
            inputs: One map per input level, ``(B, C_i, H_i, W_i)``, finest first.

        Returns:
            ``num_outs`` maps ``(B, out_channels, H_i, W_i)``.
        """
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'VTFPN was built for {len(self.in_channels)} levels, '
                             f'got {len(inputs)} feature maps')
        used = inputs[self.start_level:self.end_level]
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, used)]  # (B, C, H_i, W_i)
        # Inference writes the top-down sums and the projections into the lateral maps: this
        # forward made them and nothing else reads them (unless a pass-through lateral handed
        # back the caller's map, or an extra level reads the last lateral), so no second and
        # third pyramid is allocated. Measured gain in benchmarks/README.md. Not while tracing:
        # traced graphs do not record writes into views.
        in_place = (not torch.is_grad_enabled() and not torch.jit.is_tracing()
                    and self.add_extra_convs != 'on_lateral'
                    and all(lateral is not x for lateral, x in zip(laterals, used)))
        for i in range(len(laterals) - 1, 0, -1):  # top-down: coarse into fine
            laterals[i - 1] = self.add_upsampled(laterals[i - 1], laterals[i], in_place)

        tokens = [tokenize(x) for tokenize, x in zip(self.tokenizers, laterals)]  # (B, L, C_T) each
        if self.share_transformer:
            related = self.transformers[0](torch.cat(tokens, dim=1))  # all levels: (B, levels*L, C_T)
            tokens = related.split(self.num_tokens, dim=1)  # levels x (B, L, C_T)
        else:
            tokens = [transform(t) for transform, t in zip(self.transformers, tokens)]
        outs = [project(x, t, in_place) for project, x, t in zip(self.projectors, laterals, tokens)]
        return tuple(outs + self.extra_levels(used[-1], laterals[-1], outs[-1]))  # (B, C, H_i, W_i) each

    def add_upsampled(self, fine: torch.Tensor, coarse: torch.Tensor, in_place: bool = False) -> torch.Tensor:
        """FPN's top-down step: ``fine + interpolate(coarse, size of fine, **upsample_cfg)``.

        In place (the inference fast path), nearest upsampling by exactly 2 (every level of an
        even-sized image) is added as a broadcast over a ``(B, C, h, 2, W)`` view of ``fine``:
        the same sums, and no upsampled map is made (only one of half its size).

        Args:
            fine: ``(B, C, H, W)``.
            coarse: ``(B, C, h, w)``.
            in_place: Write the sum into ``fine``.

        Returns:
            ``(B, C, H, W)``.
        """
        b, c, h, w = coarse.shape
        if in_place and self.upsample_cfg == dict(mode='nearest') and fine.shape[2:] == (2 * h, 2 * w) \
                and fine.is_contiguous():
            # each coarse column twice, made: (B, C, h, w) -> (B, C, h, w, 2) -> (B, C, h, 1, 2w);
            # each row twice, a broadcast over (B, C, H, W) viewed as (B, C, h, 2, 2w). (Broadcasting
            # the columns too would leave an innermost loop of 2 elements, several times slower.)
            columns = coarse.unsqueeze(-1).expand(b, c, h, w, 2).reshape(b, c, h, 1, 2 * w)
            fine.view(b, c, h, 2, 2 * w).add_(columns)
            return fine
        if 'scale_factor' in self.upsample_cfg:  # as mmseg's FPN: a fixed factor instead of a size
            up = F.interpolate(coarse, **self.upsample_cfg)
        else:
            up = F.interpolate(coarse, size=fine.shape[2:], **self.upsample_cfg)
        return fine.add_(up) if in_place else fine + up

    def extra_levels(
            self,
            last_input: torch.Tensor,
            last_lateral: torch.Tensor,
            last_output: torch.Tensor,
    ) -> List[torch.Tensor]:
        """The ``num_outs - levels`` coarser maps: max-pooled, or by the extra convolutions.

        Args:
            last_input: The last used input level, ``(B, C_in, H, W)``.
            last_lateral: Its lateral map, ``(B, C, H, W)``.
            last_output: Its output, ``(B, C, H, W)``.

        Returns:
            ``(B, C, H / 2^k, W / 2^k)`` for k = 1 .. ``num_outs - levels`` (rounded up).
        """
        extra: List[torch.Tensor] = []
        num_extra = self.num_outs - len(self.projectors)
        if not self.add_extra_convs:
            for _ in range(num_extra):
                extra.append(F.max_pool2d((extra or [last_output])[-1], 1, stride=2))
            return extra
        source = {'on_input': last_input, 'on_lateral': last_lateral, 'on_output': last_output}
        extra.append(self.extra_convs[0](source[self.add_extra_convs]))
        for conv in self.extra_convs[1:]:
            extra.append(conv(F.relu(extra[-1]) if self.relu_before_extra_convs else extra[-1]))
        return extra

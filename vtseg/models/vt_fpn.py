"""VT-FPN: a feature pyramid whose 3x3 convolutions are replaced by visual tokens.

Wu et al., "Visual Transformers" (arXiv 2006.03677), Sec. 5: from each pyramid
level extract a few visual tokens, relate the tokens of all levels with one
shared transformer, and project them back into each level's feature map.
Compared with FPN's 3x3 output convolutions (most of its cost) the token work
scales with ``HW * C * L`` instead of ``HW * C * C * 9``.
"""
import contextlib
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from vtseg.layers import FilterTokenizer, Projector, TokenTransformer
from vtseg.layers.rebuild import RebuildSlot, SavedInputRebuild

__all__ = ['VTFPN']


def _conv1x1(in_channels: int, out_channels: int) -> nn.Module:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1)


class VTFPN(nn.Module):
    """Lateral 1x1 convolutions and FPN's top-down sum, then tokens per level,
    one transformer across levels, and a projector per level.

    Args:
        in_channels: Channels of each input level (e.g. ``[256, 512, 1024, 2048]``).
        out_channels: Channels of every output level.
        num_outs: Output levels; levels past the inputs are max-pooled from the
            last one with stride 2, as mmseg's ``FPN`` does without extra convs.
        num_tokens: Visual tokens per level (paper: 8).
        token_channels: Token width C_T (paper: 1024).
        share_transformer: Relate the tokens of all levels in one transformer
            (paper); ``False`` gives each level its own transformer.
        qk_channels: Transformer key/query width (default ``C_T // 2``).
        hidden_channels: Transformer feed-forward width (default ``C_T``).
        projector_qk_channels: Projector key/query width (default ``out_channels``).
        num_heads: Heads of the token self-attention.
        qk_scale: Attention logit multiplier; ``None`` is ``1/sqrt(width)``.
        lateral_conv: ``f(in_channels, out_channels) -> nn.Module`` building each
            lateral 1x1 convolution (the mmseg adapter adds norm/activation here).
        upsample_mode: Interpolation of the top-down pathway.
        rebuild_inputs: In training, do not keep each level's pre-projector map for
            the backward pass; rebuild it there from the level's output, which the
            head keeps anyway, as ``X = Y - A (T W_V)`` (see
            :mod:`vtseg.layers.rebuild`). One feature pyramid less at the peak of a
            training step, for one rank-L product per level; gradients equal up to
            rounding. Outputs must then not be modified in place before backward
            (that raises), and double backward is unsupported.

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
            num_tokens: int = 8,
            token_channels: int = 1024,
            share_transformer: bool = True,
            qk_channels: Optional[int] = None,
            hidden_channels: Optional[int] = None,
            projector_qk_channels: Optional[int] = None,
            num_heads: int = 1,
            qk_scale: Optional[float] = None,
            lateral_conv: Callable[[int, int], nn.Module] = _conv1x1,
            upsample_mode: str = 'nearest',
            rebuild_inputs: bool = True,
    ) -> None:
        super().__init__()
        if num_outs < len(in_channels):
            raise ValueError(f'num_outs={num_outs} is smaller than the {len(in_channels)} input levels')
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.num_tokens = num_tokens
        self.share_transformer = share_transformer
        self.upsample_mode = upsample_mode
        self.rebuild_inputs = rebuild_inputs
        levels = len(in_channels)

        self.lateral_convs = nn.ModuleList(lateral_conv(c, out_channels) for c in in_channels)
        self.tokenizers = nn.ModuleList(
            FilterTokenizer(out_channels, num_tokens, token_channels) for _ in range(levels))

        def transformer() -> TokenTransformer:
            return TokenTransformer(
                token_channels,
                qk_channels=qk_channels,
                hidden_channels=hidden_channels,
                num_heads=num_heads,
                qk_scale=qk_scale,
            )
        self.transformers = nn.ModuleList(
            transformer() for _ in range(1 if share_transformer else levels))
        self.projectors = nn.ModuleList(
            Projector(out_channels, token_channels, qk_channels=projector_qk_channels,
                      qk_scale=qk_scale) for _ in range(levels))

    def _add_upsampled(
            self,
            fine: torch.Tensor,
            coarse: torch.Tensor,
            overwrite_fine: bool = False,
    ) -> torch.Tensor:
        """FPN's top-down step: ``fine + interpolate(coarse, size=fine.shape[2:])``.

        Nearest interpolation by exactly 2 (every level of an even-sized input)
        repeats each coarse column twice and each coarse row twice. Only the
        column repeat is materialised, at half the size of the fine map, by an
        expand + reshape (on CPU ~9x faster than ``F.interpolate``'s nearest
        kernel for the same copy); the row repeat is a broadcast. Same numbers,
        and it saves a pass over, and a page-faulting allocation of, the largest
        map. With ``overwrite_fine`` and autograd off (inference) the sum is
        written into ``fine``.
        """
        b, c, h, w = fine.shape
        # (not while tracing for export: traced graphs do not carry writes through views)
        inplace = overwrite_fine and not torch.is_grad_enabled() and not torch.jit.is_tracing()
        if self.upsample_mode != 'nearest' or (h, w) != (2 * coarse.shape[2], 2 * coarse.shape[3]):
            up = F.interpolate(coarse, size=(h, w), mode=self.upsample_mode)
            return fine.add_(up) if inplace else fine + up
        # (B, C, h/2, w/2) -> (B, C, h/2, w/2, 2) -> (B, C, h/2, 1, w): every column twice;
        # the singleton row axis lets each row be read by two fine rows.
        columns = coarse.unsqueeze(-1).expand(b, c, h // 2, w // 2, 2).reshape(b, c, h // 2, 1, w)
        fine5 = fine.view(b, c, h // 2, 2, w)  # (B, C, h, w) -> (B, C, h/2, 2, w)
        if inplace:
            return fine5.add_(columns).view(b, c, h, w)  # fine's own memory
        return (fine5 + columns).reshape(b, c, h, w)  # a view

    def _rebuilding(self) -> bool:
        """Whether this forward drops the pre-projector maps from autograd's saved tensors."""
        return (self.rebuild_inputs and torch.is_grad_enabled() and SavedInputRebuild.available()
                and not torch.jit.is_tracing() and not torch.compiler.is_compiling())

    def _tokens_and_projection(
            self,
            laterals: List[torch.Tensor],
            owned: List[bool],
            slots: List[Optional[RebuildSlot]],
            want: bool,
    ) -> Tuple[List[torch.Tensor], List[dict]]:
        """Tokens per level, one transformer, a projector per level.

        Args:
            laterals: The top-down maps ``(B, C, H_i, W_i)``.
            owned: Per level, whether the map may be overwritten (inference).
            slots: Per level, where to register the map's rebuild (training), or ``None``.
            want: Return the attention maps.

        Returns:
            The projected maps ``(B, C, H_i, W_i)`` and one ``{'tokenizer', 'projector'}``
            dict of attentions per level (``None`` values unless ``want``).
        """
        pixels, tokens, maps = [], [], []
        for tokenizer, x in zip(self.tokenizers, laterals):
            p = x.flatten(2).transpose(1, 2)  # (B, C, H_i, W_i) -> (B, H_i*W_i, C)
            out = tokenizer(p, return_attn=want)
            t, a = out if want else (out, None)  # (B, L, C_T), (B, H_i*W_i, L)
            pixels.append(p)
            tokens.append(t)
            maps.append({'tokenizer': a})

        if self.share_transformer:
            # One transformer over the tokens of every level at once.
            related = self.transformers[0](torch.cat(tokens, dim=1))  # (B, levels*L, C_T)
            tokens = list(related.split([t.shape[1] for t in tokens], dim=1))  # levels x (B, L, C_T)
        else:
            tokens = [tf(t) for tf, t in zip(self.transformers, tokens)]

        outs = []
        for projector, x, own, p, t, m, slot in zip(
                self.projectors, laterals, owned, pixels, tokens, maps, slots):
            y, a = projector(p, t, return_attn=True, overwrite_input=own)  # (B, HW_i, C), (B, HW_i, L)
            if slot is not None:
                def rebuild(y, t, a, proj=projector, shape=x.shape):
                    # (B, HW_i, C) view -> its contiguous (B, C, HW_i) base -> (B, C, H_i, W_i)
                    return proj.reconstruct_input(y, t, a).transpose(1, 2).reshape(shape)
                slot.rebuild_from(rebuild, y, t, a)
            m['projector'] = a if want else None
            outs.append(y.transpose(1, 2).reshape(x.shape))  # (B, H_i*W_i, C) -> (B, C, H_i, W_i)
        return outs, maps

    def forward(
            self,
            inputs: Sequence[torch.Tensor],
            attn_maps: Optional[List[dict]] = None,
    ) -> Tuple[torch.Tensor, ...]:
        """
        Args:
            inputs: One map per level, ``(B, C_i, H_i, W_i)``, finest first.
            attn_maps: If a list is given, one dict per input level is appended
                with ``'tokenizer'`` and ``'projector'`` attentions ``(B, H_i*W_i, L)``.

        Returns:
            ``num_outs`` maps ``(B, out_channels, H_i, W_i)``.
        """
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'VTFPN was built for {len(self.in_channels)} levels, '
                             f'got {len(inputs)} feature maps')
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        # The laterals are this forward's own maps (unless a lateral module passed
        # its input through): during inference they may be overwritten in place.
        owned = [lat is not x for lat, x in zip(laterals, inputs)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = self._add_upsampled(laterals[i - 1], laterals[i], owned[i - 1])

        want = attn_maps is not None
        rebuild = SavedInputRebuild() if self._rebuilding() else None
        slots = [rebuild.register(x) if rebuild and own else None for x, own in zip(laterals, owned)]
        with rebuild or contextlib.nullcontext():
            outs, maps = self._tokens_and_projection(laterals, owned, slots, want)
        if want:
            attn_maps.extend(maps)

        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)

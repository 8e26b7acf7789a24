"""Visual Transformer layers (pure PyTorch; no OpenMMLab import).

Feature maps are ``(B, C, H, W)``, tokens ``(B, L, C_T)``. Each layer's attention is
the output of its ``attend`` submodule; :func:`record_attention` collects them.
"""
from .attention import AttentionWeights, record_attention
from .projector import Projector
from .tokenizer import FilterTokenizer, RecurrentTokenizer
from .transformer import TokenFeedForward, TokenSelfAttention, TokenTransformer
from .vt_module import VT_CFG_KEYS, VisualTransformer, check_vt_cfg

__all__ = [
    'FilterTokenizer', 'RecurrentTokenizer', 'TokenSelfAttention', 'TokenFeedForward',
    'TokenTransformer', 'Projector', 'VisualTransformer', 'AttentionWeights', 'record_attention',
    'VT_CFG_KEYS', 'check_vt_cfg',
]

"""Visual Transformer layers (pure PyTorch; no OpenMMLab import)."""
from .projector import Projector
from .rebuild import RebuildSlot, SavedInputRebuild
from .tokenizer import FilterTokenizer, RecurrentTokenizer, pool_pixels
from .transformer import TokenFeedForward, TokenSelfAttention, TokenTransformer
from .vt_module import VisualTransformer

__all__ = [
    'FilterTokenizer', 'RecurrentTokenizer', 'pool_pixels', 'TokenSelfAttention',
    'TokenFeedForward', 'TokenTransformer', 'Projector', 'VisualTransformer',
    'SavedInputRebuild', 'RebuildSlot',
]

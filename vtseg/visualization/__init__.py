"""Pictures of what a VT model's visual tokens attend to (drawn with matplotlib)."""
from .tokens import (IMAGENET_MEAN, IMAGENET_STD, Panel, TokenAttention, TokenFigure,
                     classifier_inputs, draw_token_attention, record_token_attention,
                     segmentor_inputs, token_attention, visualize_tokens)

__all__ = [
    'TokenAttention', 'Panel', 'TokenFigure', 'record_token_attention', 'token_attention',
    'classifier_inputs', 'segmentor_inputs', 'draw_token_attention', 'visualize_tokens',
    'IMAGENET_MEAN', 'IMAGENET_STD',
]

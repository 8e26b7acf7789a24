"""Pictures of what a model does: token attention maps (:mod:`.token_maps`, getting them) and
one drawing module (:mod:`.draw`: prediction overlays and token figures)."""
from .draw import Panel, TokenFigure, blend_labels, draw_overlay, draw_token_attention, token_colours, vis_scale
from .token_maps import IMAGENET_MEAN, IMAGENET_STD, TokenMaps, classifier_inputs, segmentor_inputs, token_maps

__all__ = [
    'TokenMaps', 'token_maps', 'classifier_inputs', 'segmentor_inputs', 'IMAGENET_MEAN', 'IMAGENET_STD',
    'blend_labels', 'vis_scale', 'draw_overlay', 'token_colours', 'Panel', 'TokenFigure', 'draw_token_attention',
]

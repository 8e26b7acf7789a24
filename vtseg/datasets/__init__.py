"""Data sets that vtseg makes itself (no download)."""
from .vtshapes import VTSHAPES_CLASSES, VTSHAPES_PALETTE, make_vtshapes, render_scene

__all__ = ['VTSHAPES_CLASSES', 'VTSHAPES_PALETTE', 'make_vtshapes', 'render_scene']

"""Shared by the layer tests: the paper's pixel matrix X (HW, C) as the layers' feature map."""
import torch


def as_map(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Pixels ``(B, HW, C)`` (the paper's X per image) -> a ``(B, C, H, W)`` feature map."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w).contiguous()


def as_pixels(x: torch.Tensor) -> torch.Tensor:
    """A ``(B, C, H, W)`` feature map -> the paper's pixels ``(B, HW, C)``."""
    return x.flatten(2).transpose(1, 2)

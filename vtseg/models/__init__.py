"""VT models (pure PyTorch; no OpenMMLab import)."""
from .vt_fpn import VTFPN
from .vt_resnet import (CLASSIFIERS, LoadReport, VTResNet, arch_settings, load_torchvision_resnet, pool_tokens,
                        vt_resnet18, vt_resnet34, vt_resnet50, vt_resnet101)

__all__ = [
    'VTFPN', 'VTResNet', 'arch_settings', 'vt_resnet18', 'vt_resnet34', 'vt_resnet50', 'vt_resnet101',
    'CLASSIFIERS', 'load_torchvision_resnet', 'LoadReport', 'pool_tokens',
]

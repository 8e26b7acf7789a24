"""VT-ResNet: a ResNet whose last stage is replaced by Visual Transformer modules.

Wu et al., "Visual Transformers" (arXiv 2006.03677), Sec. 4: stages 1-4 of a
standard ResNet are kept; the stride-16 output of stage 4 is handed to 2 (R18)
or 3 (R34/50/101) VT modules, the first with a filter-based tokenizer, the rest
recurrent, 16 tokens each. The classifier averages the last tokens and applies
one linear layer; the dense backbone also returns the projected pixel map.

Stages 1-4 keep torchvision's module names (``conv1``, ``bn1``, ``layer1``..
``layer3``) so that ImageNet ResNet weights load into them unchanged.
"""
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from vtseg.layers import VisualTransformer, check_vt_cfg

__all__ = [
    'VTResNet', 'arch_settings', 'vt_resnet18', 'vt_resnet34', 'vt_resnet50', 'vt_resnet101', 'CLASSIFIERS',
    'load_torchvision_resnet', 'LoadReport', 'pool_tokens',
]

# Variants as data: ResNet stages 1-4 (blocks per stage), then the VT widths.
# The paper defers C_T, heads and key/query widths to an appendix we do not have.
# C_T = 1024, 16 tokens and transformer key/query width C_T/2 everywhere (as in
# the common re-implementations); the feed-forward and projector key/query widths
# are the round widths that reproduce the parameter counts and multiply-adds of
# the paper's ImageNet table (checked in tests/test_benchmarks/test_paper.py).
# The paper's own numbers admit no single width for all four depths.
arch_settings: Dict[int, dict] = {
    18: dict(block=BasicBlock, layers=(2, 2, 2), num_vt_modules=2,
             vt=dict(qk_channels=512, hidden_channels=1024, projector_qk_channels=512)),
    34: dict(block=BasicBlock, layers=(3, 4, 6), num_vt_modules=3,
             vt=dict(qk_channels=512, hidden_channels=768, projector_qk_channels=256)),
    50: dict(block=Bottleneck, layers=(3, 4, 6), num_vt_modules=3,
             vt=dict(qk_channels=512, hidden_channels=768, projector_qk_channels=512)),
    101: dict(block=Bottleneck, layers=(3, 4, 23), num_vt_modules=3,
              vt=dict(qk_channels=512, hidden_channels=1024, projector_qk_channels=256)),
}


def pool_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """The classifier's input: tokens ``(B, L, C_T)`` averaged over the L tokens -> ``(B, C_T)``.

    Shared by :meth:`VTResNet.forward_head` and the mmpretrain head
    (``vtseg.mm.pretrain.TokenPoolingClsHead``), so both classify alike.
    """
    return tokens.mean(dim=1)


class VTResNet(nn.Module):
    """ResNet stages 1-4 followed by a chain of VT modules.

    Args:
        depth: 18, 34, 50 or 101 (see ``arch_settings``).
        num_classes: Classifier outputs; 0 builds no classifier (backbone use).
        num_tokens: Visual tokens L per module.
        token_channels: Token width C_T.
        project_last: Give the last VT module a projector. A classifier only
            reads the last tokens, so its last projector would be dead weight;
            a dense backbone needs it for the VT-enhanced map. ``None`` (default):
            only without a classifier (``num_classes == 0``).
        norm_layer: Normalisation for the ResNet stages (default BatchNorm2d).
        drop_rate: Dropout before the classifier.
        vt_cfg: Overrides of the VT module arguments of this depth
            (``qk_channels``, ``hidden_channels``, ``projector_qk_channels``,
            ``num_heads``, ``qk_scale``).

    Example:
        >>> model = VTResNet(depth=18, num_classes=10)
        >>> model(torch.rand(2, 3, 224, 224)).shape
        torch.Size([2, 10])
        >>> feats, tokens = model.forward_features(torch.rand(2, 3, 224, 224))
        >>> [tuple(f.shape) for f in feats], tuple(tokens.shape)
        ([(2, 64, 56, 56), (2, 128, 28, 28), (2, 256, 14, 14), (2, 256, 14, 14)], (2, 16, 1024))
    """

    def __init__(
            self,
            depth: int = 18,
            num_classes: int = 1000,
            num_tokens: int = 16,
            token_channels: int = 1024,
            project_last: Optional[bool] = None,
            norm_layer: Optional[Callable[[int], nn.Module]] = None,
            drop_rate: float = 0.0,
            vt_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__()
        if depth not in arch_settings:
            raise ValueError(f'VT-ResNet depth must be one of {sorted(arch_settings)}, got {depth}')
        arch = arch_settings[depth]
        block: Type[Union[BasicBlock, Bottleneck]] = arch['block']
        self.depth = depth
        self.num_classes = num_classes
        self.project_last = num_classes == 0 if project_last is None else project_last

        # Stages 1-4 exactly as torchvision builds them; stage 5 is never kept.
        resnet = ResNet(block, [*arch['layers'], 1], norm_layer=norm_layer)
        self.conv1, self.bn1, self.relu, self.maxpool = (
            resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1, self.layer2, self.layer3 = resnet.layer1, resnet.layer2, resnet.layer3
        self.stage_channels: Tuple[int, ...] = tuple(
            c * block.expansion for c in (64, 128, 256))
        self.in_channels = self.stage_channels[-1]  # C: 256 (R18/34), 1024 (R50/101)
        self.token_channels = token_channels

        vt = dict(arch['vt'], **check_vt_cfg(vt_cfg))
        n = arch['num_vt_modules']
        self.vt_modules = nn.ModuleList(
            VisualTransformer(
                self.in_channels,
                num_tokens=num_tokens,
                token_channels=token_channels,
                recurrent=i > 0,
                with_projector=self.project_last or i < n - 1,
                **vt,
            ) for i in range(n))
        self.out_channels: Tuple[int, ...] = (*self.stage_channels, self.in_channels)

        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(token_channels, num_classes) if num_classes > 0 else None

    def forward_stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        """x: ``(B, 3, H, W)`` -> ResNet stages 2-4, strides 4, 8, 16."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        c2 = self.layer1(x)  # (B, C/4, H/4, W/4)
        c3 = self.layer2(c2)  # (B, C/2, H/8, W/8)
        c4 = self.layer3(c3)  # (B, C, H/16, W/16)
        return [c2, c3, c4]

    def forward_vt(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Run the VT modules on the stage-4 map.

        Args:
            x: ``(B, C, H/16, W/16)``.

        Returns:
            The projected map ``(B, C, H/16, W/16)`` and the last tokens ``(B, L, C_T)``.
        """
        tokens = None
        for module in self.vt_modules:
            x, tokens = module(x, tokens)
        return x, tokens

    def forward_features(self, x: torch.Tensor) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """x: ``(B, 3, H, W)`` -> ``([c2, c3, c4, vt], tokens)``; ``vt`` is the
        VT-enhanced stride-16 map (equal to ``c4`` when the last module has no
        projector), ``tokens`` ``(B, L, C_T)``."""
        feats = self.forward_stages(x)
        vt_map, tokens = self.forward_vt(feats[-1])
        return [*feats, vt_map], tokens

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens ``(B, L, C_T)`` -> logits ``(B, num_classes)``: mean over L, then linear."""
        if self.fc is None:
            raise RuntimeError('this VTResNet was built with num_classes=0 and has no classifier')
        return self.fc(self.drop(pool_tokens(tokens)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, 3, H, W)`` -> logits ``(B, num_classes)``."""
        _, tokens = self.forward_vt(self.forward_stages(x)[-1])
        return self.forward_head(tokens)


@dataclass
class LoadReport:
    """What :func:`load_torchvision_resnet` did."""
    loaded: List[str] = field(default_factory=list)
    not_in_checkpoint: List[str] = field(default_factory=list)
    unused: List[str] = field(default_factory=list)

    def __str__(self) -> str:
        def groups(keys: Sequence[str]) -> str:
            return ', '.join(sorted({k.split('.')[0] for k in keys})) or '-'
        return (f'loaded {len(self.loaded)} tensors ({groups(self.loaded)}); '
                f'left at init {len(self.not_in_checkpoint)} ({groups(self.not_in_checkpoint)}); '
                f'unused from file {len(self.unused)} ({groups(self.unused)})')


def load_torchvision_resnet(
        model: VTResNet,
        checkpoint: Union[str, Dict[str, torch.Tensor]],
) -> LoadReport:
    """Load ImageNet ResNet weights (a torchvision ``.pth`` file) into stages 1-4.

    Stage 5 (``layer4``) and the 1000-way ``fc`` of the file have no place in a
    VT-ResNet and are reported as unused; the VT modules and classifier stay
    at their initialisation.

    Args:
        model: The VT-ResNet to fill.
        checkpoint: Path of a torchvision ResNet state dict, or the dict itself.

    Returns:
        A :class:`LoadReport` (``print`` it for a one-line summary).

    Raises:
        FileNotFoundError: No file at that path.
        ValueError: The file is not a ResNet of this depth.
    """
    if isinstance(checkpoint, str):
        # Plain tensors only: weights_only=True refuses pickled code in foreign files.
        state = torch.load(checkpoint, map_location='cpu', weights_only=True)
    else:
        state = checkpoint
    if isinstance(state, dict) and 'state_dict' in state:
        state = state['state_dict']
    own = model.state_dict()
    report = LoadReport()
    matched = OrderedDict()
    for key, value in state.items():
        if key.startswith(('layer4.', 'fc.')) or key not in own:
            report.unused.append(key)
        elif own[key].shape != value.shape:
            raise ValueError(
                f'{key}: the file has shape {tuple(value.shape)} but VT-ResNet-{model.depth} '
                f'needs {tuple(own[key].shape)}; is this a ResNet-{model.depth} checkpoint?')
        else:
            matched[key] = value
    stem = [k for k in own if k.startswith(('conv1.', 'bn1.', 'layer1.', 'layer2.', 'layer3.'))]
    if not matched or any(k not in matched for k in stem):
        missing = [k for k in stem if k not in matched]
        raise ValueError(
            f'not a torchvision ResNet-{model.depth} state dict: {len(missing)} of the '
            f'{len(stem)} stage 1-4 tensors are missing (e.g. {missing[:2]})')
    model.load_state_dict(matched, strict=False)
    report.loaded = list(matched)
    report.not_in_checkpoint = [k for k in own if k not in matched]
    return report


def vt_resnet18(num_classes: int = 1000, **kwargs) -> VTResNet:
    """VT-ResNet-18: ResNet-18 stages 1-4 + 2 VT modules (paper: 11.7M params, 1.569 GMACs)."""
    return VTResNet(depth=18, num_classes=num_classes, **kwargs)


def vt_resnet34(num_classes: int = 1000, **kwargs) -> VTResNet:
    """VT-ResNet-34: ResNet-34 stages 1-4 + 3 VT modules (paper: 19.2M params, 3.236 GMACs)."""
    return VTResNet(depth=34, num_classes=num_classes, **kwargs)


def vt_resnet50(num_classes: int = 1000, **kwargs) -> VTResNet:
    """VT-ResNet-50: ResNet-50 stages 1-4 + 3 VT modules (paper: 21.4M params, 3.412 GMACs)."""
    return VTResNet(depth=50, num_classes=num_classes, **kwargs)


def vt_resnet101(num_classes: int = 1000, **kwargs) -> VTResNet:
    """VT-ResNet-101: ResNet-101 stages 1-4 + 3 VT modules (paper: 41.5M params, 7.129 GMACs)."""
    return VTResNet(depth=101, num_classes=num_classes, **kwargs)


# The classifiers by name, for the tools that take one (``tools/export_onnx.py vt_resnet50``).
CLASSIFIERS: Dict[str, Callable[..., VTResNet]] = {
    'vt_resnet18': vt_resnet18, 'vt_resnet34': vt_resnet34, 'vt_resnet50': vt_resnet50, 'vt_resnet101': vt_resnet101}

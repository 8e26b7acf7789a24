"""What a VT model's visual tokens attend to, as maps over the feature map they were taken from.

The paper's central claim is that a few visual tokens capture the semantic
concepts of an image. :func:`token_maps` gets, for every VT module
(:class:`~vtseg.layers.VisualTransformer`, e.g. of a VT-ResNet) and every
:class:`~vtseg.models.VTFPN` pyramid level of a model, two attention maps:

- the tokenizer's (eq. 1, 2): which pixels make up each token, ``(B, L, h, w)``,
  each token's map a softmax over the ``h x w`` pixels;
- the projector's (eq. 5): which tokens each pixel reads back, ``(B, L, h, w)``,
  each pixel's weights a softmax over the L tokens.

It reads them only through the layers' public attention API,
:func:`vtseg.layers.record_attention` (forward hooks on each layer's ``attend``
submodule): the model's own forward runs unchanged. Inputs are prepared as the
model expects them by :func:`segmentor_inputs` (an mmseg segmentor's test
pipeline and data preprocessor) or :func:`classifier_inputs` (resize, centre
crop, normalise). :mod:`.draw` draws the maps.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn as nn

from vtseg.layers import VisualTransformer, record_attention
from vtseg.models import VTFPN, VTResNet

__all__ = ['TokenMaps', 'token_maps', 'classifier_inputs', 'segmentor_inputs', 'IMAGENET_MEAN',
           'IMAGENET_STD']

# ImageNet statistics in RGB order on the 0-255 scale (what mmseg and mmpretrain configs use).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass
class TokenMaps:
    """The token attention of one VT module (or one VT-FPN pyramid level) over a batch.

    Args:
        name: Qualified name of the module in the model (``'backbone.vt_modules.0'``,
            ``'neck'``).
        label: Human-readable name (``'VT module 1'``, ``'VT-FPN level 2'``).
        tokenizer: ``(B, L, h, w)``; ``tokenizer[b, l]`` is token ``l``'s spatial
            attention, summing to 1 over the ``h x w`` pixels.
        projector: ``(B, L, h, w)``; ``projector[b, :, y, x]`` is how much pixel
            ``(y, x)`` reads from each token, summing to 1 over L. ``None`` for a
            module without projector (a VT-ResNet classifier's last module).
    """

    name: str
    label: str
    tokenizer: torch.Tensor
    projector: Optional[torch.Tensor]

    @property
    def size(self) -> Tuple[int, int]:
        """``(h, w)`` of the feature map the tokens were taken from."""
        return tuple(self.tokenizer.shape[2:])

    @property
    def num_tokens(self) -> int:
        return self.tokenizer.shape[1]


def _token_layers(model: nn.Module) -> List[Tuple[str, str, nn.Module, Optional[nn.Module]]]:
    """``(owner name, label, tokenizer, projector or None)`` of every VT module and VT-FPN
    level in ``model``, in the order the model holds them (its forward order)."""
    layers = []
    vt_modules = 0
    for name, module in model.named_modules():
        if isinstance(module, VisualTransformer):
            vt_modules += 1
            layers.append((name, f'VT module {vt_modules}', module.tokenizer, module.projector))
        elif isinstance(module, VTFPN):
            for i, (tokenizer, projector) in enumerate(zip(module.tokenizers, module.projectors)):
                layers.append((name, f'VT-FPN level {module.start_level + i + 1}', tokenizer, projector))
    return layers


def token_maps(model: nn.Module, inputs: torch.Tensor) -> List[TokenMaps]:
    """Run ``model``'s feature extractor on ``inputs`` and return its token attention.

    Only the part of the model that holds the tokens runs: ``extract_feat``
    (backbone and neck) of an mmseg segmentor or mmpretrain classifier,
    ``forward_features`` of a :class:`~vtseg.models.VTResNet`, the plain
    forward of anything else.

    Args:
        model: A model containing VT modules or a VT-FPN.
        inputs: Normalised images ``(B, 3, H, W)`` on the model's device (a VT-FPN
            itself takes its list of feature maps).

    Returns:
        One :class:`TokenMaps` per VT module / pyramid level, in forward order,
        tensors on the CPU as float32.

    Raises:
        ValueError: The model holds no VT module and no VT-FPN.

    Example:
        >>> from vtseg.models import vt_resnet18
        >>> model = vt_resnet18(num_classes=10).eval()
        >>> [(m.label, tuple(m.tokenizer.shape)) for m in token_maps(model, torch.rand(1, 3, 64, 64))]
        [('VT module 1', (1, 16, 4, 4)), ('VT module 2', (1, 16, 4, 4))]
    """
    layers = _token_layers(model)
    if not layers:
        raise ValueError(f'{type(model).__name__} has no VT module (VisualTransformer) and no '
                         'VT-FPN neck: there are no tokens to show')
    if hasattr(model, 'extract_feat'):
        run = model.extract_feat
    elif isinstance(model, VTResNet):
        run = model.forward_features
    else:
        run = model
    with torch.no_grad(), record_attention(model) as attention:
        run(inputs)
    names = {id(module): name for name, module in model.named_modules()}

    def recorded(layer: Optional[nn.Module]) -> Optional[torch.Tensor]:
        maps = None if layer is None else attention.get(names[id(layer)])
        return None if maps is None else maps.float().cpu()

    maps = []
    for name, label, tokenizer, projector in layers:
        tokenizer_maps = recorded(tokenizer)
        if tokenizer_maps is not None:  # None: a module the extractor did not run
            maps.append(TokenMaps(name, label, tokenizer_maps, recorded(projector)))
    return maps


def classifier_inputs(
        image: np.ndarray,
        img_size: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        to_rgb: bool = True,
) -> Tuple[torch.Tensor, np.ndarray]:
    """ImageNet-style evaluation input: shorter side to ``img_size``, centre crop.

    Args:
        image: ``(H, W, 3)`` uint8, BGR (as ``cv2.imread`` returns it).
        img_size: Side of the square crop the classifier sees.
        mean: Per-channel mean subtracted (in the channel order fed to the model).
        std: Per-channel standard deviation divided by.
        to_rgb: Feed RGB (``True``, ImageNet models) instead of BGR.

    Returns:
        ``(1, 3, img_size, img_size)`` float tensor and the RGB crop
        ``(img_size, img_size, 3)`` uint8 that it shows.
    """
    h, w = image.shape[:2]
    scale = img_size / min(h, w)
    resized = cv2.resize(image, (max(img_size, round(w * scale)), max(img_size, round(h * scale))),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top = (resized.shape[0] - img_size) // 2
    left = (resized.shape[1] - img_size) // 2
    crop = resized[top:top + img_size, left:left + img_size]
    rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
    fed = rgb if to_rgb else crop
    x = torch.from_numpy(fed.astype(np.float32)).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)
    x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return x[None], rgb


def segmentor_inputs(segmentor: nn.Module, image: np.ndarray) -> Tuple[torch.Tensor, np.ndarray]:
    """What an mmseg segmentor sees at test time: its config's test pipeline
    (:func:`vtseg.apis.inference_pipeline`) and its data preprocessor.

    Args:
        segmentor: An mmseg segmentor with ``cfg`` set (``vtseg.apis.build_model`` and
            ``mmseg.apis.init_model`` set it).
        image: ``(H, W, 3)`` uint8, BGR.

    Returns:
        Normalised input ``(1, 3, H', W')`` on the segmentor's device and the RGB
        image ``(h, w, 3)`` uint8 after the pipeline (resized, not padded).
    """
    from mmengine.dataset import pseudo_collate

    from vtseg.apis.model import inference_pipeline
    data = inference_pipeline(segmentor.cfg)(image)
    shown = data['inputs'].permute(1, 2, 0).numpy()  # (3, h, w) BGR -> (h, w, 3)
    shown = np.ascontiguousarray(shown[..., ::-1]).astype(np.uint8)
    batch = segmentor.data_preprocessor(pseudo_collate([data]), False)  # normalised, stacked, padded
    return batch['inputs'], shown

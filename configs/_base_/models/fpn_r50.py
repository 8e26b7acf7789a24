# Semantic FPN (Kirillov et al. 2019; the paper's baseline) on ResNet-50-V1c: mmseg's model
# unchanged (FPN neck, 256 channels, P2-P5; FPNHead, 128 channels; SyncBN; ImageNet weights
# 'open-mmlab://resnet50_v1c'). Configs set decode_head.num_classes.
_base_ = ['mmseg::_base_/models/fpn_r50.py']
# vtseg registers VTResNet / VTFPN in mmseg's registry (and lets mmengine checkpoints load
# under torch's weights_only unpickler), so every config imports it.
custom_imports = dict(imports=['vtseg'], allow_failed_imports=False)

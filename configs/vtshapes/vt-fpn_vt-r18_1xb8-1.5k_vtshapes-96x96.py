# VT-FPN on VT-ResNet-18 for VT-Shapes: stage 5 and the FPN convolutions both replaced by VT modules.
_base_ = ['./vt-fpn_r18_1xb8-1.5k_vtshapes-96x96.py']
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(_delete_=True, type='VTResNet', depth=18, token_channels=256, norm_cfg=norm_cfg),
    neck=dict(in_channels=[64, 128, 256, 256]),
    decode_head=dict(feature_strides=[4, 8, 16, 16]))
# The schedule's lr 1e-3 matters here most: from scratch, the token layers in the backbone
# (no norm inside) did not train at 2e-3 (25 val mIoU after 1500 iterations).

# VT-FPN on VT-ResNet-50 (not a model of the paper, which puts VT-FPN on plain ResNets):
# ResNet-50 stages 1-4 with stage 5 replaced by 3 VT modules (16 tokens of width 1024) at
# stride 16. The backbone returns layer1, layer2, layer3 and the VT-enhanced layer3 map:
# channels [256, 512, 1024, 1024] at strides [4, 8, 16, 16].
# VTResNet keeps torchvision's names for stages 1-4 (conv1, bn1, layer1..layer3), so they
# load torchvision's ImageNet ResNet-50 (layer4 and fc of that checkpoint are not used;
# the VT modules start from their own initialisation).
_base_ = ['./vt-fpn_r50.py']
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='VTResNet',
        depth=50,
        num_tokens=16,
        token_channels=1024,
        norm_cfg=norm_cfg,
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    neck=dict(in_channels=[256, 512, 1024, 1024]),
    decode_head=dict(feature_strides=[4, 8, 16, 16]))

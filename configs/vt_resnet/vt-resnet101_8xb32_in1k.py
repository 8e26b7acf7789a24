# VT-ResNet-101 as an mmpretrain ImageClassifier on ImageNet-1k, the paper's default recipe
# (see vt-resnet18_8xb32_in1k.py); only the depth differs.
_base_ = ['./vt-resnet18_8xb32_in1k.py']
model = dict(backbone=dict(depth=101))

# VT-ResNet-34 as an mmpretrain ImageClassifier on ImageNet-1k, the paper's default recipe
# (see vt-resnet18_8xb32_in1k.py); only the depth differs. Paper: 74.8% top-1 with this recipe.
_base_ = ['./vt-resnet18_8xb32_in1k.py']
model = dict(backbone=dict(depth=34))

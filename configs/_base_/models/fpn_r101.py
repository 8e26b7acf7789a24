# Semantic FPN on ResNet-101-V1c (ImageNet weights 'open-mmlab://resnet101_v1c').
_base_ = ['./fpn_r50.py']
model = dict(pretrained='open-mmlab://resnet101_v1c', backbone=dict(depth=101))

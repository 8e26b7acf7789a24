# VT-FPN on ResNet-101-V1c: Semantic FPN R-101 with the FPN neck replaced by VTFPN
# (8 tokens of width 1024 per level, one shared transformer).
_base_ = ['./fpn_r101.py']
model = dict(neck=dict(type='VTFPN', num_tokens=8, token_channels=1024, share_transformer=True))

# VT-FPN on ResNet-50-V1c: Semantic FPN with the FPN neck replaced by VTFPN (paper Sec. 5):
# 8 visual tokens of width 1024 per pyramid level, one transformer shared by all levels,
# a projector per level. Everything else is the Semantic FPN baseline.
_base_ = ['./fpn_r50.py']
model = dict(neck=dict(type='VTFPN', num_tokens=8, token_channels=1024, share_transformer=True))

# VT-FPN R-18 on VT-Shapes: the baseline with FPN swapped for VTFPN (8 tokens per level).
_base_ = ['./fpn_r18_1xb8-1.5k_vtshapes-96x96.py']
model = dict(neck=dict(type='VTFPN', num_tokens=8, token_channels=256))

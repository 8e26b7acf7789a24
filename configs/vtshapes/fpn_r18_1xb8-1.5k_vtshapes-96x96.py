# Baseline: Semantic FPN R-18 on VT-Shapes.
_base_ = [
    '../_base_/models/fpn_r18_vtshapes.py', '../_base_/datasets/vtshapes.py',
    'mmseg::_base_/default_runtime.py', '../_base_/schedules/schedule_vtshapes.py'
]
custom_imports = dict(imports=['vtseg'], allow_failed_imports=False)

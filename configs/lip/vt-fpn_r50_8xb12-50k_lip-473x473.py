# VT-FPN R-50 on LIP (20 classes).
# 473x473 crops; 8 GPUs x 12 images = batch 96; 50k iterations.
# Paper (Wu et al. 2020) expects mIoU 47.39; 26.4 GFLOPs in all, 2.0 in the FPN module
# (at 473x473).
# Baseline: fpn_r50_8xb12-50k_lip-473x473.py (paper mIoU 47.04).
_base_ = [
    '../_base_/models/vt-fpn_r50.py', '../_base_/datasets/lip_473x473.py',
    'mmseg::_base_/default_runtime.py', '../_base_/schedules/schedule_lip_50k.py'
]
crop_size = (473, 473)
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor, decode_head=dict(num_classes=20))
# Flip test (--tta) with LIP's Left-*/Right-* channels swapped back in the mirrored view.
tta_model = dict(type='SwapLabelsSegTTAModel', swap_seg_labels=_base_.flip_label_pairs)

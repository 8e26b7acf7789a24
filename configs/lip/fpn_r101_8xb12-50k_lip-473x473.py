# Semantic FPN R-101 (baseline) on LIP (20 classes).
# 473x473 crops; 8 GPUs x 12 images = batch 96; 50k iterations.
# Paper (Wu et al. 2020) expects mIoU 47.35; 54.4 GFLOPs in all, 12.8 in the FPN module
# (at 473x473).
_base_ = [
    '../_base_/models/fpn_r101.py', '../_base_/datasets/lip_473x473.py',
    'mmseg::_base_/default_runtime.py', '../_base_/schedules/schedule_lip_50k.py'
]
crop_size = (473, 473)
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor, decode_head=dict(num_classes=20))
# Flip test (--tta) with LIP's Left-*/Right-* channels swapped back in the mirrored view.
tta_model = dict(type='SwapLabelsSegTTAModel', swap_seg_labels=_base_.flip_label_pairs)

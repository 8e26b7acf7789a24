# Semantic FPN R-50 (baseline) on COCO-Stuff 164k (171 classes).
# 512x512 crops; 8 GPUs x 4 images = batch 32; 45k iterations (Semantic FPN "1x").
# Paper (Wu et al. 2020) expects mIoU 40.78; 159 GFLOPs in all, 55.1 in the FPN module
# (at 800x1216).
_base_ = [
    '../_base_/models/fpn_r50.py', '../_base_/datasets/coco-stuff164k.py',
    'mmseg::_base_/default_runtime.py', '../_base_/schedules/schedule_coco-stuff_1x.py'
]
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor, decode_head=dict(num_classes=171))

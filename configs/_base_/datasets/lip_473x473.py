# LIP (Look Into Person), single-person human parsing: 20 classes, 0 = Background (a real
# class, counted in mIoU), 30,462 train / 10,000 val person crops of about 300x200 pixels.
# Layout, written by tools/dataset_converters/lip.py from the official download:
#   data/LIP/img_dir/{train,val}/<id>.jpg
#   data/LIP/ann_dir/{train,val}/<id>.png
# The paper gives no crop or augmentation for LIP. 473x473 is the input size of the LIP
# literature (and of the paper's FLOPs); the augmentation is mmseg's usual one (rescale
# x0.5-2.0, crop, flip, photometric distortion) with the one change human parsing needs: a
# horizontal flip turns a left arm into a right arm, so the flip swaps the Left-*/Right-*
# labels (LIPDataset classes 14/15 arms, 16/17 legs, 18/19 shoes).
dataset_type = 'LIPDataset'
data_root = 'data/LIP'
crop_size = (473, 473)
flip_label_pairs = [(14, 15), (16, 17), (18, 19)]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    # scale=(473, 473) with keep_ratio: the long side becomes 473 before the random factor
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5, swap_seg_labels=flip_label_pairs),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    # annotations load after Resize: mIoU is computed at the original resolution
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
# 12 images per GPU: 8 GPUs x 12 = 96, the paper's LIP batch.
train_dataloader = dict(
    batch_size=12,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
# Flip test (tools/test.py --tta): each image is predicted as is and mirrored, at the test
# scale. The mirrored view's logits are flipped back in space by the segmentor and, because a
# mirrored left arm looks like a right arm to a model trained with label swapping, its
# Left-*/Right-* channels are swapped back (vtseg's SwapLabelsSegTTAModel) before the class
# probabilities of both views are averaged. The LIP configs set
#   tta_model = dict(type='SwapLabelsSegTTAModel', swap_seg_labels=_base_.flip_label_pairs)
# themselves: mmseg's default_runtime.py, their other base, already defines tta_model, and
# mmengine refuses a key defined by two bases.
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=crop_size, keep_ratio=True)],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')],
        ])
]

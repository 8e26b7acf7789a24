# The paper's COCO-Stuff recipe: "the standard semantic FPN 1x schedule with SyncBN, batch 32,
# base lr 0.04". Semantic FPN 1x (Panoptic FPN, detectron2) is SGD with momentum 0.9 and
# weight decay 1e-4 for 90k iterations at batch 16 (about 12 epochs of COCO train2017), lr
# divided by 10 after 2/3 and 8/9 of training, 1k iterations of linear warm-up. The paper
# gives no iteration count; at batch 32 the same 12 epochs take 45k iterations (steps at 30k
# and 40k), which we use. (mmseg's COCO-Stuff 80k schedules at batch 16 see about as many
# images: 1.28M against 1.44M here.) lr 0.04 assumes the total batch of 32 (8 GPUs x 4).
optimizer = dict(type='SGD', lr=0.04, momentum=0.9, weight_decay=1e-4)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', milestones=[30000, 40000], gamma=0.1, by_epoch=False, begin=0,
         end=45000),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=45000, val_interval=5000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5000),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))

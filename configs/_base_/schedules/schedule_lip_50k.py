# The paper's LIP recipe: SyncBN, batch 96, SGD, weight decay 5e-4, lr 0.01 (momentum 0.9
# and the poly decay as in mmseg's Semantic FPN schedules). The paper gives no iteration
# count; 50k iterations at batch 96 are about 157 epochs of LIP train, close to the 150
# epochs of the common LIP recipes (CE2P, HRNet). lr 0.01 assumes the total batch of 96
# (8 GPUs x 12).
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=50000, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=50000, val_interval=5000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5000),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))

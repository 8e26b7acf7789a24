# VT-ResNet-18 (Wu et al., arXiv 2006.03677) as an mmpretrain ImageClassifier on ImageNet-1k,
# the paper's default recipe: SGD lr 0.1 (/10 every 30 epochs), momentum 0.9, weight decay 4e-5,
# batch 256 (8 GPUs x 32), 90 epochs. Paper: 72.0% top-1 with this recipe.
#   MMPRETRAIN=$(python -c "import mmpretrain, os; print(os.path.dirname(mmpretrain.__file__))")
#   bash $MMPRETRAIN/.mim/tools/dist_train.sh configs/vt_resnet/vt-resnet18_8xb32_in1k.py 8
# The backbone is the mmseg adapter (one VT-ResNet for every OpenMMLab project); the
# checkpoints initialise segmentors/detectors through init_cfg prefix='backbone.'.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs32.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['vtseg'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmseg.VTResNet',
        depth=18,
        num_tokens=16,
        token_channels=1024,
        out_indices=(),  # no feature maps: the head reads only the last tokens
        out_tokens=True,
        project_last=False),  # the last projector would feed nothing
    head=dict(
        type='TokenPoolingClsHead',
        num_classes=1000,
        in_channels=1024,  # = token_channels
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=4e-5))
param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[30, 60], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=90, val_interval=1)
val_cfg = dict()
test_cfg = dict()
# lr 0.1 is for a total batch of 256; --auto-scale-lr rescales it for other batch sizes.
auto_scale_lr = dict(base_batch_size=256)

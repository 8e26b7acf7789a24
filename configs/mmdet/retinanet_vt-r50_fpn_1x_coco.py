# RetinaNet on VT-ResNet-50 for COCO (mmdet 3.3.0): mmdet's RetinaNet R-50 FPN 1x recipe with
# the backbone taken from vtseg through the registry scope 'mmseg.' (no code copied).
#   MMDET=$(python -c "import mmdet, os; print(os.path.dirname(mmdet.__file__))")
#   bash $MMDET/.mim/tools/dist_train.sh configs/mmdet/retinanet_vt-r50_fpn_1x_coco.py 8
#
# VT-ResNet ends at stride 16 (its VT modules replace ResNet's stride-32 stage 5), so the FPN
# takes stage 3 (stride 8, 512 ch) and the VT-enhanced stage-4 map (stride 16, 1024 ch) and
# makes P5-P7 (strides 32, 64, 128) with extra stride-2 convs from the VT map: the pyramid
# keeps RetinaNet's anchor strides 8..128.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['vtseg'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmseg.VTResNet',
        depth=50,
        out_indices=(1, 3),  # stage 3 (stride 8), VT map (stride 16)
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        # ImageNet ResNet-50 weights fill stages 1-4 (layer4/fc of the file are unused); the VT
        # modules start at their initialisation. With a VT-ResNet-50 trained as a classifier
        # (configs/vt_resnet/vt-resnet50_8xb32_in1k.py) use instead
        #   init_cfg=dict(type='Pretrained', prefix='backbone.',
        #                 checkpoint='work_dirs/vt-resnet50_8xb32_in1k/epoch_90.pth')
        # (then only the last VT module's projector, which a classifier lacks, starts at init).
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    neck=dict(
        in_channels=[512, 1024],
        start_level=0,
        add_extra_convs='on_input',  # P5 from the VT map, P6-P7 from the previous output
        num_outs=5))

# COCO-Stuff 164k: 171 classes (80 things + 91 stuff), 118k train / 5k val images, mmseg's
# COCOStuffDataset and pipeline unchanged: 512x512 crops from images rescaled to a
# 512-pixel short side (x0.5-2.0), flips and photometric distortion; whole-image test at
# scale (2048, 512); 4 images per GPU. Layout (made by mmseg's converter, see data/README.md):
#   data/coco_stuff164k/images/{train2017,val2017}/*.jpg
#   data/coco_stuff164k/annotations/{train2017,val2017}/*_labelTrainIds.png
# The paper counts FLOPs at 800x1216 and does not state its crop; 512x512 is mmseg's
# COCO-Stuff crop.
_base_ = ['mmseg::_base_/datasets/coco-stuff164k.py']

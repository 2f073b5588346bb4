# RetinaNet R50-FPN on COCO 2017 (published box AP 36.5 mmdetection / 36.4 torchvision).
# Recipe (mmdetection 1x): SGD lr 0.01, momentum 0.9, wd 1e-4, batch 2 x 8 GPUs, 500-iteration linear warmup,
# 12 epochs with lr x0.1 at epochs 8 and 11; images resized to fit 1333x800 keeping the ratio, padded to /32.
# Test settings are mmdetection 3.x's (retinanet_r50_fpn_1x_coco.py, _base_/models/retinanet_r50_fpn.py), checked
# item by item: uint8 image fit into 1333x800 keeping the ratio (sides rounded half up), RGB, ImageNet mean and std,
# zero padding to /32; per level the 1000 best scores above 0.05, NMS 0.5, 100 per image. mmdetection's checkpoints
# convert with tools/model_converters/mmdet_to_detkit.py; torchvision's need retinanet_r50_fpn_coco_tv.py.
_base_ = [
    '../_base_/models/retinanet_r50_fpn.py', '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
auto_scale_lr = dict(enable=False, base_batch_size=16)

# RetinaNet R50-FPN on COCO 2017 (published box AP 36.5 mmdetection / 36.4 torchvision).
# Recipe (mmdetection 1x): SGD lr 0.01, momentum 0.9, wd 1e-4, batch 2 x 8 GPUs, 500-iteration linear warmup,
# 12 epochs with lr x0.1 at epochs 8 and 11; images resized to fit 1333x800 keeping the ratio, padded to /32.
_base_ = [
    '../_base_/models/retinanet_r50_fpn.py', '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
auto_scale_lr = dict(enable=False, base_batch_size=16)

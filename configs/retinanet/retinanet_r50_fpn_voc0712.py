# RetinaNet R50-FPN on Pascal VOC 07+12, tested on VOC2007 test (published 79.2 mAP, mmdetection).
# Recipe (mmdetection's pascal_voc config): SGD lr 0.01, momentum 0.9, wd 1e-4, batch 2 x 8 GPUs, 500-iteration
# warmup, 4 epochs over VOC07+12 repeated 3 times, lr x0.1 after epoch 3; images fit 1000x600 keeping the ratio.
_base_ = [
    '../_base_/models/retinanet_r50_fpn.py', '../_base_/datasets/voc0712.py', '../_base_/default_runtime.py'
]
model = dict(bbox_head=dict(num_classes=20))
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=4, milestones=[3], gamma=0.1),
]
train_cfg = dict(max_epochs=4, val_interval=1)
auto_scale_lr = dict(enable=False, base_batch_size=16)

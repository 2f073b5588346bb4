# SSD300-VGG16 on Pascal VOC 07+12, tested on VOC2007 test (11-point mAP; published 77.2 paper / 76.5 mmdet).
# Recipe (mmdetection): SGD lr 1e-3, momentum 0.9, wd 5e-4, batch 8 x 8 GPUs, 500-iteration linear warmup,
# 24 epochs over the training set repeated 10 times, lr x0.1 at epochs 16 and 20.
_base_ = [
    '../_base_/models/ssd300.py', '../_base_/datasets/voc0712.py', '../_base_/schedules/schedule_2x.py',
    '../_base_/default_runtime.py'
]
model = dict(bbox_head=dict(num_classes=20, anchor_generator=dict(basesize_ratio_range=(0.2, 0.9))))

data_root = 'data/VOCdevkit/'
input_size = 300
# VGG16 weights of the SSD authors take caffe-style inputs: RGB minus the mean, not divided by a std
mean = [123.675, 116.28, 103.53]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Expand', mean=mean, to_rgb=True, ratio_range=(1, 4), prob=0.5),  # zoom out, fill with the mean
    dict(type='MinIoURandomCrop', min_ious=(0.1, 0.3, 0.5, 0.7, 0.9), min_crop_size=0.3),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion', brightness_delta=32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
         hue_delta=18),
    dict(type='Normalize', mean=mean, std=[1, 1, 1], to_rgb=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Normalize', mean=mean, std=[1, 1, 1], to_rgb=True),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    dataset=dict(
        type='RepeatDataset',
        times=10,
        dataset=dict(
            type='ConcatDataset',
            datasets=[
                dict(type='VOCDataset', data_root=data_root, ann_file='VOC2007/ImageSets/Main/trainval.txt',
                     data_prefix=dict(sub_data_root='VOC2007/'), filter_empty_gt=True, pipeline=train_pipeline),
                dict(type='VOCDataset', data_root=data_root, ann_file='VOC2012/ImageSets/Main/trainval.txt',
                     data_prefix=dict(sub_data_root='VOC2012/'), filter_empty_gt=True, pipeline=train_pipeline),
            ])))
val_dataloader = dict(batch_size=8, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(type='SGD', lr=1e-3, momentum=0.9, weight_decay=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=24, milestones=[16, 20], gamma=0.1),
]
train_cfg = dict(max_epochs=24, val_interval=1)
# lr 1e-3 is for a total batch of 64 (8 GPUs x 8); --auto-scale-lr scales it to the batch actually used
auto_scale_lr = dict(enable=False, base_batch_size=64)

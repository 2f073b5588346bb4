# M2Det320-VGG16 on COCO (published box AP 33.5, single-scale). The official recipe (VDIGPKU/M2Det,
# configs/m2det320_vgg.py): SGD momentum 0.9, wd 5e-4, 16 images x 4 GPUs; lr warms up linearly from 1e-6 to
# 4e-3 over 5 epochs, then 4e-3 to epoch 90, 2e-3 to 110, 4e-4 to 130, 4e-5 to 150, 4e-6 to 160; SSD's
# augmentation; BGR inputs minus (104, 117, 123) for the caffe-style VGG16 weights; soft-NMS at test (model base).
_base_ = [
    '../_base_/models/m2det320_vgg.py', '../_base_/datasets/coco_detection.py', '../_base_/default_runtime.py'
]
input_size = 320
mean = [104, 117, 123]  # BGR order: the image stays BGR (to_rgb=False)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PhotoMetricDistortion', brightness_delta=32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
         hue_delta=18),
    dict(type='Expand', mean=mean, to_rgb=False, ratio_range=(1, 4), prob=0.6),  # the official p = 0.6
    dict(type='MinIoURandomCrop', min_ious=(0.1, 0.3, 0.5, 0.7, 0.9), min_crop_size=0.3),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Normalize', mean=mean, std=[1, 1, 1], to_rgb=False),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Normalize', mean=mean, std=[1, 1, 1], to_rgb=False),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=16, num_workers=4, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=8, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(type='SGD', lr=4e-3, momentum=0.9, weight_decay=5e-4))
param_scheduler = [
    # 1e-6 -> 4e-3 over the first 5 epochs, per iteration
    dict(type='LinearLR', start_factor=2.5e-4, by_epoch=True, begin=0, end=5, convert_to_iter_based=True),
    # the official list 4e-3, 2e-3, 4e-4, 4e-5, 4e-6 as factors 0.5, 0.2, 0.1, 0.1 (schedules multiply)
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=160, milestones=[90], gamma=0.5),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=160, milestones=[110], gamma=0.2),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=160, milestones=[130, 150], gamma=0.1),
]
train_cfg = dict(max_epochs=160, val_interval=10)
auto_scale_lr = dict(enable=False, base_batch_size=64)

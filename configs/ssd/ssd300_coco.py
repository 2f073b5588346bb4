# SSD300-VGG16 on COCO 2017 (published box AP 25.1 paper / 25.5 mmdet / 25.1 torchvision).
# Recipe (mmdetection): SGD lr 2e-3, momentum 0.9, wd 5e-4, batch 8 x 8 GPUs, 500-iteration linear warmup,
# 24 epochs over train2017 repeated 5 times, lr x0.1 at epochs 16 and 22.
# Test settings are mmdetection 3.x's (configs/ssd/ssd300_coco.py, _base_/models/ssd300.py), checked item by item:
# uint8 image resized to 300x300 (cv2 bilinear, no keep-ratio), RGB minus (123.675, 116.28, 103.53), std 1, no
# padding; per level the 1000 best scores above 0.02, NMS 0.45, 200 per image, no minimum box size. mmdetection's
# checkpoints convert with tools/model_converters/mmdet_to_detkit.py; torchvision's need ssd300_coco_tv.py.
_base_ = [
    '../_base_/models/ssd300.py', '../_base_/datasets/coco_detection.py', '../_base_/schedules/schedule_2x.py',
    '../_base_/default_runtime.py'
]
data_root = 'data/coco/'
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
    # the base COCO dataset is not wrapped; _delete_ replaces it by the wrapper instead of merging into it
    dataset=dict(
        _delete_=True,
        type='RepeatDataset',
        times=5,
        dataset=dict(type='CocoDataset', data_root=data_root, ann_file='annotations/instances_train2017.json',
                     data_prefix=dict(img='train2017/'), filter_empty_gt=True, pipeline=train_pipeline)))
val_dataloader = dict(batch_size=8, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(type='SGD', lr=2e-3, momentum=0.9, weight_decay=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=24, milestones=[16, 22], gamma=0.1),
]
train_cfg = dict(max_epochs=24, val_interval=1)
# lr 2e-3 is for a total batch of 64 (8 GPUs x 8); --auto-scale-lr scales it to the batch actually used
auto_scale_lr = dict(enable=False, base_batch_size=64)

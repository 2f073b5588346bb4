# SSDLite320-MobileNetV2 on COCO 2017, trained from scratch (mmdetection; published box AP 21.3).
# Recipe: SGD lr 0.015, momentum 0.9, wd 4e-5, batch 24 x 8 GPUs, 500-iteration linear warmup, cosine decay to 0
# over 120 epochs of train2017 repeated 5 times (600 passes over COCO).
# Test settings are mmdetection 3.x's (ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py), checked item by item: uint8
# image resized to 320x320 (cv2 bilinear), RGB, ImageNet mean and std; per level the 1000 best scores above 0.02,
# NMS 0.45, 200 per image. mmdetection's checkpoints convert with tools/model_converters/mmdet_to_detkit.py.
_base_ = [
    '../_base_/models/ssdlite_mobilenetv2.py', '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/schedule_2x.py', '../_base_/default_runtime.py'
]
data_root = 'data/coco/'
input_size = 320
mean = [123.675, 116.28, 103.53]
std = [58.395, 57.12, 57.375]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Expand', mean=mean, to_rgb=True, ratio_range=(1, 4), prob=0.5),
    dict(type='MinIoURandomCrop', min_ious=(0.1, 0.3, 0.5, 0.7, 0.9), min_crop_size=0.3),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion', brightness_delta=32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
         hue_delta=18),
    dict(type='Normalize', mean=mean, std=std, to_rgb=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Normalize', mean=mean, std=std, to_rgb=True),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    batch_size=24,
    num_workers=4,
    # the base COCO dataset is not wrapped; _delete_ replaces it by the wrapper instead of merging into it
    dataset=dict(
        _delete_=True,
        type='RepeatDataset',
        times=5,
        dataset=dict(type='CocoDataset', data_root=data_root, ann_file='annotations/instances_train2017.json',
                     data_prefix=dict(img='train2017/'), filter_empty_gt=True, pipeline=train_pipeline)))
val_dataloader = dict(batch_size=8, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.015, momentum=0.9, weight_decay=4.0e-5))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=120, T_max=120, eta_min=0),
]
train_cfg = dict(max_epochs=120, val_interval=5)
# lr 0.015 is for a total batch of 192 (8 GPUs x 24)
auto_scale_lr = dict(enable=False, base_batch_size=192)

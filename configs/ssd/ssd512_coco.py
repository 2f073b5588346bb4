# SSD512-VGG16 on COCO 2017 (published box AP 28.8 paper / 29.5 mmdet).
# SSD300's recipe (ssd300_coco.py) at 512x512: one more extra level (32 -> 16 -> 8 -> 4 -> 2 -> 1, a 4x4 last conv)
# and SSD512's anchors (24564). The pipelines are restated because their size is resolved in the parent file.
# Test settings are mmdetection 3.x's (configs/ssd/ssd512_coco.py): SSD300's at 512x512 (checked item by item);
# mmdetection's checkpoints convert with tools/model_converters/mmdet_to_detkit.py.
_base_ = './ssd300_coco.py'
input_size = 512
model = dict(
    neck=dict(extra_channels=(512, 256, 256, 256, 256), strides=(2, 2, 2, 2, 1), paddings=(1, 1, 1, 1, 1),
              last_kernel_size=4),
    bbox_head=dict(anchor_generator=dict(
        input_size=input_size,
        basesize_ratio_range=(0.1, 0.9),  # COCO; min sizes 20, 51, 133, 215, 296, 378, 460; max 51 .. 542
        strides=[8, 16, 32, 64, 128, 256, 512],
        ratios=[[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]])))

mean = [123.675, 116.28, 103.53]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Expand', mean=mean, to_rgb=True, ratio_range=(1, 4), prob=0.5),
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
train_dataloader = dict(dataset=dict(dataset=dict(pipeline=train_pipeline)))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# M2Det512-VGG16 on COCO (published box AP 37.6, single-scale), the official configs/m2det512_vgg.py: M2Det320's
# network and recipe at 512x512 (maps 64, 32, 16, 8, 4, 2; 32,760 anchors with its size pattern and steps). The
# official M2Det512 checkpoint loads into it after tools/model_converters/m2det_to_detkit.py (the weights are the
# same shapes as M2Det320's; only the anchors differ).
_base_ = './m2det320_vgg_coco.py'
input_size = 512
model = dict(
    bbox_head=dict(
        anchor_generator=dict(input_size=input_size, strides=[8, 16, 32, 64, 128, 256],
                              size_pattern=[0.06, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05])))
mean = [104, 117, 123]  # BGR: the image stays BGR (to_rgb=False)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PhotoMetricDistortion', brightness_delta=32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
         hue_delta=18),
    dict(type='Expand', mean=mean, to_rgb=False, ratio_range=(1, 4), prob=0.6),
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
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# M2Det320 with a ResNet-50 backbone on COCO. As the official ResNet variants: the stride of res4 (layer3) is 1, so
# layer3 (1024 channels) and layer4 (2048) come out at strides 8 and 16 - 40x40 and 20x20 at 320, the maps VGG16's
# conv4_3 and fc7 give - and FFMv1 fuses them. ImageNet-style inputs (RGB, mean/std) for torchvision's weights.
_base_ = './m2det320_vgg_coco.py'
model = dict(
    # pretrained='<local torchvision resnet50 weight file>' (never downloaded)
    backbone=dict(_delete_=True, type='ResNet', depth=50, num_stages=4, strides=(1, 2, 1, 2), out_indices=(2, 3),
                  frozen_stages=1, norm_eval=False, pretrained=None))
input_size = 320
mean = [123.675, 116.28, 103.53]
std = [58.395, 57.12, 57.375]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PhotoMetricDistortion', brightness_delta=32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
         hue_delta=18),
    dict(type='Expand', mean=mean, to_rgb=True, ratio_range=(1, 4), prob=0.6),
    dict(type='MinIoURandomCrop', min_ious=(0.1, 0.3, 0.5, 0.7, 0.9), min_crop_size=0.3),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
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
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

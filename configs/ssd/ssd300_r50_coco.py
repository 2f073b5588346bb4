# SSD300 with a ResNet50 backbone on COCO 2017, NVIDIA DeepLearningExamples recipe (published box AP 25.0).
# Recipe: SGD lr 2.6e-3 for a total batch of 32 (scaled linearly with the batch), momentum 0.9, wd 5e-4 not on
# batch norms and biases, 300-iteration linear warmup, 65 epochs, lr x0.1 at epochs 43 and 54. NVIDIA also trains
# with AMP and channels_last, which change speed, not the result.
_base_ = [
    '../_base_/models/ssd300_r50.py', '../_base_/datasets/coco_detection.py', '../_base_/schedules/schedule_2x.py',
    '../_base_/default_runtime.py'
]
data_root = 'data/coco/'
input_size = 300
# torchvision's ImageNet ResNet50 weights take RGB inputs normalised by the ImageNet mean and std
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
train_dataloader = dict(batch_size=32, num_workers=4, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=8, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=2.6e-3, momentum=0.9, weight_decay=5e-4),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))  # no weight decay on batch norms and biases
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=300),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=65, milestones=[43, 54], gamma=0.1),
]
train_cfg = dict(max_epochs=65, val_interval=5)
# NVIDIA's rule: lr = 2.6e-3 * total batch / 32
auto_scale_lr = dict(enable=False, base_batch_size=32)

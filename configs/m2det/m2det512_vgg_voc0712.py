# M2Det512-VGG16 on Pascal VOC 07+12, tested on VOC2007 test. The official m2det512_vgg config: 512x512 inputs
# (maps 64, 32, 16, 8, 4, 2; 32,760 anchors with its size pattern and steps), the M2Det320 recipe with the VOC lr
# steps of the official config (epochs 100, 150, 200, 250 of 300; marked as not tuned upstream).
_base_ = [
    '../_base_/models/m2det320_vgg.py', '../_base_/datasets/voc0712.py', '../_base_/default_runtime.py'
]
input_size = 512
model = dict(
    bbox_head=dict(
        num_classes=20,
        anchor_generator=dict(input_size=input_size, strides=[8, 16, 32, 64, 128, 256],
                              size_pattern=[0.06, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05])))
mean = [104, 117, 123]  # BGR
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
data_root = 'data/VOCdevkit/'
# a list in a child config replaces the parent's list whole, so the two VOC datasets are restated with the pipeline
train_dataloader = dict(
    batch_size=16,
    num_workers=4,
    dataset=dict(times=1, dataset=dict(datasets=[
        dict(type='VOCDataset', data_root=data_root, ann_file='VOC2007/ImageSets/Main/trainval.txt',
             data_prefix=dict(sub_data_root='VOC2007/'), filter_empty_gt=True, pipeline=train_pipeline),
        dict(type='VOCDataset', data_root=data_root, ann_file='VOC2012/ImageSets/Main/trainval.txt',
             data_prefix=dict(sub_data_root='VOC2012/'), filter_empty_gt=True, pipeline=train_pipeline),
    ])))
val_dataloader = dict(batch_size=8, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(type='SGD', lr=4e-3, momentum=0.9, weight_decay=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=2.5e-4, by_epoch=True, begin=0, end=5, convert_to_iter_based=True),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=300, milestones=[100], gamma=0.5),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=300, milestones=[150], gamma=0.2),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=300, milestones=[200, 250], gamma=0.1),
]
train_cfg = dict(max_epochs=300, val_interval=10)
auto_scale_lr = dict(enable=False, base_batch_size=64)

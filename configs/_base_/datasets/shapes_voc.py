# Synthetic shapes in VOC layout (detkit.datasets.shapes): a dataset that trains in CPU minutes. Write it with
#   python tools/dataset_converters/make_shapes.py --out data/shapes --num 1000 --format voc --seed 0 --size 320
#   python tools/dataset_converters/make_shapes.py --out data/shapes --num 200 --format voc --seed 0 --size 320 \
#       --split val
# (the split name is part of the seed, so train and val never share images). SSD augmentation for training,
# VOC area AP for evaluation. A model config that wants another input size overrides train_pipeline/test_pipeline
# and the dataloaders' pipelines.
dataset_type = 'VOCDataset'
data_root = 'data/shapes/'
classes = ('circle', 'square', 'triangle', 'star')
img_scale = (300, 300)
mean = [123.675, 116.28, 103.53]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PhotoMetricDistortion', brightness_delta=32, contrast_range=(0.5, 1.5),
         saturation_range=(0.5, 1.5), hue_delta=18),
    dict(type='Expand', mean=mean, to_rgb=True, ratio_range=(1, 2), prob=0.5),
    dict(type='MinIoURandomCrop', min_ious=(0.1, 0.3, 0.5, 0.7, 0.9), min_crop_size=0.3),
    dict(type='Resize', scale=img_scale, keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Normalize', mean=mean, std=[1, 1, 1], to_rgb=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Normalize', mean=mean, std=[1, 1, 1], to_rgb=True),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    batch_size=16,
    num_workers=2,
    persistent_workers=True,
    shuffle=True,
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='ImageSets/Main/train.txt',
                 data_prefix=dict(sub_data_root=''), classes=classes, filter_empty_gt=True,
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
    num_workers=2,
    persistent_workers=True,
    shuffle=False,
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='ImageSets/Main/val.txt',
                 data_prefix=dict(sub_data_root=''), classes=classes, test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='VOCMetric', iou_thr=0.5, eval_mode='area')
test_evaluator = val_evaluator

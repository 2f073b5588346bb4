# Quickstart: a small RetinaNet (ResNet-18 at half width, a thin FPN P3-P5, a 2-conv head with focal loss, 192x192
# input) trained from scratch on the synthetic shapes dataset on the CPU, as configs/quickstart/ssd_shapes.py.
#   CONFIG=configs/quickstart/retinanet_shapes.py make quickstart
#
# P3 (stride 8) serves the small hard-style objects; focal loss learns fast from scratch: val mAP@0.5 0.91 on the
# simple shapes after 4 of 8 epochs (0.45 on the hard ones after 2). 8 epochs = 1000 iterations: a RetinaNet step
# costs ~1.4x an SSD step (0.53 against 0.38 GMACs), so it gets fewer iterations than configs/quickstart/ssd_shapes.py.
_base_ = ['../_base_/default_runtime.py', '../_base_/datasets/shapes_voc.py']

classes = ('circle', 'square', 'triangle', 'star')
input_size = 192
mean = [123.675, 116.28, 103.53]
std = [58.395, 57.12, 57.375]

model = dict(
    type='SingleStageDetector',
    backbone=dict(type='ResNet', depth=18, num_stages=4, strides=(1, 2, 2, 2), out_indices=(1, 2, 3),
                  base_channels=32),  # strides 8, 16, 32 with 64, 128, 256 channels
    neck=dict(type='FPN', out_channels=64, start_level=0, num_outs=3),  # P3-P5: 24, 12, 6 at 192
    bbox_head=dict(
        type='RetinaHead',
        num_classes=len(classes),
        stacked_convs=2,
        feat_channels=64,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=3, scales_per_octave=3,
                              ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32]),  # 24-38 px at P3 .. 96-152 at P5
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='FocalLoss', gamma=2.0, alpha=0.25),
        loss_bbox=dict(type='L1Loss')),
    train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)),
    test_cfg=dict(nms_pre=400, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100),
    channels_last=True)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
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
train_dataloader = dict(num_workers=1, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(num_workers=1, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    # bfloat16 autocast where the CPU runs it natively (AVX512-BF16 or AMX): a step takes half the float32 time.
    # Elsewhere bfloat16 is emulated and slower, so the run stays in float32 (a warning says so)
    type='AmpOptimWrapper', dtype='bfloat16', native_bf16_only=True,
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=10.0),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
max_epochs = 8
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs, eta_min_ratio=0.02,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=1, max_keep_ckpts=2, save_best='auto'))
env_cfg = dict(cudnn_benchmark=False, num_threads=2)
device = 'cpu'
work_dir = 'work_dirs/quickstart/retinanet_shapes_simple'  # what tools/quickstart.sh uses

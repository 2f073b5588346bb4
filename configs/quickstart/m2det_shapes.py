# Quickstart: a small M2Det (ResNet-18 at half width; an MLFPN of 2 TUMs with 128 planes and 4 scales on its
# stride-16 and stride-32 maps; SSD's head and loss; 192x192 input) trained from scratch on the synthetic shapes
# dataset on the CPU, as configs/quickstart/ssd_shapes.py.
#   CONFIG=configs/quickstart/m2det_shapes.py make quickstart
#
# M2Det learns far more slowly from scratch than SSD on the same backbone (see README, "Quickstart"): val mAP@0.5
# after 2 epochs was 0.001 whatever the variant (TUMs on the stride-8 map, 1 or 2 TUMs, 64..256 planes, batch-norm
# momentum 0.01 or 0.1, lr 1e-3 or 2e-3), against 0.29..0.39 for SSD; it took off after epoch 4. The official
# M2Det always starts from an ImageNet backbone.
_base_ = ['../_base_/default_runtime.py', '../_base_/datasets/shapes_voc.py']

classes = ('circle', 'square', 'triangle', 'star')
input_size = 192
mean = [123.675, 116.28, 103.53]
std = [58.395, 57.12, 57.375]

model = dict(
    type='SingleStageDetector',
    # layer3 (stride 16, 128 channels, 12x12) and layer4 (stride 32, 256 channels, 6x6): the shallow and deep maps
    # FFMv1 fuses, as VGG16's conv4_3 and fc7 in M2Det320
    backbone=dict(type='ResNet', depth=18, num_stages=4, strides=(1, 2, 2, 2), out_indices=(2, 3), base_channels=32),
    neck=dict(type='MLFPN', planes=128, num_levels=2, num_scales=4, smooth=True, sfam=False, shallow_channels=128,
              deep_channels=256, bn_momentum=0.1),  # four 256-channel maps: 12, 6, 3, 1
    bbox_head=dict(
        type='SSDHead',
        num_classes=len(classes),
        anchor_generator=dict(type='SSDAnchorGenerator', input_size=input_size, strides=[16, 32, 64, 192],
                              ratios=[[2], [2], [2], [2]], min_sizes=[24, 48, 96, 150], max_sizes=[48, 96, 150, 190],
                              clip_size=True),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_stds=[0.1, 0.1, 0.2, 0.2]),
        loss_cls=dict(type='CrossEntropyLoss'),
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0)),
    train_cfg=dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.0,
                      gt_max_assign_all=False),
        neg_pos_ratio=3),
    # M2Det's test: linear soft-NMS per class
    test_cfg=dict(nms_pre=400, score_thr=0.02, min_bbox_size=0,
                  nms=dict(type='soft_nms', method='linear', iou_threshold=0.45, sigma=0.5, min_score=0.02),
                  max_per_img=100),
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
max_epochs = 12
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
work_dir = 'work_dirs/quickstart/m2det_shapes_simple'  # what tools/quickstart.sh uses

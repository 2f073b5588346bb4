# Quickstart: a small M2Det (ResNet-18 at half width; an MLFPN of 2 TUMs with 128 planes and 4 scales on its
# stride-16 and stride-32 maps; SSD's head and loss; 192x192 input) trained from scratch on the synthetic shapes
# dataset on the CPU, as configs/quickstart/ssd_shapes.py.
#   CONFIG=configs/quickstart/m2det_shapes.py make quickstart
#
# M2Det learns far more slowly from scratch than SSD on the same backbone (see README, "Quickstart"): val mAP@0.5
# after 2 epochs was 0.001 whatever the variant (TUMs on the stride-8 map, 1 or 2 TUMs, 64..256 planes, batch-norm
# momentum 0.01 or 0.1, lr 1e-3 or 2e-3), against 0.29..0.39 for SSD; it took off after epoch 4. The official
# M2Det always starts from an ImageNet backbone.
_base_ = ['../_base_/quickstart_shapes.py']  # data, 192 px pipeline, optimizer, 12-epoch schedule

classes = ('circle', 'square', 'triangle', 'star')
input_size = 192  # the base's

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

work_dir = 'work_dirs/quickstart/m2det_shapes_simple'  # what tools/quickstart.sh uses

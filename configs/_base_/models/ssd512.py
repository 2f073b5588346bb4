# SSD512 with a VGG16 backbone (Liu et al., ECCV 2016), mmdetection's layout: one more extra level than SSD300
# and a 4x4 last conv. COCO anchors and 80 classes; ssd512_voc0712.py changes both.
model = dict(
    type='SingleStageDetector',
    # conv4_3 (64x64x512, L2-normalised) and fc7 (32x32x1024); see ssd300.py for pretrained weights
    backbone=dict(type='SSDVGG', out_indices=(22, 34), l2_norm_scale=20.0, pretrained=None),
    # 32 -> 16 -> 8 -> 4 -> 2 -> 1
    neck=dict(type='SSDNeck', extra_channels=(512, 256, 256, 256, 256), strides=(2, 2, 2, 2, 1),
              paddings=(1, 1, 1, 1, 1), last_kernel_size=4),
    bbox_head=dict(
        type='SSDHead',
        num_classes=80,
        anchor_generator=dict(
            type='SSDAnchorGenerator',
            input_size=512,
            basesize_ratio_range=(0.1, 0.9),  # min sizes 20, 51, 133, 215, 296, 378, 460; max 51 .. 542
            strides=[8, 16, 32, 64, 128, 256, 512],
            ratios=[[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]]),  # 24564 anchors
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                        target_stds=[0.1, 0.1, 0.2, 0.2]),
        loss_cls=dict(type='CrossEntropyLoss'),  # softmax, background last; hard negatives 3:1
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0)),
    train_cfg=dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.0, ignore_iof_thr=-1,
                      gt_max_assign_all=False),
        neg_pos_ratio=3),
    test_cfg=dict(nms_pre=1000, score_thr=0.02, nms=dict(type='nms', iou_threshold=0.45), min_bbox_size=0,
                  max_per_img=200))

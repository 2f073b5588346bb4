# M2Det320 with a VGG16 backbone (Zhao et al., AAAI 2019), the official layout (VDIGPKU/M2Det, m2det.py): VGG16
# conv4_3 (40x40x512, no L2Norm) and fc7 (20x20x1024) fused by FFMv1, 8 TUMs of 256 planes fed by a shared FFMv2,
# six 2048-channel scales (40, 20, 10, 5, 3, 1), no SFAM, batch norm on the largest scale, SSD-style 3x3
# predictors with a softmax over 81 classes and 6 anchors per location: 132,633,140 parameters with COCO's 80.
model = dict(
    type='SingleStageDetector',
    # pretrained='<local torchvision vgg16 weight file>' initialises conv1_1..conv5_3 (never downloaded)
    backbone=dict(type='SSDVGG', out_indices=(22, 34), l2_norm_scale=None, pretrained=None),
    neck=dict(type='MLFPN', planes=256, num_levels=8, num_scales=6, smooth=True, sfam=False),
    bbox_head=dict(
        type='SSDHead',  # M2Det's head is SSD's: per-level 3x3 convs, MultiBox loss with 3:1 hard negatives
        num_classes=80,
        anchor_generator=dict(
            type='SSDAnchorGenerator',
            input_size=320,
            strides=[8, 16, 32, 64, 107, 320],
            ratios=[[2, 3]] * 6,  # 6 anchors per location: 12,810 in all
            size_pattern=[0.08, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],  # min 25.6, 48, 105.6, 163.2, 220.8, 278.4
            clip_size=True),  # the official PriorBox clips widths and heights to the image
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                        target_stds=[0.1, 0.1, 0.2, 0.2]),  # variances 0.1, 0.2
        loss_cls=dict(type='CrossEntropyLoss'),
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0)),
    train_cfg=dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.0, ignore_iof_thr=-1,
                      gt_max_assign_all=False),  # SSD's matching: every object keeps its best anchor
        neg_pos_ratio=3),
    # the official test: scores above 0.1, linear soft-NMS per class (IoU 0.45, sigma 0.5, min score 0.001), the
    # 50 best of each class, no per-level or per-image cap
    test_cfg=dict(nms_pre=0, score_thr=0.1, min_bbox_size=0,
                  nms=dict(type='soft_nms', method='linear', iou_threshold=0.45, sigma=0.5, min_score=0.001),
                  max_per_class=50, max_per_img=0))

# SSD300 with a VGG16 backbone (Liu et al., ECCV 2016): torchvision's ssd300_vgg16 architecture, mmdetection's
# anchors, assigner and loss. COCO anchors and 80 classes; ssd300_voc0712.py changes both.
# Channels are stated once: the neck reads the backbone's out_channels (512, 1024) and the head the neck's.
model = dict(
    type='SingleStageDetector',
    # conv4_3 (38x38x512, L2-normalised, scale 20) and fc7 (19x19x1024). For the published numbers, initialise
    # from ImageNet: pretrained='<local torchvision vgg16 weight file>' (loads conv1_1..conv5_3; never downloaded).
    backbone=dict(type='SSDVGG', out_indices=(22, 34), l2_norm_scale=20.0, pretrained=None),
    # 19 -> 10 -> 5 -> 3 -> 1
    neck=dict(type='SSDNeck', extra_channels=(512, 256, 256, 256), strides=(2, 2, 1, 1), paddings=(1, 1, 0, 0)),
    bbox_head=dict(
        type='SSDHead',
        num_classes=80,  # softmax over 81: background is the last index
        anchor_generator=dict(
            type='SSDAnchorGenerator',
            input_size=300,
            basesize_ratio_range=(0.15, 0.9),  # min sizes 21, 45, 99, 153, 207, 261; max 45 .. 315
            strides=[8, 16, 32, 64, 100, 300],
            ratios=[[2], [2, 3], [2, 3], [2, 3], [2], [2]]),  # 4, 6, 6, 6, 4, 4 anchors: 8732 in all
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                        target_stds=[0.1, 0.1, 0.2, 0.2]),
        loss_cls=dict(type='CrossEntropyLoss'),  # softmax, background last; hard negatives 3:1
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0)),
    # training-only arguments of the head
    train_cfg=dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.0, ignore_iof_thr=-1,
                      gt_max_assign_all=False),  # every object keeps its best anchor
        neg_pos_ratio=3),  # hard negatives per positive
    test_cfg=dict(nms_pre=1000, score_thr=0.02, nms=dict(type='nms', iou_threshold=0.45), min_bbox_size=0,
                  max_per_img=200))

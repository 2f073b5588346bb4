# SSD300 with a ResNet50 backbone, NVIDIA DeepLearningExamples layout (22,894,902 parameters with 81 classes):
# conv1..layer3 of ResNet50 with stride 1 in layer3's first block (38x38x1024 at 300), five bias-free
# conv-BN-ReLU extra blocks, plain 3x3 predictors; the SSD300 COCO anchors, assigner and loss.
model = dict(
    type='SingleStageDetector',
    # For the published numbers initialise from ImageNet: pretrained='<local torchvision resnet50 weight file>'
    # (layer4 and fc are dropped; never downloaded).
    backbone=dict(type='ResNet', depth=50, num_stages=3, strides=(1, 2, 1), out_indices=(2,), frozen_stages=-1,
                  norm_eval=False, pretrained=None),
    # 38 -> 19 -> 10 -> 5 -> 3 -> 1
    neck=dict(type='SSDNeck', extra_channels=(512, 512, 256, 256, 256), mid_channels=(256, 256, 128, 128, 128),
              strides=(2, 2, 2, 1, 1), paddings=(1, 1, 1, 0, 0), norm=True),
    bbox_head=dict(
        type='SSDHead',
        num_classes=80,
        anchor_generator=dict(
            type='SSDAnchorGenerator',
            input_size=300,
            basesize_ratio_range=(0.15, 0.9),  # NVIDIA's scales 21, 45, 99, 153, 207, 261, 315
            strides=[8, 16, 32, 64, 100, 300],
            ratios=[[2], [2, 3], [2, 3], [2, 3], [2], [2]]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                        target_stds=[0.1, 0.1, 0.2, 0.2]),  # NVIDIA's scale_xy 0.1, scale_wh 0.2
        loss_cls=dict(type='CrossEntropyLoss'),  # softmax, background last; hard negatives 3:1
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0)),
    train_cfg=dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.0, ignore_iof_thr=-1,
                      gt_max_assign_all=False),
        neg_pos_ratio=3),
    test_cfg=dict(nms_pre=1000, score_thr=0.02, nms=dict(type='nms', iou_threshold=0.45), min_bbox_size=0,
                  max_per_img=200))

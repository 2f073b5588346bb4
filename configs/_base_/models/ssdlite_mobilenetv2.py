# SSDLite320 with a MobileNetV2 backbone (Sandler et al., 2018), mmdetection's layout: depthwise-separable extra
# layers and predictors, batch norm (eps 1e-3, momentum 0.03) and ReLU6 everywhere, 6 anchors per location.
bn = dict(bn_eps=0.001, bn_momentum=0.03)
model = dict(
    type='SingleStageDetector',
    # layer5 (20x20x96) and conv2 (10x10x1280)
    backbone=dict(type='MobileNetV2', widen_factor=1.0, out_indices=(4, 7), act='relu6', **bn),
    # 10 -> 5 -> 3 -> 2 -> 1
    neck=dict(type='SSDNeck', extra_channels=(512, 256, 256, 128), strides=(2, 2, 2, 2), paddings=(1, 1, 1, 1),
              norm=True, use_depthwise=True, act='relu6', **bn),
    bbox_head=dict(
        type='SSDHead',
        num_classes=80,
        use_depthwise=True,
        act='relu6',
        **bn,
        anchor_generator=dict(
            type='SSDAnchorGenerator',
            input_size=320,
            strides=[16, 32, 64, 107, 160, 320],
            ratios=[[2, 3], [2, 3], [2, 3], [2, 3], [2, 3], [2, 3]],  # 6 anchors per location: 3234 in all
            min_sizes=[48, 100, 150, 202, 253, 304],
            max_sizes=[100, 150, 202, 253, 304, 320]),
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

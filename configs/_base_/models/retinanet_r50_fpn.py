# RetinaNet R50-FPN (Lin et al., ICCV 2017), mmdetection's layout: ResNet-50 (stages 1-4), FPN P3-P7 with P6 from
# C5 ('on_input'), a shared 4-conv head with focal loss. COCO's 80 classes; the VOC config changes them.
# Channels are stated once: the FPN reads the backbone's (256, 512, 1024, 2048), the head the FPN's 256.
model = dict(
    type='SingleStageDetector',
    # For the published numbers initialise from ImageNet: pretrained='<local torchvision resnet50 weight file>'
    # (never downloaded). frozen_stages=1 and norm_eval: the stem and stage 1 stay fixed, batch norms use their
    # ImageNet statistics (2 images per GPU are too few to estimate them).
    backbone=dict(type='ResNet', depth=50, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1, norm_eval=True,
                  pretrained=None),
    neck=dict(type='FPN', out_channels=256, start_level=1, add_extra_convs='on_input', num_outs=5),  # P3-P7
    bbox_head=dict(
        type='RetinaHead',
        num_classes=80,  # sigmoid per class, no background channel
        stacked_convs=4,
        feat_channels=256,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                              ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),  # 9 per location
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                        target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0, ignore_iof_thr=-1)),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=100))

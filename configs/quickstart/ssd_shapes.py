# Quickstart: a small SSD (ResNet-18 at half width, 192x192 input) trained from scratch on the synthetic
# shapes dataset (4 classes: circle, square, triangle, star) on the CPU. tools/quickstart.sh generates the data,
# trains, tests, runs the demo and plots the curves; target: the whole run in <= 10 minutes on 2 cores with
# VOC mAP@0.5 >= 0.80 on the val split.
#
# Data: python tools/dataset_converters/make_shapes.py --out data/shapes --num 2000 --format voc --seed 0 --split train
#       (and --num 200 --split val), VOC layout: data/shapes/{JPEGImages,Annotations,ImageSets/Main/<split>.txt}.
# The dataset, the 192 px pipeline, the optimizer and the 12-epoch schedule come from the quickstart base; this file
# sets the model.
_base_ = ['../_base_/quickstart_shapes.py']

classes = ('circle', 'square', 'triangle', 'star')  # the base's (make_shapes.py's order); a child cannot read it
input_size = 192  # the base's

# Levels and anchors: the simple shapes span 14%..44% of the image side (27..85 px at 192); the hard ones reach
# down to ~11 px once an image of aspect 1.7 is squeezed to 192x192. Four levels: 24x24 (stride 8), 12x12, 6x6 and
# one extra 3x3 (stride 64), 4 anchors per location (16..176 px), 3060 in all.
# What the budget buys (val mAP@0.5, simple / hard shapes):
#   ResNet-18 (width 64), 1000 images x 7 epochs (441 iterations of ~1.0 s, AMD EPYC) ............... 0.67 / -
#   ResNet-18 at half width (base_channels=32), 1000 x 20 ........................................... 0.81 / -
#   half width, 2500 x 8 (1256 iterations) ........................................................... 0.92 / -
#   half width, levels at strides 16/32/64, float32, 2000 x 8 (the recipe until the hard style) ....... 0.90 / 0.72
#   + a stride-8 level, bfloat16 autocast, 2000 x 12 (1500 iterations): shipped (docs/design/quickstart_recipes.md)
# so iterations beat width, fresh images beat epochs over the same ones, and the stride-8 level is what the small
# hard objects need (0.39 against 0.29 after 2 epochs). A MobileNetV2 x0.5 with a depthwise head learned next to
# nothing (0.07) in the first budget.
model = dict(
    type='SingleStageDetector',
    backbone=dict(type='ResNet', depth=18, num_stages=4, strides=(1, 2, 2, 2), out_indices=(1, 2, 3),
                  base_channels=32),  # stages of 32/64/128/256 channels; strides 8, 16, 32 out
    neck=dict(type='SSDNeck', extra_channels=(128, ), strides=(2, ), paddings=(1, )),
    bbox_head=dict(
        type='SSDHead',
        num_classes=len(classes),
        anchor_generator=dict(type='SSDAnchorGenerator', input_size=input_size, strides=[8, 16, 32, 64],
                              ratios=[[2], [2], [2], [2]], min_sizes=[16, 32, 64, 112],
                              max_sizes=[32, 64, 112, 176]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                        target_stds=[0.1, 0.1, 0.2, 0.2]),
        loss_cls=dict(type='CrossEntropyLoss'),  # softmax, background last; hard negatives 3:1
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0)),
    train_cfg=dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.0, ignore_iof_thr=-1,
                      gt_max_assign_all=False),
        neg_pos_ratio=3),
    test_cfg=dict(nms_pre=400, score_thr=0.02, nms=dict(type='nms', iou_threshold=0.45), min_bbox_size=0,
                  max_per_img=100),
    channels_last=True)  # NHWC convolutions: ~12% faster per step on the CPU

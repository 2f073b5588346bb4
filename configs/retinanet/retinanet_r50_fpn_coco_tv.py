# RetinaNet R50-FPN that gives torchvision's detections with torchvision's weights (retinanet_resnet50_fpn,
# COCO_V1: box AP 36.4), converted by tools/model_converters/torchvision_to_detkit.py retinanet_resnet50_fpn.
# retinanet_r50_fpn_1x_coco.py is mmdetection's RetinaNet; torchvision's differs in each point below.
#
# * Layout: the FPN reads ResNet stages 2-4 (out_indices (1, 2, 3), start_level 0) and makes P6 from P5 (not from
#   C5), P7 from ReLU(P6): 34,068,119 parameters with 91 classes.
# * Pre-processing (GeneralizedRCNNTransform(min_size=800, max_size=1333)): scale = min(800 / short side,
#   1333 / long side) and each side becomes floor(side * scale) (F.interpolate with recompute_scale_factor), not
#   rounded half up (640x480 -> 1066x800, not 1067x800); bilinear on floats; ImageNet mean and std on RGB; zero
#   padding to a multiple of 32 after the normalisation.
# * Anchors (torchvision's AnchorGenerator): sizes truncated to whole pixels (32, 40, 50 at stride 8, not 32, 40.3,
#   50.8), base anchors rounded to whole pixels, and each level's stride is the padded input size floor-divided by
#   its feature-map size (61 instead of 64 on P6 of an 800-pixel side).
# * Box decoding: torchvision's BoxCoder clamps dw, dh from above only (clamp_shrink=False).
# * Label space: torchvision's 91 classes, sigmoid scores, labels unchanged: detkit label k is torchvision label k,
#   the COCO category id (0 is an unused '__background__' class, and the 'N/A' ids too). The converter stores
#   torchvision's category names in the checkpoint (model.dataset_meta['classes'][k] names label k).
# * Post-processing (RetinaNet.postprocess_detections): per level the 1000 best (anchor, class) pairs scoring above
#   0.05, class-aware NMS at IoU 0.5, the 300 best per image (not 100), no minimum box size.
#
# Boxes come back in original-image pixels, as torchvision's transform.postprocess returns them.
# For inference with torchvision's weights (init_detector, inference_detector, tools/demo.py). The datasets, training
# settings and evaluator are retinanet_r50_fpn_1x_coco.py's, whose CocoMetric maps labels 0..79 to the dataset's 80
# category ids: evaluating this 91-label model with it is not supported (its labels are COCO category ids).
_base_ = './retinanet_r50_fpn_1x_coco.py'

model = dict(
    backbone=dict(out_indices=(1, 2, 3)),  # C3, C4, C5
    neck=dict(start_level=0, add_extra_convs='on_output', relu_before_extra_convs=True),
    bbox_head=dict(
        num_classes=91,
        anchor_generator=dict(size_rounding='floor', round_base_anchors=True, strides_from_input=True),
        bbox_coder=dict(clamp_shrink=False)),  # torchvision clamps dw, dh from above only
    test_cfg=dict(nms_pre=1000, score_thr=0.05, min_bbox_size=-1, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=300))

imagenet = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)  # 0-1 values x 255
test_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),  # resize floats, as torchvision does
    dict(type='Resize', scale=(1333, 800), keep_ratio=True, size_rounding='floor', interpolation='bilinear'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Normalize', **imagenet),
    dict(type='Pad', size_divisor=32),
    dict(type='PackDetInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

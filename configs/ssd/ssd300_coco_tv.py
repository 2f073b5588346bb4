# SSD300-VGG16 that gives torchvision's detections with torchvision's weights (ssd300_vgg16, COCO_V1: box AP
# 25.1), converted by tools/model_converters/torchvision_to_detkit.py ssd300_vgg16. ssd300_coco.py differs from
# torchvision in each point below; with its settings the same weights move the top detections by up to 32 px.
#
# * Pre-processing (torchvision's GeneralizedRCNNTransform with fixed_size=(300, 300)): the RGB image is resized as
#   floats (bilinear, align_corners=False: OpenCV's INTER_LINEAR on a float32 image, within ~1e-4 grey levels), not
#   as uint8 (which rounds every pixel), and normalised with torchvision's mean (0.48235, 0.45882, 0.40784) x 255
#   and std 1 (its image_std 1/255 undoes the 0-1 scaling), not mmdetection's (123.675, 116.28, 103.53).
# * Anchors: DefaultBoxGenerator(scales=[0.07, 0.15, ..., 1.05], clip=True): the same sizes as
#   basesize_ratio_range=(0.15, 0.9), but widths and heights are clipped to the image (clip_size).
# * Label space: 91 classes with the background at 0 in torchvision; the converter moves the background to the
#   last channel, so num_classes=90 and detkit label k is torchvision label k + 1 (the COCO category id; 12, 26,
#   29, 30, 45, 66, 68, 69, 71 and 83 are torchvision's unused 'N/A' classes). The converter stores torchvision's
#   category names in the checkpoint, so model.dataset_meta['classes'][k] names label k.
# * Box decoding: torchvision's BoxCoder clamps the log size ratios dw, dh from above only (mmdetection's also from
#   below, which keeps every box at least 1/62.5 of its anchor): clamp_shrink=False.
# * Post-processing (SSD.postprocess_detections): per class, the anchors scoring above 0.01, the 400 best of them
#   over all levels (not 1000 per level), class-aware NMS at IoU 0.45, the 200 best; no minimum box size.
#
# Boxes come back in original-image pixels, as torchvision's transform.postprocess returns them.
# For inference with torchvision's weights (init_detector, inference_detector, tools/demo.py). The datasets, training
# settings and evaluator are ssd300_coco.py's, whose CocoMetric maps labels 0..79 to the dataset's 80 category ids:
# evaluating this 90-label model with it is not supported (its labels are COCO category ids minus 1).
_base_ = './ssd300_coco.py'

model = dict(
    bbox_head=dict(
        num_classes=90,  # + background = torchvision's 91
        anchor_generator=dict(basesize_ratio_range=None, size_pattern=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
                              clip_size=True),
        bbox_coder=dict(clamp_shrink=False)),  # torchvision clamps dw, dh from above only
    test_cfg=dict(score_thr=0.01, nms_pre=0, nms_pre_per_class=400, min_bbox_size=-1,
                  nms=dict(type='nms', iou_threshold=0.45), max_per_img=200))

input_size = 300
tv_mean = [0.48235 * 255, 0.45882 * 255, 0.40784 * 255]  # RGB
test_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),  # resize floats, as torchvision does
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False, interpolation='bilinear'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Normalize', mean=tv_mean, std=[1, 1, 1], to_rgb=True),
    dict(type='PackDetInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

"""A tiny SSD that trains in seconds and synthetic data for it (imported by the model tests)."""
from __future__ import annotations

import torch

TINY_SIZE = 64


def tiny_ssd_cfg(num_classes: int = 3, input_size: int = TINY_SIZE) -> dict:
    """An SSD with the real parts (SSDVGG with L2Norm, SSDNeck, SSDHead) at 1/8 width on 64x64 inputs.

    Feature maps 8, 4, 2, 1 with 4 anchors per location: 340 anchors.
    """
    return dict(
        type='SingleStageDetector',
        backbone=dict(type='SSDVGG', widen_factor=0.125),  # conv4_3: 64 ch at 8x8, fc7: 128 ch at 4x4
        neck=dict(type='SSDNeck', extra_channels=(32, 32), strides=(2, 2), paddings=(1, 1)),
        bbox_head=dict(
            type='SSDHead', num_classes=num_classes,
            anchor_generator=dict(type='SSDAnchorGenerator', input_size=input_size, strides=[8, 16, 32, 64],
                                  ratios=[[2], [2], [2], [2]], min_sizes=[8, 16, 32, 48],
                                  max_sizes=[16, 32, 48, 64])),
        train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.0,
                                     gt_max_assign_all=False)),
        test_cfg=dict(nms_pre=1000, score_thr=0.02, nms=dict(type='nms', iou_threshold=0.45), max_per_img=200))


def synthetic_batch(n: int, num_classes: int = 3, size: int = TINY_SIZE, seed: int = 0):
    """``n`` noisy images with 1-2 bright rectangles each; class ``c`` brightens colour channel ``c``.

    Returns ``images Tensor[n, 3, size, size]`` and targets (boxes in input-image pixels, labels).
    """
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=g) * 0.1
    targets = []
    for i in range(n):
        boxes, labels = [], []
        for _ in range(int(torch.randint(1, 3, (1,), generator=g))):
            w, h = (int(v) for v in torch.randint(12, 40, (2,), generator=g))
            x1 = int(torch.randint(0, size - w, (1,), generator=g))
            y1 = int(torch.randint(0, size - h, (1,), generator=g))
            c = int(torch.randint(0, num_classes, (1,), generator=g))
            images[i, c % 3, y1:y1 + h, x1:x1 + w] += 2.0
            boxes.append([x1, y1, x1 + w, y1 + h])
            labels.append(c)
        targets.append({'boxes': torch.tensor(boxes, dtype=torch.float32), 'labels': torch.tensor(labels)})
    return images, targets

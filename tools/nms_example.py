"""A worked example of detkit's NMS operators, printing which backend ran.

    python tools/nms_example.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detkit.ops import batched_nms, batched_soft_nms, nms, soft_nms  # noqa: E402
from detkit.ops._ext import ext_error, has_kernel  # noqa: E402
from detkit.utils.errors import run_tool  # noqa: E402


def main() -> None:
    backend = 'compiled detkit._C' if has_kernel('nms', 'cpu') else f'PyTorch fallback ({ext_error()})'
    print(f'NMS backend on CPU: {backend}')
    # three detections of one object, one of another, in input-image pixels (x1, y1, x2, y2)
    boxes = torch.tensor([[10.0, 10.0, 110.0, 110.0],
                          [12.0, 8.0, 108.0, 115.0],
                          [20.0, 20.0, 120.0, 120.0],  # overlaps box 0, but labelled as another class
                          [200.0, 50.0, 260.0, 120.0]])
    scores = torch.tensor([0.9, 0.85, 0.6, 0.7])
    labels = torch.tensor([0, 0, 1, 0])
    print('boxes:\n', boxes)
    print('scores:', [round(s, 3) for s in scores.tolist()])
    print('nms(iou 0.5) keeps:', nms(boxes, scores, 0.5).tolist())
    print('batched_nms(iou 0.5, labels', labels.tolist(), ') keeps:', batched_nms(boxes, scores, labels, 0.5).tolist())
    for method in ('linear', 'gaussian'):
        dets, keep = soft_nms(boxes, scores, iou_threshold=0.3, sigma=0.5, min_score=0.05, method=method)
        print(f'soft_nms({method}) keeps {keep.tolist()} with scores {[round(s, 3) for s in dets[:, 4].tolist()]}')
    dets, keep = batched_soft_nms(boxes, scores, labels, iou_threshold=0.3, min_score=0.05)
    print(f'batched_soft_nms(linear, labels {labels.tolist()}) keeps {keep.tolist()} with scores '
          f'{[round(s, 3) for s in dets[:, 4].tolist()]}')


if __name__ == '__main__':
    run_tool(main)

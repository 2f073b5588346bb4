"""Drawing detections (detkit/utils/visualization.py)."""
import numpy as np
import torch

from detkit.utils.visualization import class_color, draw_detections


def test_boxes_are_drawn_in_the_class_colour_and_the_input_is_untouched():
    img = np.zeros((100, 120, 3), np.uint8)
    out = draw_detections(img, torch.tensor([[20.0, 40.0, 80.0, 90.0], [5, 5, 15, 15]]), torch.tensor([3, 1]),
                          torch.tensor([0.9, 0.1]), class_names=['a', 'b', 'c', 'dog'], score_thr=0.3, thickness=1)
    assert img.max() == 0
    assert tuple(out[65, 20]) == class_color(3)       # left edge of the kept box
    assert tuple(out[10, 5]) == (0, 0, 0)             # the low-scoring box is not drawn
    assert (out[:40, 20:80] != 0).any()               # its caption sits above the box


def test_ground_truth_grey_input_and_unknown_names():
    out = draw_detections(np.full((50, 50), 128, np.uint8), np.array([[0, 0, 30, 30]]), np.array([7]), None, None)
    assert out.shape == (50, 50, 3) and tuple(out[15, 0]) == class_color(7)
    assert len({class_color(i) for i in range(20)}) == 20

import pytest
import torch
from torchvision.ops import box_iou

from detkit.structures import bbox_cxcywh_to_xyxy, bbox_overlaps, bbox_xyxy_to_cxcywh


def random_boxes(n: int, size: float = 100.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 2 + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_iou_matches_torchvision():
    b1, b2 = random_boxes(30, seed=1), random_boxes(50, seed=2)
    torch.testing.assert_close(bbox_overlaps(b1, b2), box_iou(b1, b2), rtol=1e-5, atol=1e-6)


def test_aligned_is_the_diagonal():
    b1, b2 = random_boxes(20, seed=3), random_boxes(20, seed=4)
    full = bbox_overlaps(b1, b2)
    torch.testing.assert_close(bbox_overlaps(b1, b2, is_aligned=True), full.diagonal())
    torch.testing.assert_close(bbox_overlaps(b1, b2, mode='iof', is_aligned=True),
                               bbox_overlaps(b1, b2, mode='iof').diagonal())


def test_hand_computed_iou_and_iof():
    a = torch.tensor([[0., 0., 10., 10.]])
    b = torch.tensor([[5., 0., 15., 10.],    # half of a: inter 50, union 150
                      [0., 0., 100., 100.],  # contains a: inter 100, union 10000
                      [20., 20., 30., 30.]])  # disjoint
    torch.testing.assert_close(bbox_overlaps(a, b), torch.tensor([[50 / 150, 100 / 10000, 0.0]]))
    # iof divides by the area of the first box: a fully inside b[1] has IoF 1
    torch.testing.assert_close(bbox_overlaps(a, b, mode='iof'), torch.tensor([[0.5, 1.0, 0.0]]))


def test_batch_dimensions_and_empty_sets():
    b1 = random_boxes(6).view(2, 3, 4)
    b2 = random_boxes(8, seed=5).view(2, 4, 4)
    out = bbox_overlaps(b1, b2)
    assert out.shape == (2, 3, 4)
    torch.testing.assert_close(out[1], box_iou(b1[1], b2[1]), rtol=1e-5, atol=1e-6)
    assert bbox_overlaps(torch.zeros(0, 4), b2[0]).shape == (0, 4)
    assert bbox_overlaps(b2[0], torch.zeros(0, 4)).shape == (4, 0)


def test_empty_boxes_give_zero_not_nan():
    z = torch.zeros(2, 4)
    out = bbox_overlaps(z, z)
    assert torch.equal(out, torch.zeros(2, 2))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match='mode'):
        bbox_overlaps(torch.zeros(1, 4), torch.zeros(1, 4), mode='diou')
    with pytest.raises(ValueError, match='bboxes2'):
        bbox_overlaps(torch.zeros(1, 4), torch.zeros(1, 5))
    with pytest.raises(ValueError, match='is_aligned'):
        bbox_overlaps(torch.zeros(2, 4), torch.zeros(3, 4), is_aligned=True)


def test_cxcywh_round_trip():
    b = random_boxes(10)
    c = bbox_xyxy_to_cxcywh(b)
    torch.testing.assert_close(c[:, 2], b[:, 2] - b[:, 0])
    torch.testing.assert_close(bbox_cxcywh_to_xyxy(c), b)

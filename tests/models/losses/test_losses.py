"""The registered losses against torch / torchvision's own implementations."""
import pytest
import torch
import torch.nn.functional as F
import torchvision

from detkit.models.losses import CrossEntropyLoss, FocalLoss, GIoULoss, L1Loss, SmoothL1Loss
from detkit.registry import MODELS
from detkit.structures import bbox_overlaps


def random_boxes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 50 + 1], dim=1)


@pytest.mark.parametrize('gamma, alpha', [(2.0, 0.25), (0.0, 0.5), (1.5, -1.0)])
def test_focal_loss_equals_torchvision(gamma, alpha):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 7, generator=g) * 3
    labels = torch.randint(0, 8, (50,), generator=g)  # 7 = background: an all-zero row
    onehot = F.one_hot(labels, 8)[:, :7].float()
    ref = torchvision.ops.sigmoid_focal_loss(logits, onehot, alpha=alpha, gamma=gamma, reduction='sum')
    loss = MODELS.build(dict(type='FocalLoss', gamma=gamma, alpha=alpha))
    torch.testing.assert_close(loss(logits, labels, avg_factor=13.0), ref / 13.0)
    torch.testing.assert_close(loss(logits, onehot, avg_factor=13.0), ref / 13.0)  # one-hot targets too
    ref_none = torchvision.ops.sigmoid_focal_loss(logits, onehot, alpha=alpha, gamma=gamma, reduction='none')
    torch.testing.assert_close(FocalLoss(gamma=gamma, alpha=alpha, reduction='none')(logits, labels), ref_none)
    torch.testing.assert_close(FocalLoss(gamma=gamma, alpha=alpha, loss_weight=2.0)(logits, labels),
                               2 * ref_none.mean())


def test_focal_loss_gradient_matches_torchvision():
    logits = torch.randn(20, 3, requires_grad=True)
    labels = torch.randint(0, 4, (20,))
    FocalLoss(reduction='sum')(logits, labels).backward()
    ours = logits.grad.clone()
    logits.grad = None
    torchvision.ops.sigmoid_focal_loss(logits, F.one_hot(labels, 4)[:, :3].float(), reduction='sum').backward()
    torch.testing.assert_close(ours, logits.grad)


def test_cross_entropy_softmax_and_sigmoid():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(30, 5, generator=g)
    labels = torch.randint(0, 5, (30,), generator=g)
    weight = torch.rand(30, generator=g)
    loss = CrossEntropyLoss()
    torch.testing.assert_close(loss(logits, labels), F.cross_entropy(logits, labels))
    torch.testing.assert_close(loss(logits, labels, avg_factor=4.0), F.cross_entropy(logits, labels, reduction='sum') / 4)
    torch.testing.assert_close(loss(logits, labels, weight=weight, avg_factor=4.0),
                               (F.cross_entropy(logits, labels, reduction='none') * weight).sum() / 4)
    # sigmoid: label 5 (= num_classes) is background, an all-zero target row
    sig_labels = torch.randint(0, 6, (30,), generator=g)
    ref = F.binary_cross_entropy_with_logits(logits, F.one_hot(sig_labels, 6)[:, :5].float(), reduction='sum') / 7
    torch.testing.assert_close(CrossEntropyLoss(use_sigmoid=True)(logits, sig_labels, avg_factor=7), ref)


def test_smooth_l1_and_l1():
    g = torch.Generator().manual_seed(2)
    pred, target = torch.randn(40, 4, generator=g), torch.randn(40, 4, generator=g)
    torch.testing.assert_close(SmoothL1Loss(beta=0.5)(pred, target, avg_factor=10),
                               F.smooth_l1_loss(pred, target, beta=0.5, reduction='sum') / 10)
    torch.testing.assert_close(L1Loss(loss_weight=3.0)(pred, target), 3 * F.l1_loss(pred, target))
    weight = torch.rand(40, 1, generator=g)
    torch.testing.assert_close(L1Loss()(pred, target, weight=weight, avg_factor=2),
                               ((pred - target).abs() * weight).sum() / 2)
    with pytest.raises(ValueError, match='same shape'):
        L1Loss()(pred, target[:3])


def test_giou_loss_equals_torchvision():
    pred, target = random_boxes(64, 3), random_boxes(64, 4)
    ref = torchvision.ops.generalized_box_iou_loss(pred, target, reduction='sum')
    torch.testing.assert_close(GIoULoss()(pred, target, avg_factor=8), ref / 8, rtol=1e-5, atol=1e-5)
    # identical boxes: no loss; disjoint boxes: more than 1
    assert GIoULoss()(pred, pred).item() < 1e-6
    far = pred + 500
    assert GIoULoss(reduction='none')(pred, far).min() > 1


def test_giou_overlaps_equal_torchvision_pairwise():
    a, b = random_boxes(9, 5), random_boxes(11, 6)
    torch.testing.assert_close(bbox_overlaps(a, b, mode='giou'), torchvision.ops.generalized_box_iou(a, b),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bbox_overlaps(a, b), torchvision.ops.box_iou(a, b), rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match='FocalLoss: reduction'):
        FocalLoss(reduction='avg')
    with pytest.raises(ValueError, match='use_sigmoid=True'):
        FocalLoss(use_sigmoid=False)
    with pytest.raises(ValueError, match='SmoothL1Loss: beta'):
        SmoothL1Loss(beta=-1)
    with pytest.raises(ValueError, match='loss_weight'):
        L1Loss(loss_weight=-1)
    with pytest.raises(ValueError, match=r'\(N, C\)'):
        FocalLoss()(torch.zeros(3), torch.zeros(3, dtype=torch.long))

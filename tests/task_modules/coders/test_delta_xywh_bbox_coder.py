import math

import pytest
import torch

from detkit.registry import TASK_UTILS
from detkit.task_modules import DeltaXYWHBBoxCoder

SSD_STDS = (0.1, 0.1, 0.2, 0.2)


def test_registered():
    coder = TASK_UTILS.build(dict(type='DeltaXYWHBBoxCoder', target_stds=SSD_STDS))
    assert isinstance(coder, DeltaXYWHBBoxCoder)
    assert coder.target_stds == SSD_STDS and coder.target_means == (0.0, 0.0, 0.0, 0.0)  # the config's, the default


def test_hand_computed_encoding():
    coder = DeltaXYWHBBoxCoder(target_stds=SSD_STDS)
    prior = torch.tensor([[0., 0., 10., 20.]])   # centre (5, 10), 10 x 20
    gt = torch.tensor([[2., 4., 22., 24.]])      # centre (12, 14), 20 x 20
    expected = torch.tensor([[(7 / 10) / 0.1, (4 / 20) / 0.1, math.log(2) / 0.2, math.log(1) / 0.2]])
    torch.testing.assert_close(coder.encode(prior, gt), expected)


def test_round_trip():
    g = torch.Generator().manual_seed(0)
    priors = torch.rand(100, 2, generator=g) * 200
    priors = torch.cat([priors, priors + torch.rand(100, 2, generator=g) * 100 + 4], 1)
    gts = torch.rand(100, 2, generator=g) * 200
    gts = torch.cat([gts, gts + torch.rand(100, 2, generator=g) * 100 + 4], 1)
    for coder in (DeltaXYWHBBoxCoder(), DeltaXYWHBBoxCoder(target_means=(0.1, -0.1, 0.0, 0.2), target_stds=SSD_STDS)):
        torch.testing.assert_close(coder.decode(priors, coder.encode(priors, gts)), gts, rtol=1e-5, atol=1e-3)


def test_decode_clamps_log_size_ratio():
    coder = DeltaXYWHBBoxCoder()
    prior = torch.tensor([[0., 0., 10., 10.]])
    huge = torch.tensor([[0., 0., 100., -100.]])  # exp(100) would overflow to inf
    box = coder.decode(prior, huge)
    assert torch.isfinite(box).all()
    max_ratio = abs(math.log(16 / 1000))
    # width is clamped to 10 * exp(|log(16/1000)|) = 625, height to 10 * 16/1000 = 0.16, centre kept at (5, 5)
    torch.testing.assert_close(box, torch.tensor([[5 - 5 * math.exp(max_ratio), 5 - 0.08,
                                                   5 + 5 * math.exp(max_ratio), 5 + 0.08]]))


def test_decode_without_shrink_clamp_is_torchvision_box_coder():
    """clamp_shrink=False: torchvision's BoxCoder.decode_single (SSD's weights 10, 10, 5, 5), which clamps dw and dh
    from above only, so a strongly negative dh shrinks a box to a sliver instead of 1/62.5 of its prior."""
    from torchvision.models.detection._utils import BoxCoder

    g = torch.Generator().manual_seed(1)
    priors = torch.rand(200, 2, generator=g) * 200
    priors = torch.cat([priors, priors + torch.rand(200, 2, generator=g) * 100 + 4], 1)
    deltas = torch.randn(200, 4, generator=g) * 15  # dw, dh = 0.2 * delta reach far beyond +-4.14
    expected = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)).decode_single(deltas, priors)
    ours = DeltaXYWHBBoxCoder(target_stds=SSD_STDS, clamp_shrink=False).decode(priors, deltas)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-3)
    clamped = DeltaXYWHBBoxCoder(target_stds=SSD_STDS).decode(priors, deltas)
    assert (clamped - expected).abs().max() > 0.5


def test_decode_clips_to_max_shape_and_broadcasts():
    coder = DeltaXYWHBBoxCoder(target_stds=SSD_STDS)
    priors = torch.tensor([[-10., -10., 30., 30.], [80., 40., 120., 60.]])  # (A, 4)
    deltas = torch.zeros(3, 2, 4)  # (N, A, 4)
    boxes = coder.decode(priors, deltas, max_shape=(50, 100))  # h 50, w 100
    assert boxes.shape == (3, 2, 4)
    torch.testing.assert_close(boxes[0], torch.tensor([[0., 0., 30., 30.], [80., 40., 100., 50.]]))
    unclipped = DeltaXYWHBBoxCoder(clip_border=False).decode(priors, deltas[0], max_shape=(50, 100))
    torch.testing.assert_close(unclipped, priors)


def test_bad_arguments():
    with pytest.raises(ValueError, match='target_stds'):
        DeltaXYWHBBoxCoder(target_stds=(0.1, 0.1, 0.2))
    with pytest.raises(ValueError, match='same shape'):
        DeltaXYWHBBoxCoder().encode(torch.zeros(2, 4), torch.zeros(3, 4))

import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList

from detkit.registry import TASK_UTILS
from detkit.task_modules import SSDAnchorGenerator
from detkit.task_modules.prior_generators import ssd_anchor_sizes

SSD300_STRIDES = [8, 16, 32, 64, 100, 300]
SSD300_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
SSD512_STRIDES = [8, 16, 32, 64, 128, 256, 512]
SSD512_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]]


def ssd300(basesize_ratio_range=(0.15, 0.9)) -> SSDAnchorGenerator:
    return TASK_UTILS.build(dict(type='SSDAnchorGenerator', input_size=300, basesize_ratio_range=basesize_ratio_range,
                                 strides=SSD300_STRIDES, ratios=SSD300_RATIOS))


def total(gen: SSDAnchorGenerator) -> int:
    return sum(a.shape[0] for a in gen.grid_priors(gen.featmap_sizes))


def test_ssd300_count_and_layout():
    gen = ssd300()
    assert gen.num_base_priors == [4, 6, 6, 6, 4, 4]
    assert gen.featmap_sizes == [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
    assert total(gen) == 8732


def test_ssd512_count():
    gen = SSDAnchorGenerator(SSD512_STRIDES, SSD512_RATIOS, input_size=512, basesize_ratio_range=(0.1, 0.9))
    assert gen.featmap_sizes == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    assert gen.num_base_priors == [4, 6, 6, 6, 6, 4, 4]
    assert total(gen) == 24564


def test_ssdlite320_count():
    gen = SSDAnchorGenerator([16, 32, 64, 107, 160, 320], [[2, 3]] * 6, input_size=320,
                             min_sizes=[48, 100, 150, 202, 253, 304], max_sizes=[100, 150, 202, 253, 304, 320])
    assert gen.featmap_sizes == [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    assert total(gen) == 3234


@pytest.mark.parametrize('input_size, ratio_range, num_levels, min_sizes, max_sizes', [
    (300, (0.15, 0.9), 6, [21, 45, 99, 153, 207, 261], [45, 99, 153, 207, 261, 315]),
    (300, (0.2, 0.9), 6, [30, 60, 111, 162, 213, 264], [60, 111, 162, 213, 264, 315]),
    (512, (0.1, 0.9), 7, [20, 51, 133, 215, 296, 378, 460], [51, 133, 215, 296, 378, 460, 542]),
    (512, (0.15, 0.9), 7, [35, 76, 153, 230, 307, 384, 460], [76, 153, 230, 307, 384, 460, 537]),
])
def test_sizes_from_basesize_ratio_range(input_size, ratio_range, num_levels, min_sizes, max_sizes):
    # the published (mmdetection) values, REFERENCE.md
    assert ssd_anchor_sizes(input_size, ratio_range, num_levels) == (min_sizes, max_sizes)


def test_unknown_ratio_range_is_refused():
    with pytest.raises(ValueError, match='min_sizes and max_sizes'):
        SSDAnchorGenerator(SSD300_STRIDES, SSD300_RATIOS, input_size=300, basesize_ratio_range=(0.3, 0.9))
    with pytest.raises(ValueError, match='max_sizes\\[1\\]'):
        SSDAnchorGenerator([8, 16], [[2], [2]], input_size=32, min_sizes=[4, 10], max_sizes=[8, 9])


def box(cx: float, cy: float, w: float, h: float) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def test_hand_computed_first_and_last_level_ssd300_coco():
    gen = ssd300()
    # level 0: stride 8 -> first centre (4, 4); min 21, max 45; ratio 2
    s, s2, r = 21.0, math.sqrt(21 * 45), math.sqrt(2)
    expected0 = torch.tensor([box(4, 4, s, s), box(4, 4, s2, s2), box(4, 4, s * r, s / r), box(4, 4, s / r, s * r)])
    torch.testing.assert_close(gen.base_anchors[0].float(), expected0)
    # level 5: one location, centre (150, 150); min 261, max 315; ratio 2
    s, s2 = 261.0, math.sqrt(261 * 315)
    expected5 = torch.tensor([box(150, 150, s, s), box(150, 150, s2, s2), box(150, 150, s * r, s / r),
                              box(150, 150, s / r, s * r)])
    anchors = gen.grid_priors(gen.featmap_sizes)
    torch.testing.assert_close(anchors[5], expected5)
    # grid: row-major locations, 4 anchors each; location (row 0, col 1) is shifted by one stride in x, and the
    # last location of level 0 (row 37, col 37) is centred at 37.5 * 8 = 300
    torch.testing.assert_close(anchors[0][4:8], expected0 + torch.tensor([8., 0., 8., 0.]))
    torch.testing.assert_close(anchors[0][38 * 4:38 * 4 + 4], expected0 + torch.tensor([0., 8., 0., 8.]))
    torch.testing.assert_close(anchors[0][-4:], expected0 + 37 * 8)


def test_hand_computed_ssd300_voc_level1_with_ratio_3():
    gen = ssd300((0.2, 0.9))
    s, s2 = 60.0, math.sqrt(60 * 111)
    c = 8.0  # stride 16
    r2, r3 = math.sqrt(2), math.sqrt(3)
    expected = torch.tensor([box(c, c, s, s), box(c, c, s2, s2),
                             box(c, c, s * r2, s / r2), box(c, c, s / r2, s * r2),
                             box(c, c, s * r3, s / r3), box(c, c, s / r3, s * r3)])
    torch.testing.assert_close(gen.base_anchors[1].float(), expected)


def test_same_boxes_as_torchvision_default_box_generator():
    # torchvision's ssd300_vgg16 anchors (unclipped): same sizes, centres and order per location
    tv = DefaultBoxGenerator(SSD300_RATIOS, scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05], steps=SSD300_STRIDES,
                             clip=False)
    gen = ssd300()
    feats = [torch.zeros(1, 1, h, w) for h, w in gen.featmap_sizes]
    tv_anchors = tv(ImageList(torch.zeros(1, 3, 300, 300), [(300, 300)]), feats)[0]
    torch.testing.assert_close(torch.cat(gen.grid_priors(gen.featmap_sizes)), tv_anchors, rtol=0, atol=1e-3)


def test_clipped_like_torchvision_ssd300_vgg16():
    # ssd300_vgg16's own generator clips (cx, cy, w, h) widths and heights to the image: clip_size, as the _tv config
    tv = DefaultBoxGenerator(SSD300_RATIOS, scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05], steps=SSD300_STRIDES)
    assert tv.clip
    gen = SSDAnchorGenerator(SSD300_STRIDES, SSD300_RATIOS, input_size=300,
                             size_pattern=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05], clip_size=True)
    feats = [torch.zeros(1, 1, h, w) for h, w in gen.featmap_sizes]
    tv_anchors = tv(ImageList(torch.zeros(1, 3, 300, 300), [(300, 300)]), feats)[0]
    ours = torch.cat(gen.grid_priors(gen.featmap_sizes))
    torch.testing.assert_close(ours, tv_anchors, rtol=0, atol=1e-3)
    # the clip matters on the coarse levels: the last level's sqrt(261 * 315) = 286.7 square fits, its 2:1 box
    # (369 x 185) does not
    assert (ours[-4:, 2] - ours[-4:, 0]).max() == 300
    assert (torch.cat(ssd300().grid_priors(gen.featmap_sizes)) - tv_anchors).abs().max() > 30


def test_wrong_featmap_sizes_name_expected_and_actual():
    gen = ssd300()
    sizes_512 = [(64, 64), (32, 32), (16, 16), (8, 8), (6, 6), (4, 4)]
    with pytest.raises(ValueError) as err:
        gen.grid_priors(sizes_512)
    msg = str(err.value)
    assert '300x300' in msg and '(38, 38)' in msg and '(64, 64)' in msg
    with pytest.raises(ValueError, match='6 levels'):
        gen.grid_priors(gen.featmap_sizes[:5])


def test_device_dtype_and_cache():
    gen = ssd300()
    a = gen.grid_priors(gen.featmap_sizes, dtype=torch.float64)
    assert a[0].dtype == torch.float64 and a[0].device == torch.device('cpu')
    assert gen.grid_priors(gen.featmap_sizes, dtype=torch.float64) is a  # cached, not recomputed per batch
    b = gen.grid_priors(gen.featmap_sizes)  # another dtype is another cache entry, with the same anchors
    assert b is not a and all(level.dtype == torch.float32 for level in b)
    for hi, lo in zip(a, b):
        torch.testing.assert_close(hi.float(), lo, rtol=0, atol=0)  # float64 computation, rounded once

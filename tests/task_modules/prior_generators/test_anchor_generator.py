"""AnchorGenerator: RetinaNet's anchors against a plain loop, any input size, and M2Det's against its PriorBox."""
import itertools
import math

import pytest
import torch

from detkit.registry import TASK_UTILS
from detkit.task_modules import AnchorGenerator, SSDAnchorGenerator

RETINA = dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
              strides=[8, 16, 32, 64, 128])


def retina_reference(featmap_sizes, strides=(8, 16, 32, 64, 128)) -> torch.Tensor:
    """mmdetection's RetinaNet anchors written as loops: centre (j * s, i * s), ratio-major, scale-minor."""
    out = []
    for (h, w), s in zip(featmap_sizes, strides):
        for i, j in itertools.product(range(h), range(w)):
            for r in (0.5, 1.0, 2.0):
                for k in range(3):
                    size = s * 4 * 2 ** (k / 3)
                    aw, ah = size / math.sqrt(r), size * math.sqrt(r)
                    out.append([j * s - aw / 2, i * s - ah / 2, j * s + aw / 2, i * s + ah / 2])
    return torch.tensor(out, dtype=torch.float64)


def test_retinanet_640_count_and_values():
    gen = TASK_UTILS.build(RETINA)
    sizes = gen.featmap_sizes_for((640, 640))
    assert sizes == [(80, 80), (40, 40), (20, 20), (10, 10), (5, 5)]
    anchors = gen.grid_priors(sizes)
    assert [len(a) for a in anchors] == [57600, 14400, 3600, 900, 225] and sum(map(len, anchors)) == 76725
    assert gen.num_base_priors == [9] * 5
    torch.testing.assert_close(torch.cat(anchors).double(), retina_reference(sizes), rtol=0, atol=1e-4)


def test_any_input_size_and_non_square_maps():
    gen = TASK_UTILS.build(RETINA)
    sizes = [(13, 17), (7, 9), (4, 5), (2, 3), (1, 2)]  # e.g. a 100x133 padded input
    anchors = torch.cat(gen.grid_priors(sizes))
    torch.testing.assert_close(anchors.double(), retina_reference(sizes), rtol=0, atol=1e-4)


def test_cache_is_per_size_device_dtype_and_bounded():
    gen = AnchorGenerator([16], ratios=[1.0], scales=[2.0])
    a = gen.grid_priors([(4, 4)])
    assert gen.grid_priors([(4, 4)]) is a
    assert gen.grid_priors([(4, 4)], dtype=torch.float64)[0].dtype == torch.float64
    for k in range(40):
        gen.grid_priors([(k + 1, 3)])
    assert len(gen._cache) <= 32
    torch.testing.assert_close(gen.grid_priors([(1, 1)])[0], torch.tensor([[-16., -16., 16., 16.]]))


def test_center_offset_and_explicit_sizes():
    gen = AnchorGenerator([10, 20], sizes=[[(4, 6)], [(8, 8), (2, 30)]], center_offset=0.5)
    lvl0, lvl1 = gen.grid_priors([(1, 2), (1, 1)])
    torch.testing.assert_close(lvl0, torch.tensor([[3., 2., 7., 8.], [13., 2., 17., 8.]]))
    torch.testing.assert_close(lvl1, torch.tensor([[6., 6., 14., 14.], [9., -5., 11., 25.]]))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match='either scales or octave_base_scale'):
        AnchorGenerator([8], ratios=[1.0], scales=[1.0], octave_base_scale=4, scales_per_octave=3)
    with pytest.raises(ValueError, match='either sizes or ratios'):
        AnchorGenerator([8], ratios=[1.0], sizes=[[(1, 1)]])
    with pytest.raises(ValueError, match='center_offset'):
        AnchorGenerator([8], ratios=[1.0], scales=[1.0], center_offset=1.0)
    with pytest.raises(ValueError, match='base_sizes'):
        AnchorGenerator([8, 16], ratios=[1.0], scales=[1.0], base_sizes=[8])
    with pytest.raises(ValueError, match='2 levels'):
        AnchorGenerator([8, 16], ratios=[1.0], scales=[1.0]).grid_priors([(2, 2)])


def test_torchvision_retinanet_anchors_exactly():
    """torchvision's RetinaNet anchors (its own AnchorGenerator) at a padded 800x1088 input: sizes truncated to whole
    pixels, corners rounded, and strides image_size // grid_size (61 and 114 rows on P6 and P7, not 64 and 128)."""
    from torchvision.models.detection.image_list import ImageList
    from torchvision.models.detection.retinanet import _default_anchorgen

    sizes = [(100, 136), (50, 68), (25, 34), (13, 17), (7, 9)]  # P3-P7 of 800x1088 (P6, P7: stride-2 convs)
    feats = [torch.zeros(1, 1, h, w) for h, w in sizes]
    tv = _default_anchorgen()(ImageList(torch.zeros(1, 3, 800, 1088), [(800, 1066)]), feats)[0]
    gen = TASK_UTILS.build(dict(RETINA, size_rounding='floor', round_base_anchors=True, strides_from_input=True))
    ours = torch.cat(gen.grid_priors(sizes))
    assert torch.equal(ours, tv)
    # P6: rows 61 pixels apart, columns 64
    p6 = gen.grid_priors(sizes)[3].reshape(13, 17, 9, 4)
    assert p6[1, 0, 0, 1] - p6[0, 0, 0, 1] == 61 and p6[0, 1, 0, 0] - p6[0, 0, 0, 0] == 64
    # mmdetection's anchors (exact sizes, unrounded, strides 8..128) differ by up to tens of pixels
    assert (torch.cat(TASK_UTILS.build(RETINA).grid_priors(sizes)) - tv).abs().max() > 50
    with pytest.raises(ValueError, match='size_rounding'):
        AnchorGenerator([8], ratios=[1.0], scales=[1.0], size_rounding='ceil')
    with pytest.raises(ValueError, match='strides_from_input'):
        AnchorGenerator([8], ratios=[1.0], scales=[1.0], strides_from_input=True, input_size=64)


def m2det_prior_box(size: int, steps, pattern) -> torch.Tensor:
    """M2Det's PriorBox (clip=True) as published: normalised (cx, cy, w, h), clamped to [0, 1], in pixels."""
    min_sizes = [round(x * size, 2) for x in pattern[:-1]]
    max_sizes = [round(x * size, 2) for x in pattern[1:]]
    feature_maps = [math.ceil(size / s) for s in steps]
    out = []
    for k, f in enumerate(feature_maps):
        for i, j in itertools.product(range(f), repeat=2):
            f_k = size / steps[k]
            cx, cy = (j + 0.5) / f_k, (i + 0.5) / f_k
            s_k = min_sizes[k] / size
            out += [[cx, cy, s_k, s_k]]
            s_kp = math.sqrt(s_k * (max_sizes[k] / size))
            out += [[cx, cy, s_kp, s_kp]]
            for ar in (2, 3):
                out += [[cx, cy, s_k * math.sqrt(ar), s_k / math.sqrt(ar)],
                        [cx, cy, s_k / math.sqrt(ar), s_k * math.sqrt(ar)]]
    p = torch.tensor(out, dtype=torch.float64).clamp(0, 1) * size
    return torch.cat([p[:, :2] - p[:, 2:] / 2, p[:, :2] + p[:, 2:] / 2], dim=1)


@pytest.mark.parametrize('size, steps, pattern, total', [
    (320, [8, 16, 32, 64, 107, 320], [0.08, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05], 12810),
    (512, [8, 16, 32, 64, 128, 256], [0.06, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05], 32760),
])
def test_m2det_anchors_equal_its_prior_box(size, steps, pattern, total):
    gen = SSDAnchorGenerator(steps, [[2, 3]] * 6, input_size=size, size_pattern=pattern, clip_size=True)
    assert gen.num_base_priors == [6] * 6
    anchors = torch.cat(gen.grid_priors(gen.featmap_sizes))
    assert len(anchors) == total
    torch.testing.assert_close(anchors.double(), m2det_prior_box(size, steps, pattern), rtol=0, atol=1e-3)

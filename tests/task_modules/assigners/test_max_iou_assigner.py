import pytest
import torch

from detkit.registry import TASK_UTILS
from detkit.task_modules import MaxIoUAssigner


def ssd_assigner(**kwargs) -> MaxIoUAssigner:
    cfg = dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.0, gt_max_assign_all=False)
    cfg.update(kwargs)
    return TASK_UTILS.build(cfg)


# four 10x10 anchors in a row
ANCHORS = torch.tensor([[0., 0., 10., 10.], [10., 0., 20., 10.], [20., 0., 30., 10.], [30., 0., 40., 10.]])


def test_positive_negative_and_labels():
    gts = torch.tensor([[0., 0., 10., 10.],     # exactly anchor 0: IoU 1
                        [22., 0., 32., 10.]])   # anchor 2: IoU 80/120 = 0.667, anchor 3: 20/180 = 0.11
    result = ssd_assigner().assign(ANCHORS, gts, torch.tensor([7, 3]))
    assert result.num_gts == 2
    assert result.gt_inds.tolist() == [1, 0, 2, 0]
    assert result.labels.tolist() == [7, -1, 3, -1]
    torch.testing.assert_close(result.max_overlaps, torch.tensor([1.0, 0.0, 80 / 120, 20 / 180]))


def test_low_quality_match_keeps_every_object():
    # a small box overlapping anchor 1 with IoU 0.25 (< pos_iou_thr): it still gets its best anchor
    gts = torch.tensor([[12., 2., 17., 7.]])
    assert ssd_assigner().assign(ANCHORS, gts).gt_inds.tolist() == [0, 1, 0, 0]
    # without low-quality matching it has no anchor at all
    assert ssd_assigner(match_low_quality=False).assign(ANCHORS, gts).gt_inds.tolist() == [0, 0, 0, 0]
    # min_pos_iou above its best IoU refuses the match
    assert ssd_assigner(min_pos_iou=0.3).assign(ANCHORS, gts).gt_inds.tolist() == [0, 0, 0, 0]


def test_low_quality_match_overrides_and_later_box_wins():
    # box 0 covers anchors 0-1 (IoU 0.5 with each -> positive for both); box 1 = anchor 1 shifted by 4 px
    # (IoU 6/14 = 0.43 with anchor 1): box 1 takes anchor 1 back from box 0 through its low-quality match
    gts = torch.tensor([[0., 0., 20., 10.], [14., 0., 24., 10.]])
    result = ssd_assigner().assign(ANCHORS, gts)
    assert result.gt_inds.tolist() == [1, 2, 0, 0]
    # two identical boxes claim the same best anchor: the later one wins, as in mmdetection's loop
    twins = torch.tensor([[31., 0., 41., 10.], [31., 0., 41., 10.]])
    assert ssd_assigner().assign(ANCHORS, twins).gt_inds.tolist() == [0, 0, 0, 2]


def test_gt_max_assign_all_takes_every_tie():
    # a box centred between anchors 1 and 2 has the same IoU (1/3) with both
    gts = torch.tensor([[15., 0., 25., 10.]])
    assert ssd_assigner().assign(ANCHORS, gts).gt_inds.tolist() == [0, 1, 0, 0]
    assert ssd_assigner(gt_max_assign_all=True).assign(ANCHORS, gts).gt_inds.tolist() == [0, 1, 1, 0]


def test_ignore_regions_by_iof():
    gts = torch.tensor([[0., 0., 10., 10.]])
    ignore = torch.tensor([[19., -1., 41., 11.]])  # contains anchors 2 and 3 fully and 1/10 of anchor 1
    result = ssd_assigner(ignore_iof_thr=0.5).assign(ANCHORS, gts, gt_bboxes_ignore=ignore)
    assert result.gt_inds.tolist() == [1, 0, -1, -1]
    # disabled by default (SSD's ignore_iof_thr=-1)
    assert ssd_assigner().assign(ANCHORS, gts, gt_bboxes_ignore=ignore).gt_inds.tolist() == [1, 0, 0, 0]


def test_negative_interval():
    gts = torch.tensor([[22., 0., 32., 10.]])  # IoUs 0, 0, 0.667, 0.11
    result = ssd_assigner(pos_iou_thr=0.5, neg_iou_thr=(0.1, 0.5)).assign(ANCHORS, gts)
    assert result.gt_inds.tolist() == [-1, -1, 1, 0]


def test_empty_ground_truth_makes_everything_negative():
    result = ssd_assigner(ignore_iof_thr=0.5).assign(ANCHORS, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long),
                                                     gt_bboxes_ignore=torch.tensor([[0., 0., 40., 10.]]))
    assert result.num_gts == 0
    assert result.gt_inds.tolist() == [0, 0, 0, 0]
    assert result.labels.tolist() == [-1, -1, -1, -1]
    assert not result.pos_mask.any() and result.neg_mask.all()


def test_bad_thresholds_are_named():
    with pytest.raises(ValueError, match='neg_iou_thr'):
        MaxIoUAssigner(pos_iou_thr=0.4, neg_iou_thr=0.5)
    with pytest.raises(ValueError, match='neg_iou_thr'):
        MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=(0.4, 0.1))

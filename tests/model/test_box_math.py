"""Box math against hand-computed values from mmdetection's documented formulas."""
import math

import numpy as np
import pytest
import torch

from mrcnn_cli.model.poolers import map_roi_levels
from mrcnn_cli.ops.anchors import base_anchors, grid_anchors
from mrcnn_cli.ops.boxes import batched_nms, decode_boxes
from mrcnn_cli.ops.paste import paste_mask, paste_window


def test_base_anchors_are_ratio_major_and_unrounded():
    s = 4 * 8 * math.sqrt(0.5)  # stride 4, scale 8: w = 45.25, h = 22.63 for ratio 0.5
    expected = torch.tensor([[-s, -s / 2, s, s / 2], [-16, -16, 16, 16], [-s / 2, -s, s / 2, s]])
    assert torch.allclose(base_anchors(4), expected, atol=1e-4)


def test_grid_anchors_are_location_major():
    a = grid_anchors(2, 3, 16)
    assert a.shape == (2 * 3 * 3, 4)
    centres = (a[:, :2] + a[:, 2:]) / 2
    # anchors 0..2 at (0, 0), 3..5 at (16, 0), ..., 9..11 at (0, 16)
    assert torch.equal(centres[3], torch.tensor([16.0, 0.0]))
    assert torch.equal(centres[9], torch.tensor([0.0, 16.0]))


def test_decode_boxes_by_hand():
    rois = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    deltas = torch.tensor([[0.1, 0.2, math.log(2.0), 0.0]])
    out = decode_boxes(rois, deltas, (1, 1, 1, 1), max_shape=(100, 100))
    # centre (5, 10) + (1, 4); size (20, 20) -> (-4, 4, 16, 24), x clipped at 0
    assert torch.allclose(out, torch.tensor([[0.0, 4.0, 16.0, 24.0]]))
    out = decode_boxes(rois, torch.tensor([[0.0, 0.0, 0.5, 0.0]]), (0.1, 0.1, 0.2, 0.2), max_shape=None)
    assert torch.allclose(out, torch.tensor([[5 - 5 * math.exp(0.1), 0.0, 5 + 5 * math.exp(0.1), 20.0]]))


def test_decode_boxes_clamps_scale_to_1000_over_16():
    rois = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    out = decode_boxes(rois, torch.tensor([[0.0, 0.0, 10.0, -10.0]]), (1, 1, 1, 1), max_shape=None)
    w, h = float(out[0, 2] - out[0, 0]), float(out[0, 3] - out[0, 1])
    assert math.isclose(w, 10 * 1000 / 16, rel_tol=1e-5) and math.isclose(h, 10 * 16 / 1000, rel_tol=1e-5)


def test_decode_class_specific_boxes():
    rois = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 10.0, 30.0, 30.0]])
    deltas = torch.zeros(2, 8)
    deltas[1, 4] = 1.0  # second class of the second roi moves right by 0.1 * 20
    out = decode_boxes(rois, deltas, (0.1, 0.1, 0.2, 0.2), max_shape=(100, 100)).view(2, 2, 4)
    assert torch.allclose(out[0, 1], rois[0]) and torch.allclose(out[1, 1], torch.tensor([12.0, 10, 32, 30]))


def test_batched_nms_only_suppresses_within_a_group():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert batched_nms(boxes, scores, torch.tensor([0, 0, 1]), 0.5).tolist() == [0, 2]
    assert batched_nms(boxes, scores, torch.tensor([0, 0, 0]), 0.5).tolist() == [0]
    # IoU 0.81 is kept at threshold 0.9; suppression is strictly IoU > thr
    assert batched_nms(boxes, scores, torch.tensor([0, 0, 0]), 0.9).tolist() == [0, 1]


def test_batched_nms_visits_ties_in_mmcv_sort_order():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 20], dim=1)
    scores = torch.ones(300)  # saturated: the sort order decides everything
    keep = batched_nms(boxes, scores, torch.zeros(300, dtype=torch.long), 0.7)
    order = scores.sort(descending=True)[1].tolist()
    assert keep[0].item() == order[0]
    assert [order.index(k) for k in keep.tolist()] == sorted(order.index(k) for k in keep.tolist())


@pytest.mark.parametrize('groups', [1, 5, 80])
def test_batched_nms_group_by_group_is_mmcvs_one_pass(groups):
    """Below the split threshold mmcv runs one NMS over all boxes, offset apart by group, in its
    sort order; on the CPU mrcnn runs each group alone in that same order: the same boxes, in
    the same order, ties (rounded scores and coordinates) included."""
    from torchvision.ops import nms
    g = torch.Generator().manual_seed(groups)
    for trial in range(20):
        n = int(torch.randint(1, 5000, (), generator=g))
        xy = torch.rand(n, 2, generator=g) * 400
        boxes = torch.cat([xy, xy + 1 + 150 * torch.rand(n, 2, generator=g)], dim=1)
        boxes = boxes.round() if trial % 2 else boxes
        scores = (torch.rand(n, generator=g) * 8).round() / 8 if trial % 3 else torch.rand(n, generator=g)
        idxs = torch.randint(0, groups, (n,), generator=g)
        offset = boxes + (idxs.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes)))[:, None]   # as mmcv adds them
        order = scores.sort(descending=True)[1]
        one_pass = order[nms(offset[order], scores[order], 0.7)]
        assert torch.equal(batched_nms(boxes, scores, idxs, 0.7), one_pass)


def test_batched_nms_split_path_keeps_the_same_boxes():
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(12000, 2, generator=g) * 500
    boxes = torch.cat([xy, xy + 10 + 40 * torch.rand(12000, 2, generator=g)], dim=1)
    scores = torch.rand(12000, generator=g)
    idxs = torch.randint(0, 5, (12000,), generator=g)
    keep = batched_nms(boxes, scores, idxs, 0.5)  # >= 10000 boxes: per-group loop
    small = [batched_nms(boxes[idxs == c], scores[idxs == c], idxs[idxs == c], 0.5) for c in range(5)]
    expected = sorted(int(torch.nonzero(idxs == c).view(-1)[k]) for c in range(5) for k in small[c].tolist())
    assert sorted(keep.tolist()) == expected
    assert torch.all(scores[keep][:-1] >= scores[keep][1:])


def test_roi_levels_follow_the_finest_scale_rule():
    sizes = [20, 55, 56, 111, 112, 224, 448, 2000]
    rois = torch.tensor([[0, 0, 0, s, s] for s in sizes], dtype=torch.float32)
    assert map_roi_levels(rois, 4).tolist() == [0, 0, 0, 0, 1, 2, 3, 3]


def test_paste_window_and_values():
    assert paste_window([10.2, 5.0, 20.7, 15.0], 100, 100) == (9, 4, 22, 16)
    assert paste_window([0.5, 0.5, 99.5, 99.5], 100, 100) == (0, 0, 100, 100)
    prob = torch.ones(28, 28)
    mask, x0, y0 = paste_mask(prob, torch.tensor([10.0, 10.0, 38.0, 38.0]), 50, 50)
    full = np.zeros((50, 50), bool)
    full[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]] = mask
    # with align_corners=False a constant map stays >= 0.5 exactly over the box's pixels
    assert full[10:38, 10:38].all() and full.sum() == 28 * 28


def test_chunked_gpu_paste_equals_windowed_paste():
    """The GPU path (run here on the CPU, chunks forced small) gives paste_mask's windows."""
    from mrcnn_cli.ops.paste import paste_masks_chunked
    g = torch.Generator().manual_seed(0)
    h, w = 120, 160
    xy = torch.rand(23, 2, generator=g) * torch.tensor([w, h]) - 10
    wh = torch.rand(23, 2, generator=g) * 90 + 0.5
    boxes = torch.cat([xy, xy + wh], dim=1)
    boxes[0] = torch.tensor([30.0, 40.0, 30.0, 60.0])        # zero width, as mmdet handles it
    boxes[1] = torch.tensor([200.0, 10.0, 230.0, 30.0])      # wholly outside the image
    probs = torch.rand(23, 28, 28, generator=g)
    want = [paste_mask(p, b, h, w) for p, b in zip(probs, boxes)]
    for max_bytes in (1, h * w * 13 * 5, 2 ** 30):          # one per chunk, 5 per chunk, all at once
        got = paste_masks_chunked(probs, boxes, h, w, max_bytes=max_bytes)
        assert len(got) == len(want)
        for g_win, w_win in zip(got, want):
            assert (g_win.x0, g_win.y0) == (w_win.x0, w_win.y0) and np.array_equal(g_win.mask, w_win.mask)

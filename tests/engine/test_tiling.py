"""Sliced inference's grid and merge rules, on constructed detections: where tiles lie (against
SAHI's own slicer), how detections of different tiles join (every merge mode and measure), and
box NMS against SAHI's where the two rules coincide."""
import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms

from mrcnn_cli.engine.detections import Detections
from mrcnn_cli.engine.merge import EDGE_MARGIN, TilePass, merge_passes
from mrcnn_cli.engine.tiling import Rect, TileOptions, parse_tile_size, tile_grid
from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.ops.paste import MaskWindow

CLASSES = ('a', 'b')


@pytest.mark.parametrize('width,height,tile,overlap', [
    (2000, 1500, 512, 0.2), (1500, 2000, (640, 480), 0.25), (512, 512, 512, 0.2), (300, 200, 512, 0.2),
    (1000, 700, 256, 0.0), (4097, 33, 64, 0.5), (1280, 960, (640, 480), 0.0), (999, 1001, 100, 0.9)])
def test_tiles_lie_where_sahis_slicer_puts_them(width, height, tile, overlap):
    sahi_slicing = pytest.importorskip('sahi.slicing')
    options = TileOptions(tile, overlap)
    expected = sahi_slicing.get_slice_bboxes(height, width, options.size[1], options.size[0],
                                             auto_slice_resolution=False, overlap_height_ratio=overlap,
                                             overlap_width_ratio=overlap)
    assert [list(r) for r in tile_grid(width, height, options)] == expected


def test_every_pixel_is_in_a_tile_and_every_tile_in_the_image():
    rng = np.random.default_rng(1)
    for _ in range(50):
        width, height = rng.integers(40, 3000, 2)
        options = TileOptions(tuple(rng.integers(32, 800, 2)), float(rng.uniform(0, 0.9)))
        covered = np.zeros((height, width), bool)
        for r in tile_grid(width, height, options):
            assert 0 <= r.x0 < r.x1 <= width and 0 <= r.y0 < r.y1 <= height
            assert r.width == min(options.size[0], width) and r.height == min(options.size[1], height)
            covered[r.y0:r.y1, r.x0:r.x1] = True
        assert covered.all()


@pytest.mark.parametrize('kwargs,message', [
    ({'size': 0}, 'tile'), ({'size': 'big'}, 'tile'), ({'size': (10, 10, 10)}, 'tile'), ({'size': True}, 'tile'),
    ({'size': 512, 'overlap': 1.0}, 'tile_overlap'), ({'size': 512, 'overlap': -0.1}, 'tile_overlap'),
    ({'size': 512, 'merge': 'wbf'}, 'tile_merge'), ({'size': 512, 'match': 'dice'}, 'tile_match'),
    ({'size': 512, 'match_thr': 1.5}, 'tile_match_thr')])
def test_bad_tile_options_are_one_error_naming_the_option(kwargs, message):
    with pytest.raises(MrcnnError, match=f'^{message}='):
        TileOptions(**kwargs)


def test_tile_sizes_are_read_as_users_write_them():
    assert parse_tile_size(512) == (512, 512)
    assert parse_tile_size('640,480') == (640, 480)
    assert parse_tile_size('640x480') == (640, 480)
    assert parse_tile_size((640, 480)) == (640, 480)


# ---- constructed detections ------------------------------------------------------------------

def disc(height, width, cx, cy, radius):
    yy, xx = np.mgrid[:height, :width]
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= radius ** 2


def tile_pass(full_masks, scores, labels, region):
    """A pass as the model would give it: each full-image mask seen only inside `region`, in the
    region's coordinates, its box the bounds of what the tile saw."""
    boxes, windows = [], []
    for m in full_masks:
        part = m[region.y0:region.y1, region.x0:region.x1]
        ys, xs = np.nonzero(part)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        boxes.append([x0, y0, x1, y1])
        windows.append(MaskWindow(part[y0:y1, x0:x1].copy(), int(x0), int(y0)))
    return TilePass(Detections(boxes, scores, labels, windows, region.height, region.width, CLASSES), region)


H, W = 200, 300
LEFT, RIGHT = Rect(0, 0, 180, 200), Rect(120, 0, 300, 200)   # 60 pixels of overlap


@pytest.mark.parametrize('match', ['ios', 'iou'])
def test_an_object_across_a_tile_border_comes_out_once_with_the_union_of_its_pieces(match):
    obj = disc(H, W, 150, 100, 70)          # far larger than the overlap: cut by both tiles' inner edges
    passes = [tile_pass([obj], [0.9], [0], LEFT), tile_pass([obj], [0.8], [0], RIGHT)]
    out = merge_passes(passes, H, W, TileOptions(180, merge='nmm', match=match), CLASSES)
    assert len(out) == 1
    assert np.array_equal(out.mask(0), obj)      # left piece | right piece
    assert out.scores.tolist() == pytest.approx([0.9])
    ys, xs = np.nonzero(obj)
    assert out.boxes[0].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_nms_keeps_the_higher_scored_piece_as_it_was():
    obj = disc(H, W, 150, 100, 70)
    passes = [tile_pass([obj], [0.7], [0], LEFT), tile_pass([obj], [0.8], [0], RIGHT)]
    out = merge_passes(passes, H, W, TileOptions(180, merge='nms'), CLASSES)
    assert len(out) == 1 and out.scores[0] == pytest.approx(0.8)
    right_only = np.zeros_like(obj)
    right_only[:, RIGHT.x0:] = obj[:, RIGHT.x0:]
    assert np.array_equal(out.mask(0), right_only)


def test_over_whole_masks_the_cut_pieces_would_not_match_but_where_both_tiles_looked_they_do():
    obj = disc(H, W, 150, 100, 75)
    left, right = obj.copy(), obj.copy()
    left[:, LEFT.x1:] = False
    right[:, :RIGHT.x0] = False
    inter = (left & right).sum()
    assert inter / (left | right).sum() < 0.5 and inter / min(left.sum(), right.sum()) < 0.7
    out = merge_passes([tile_pass([obj], [0.9], [0], LEFT), tile_pass([obj], [0.8], [0], RIGHT)], H, W,
                       TileOptions(180, match='iou', match_thr=0.9), CLASSES)
    assert len(out) == 1


def test_a_fragment_at_a_tile_edge_joins_the_whole_object_from_the_full_pass():
    obj = disc(H, W, 220, 100, 60)
    whole = tile_pass([obj], [0.6], [0], Rect(0, 0, W, H))     # the whole-image pass
    fragment = tile_pass([obj], [0.9], [0], LEFT)              # a sliver of it, cut at x = 180
    assert (obj[:, :LEFT.x1].sum() / obj.sum()) < 0.5          # IoU with the whole alone would not do
    for merge in ('nmm', 'nms'):
        out = merge_passes([fragment, whole], H, W, TileOptions(180, merge=merge, match='iou'), CLASSES)
        assert len(out) == 1
        if merge == 'nmm':
            assert np.array_equal(out.mask(0), obj) and out.scores[0] == pytest.approx(0.9)


def test_a_chain_of_tiles_joins_into_one_object():
    obj = np.zeros((H, W), bool)
    obj[90:110, 5:295] = True                  # a long thin object across three tiles
    tiles = [Rect(0, 0, 120, 200), Rect(100, 0, 220, 200), Rect(200, 0, 300, 200)]
    # scores so that the middle tile, the only link between the ends, is merged last
    passes = [tile_pass([obj], [s], [0], r) for s, r in zip([0.9, 0.5, 0.8], tiles)]
    out = merge_passes(passes, H, W, TileOptions(120), CLASSES)
    assert len(out) == 1 and np.array_equal(out.mask(0), obj)


def test_detections_of_one_tile_are_never_joined_nor_different_classes_nor_tiles_that_only_touch():
    a = disc(H, W, 60, 100, 30)
    b = disc(H, W, 70, 100, 30)                # overlaps a heavily
    one_tile = merge_passes([tile_pass([a, b], [0.9, 0.8], [0, 0], Rect(0, 0, W, H))], H, W, TileOptions(300),
                            CLASSES)
    assert len(one_tile) == 2
    other_class = merge_passes([tile_pass([a], [0.9], [0], LEFT), tile_pass([b], [0.8], [1], Rect(0, 0, W, H))], H, W,
                               TileOptions(180), CLASSES)
    assert len(other_class) == 2
    obj = disc(H, W, 150, 100, 40)             # cut exactly at x = 150 by two tiles that share no pixel
    touching = [tile_pass([obj], [0.9], [0], Rect(0, 0, 150, 200)),
                tile_pass([obj], [0.8], [0], Rect(150, 0, 300, 200))]
    assert len(merge_passes(touching, H, W, TileOptions(150, overlap=0.0), CLASSES)) == 2


def test_uncut_detections_in_an_overlap_are_matched_on_their_whole_masks():
    a = disc(H, W, 150, 100, 20)                         # inside the overlap, whole in both tiles
    b = np.roll(a, 12, axis=1)                           # the same object seen a little shifted
    for match, expected in (('iou', 2), ('ios', 2)):
        inter = (a & b).sum()
        value = inter / ((a | b).sum() if match == 'iou' else min(a.sum(), b.sum()))
        out = merge_passes([tile_pass([a], [0.9], [0], LEFT), tile_pass([b], [0.8], [0], RIGHT)], H, W,
                           TileOptions(180, match=match, match_thr=value + 0.01), CLASSES)
        assert len(out) == expected                      # just below the threshold: both stay
        out = merge_passes([tile_pass([a], [0.9], [0], LEFT), tile_pass([b], [0.8], [0], RIGHT)], H, W,
                           TileOptions(180, match=match, match_thr=value - 0.01), CLASSES)
        assert len(out) == 1 and np.array_equal(out.mask(0), a | b)


def test_a_tile_as_large_as_the_image_gives_the_passes_detections_unchanged():
    rng = np.random.default_rng(0)
    masks = [disc(H, W, *rng.uniform(20, 180, 2), rng.uniform(5, 40)) for _ in range(12)]
    scores = np.sort(rng.uniform(0.05, 1, 12))[::-1]
    p = tile_pass(masks, scores, rng.integers(0, 2, 12), Rect(0, 0, W, H))
    out = merge_passes([p], H, W, TileOptions(1024), CLASSES)
    assert np.array_equal(out.boxes, p.detections.boxes) and np.array_equal(out.labels, p.detections.labels)
    assert np.array_equal(out.masks, p.detections.masks)


def test_box_nms_over_iou_agrees_with_sahi_on_uncut_box_shaped_detections():
    """Where the two rules coincide: masks that fill their (integer) boxes, none touching a tile's
    inner edge, each tile's own detections already through the model's NMS (as SAHI's come)."""
    combine = pytest.importorskip('sahi.postprocess.combine')
    rng = np.random.default_rng(7)
    width, height = 900, 700
    options = TileOptions(300, overlap=0.4, merge='nms', match='iou', match_thr=0.5)
    for _ in range(20):
        x0, y0 = rng.integers(0, width - 60, 400), rng.integers(0, height - 60, 400)
        objects = np.column_stack([x0, y0, x0 + rng.integers(5, 58, 400), y0 + rng.integers(5, 58, 400)])
        passes, flat = [], []
        for r in tile_grid(width, height, options):
            # every object this tile holds away from its edges, seen a pixel or two off, scored anew
            inside = ((objects[:, 0] > r.x0 + EDGE_MARGIN) & (objects[:, 2] < r.x1 - EDGE_MARGIN)
                      & (objects[:, 1] > r.y0 + EDGE_MARGIN) & (objects[:, 3] < r.y1 - EDGE_MARGIN))
            boxes = objects[inside] - [r.x0, r.y0, r.x0, r.y0] + rng.integers(-1, 2, (inside.sum(), 4))
            boxes = np.clip(boxes, EDGE_MARGIN, [r.width - EDGE_MARGIN, r.height - EDGE_MARGIN] * 2)
            boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
            scores = rng.uniform(0.05, 1, len(boxes)).astype(np.float32)
            labels = rng.integers(0, 2, len(boxes))
            keep = batched_nms(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores),
                               torch.tensor(labels), 0.5).numpy()   # the model's own NMS
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            windows = [MaskWindow(np.ones((b[3] - b[1], b[2] - b[0]), bool), int(b[0]), int(b[1])) for b in boxes]
            passes.append(TilePass(Detections(boxes, scores, labels, windows, r.height, r.width, CLASSES), r))
            flat += [[b[0] + r.x0, b[1] + r.y0, b[2] + r.x0, b[3] + r.y0, s, c]
                     for b, s, c in zip(boxes, scores, labels)]
        out = merge_passes(passes, height, width, options, CLASSES)
        predictions = np.array(flat, np.float64)
        # SAHI suppresses at >= its threshold, the model's NMS and mrcnn's merge above it: the same rule
        # just above 0.5 (as SAHI's float32 sees it)
        kept = combine.batched_nms(predictions, match_metric='IOU', match_threshold=0.5 + 1e-6)
        expected = sorted(map(tuple, np.column_stack([predictions[kept, :4], predictions[kept, 5]]).tolist()))
        got = sorted(map(tuple, np.column_stack([out.boxes, out.labels]).astype(np.float64).tolist()))
        assert len(expected) < len(predictions)   # something was suppressed
        assert got == expected

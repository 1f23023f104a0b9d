"""Joining the detections of a sliced image's passes (its tiles, and the optional whole-image pass)
into one set, on masks rather than boxes.

The rules, per class, greedily in decreasing score order:
- Two detections of the same pass are never joined: the model's own NMS already chose between them
  (so a tile as large as the image gives exactly the model's detections).
- Two detections of different passes are one object when their masks match: intersection over the
  smaller mask ('ios') or over their union ('iou') above the threshold.
- A detection cut by a tile's inner edge (its mask reaches within EDGE_MARGIN pixels of an edge
  that is not the image's) saw only part of its object, so it is compared only where both
  detections were seen: both masks are restricted to the intersection of their passes' regions.
  The part of an object in two tiles' overlap is then the same pixels in both, however little of
  the object either tile held, and a fragment beside the whole joins it.
- 'nmm' joins a match into the higher-scored detection: the union of the masks, the box holding
  both boxes, the higher score, and the regions of both passes (so a chain of tiles joins into one
  object); 'nms' drops the lower-scored one.
SAHI matches boxes instead, over the whole boxes; on uncut detections with box-shaped masks and
'nms' + 'iou' the two rules coincide."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mrcnn_cli.engine.detections import Detections
from mrcnn_cli.engine.tiling import Rect, TileOptions
from mrcnn_cli.ops.grid import RectGrid
from mrcnn_cli.ops.paste import MaskWindow, window_intersection

EDGE_MARGIN = 2   # pixels from an inner tile edge within which a mask counts as cut by it


@dataclass
class TilePass:
    """One pass's detections, in the coordinates of its `region` of the full image (a tile, or
    the whole image)."""
    detections: Detections
    region: Rect


@dataclass
class _Instance:
    box: np.ndarray                 # (4,) float32, full-image coordinates
    score: float
    label: int
    window: MaskWindow              # full-image offsets
    seed: int                       # the pass it came from
    cut: bool
    regions: list[Rect] = field(default_factory=list)
    area: int = 0


def merge_passes(passes: Sequence[TilePass], height: int, width: int, tiles: TileOptions,
                 classes: Sequence[str]) -> Detections:
    """The detections of all passes as one Detections of the height x width image, by
    decreasing score (the rules are this module's docstring)."""
    instances = [inst for k, p in enumerate(passes) for inst in _instances(p, k, height, width)]
    instances.sort(key=lambda inst: -inst.score)   # stable: ties keep the passes' order
    kept = _greedy(instances, tiles)
    if not kept:
        return Detections.empty(height, width, classes)
    palette = passes[0].detections.palette
    return Detections(np.stack([k.box for k in kept]), [k.score for k in kept], [k.label for k in kept],
                      [k.window for k in kept], height, width, classes, palette)


def _instances(p: TilePass, seed: int, height: int, width: int) -> list[_Instance]:
    """A pass's detections moved into the full image."""
    r = p.region
    det = p.detections
    boxes = det.boxes + np.array([r.x0, r.y0, r.x0, r.y0], np.float32)
    out = []
    for box, score, label, win in zip(boxes, det.scores.tolist(), det.labels.tolist(), det.mask_windows()):
        win = MaskWindow(win.mask, win.x0 + r.x0, win.y0 + r.y0)
        out.append(_Instance(box, score, label, win, seed, _is_cut(win, r, height, width), [r],
                             int(np.count_nonzero(win.mask))))
    return out


def _is_cut(win: MaskWindow, region: Rect, height: int, width: int) -> bool:
    """Whether the mask reaches an edge of its region that is not the image's edge."""
    rows, cols = np.flatnonzero(win.mask.any(axis=1)), np.flatnonzero(win.mask.any(axis=0))
    if not len(rows):
        return False
    x0, x1 = win.x0 + cols[0], win.x0 + cols[-1] + 1
    y0, y1 = win.y0 + rows[0], win.y0 + rows[-1] + 1
    return bool((region.x0 > 0 and x0 - region.x0 < EDGE_MARGIN)
                or (region.y0 > 0 and y0 - region.y0 < EDGE_MARGIN)
                or (region.x1 < width and region.x1 - x1 < EDGE_MARGIN)
                or (region.y1 < height and region.y1 - y1 < EDGE_MARGIN))


def _greedy(instances: list[_Instance], tiles: TileOptions) -> list[_Instance]:
    if not instances:
        return []
    alive = np.ones(len(instances), bool)
    index = _BoxIndex(np.stack([i.box for i in instances]))
    labels = np.array([i.label for i in instances])
    seeds = np.array([i.seed for i in instances])
    kept = []
    for k, keeper in enumerate(instances):
        if not alive[k]:
            continue
        alive[k] = False
        kept.append(keeper)
        joined = True
        while joined:   # with 'nmm' the keeper grows, and may then reach detections it did not before
            joined = False
            for j in index.overlapping(keeper.window):
                if j <= k or not alive[j] or labels[j] != keeper.label or seeds[j] == keeper.seed:
                    continue
                if _measure(keeper, instances[j], tiles.match) > tiles.match_thr:
                    alive[j] = False
                    if tiles.merge == 'nmm':
                        _join(keeper, instances[j])
                        joined = True
    return kept


class _BoxIndex:
    """Boxes by the grid cells they cover, so that a detection is compared only with those near it
    (a scene has tens of thousands)."""

    def __init__(self, boxes: np.ndarray):
        self.boxes = boxes
        self.grid = RectGrid()
        for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
            self.grid.add(i, x0 - 1, y0 - 1, x1 + 1, y1 + 1)

    def overlapping(self, win: MaskWindow) -> list[int]:
        """The boxes (with the paste window's one-pixel margin) that overlap a mask window, in order."""
        h, w = win.mask.shape
        x0, y0, x1, y1 = win.x0, win.y0, win.x0 + w, win.y0 + h
        near = self.grid.near(x0, y0, x1, y1)
        b = self.boxes[near] if near else np.zeros((0, 4), np.float32)
        hit = (b[:, 0] - 1 < x1) & (b[:, 2] + 1 > x0) & (b[:, 1] - 1 < y1) & (b[:, 3] + 1 > y0)
        return [i for i, h in zip(near, hit.tolist()) if h]


def _measure(a: _Instance, b: _Instance, metric: str) -> float:
    """Intersection over the smaller mask or over the union; where either is cut, of the masks
    restricted to where both passes looked."""
    if a.cut or b.cut:
        common = [Rect(max(r.x0, s.x0), max(r.y0, s.y0), min(r.x1, s.x1), min(r.y1, s.y1))
                  for r in a.regions for s in b.regions]
        common = [r for r in common if r.x1 > r.x0 and r.y1 > r.y0]
        if not common:
            return 0.0
        ma, mb = _restricted(a.window, common), _restricted(b.window, common)
        area_a, area_b = int(ma.mask.sum()), int(mb.mask.sum())
    else:
        ma, mb, area_a, area_b = a.window, b.window, a.area, b.area
    inter = window_intersection(ma, mb)
    if inter == 0:
        return 0.0
    denominator = min(area_a, area_b) if metric == 'ios' else area_a + area_b - inter
    return inter / denominator


def _restricted(win: MaskWindow, rects: Sequence[Rect]) -> MaskWindow:
    """The mask with every pixel outside the union of `rects` cleared."""
    h, w = win.mask.shape
    inside = np.zeros((h, w), bool)
    for r in rects:
        inside[max(r.y0 - win.y0, 0):max(r.y1 - win.y0, 0), max(r.x0 - win.x0, 0):max(r.x1 - win.x0, 0)] = True
    return MaskWindow(win.mask & inside, win.x0, win.y0)


def _join(keeper: _Instance, other: _Instance) -> None:
    """`other` merged into `keeper`: union of masks, box holding both, keeper's (higher) score."""
    a, b = keeper.window, other.window
    ah, aw = a.mask.shape
    bh, bw = b.mask.shape
    x0, y0 = min(a.x0, b.x0), min(a.y0, b.y0)
    x1, y1 = max(a.x0 + aw, b.x0 + bw), max(a.y0 + ah, b.y0 + bh)
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    mask[a.y0 - y0:a.y0 - y0 + ah, a.x0 - x0:a.x0 - x0 + aw] = a.mask
    mask[b.y0 - y0:b.y0 - y0 + bh, b.x0 - x0:b.x0 - x0 + bw] |= b.mask
    keeper.window = MaskWindow(mask, x0, y0)
    keeper.area = int(mask.sum())
    keeper.box = np.concatenate([np.minimum(keeper.box[:2], other.box[:2]), np.maximum(keeper.box[2:], other.box[2:])])
    keeper.cut = keeper.cut or other.cut
    keeper.regions = keeper.regions + other.regions

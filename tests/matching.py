"""Matching predictions to mmdetection's reference detections, by shared/data/reference/README.md,
with the library's one matcher (`engine.compare.match_detections`)."""
import numpy as np
import pycocotools.mask as mask_util

from mrcnn_cli.engine.compare import mask_iou, match_detections
from mrcnn_cli.engine.detections import Detections
from mrcnn_cli.io.coco import COCO_CATEGORY_IDS, COCO_CLASSES
from mrcnn_cli.ops.paste import MaskWindow

from conftest import COCO_IMAGES, SHARED


def from_records(labels, scores, boxes, masks, height, width):
    """Detections whose masks are full-image windows."""
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
                      np.array(labels, np.int64), [MaskWindow(m, 0, 0) for m in masks], height, width, COCO_CLASSES)


def from_reference(ref_dets):
    """A reference record's `detections` (label, score, bbox_xyxy, rle) as Detections."""
    height, width = ref_dets[0]['rle']['size']
    return from_records([d['label'] for d in ref_dets], [d['score'] for d in ref_dets],
                        [d['bbox_xyxy'] for d in ref_dets],
                        [mask_util.decode(d['rle']).astype(bool) for d in ref_dets], height, width)


def from_annotations(anns, height, width):
    """predictions.json / results annotations (COCO category ids, xywh boxes, RLE) as Detections."""
    labels = {c: i for i, c in enumerate(COCO_CATEGORY_IDS)}
    return from_records([labels[a['category_id']] for a in anns], [a['score'] for a in anns],
                        [[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2], a['bbox'][1] + a['bbox'][3]]
                         for a in anns],
                        [mask_util.decode(a['segmentation']).astype(bool) for a in anns], height, width)


def masks_equal_enough(a, b):
    return np.logical_xor(a, b).sum() <= 4 or mask_iou(a, b) >= 0.95


def match_reference(ref, pred, max_per_img=100):
    """(unmatched reference indexes, n_ref, n_pred) above the README's score cut-off."""
    cutoff = 0.05
    if len(ref) >= max_per_img:
        cutoff = float(ref.scores.min()) + 0.02
    ref, pred = ref[ref.scores >= cutoff], pred[pred.scores >= cutoff]
    pairs = match_detections(ref, pred, min_box_iou=0.99, max_score_diff=0.01,
                             mask_ok=lambda i, j: masks_equal_enough(ref.mask(i), pred.mask(j)))
    matched = {i for i, _ in pairs}
    return [i for i in range(len(ref)) if i not in matched], len(ref), len(pred)


def assert_matches_reference(ref, pred):
    unmatched, n_ref, n_pred = match_reference(ref, pred)
    assert n_ref > 0
    assert len(unmatched) <= max(1, int(0.03 * n_ref)), f'{len(unmatched)}/{n_ref} reference detections unmatched'
    assert abs(n_pred - n_ref) <= max(1, int(0.03 * n_ref)), f'{n_pred} predictions vs {n_ref} in the reference'


def assert_same_to_rounding(det, ref, score_tol=1e-3, box_tol=0.05):
    """The same detections in the same order, to float rounding: every detection of `ref` has
    one in `det` of the same class with |Δscore| <= score_tol and boxes within box_tol px, and the
    order differs only between detections whose reference scores are that close (the last bits
    of a reduction can swap two near-equal scores)."""
    assert len(det) == len(ref)
    used, position = set(), {}
    for i in range(len(ref)):
        cands = [j for j in range(len(det)) if j not in used and det.labels[j] == ref.labels[i]
                 and abs(float(det.scores[j]) - float(ref.scores[i])) <= score_tol
                 and np.abs(det.boxes[j] - ref.boxes[i]).max() <= box_tol]
        assert cands, f'detection {i} (label {ref.labels[i]}, score {ref.scores[i]:.4f}) not found'
        j = min(cands, key=lambda j: abs(j - i))
        used.add(j)
        position[i] = j
    for i, j in position.items():
        between = ref.scores[min(i, j):max(i, j) + 1]
        assert between.max() - between.min() <= 2 * score_tol, f'detection {i} moved to {j}'


# mmdetection 3.3.0's recorded outputs in ../shared: (variant, style, file, image)
REFERENCES = [
    ('r50', 'pytorch', 'r50_fpn__mmdet_demo.json', SHARED / 'data' / 'demo' / 'mmdet_demo.jpg'),
    ('r50', 'pytorch', 'r50_fpn__000000397133.json', COCO_IMAGES / '000000397133.jpg'),
    ('r50_caffe', 'caffe', 'r50_caffe_fpn__000000397133.json', COCO_IMAGES / '000000397133.jpg'),
]

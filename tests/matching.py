"""Matching predictions to mmdetection's reference detections, by shared/data/reference/README.md."""
import numpy as np
import pycocotools.mask as mask_util


def box_iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else float(np.allclose(a, b))


def masks_equal_enough(a, b):
    union = np.logical_or(a, b).sum()
    if union == 0:
        return True
    diff = np.logical_xor(a, b).sum()
    return diff <= 4 or np.logical_and(a, b).sum() / union >= 0.95


def match_reference(ref_dets, pred, max_per_img=100):
    """pred: list of dicts {label, score, bbox_xyxy, mask (bool HxW)}.  Returns (unmatched, n_ref, n_pred)."""
    cutoff = 0.05
    if len(ref_dets) >= max_per_img:
        cutoff = min(d['score'] for d in ref_dets) + 0.02
    refs = sorted((d for d in ref_dets if d['score'] >= cutoff), key=lambda d: -d['score'])
    preds = [p for p in pred if p['score'] >= cutoff]
    used, unmatched = set(), []
    for r in refs:
        r_mask = mask_util.decode(r['rle']).astype(bool)
        for j, p in enumerate(pred):
            if j in used or p['label'] != r['label'] or abs(p['score'] - r['score']) > 0.01:
                continue
            if box_iou(r['bbox_xyxy'], p['bbox_xyxy']) >= 0.99 and masks_equal_enough(r_mask, p['mask']):
                used.add(j)
                break
        else:
            unmatched.append(r)
    return unmatched, len(refs), len(preds)


def assert_matches_reference(ref_dets, pred):
    unmatched, n_ref, n_pred = match_reference(ref_dets, pred)
    assert n_ref > 0
    assert len(unmatched) <= max(1, int(0.03 * n_ref)), f'{len(unmatched)}/{n_ref} reference detections unmatched'
    assert abs(n_pred - n_ref) <= max(1, int(0.03 * n_ref)), f'{n_pred} predictions vs {n_ref} in the reference'


def detections_as_dicts(det):
    return [{'label': int(det.labels[i]), 'score': float(det.scores[i]),
             'bbox_xyxy': [float(v) for v in det.boxes[i]], 'mask': det.full_mask(i)} for i in range(len(det))]


def annotations_as_dicts(anns):
    """predictions.json annotations in the matcher's form (contiguous labels from COCO category ids)."""
    from mrcnn_cli.coco import COCO_CATEGORY_IDS
    labels = {c: i for i, c in enumerate(COCO_CATEGORY_IDS)}
    return [{'label': labels[a['category_id']], 'score': a['score'],
             'bbox_xyxy': [a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2], a['bbox'][1] + a['bbox'][3]],
             'mask': mask_util.decode(a['segmentation']).astype(bool)} for a in anns]

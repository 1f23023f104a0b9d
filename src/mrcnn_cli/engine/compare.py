"""Matching two sets of detections of one image (export self-check, backend and precision tests)."""
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou


def mask_iou(a, b):
    """IoU of two bool masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def match_detections(ref, other, *, min_box_iou=0.99, max_score_diff=None, mask_ok=None):
    """Greedy one-to-one matching, by decreasing reference score: each reference detection takes
    the unused detection of `other` of the same class with the highest box IoU among those with
    IoU >= min_box_iou, |Δscore| <= max_score_diff (when given) and `mask_ok(i, j)` (when given).
    Returns the (reference index, other index) pairs."""
    if len(ref) == 0 or len(other) == 0:
        return []
    ious = box_iou(torch.from_numpy(ref.boxes).double(), torch.from_numpy(other.boxes).double()).numpy()
    used, pairs = set(), []
    for i in np.argsort(-ref.scores, kind='stable'):
        for j in np.argsort(-ious[i], kind='stable'):
            if ious[i, j] < min_box_iou:
                break
            if j in used or other.labels[j] != ref.labels[i]:
                continue
            if max_score_diff is not None and abs(float(other.scores[j]) - float(ref.scores[i])) > max_score_diff:
                continue
            if mask_ok is not None and not mask_ok(i, j):
                continue
            used.add(j)
            pairs.append((int(i), int(j)))
            break
    return pairs


@dataclass
class Agreement:
    matched: int
    total: int
    max_box_diff: float
    max_score_diff: float
    min_mask_iou: float

    def __str__(self):
        return (f'{self.matched}/{self.total} detections matched, max |Δbox| {self.max_box_diff:.3g} px, '
                f'max |Δscore| {self.max_score_diff:.2g}, min mask IoU {self.min_mask_iou:.3f}')


def agreement(ref, other, min_box_iou=0.99, max_score_diff=0.01):
    """How far two backends' Detections of one image agree (matched by `match_detections`)."""
    pairs = match_detections(ref, other, min_box_iou=min_box_iou, max_score_diff=max_score_diff)
    box_d = max((float(np.abs(ref.boxes[i] - other.boxes[j]).max()) for i, j in pairs), default=0.0)
    score_d = max((abs(float(ref.scores[i]) - float(other.scores[j])) for i, j in pairs), default=0.0)
    miou = min((mask_iou(ref.mask(i), other.mask(j)) for i, j in pairs), default=1.0)
    return Agreement(len(pairs), max(len(ref), len(other)), box_d, score_d, miou)


@dataclass(frozen=True)
class AgreementAP:
    """How well one model's detections reproduce another's on the same images ("agreement"): COCO
    box and mask AP with the reference's detections above `score_thr` taken as ground truth, and
    the share of those the other model finds above the same threshold (same class, box IoU >=
    `min_box_iou`).  Not COCO AP: it says how far a model moved from its reference, not how right
    either is."""
    box_ap: float
    mask_ap: float
    found: float
    reference_detections: int
    images: int
    score_thr: float
    min_box_iou: float

    def __str__(self):
        return (f'box agreement AP {self.box_ap:.3f}, mask agreement AP {self.mask_ap:.3f}, '
                f'{self.found:.1%} of the reference\'s {self.reference_detections} detections above '
                f'{self.score_thr:g} found (box IoU >= {self.min_box_iou:g}) on {self.images} images')

    def as_dict(self):
        return {'box_ap': round(self.box_ap, 4), 'mask_ap': round(self.mask_ap, 4), 'found': round(self.found, 4),
                'reference_detections': self.reference_detections, 'images': self.images,
                'score_thr': self.score_thr, 'min_box_iou': self.min_box_iou}


def agreement_ap(reference, other, *, score_thr=0.3, min_box_iou=0.9):
    """AgreementAP of `other` against `reference`: two lists of Detections of the same images, in
    the same order, each with every detection its model keeps (score_thr=0).  pycocotools computes
    the APs; the reference must have detections above `score_thr`."""
    import contextlib
    import io

    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    if len(reference) != len(other):
        raise ValueError('reference and other must hold the same images')
    images, annotations, results, found, total = [], [], [], 0, 0
    for image_id, (ref, det) in enumerate(zip(reference, other), 1):
        images.append({'id': image_id, 'height': ref.height, 'width': ref.width})
        kept = ref[ref.scores >= score_thr]
        for entry in kept.to_coco(image_id):
            entry.pop('score')
            annotations.append({**entry, 'id': len(annotations) + 1, 'iscrowd': 0,
                                'area': float(mask_utils.area(entry['segmentation']))})
        results += det.to_coco(image_id)
        total += len(kept)
        found += len(match_detections(kept, det[det.scores >= score_thr], min_box_iou=min_box_iou))
    if not annotations:
        raise ValueError(f'the reference has no detections above {score_thr:g} on these images')
    categories = [{'id': i} for i in sorted({a['category_id'] for a in annotations + results})]
    aps = {}
    with contextlib.redirect_stdout(io.StringIO()):   # pycocotools prints its progress
        gt = COCO()
        gt.dataset = {'images': images, 'annotations': annotations, 'categories': categories}
        gt.createIndex()
        dt = gt.loadRes(results) if results else None
        for kind in ('bbox', 'segm'):
            if dt is None:
                aps[kind] = 0.0
                continue
            ev = COCOeval(gt, dt, kind)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            aps[kind] = max(float(ev.stats[0]), 0.0)
    return AgreementAP(aps['bbox'], aps['segm'], found / total, total, len(images), score_thr, min_box_iou)

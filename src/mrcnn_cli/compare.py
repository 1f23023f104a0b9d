"""Comparing two backends' detections on the same image (export self-check, bench sanity)."""
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou


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


def _mask_iou(a, b, i, j):
    ma, mb = a.full_mask(i), b.full_mask(j)
    union = np.logical_or(ma, mb).sum()
    return 1.0 if union == 0 else np.logical_and(ma, mb).sum() / union


def agreement(ref, other, min_box_iou=0.99, max_score_diff=0.01):
    """Greedy by reference score: each reference detection matched to an unused detection of
    the same class with box IoU >= 0.99 and |Δscore| <= 0.01."""
    if len(ref) == 0 or len(other) == 0:
        return Agreement(0, max(len(ref), len(other)), 0.0, 0.0, 1.0)
    ious = box_iou(torch.from_numpy(ref.boxes), torch.from_numpy(other.boxes)).numpy()
    used, matched, box_d, score_d, mask_iou = set(), 0, 0.0, 0.0, 1.0
    for i in np.argsort(-ref.scores, kind='stable'):
        ok = [j for j in np.argsort(-ious[i]) if j not in used and other.labels[j] == ref.labels[i]
              and ious[i, j] >= min_box_iou and abs(other.scores[j] - ref.scores[i]) <= max_score_diff]
        if not ok:
            continue
        j = ok[0]
        used.add(j)
        matched += 1
        box_d = max(box_d, float(np.abs(ref.boxes[i] - other.boxes[j]).max()))
        score_d = max(score_d, float(abs(ref.scores[i] - other.scores[j])))
        mask_iou = min(mask_iou, _mask_iou(ref, other, i, j))
    return Agreement(matched, max(len(ref), len(other)), box_d, score_d, mask_iou)

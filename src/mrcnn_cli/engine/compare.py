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

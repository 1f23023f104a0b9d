"""Stage-by-stage checks of a lower precision against FP32 (the BF16 tests and the GPU's FP16 tests):
each stage of the low-precision model gets the FP32 model's inputs (see tests/engine/test_bf16.py)."""
import numpy as np
import torch

from mrcnn_cli.engine.compare import mask_iou, match_detections
from mrcnn_cli.engine.postprocess import to_detections
from mrcnn_cli.engine.preprocess import pad_batch, prepare
from mrcnn_cli.io.coco import COCO_CLASSES
from mrcnn_cli.model.mask_rcnn import autocast
from mrcnn_cli.model.rpn import select_proposals

from conftest import COCO_IMAGES

IMAGES = [COCO_IMAGES / '000000000802.jpg', COCO_IMAGES / '000000018575.jpg']  # 56 and 39 detections


def fp32_stage_inputs(model, img, device='cpu'):
    """The FP32 model's padded batch, features (as the RoI heads take them) and proposals."""
    p = prepare(img, model.spec.norm, torch.device(device))
    batch = pad_batch([p.tensor])
    with torch.inference_mode():
        feats = model.neck(model.backbone(batch.contiguous(memory_format=model.input_format)))
        head_outs = model.rpn_head(feats)
        proposals = [select_proposals(head_outs, 0, p.img_shape)]
    return p, batch, feats, proposals


def heads_detections(model, feats, proposals, p, amp_dtype=None):
    with torch.inference_mode():
        (out,) = model.roi_head(feats, proposals, [p.img_shape], autocast(feats[0].device.type, amp_dtype))
    return to_detections(out, p.scale_factor, p.ori_shape, COCO_CLASSES)


MEDIUM_AREA = 32 * 32   # COCO's small/medium boundary, in pixels


class HeadsAgreement:
    """FP32 detections (score >= 0.05) matched to BF16 ones of their class with box IoU >= 0.9."""

    def __init__(self, fp32, bf16):
        self.total, self.ious, self.big_ious, self.dscores = len(fp32), [], [], []
        for i, j in match_detections(fp32, bf16, min_box_iou=0.9):
            ref_mask = fp32.mask(i)
            iou = mask_iou(ref_mask, bf16.mask(j))
            self.ious.append(iou)
            if ref_mask.sum() >= MEDIUM_AREA:
                self.big_ious.append(iou)
            self.dscores.append(abs(float(fp32.scores[i]) - float(bf16.scores[j])))

    def failures(self):
        out = []
        if len(self.ious) < 0.9 * self.total:
            out.append(f'{len(self.ious)}/{self.total} FP32 detections found in BF16')
        if self.ious and np.median(self.ious) < 0.95:
            out.append(f'median mask IoU {np.median(self.ious):.3f}')
        if self.big_ious and min(self.big_ious) < 0.95:
            out.append(f'a medium/large mask has IoU {min(self.big_ious):.3f}')
        if self.dscores and max(self.dscores) > 0.03:
            out.append(f'a score moved by {max(self.dscores):.3f}')
        return out

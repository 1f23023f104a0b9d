"""BF16 (`--bf16`) stays within rounding of FP32: masks IoU >= 0.95 for matched detections.

Why stage by stage: the synthetic checkpoints are random, and a random 16-block ResNet
amplifies any perturbation ~1.3x per block (measured: BF16's 0.4 % rounding becomes a 40 %
feature difference at C5, then different proposals), which no trained network does.  So each
BF16 stage of the product's own BF16 model gets the FP32 model's inputs and is held to the
issue's tolerance there: the RoI heads end to end (detections matched, masks IoU >= 0.95,
scores within 0.03), and every backbone block and the FPN at rounding level.

Mask IoU >= 0.95 is required of every COCO medium or large mask (>= 32x32 px) and of the
median mask: on masks of a few dozen pixels a sub-pixel box change flips enough pixels to
drop the IoU of any two correct answers below 0.95 (the synthetic masks are also ragged).
"""
import numpy as np
import pytest
import torch

from mrcnn_cli import load
from mrcnn_cli.engine.compare import mask_iou, match_detections
from mrcnn_cli.engine.postprocess import to_detections
from mrcnn_cli.engine.preprocess import pad_batch, prepare
from mrcnn_cli.io.coco import COCO_CLASSES
from mrcnn_cli.io.images import read_image
from mrcnn_cli.model.mask_rcnn import autocast
from mrcnn_cli.model.rpn import select_proposals

from conftest import COCO_IMAGES

IMAGES = [COCO_IMAGES / '000000000802.jpg', COCO_IMAGES / '000000018575.jpg']  # 56 and 39 detections


@pytest.fixture(scope='module')
def bf16_predictor(checkpoint):
    return load(weights=checkpoint('r50'), style='pytorch', device='cpu', precision='bf16')


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


@pytest.mark.parametrize('image', IMAGES, ids=[p.name for p in IMAGES])
def test_bf16_roi_heads_keep_detections_and_masks(torch_predictor, bf16_predictor, image):
    fp32_model = torch_predictor('r50').model
    p, _, feats, proposals = fp32_stage_inputs(fp32_model, read_image(image))
    ref = heads_detections(fp32_model, feats, proposals, p)
    got = heads_detections(bf16_predictor.model, feats, proposals, p, torch.bfloat16)
    agreement = HeadsAgreement(ref, got)
    assert agreement.total >= 30 and len(agreement.big_ious) >= 5
    assert not agreement.failures()


def test_bf16_check_catches_rounded_boxes(torch_predictor, bf16_predictor):
    """Proposals rounded to BF16 (a classic mixed-precision bug: 4 px steps at x ~ 800)
    fail the same check."""
    fp32_model = torch_predictor('r50').model
    p, _, feats, proposals = fp32_stage_inputs(fp32_model, read_image(IMAGES[0]))
    ref = heads_detections(fp32_model, feats, proposals, p)
    rounded = [b.to(torch.bfloat16).float() for b in proposals]
    got = heads_detections(bf16_predictor.model, feats, rounded, p, torch.bfloat16)
    assert len(HeadsAgreement(ref, got).failures()) >= 2


def test_bf16_backbone_and_fpn_at_rounding_level(torch_predictor, bf16_predictor):
    """Each BF16 backbone block and the FPN, fed the FP32 model's input, is within 2 % (relative
    L2) of FP32: BF16 keeps 8 mantissa bits (0.4 % per rounding)."""
    fp32_model, bf16_model = torch_predictor('r50').model, bf16_predictor.model
    _, batch, _, _ = fp32_stage_inputs(fp32_model, read_image(IMAGES[0]))

    def rel(a, b):
        return float((a.float() - b.float()).norm() / a.float().norm())
    worst = 0.0
    with torch.inference_mode():
        x = batch.contiguous(memory_format=torch.channels_last)
        f, b = fp32_model.backbone, bf16_model.backbone
        stem = lambda net, x: net.maxpool(net.relu(net.bn1(net.conv1(x))))  # noqa: E731
        pairs = [(lambda x: stem(f, x), lambda x: stem(b, x))]
        for lf, lb in zip((f.layer1, f.layer2, f.layer3, f.layer4), (b.layer1, b.layer2, b.layer3, b.layer4)):
            pairs += list(zip(lf, lb))
        outs = []
        for run_f, run_b in pairs:
            y = run_f(x)
            with torch.autocast('cpu', dtype=torch.bfloat16):
                worst = max(worst, rel(y, run_b(x)))
            x = y
            outs.append(y)
        c = [outs[i] for i in np.cumsum([1, 3, 4, 6, 3])[1:] - 1]
        p_f = fp32_model.neck(c)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            p_b = bf16_model.neck(c)
        worst_fpn = max(rel(a, b) for a, b in zip(p_f, p_b))
    assert worst <= 0.02, f'a BF16 block differs by {worst:.3%}'
    assert worst_fpn <= 0.02, f'the BF16 FPN differs by {worst_fpn:.3%}'
    assert worst > 0  # the BF16 model really ran in BF16

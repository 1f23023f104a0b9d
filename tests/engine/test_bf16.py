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
import warnings

import numpy as np
import pytest
import torch

from mrcnn_cli import load
from mrcnn_cli.io.images import read_image

from stage_checks import IMAGES, HeadsAgreement, fp32_stage_inputs, heads_detections


@pytest.fixture(scope='module')
def bf16_predictor(checkpoint):
    return load(weights=checkpoint('r50'), style='pytorch', device='cpu', precision='bf16')




@pytest.mark.slow
@pytest.mark.parametrize('image', IMAGES, ids=[p.name for p in IMAGES])
def test_bf16_roi_heads_keep_detections_and_masks(torch_predictor, bf16_predictor, image):
    fp32_model = torch_predictor('r50').torch_model()
    p, _, feats, proposals = fp32_stage_inputs(fp32_model, read_image(image))
    ref = heads_detections(fp32_model, feats, proposals, p)
    got = heads_detections(bf16_predictor.torch_model(), feats, proposals, p, torch.bfloat16)
    agreement = HeadsAgreement(ref, got)
    assert agreement.total >= 30 and len(agreement.big_ious) >= 5
    assert not agreement.failures()


@pytest.mark.slow
def test_bf16_check_catches_rounded_boxes(torch_predictor, bf16_predictor):
    """Proposals rounded to BF16 (a classic mixed-precision bug: 4 px steps at x ~ 800)
    fail the same check."""
    fp32_model = torch_predictor('r50').torch_model()
    p, _, feats, proposals = fp32_stage_inputs(fp32_model, read_image(IMAGES[0]))
    ref = heads_detections(fp32_model, feats, proposals, p)
    rounded = [b.to(torch.bfloat16).float() for b in proposals]
    got = heads_detections(bf16_predictor.torch_model(), feats, rounded, p, torch.bfloat16)
    assert len(HeadsAgreement(ref, got).failures()) >= 2


@pytest.mark.slow
def test_bf16_backbone_and_fpn_at_rounding_level(torch_predictor, bf16_predictor):
    """Each BF16 backbone block and the FPN, fed the FP32 model's input, is within 2 % (relative
    L2) of FP32: BF16 keeps 8 mantissa bits (0.4 % per rounding)."""
    fp32_model, bf16_model = torch_predictor('r50').torch_model(), bf16_predictor.torch_model()
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


def test_bf16_without_native_support_warns_once_naming_the_faster_choice(monkeypatch):
    """Emulated BF16 (a CPU without AVX512-BF16 or AMX) runs slower than FP32: never silently."""
    from mrcnn_cli import MrcnnWarning
    from mrcnn_cli.backends import pytorch
    from mrcnn_cli.errors import command_line_voice
    monkeypatch.setattr(pytorch, 'cpu_has_native_bf16', lambda: False)
    with pytest.warns(MrcnnWarning) as said, command_line_voice():
        assert pytorch.check_precision('bf16', torch.device('cpu')) == torch.bfloat16
    assert len(said) == 1 and '--bf16 will be slow; --precision fp32 is faster here' in str(said[0].message)
    monkeypatch.setattr(pytorch, 'cpu_has_native_bf16', lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        pytorch.check_precision('bf16', torch.device('cpu'))

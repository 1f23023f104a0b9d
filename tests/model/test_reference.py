"""The product's core promise: mmdetection's own detections for the same checkpoint."""
import json

import pytest

from mrcnn_cli.io.images import read_image

from conftest import SHARED
from matching import REFERENCES, assert_matches_reference, assert_same_to_rounding, from_reference, match_reference


@pytest.mark.slow
@pytest.mark.parametrize('variant,style,ref_name,image', REFERENCES, ids=[r[2] for r in REFERENCES])
def test_matches_mmdetection_reference(torch_predictor, variant, style, ref_name, image):
    ref = json.loads((SHARED / 'data' / 'reference' / ref_name).read_text())
    det = torch_predictor(variant, style)(read_image(image), score_thr=0)
    assert (det.height, det.width) == (ref['height'], ref['width'])
    assert_matches_reference(from_reference(ref['detections']), det)


@pytest.mark.slow
def test_reference_check_can_fail(torch_predictor):
    """The matcher rejects the pytorch-style reference when the model runs with caffe preprocessing."""
    ref = json.loads((SHARED / 'data' / 'reference' / 'r50_fpn__mmdet_demo.json').read_text())
    det = torch_predictor('r50', 'caffe')(read_image(SHARED / 'data' / 'demo' / 'mmdet_demo.jpg'), score_thr=0)
    unmatched, n_ref, _ = match_reference(from_reference(ref['detections']), det)
    assert len(unmatched) > 0.5 * n_ref


@pytest.mark.slow
@pytest.mark.parametrize('variant,style,ref_name,image', REFERENCES, ids=[r[2] for r in REFERENCES])
def test_fp32_inference_rewrites_stay_at_rounding_level(torch_predictor, plain_predictor, variant, style,
                                                        ref_name, image):
    """The default FP32 mode folds BatchNorms and runs channels_last: the model's own detections
    without those rewrites, on the same CPU, in their order (up to swaps of near-equal scores),
    scores within 1e-3 and boxes within 0.05 px.  (Against mmdetection's records, made on another
    CPU, the synthetic weights amplify float rounding to ~1e-3 whatever the code does: the matcher
    above holds that comparison to the records' own rule.)"""
    img = read_image(image)
    assert_same_to_rounding(torch_predictor(variant, style)(img, score_thr=0),
                            plain_predictor(variant, style)(img, score_thr=0))


@pytest.mark.slow
def test_gpu_roi_path_matches_reference(torch_predictor, plain_predictor, monkeypatch):
    """The RoI path GPUs take (all levels stacked, one torchvision RoIAlign call, no host sync),
    run here on the CPU: mmdetection's detections, and the plain model's at rounding level."""
    import mrcnn_cli.model.poolers as poolers
    calls, stacked_roi_align = [], poolers.stacked_roi_align
    monkeypatch.setattr(poolers, 'sampling_path', lambda feat: poolers.STACKED)
    monkeypatch.setattr(poolers, 'stacked_roi_align', lambda *a: calls.append(1) or stacked_roi_align(*a))
    variant, style, ref_name, image = REFERENCES[0]
    ref = json.loads((SHARED / 'data' / 'reference' / ref_name).read_text())['detections']
    img = read_image(image)
    det = torch_predictor(variant, style)(img, score_thr=0)
    assert calls == [1, 1]   # box head, mask head
    assert_matches_reference(from_reference(ref), det)
    assert_same_to_rounding(det, plain_predictor(variant, style)(img, score_thr=0))

"""The product's core promise: mmdetection's own detections for the same checkpoint."""
import json

import numpy as np
import pytest

from conftest import COCO_IMAGES, SHARED
from matching import assert_matches_reference, detections_as_dicts, match_reference
from mrcnn_cli.preprocess import read_image

REFERENCES = [
    ('r50', 'pytorch', 'r50_fpn__mmdet_demo.json', SHARED / 'data' / 'demo' / 'mmdet_demo.jpg'),
    ('r50', 'pytorch', 'r50_fpn__000000397133.json', COCO_IMAGES / '000000397133.jpg'),
    ('r50_caffe', 'caffe', 'r50_caffe_fpn__000000397133.json', COCO_IMAGES / '000000397133.jpg'),
]


@pytest.mark.parametrize('variant,style,ref_name,image', REFERENCES, ids=[r[2] for r in REFERENCES])
def test_matches_mmdetection_reference(torch_predictor, variant, style, ref_name, image):
    ref = json.loads((SHARED / 'data' / 'reference' / ref_name).read_text())
    det = torch_predictor(variant, style).predict(read_image(image))
    assert (det.height, det.width) == (ref['height'], ref['width'])
    assert_matches_reference(ref['detections'], detections_as_dicts(det))


def test_reference_check_can_fail(torch_predictor):
    """The matcher rejects the pytorch-style reference when the model runs with caffe preprocessing."""
    ref = json.loads((SHARED / 'data' / 'reference' / 'r50_fpn__mmdet_demo.json').read_text())
    det = torch_predictor('r50', 'caffe').predict(read_image(SHARED / 'data' / 'demo' / 'mmdet_demo.jpg'))
    unmatched, n_ref, _ = match_reference(ref['detections'], detections_as_dicts(det))
    assert len(unmatched) > 0.5 * n_ref


@pytest.mark.parametrize('variant,style,ref_name,image', REFERENCES, ids=[r[2] for r in REFERENCES])
def test_fp32_inference_rewrites_stay_at_rounding_level(torch_predictor, variant, style, ref_name, image):
    """The default FP32 mode folds BatchNorms and runs channels_last: mmdetection's detections
    in its order, scores within 1e-3 and boxes within 0.05 px (measured: 2e-4, 4e-3 px)."""
    ref = json.loads((SHARED / 'data' / 'reference' / ref_name).read_text())['detections']
    det = torch_predictor(variant, style).predict(read_image(image))
    assert len(det) == len(ref)
    assert [d['label'] for d in ref] == det.labels.tolist()
    assert np.abs(det.scores - [d['score'] for d in ref]).max() <= 1e-3
    assert np.abs(det.boxes - np.array([d['bbox_xyxy'] for d in ref])).max() <= 0.05


def test_gpu_roi_path_matches_reference(torch_predictor, monkeypatch):
    """The RoI path GPUs take (all levels stacked, one torchvision RoIAlign call, no host sync),
    run here on the CPU: mmdetection's detections at the default mode's rounding level."""
    import mrcnn_cli.roi_heads as roi_heads
    calls, stacked_roi_align = [], roi_heads.stacked_roi_align
    monkeypatch.setattr(roi_heads, 'uses_gather', lambda feat: False)
    monkeypatch.setattr(roi_heads, 'stacked_roi_align', lambda *a: calls.append(1) or stacked_roi_align(*a))
    variant, style, ref_name, image = REFERENCES[0]
    ref = json.loads((SHARED / 'data' / 'reference' / ref_name).read_text())['detections']
    det = torch_predictor(variant, style).predict(read_image(image))
    assert calls == [1, 1]   # box head, mask head
    assert_matches_reference(ref, detections_as_dicts(det))
    assert [d['label'] for d in ref] == det.labels.tolist()
    assert np.abs(det.scores - [d['score'] for d in ref]).max() <= 1e-3
    assert np.abs(det.boxes - np.array([d['bbox_xyxy'] for d in ref])).max() <= 0.05

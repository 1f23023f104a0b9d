"""`--compile`: torch.compile of the dense part gives mmdetection's detections too."""
import json
import shutil

import numpy as np
import pytest

from conftest import COCO_IMAGES, SHARED
from mrcnn_cli.preprocess import read_image
from test_cli import assert_one_error_line, mrcnn


@pytest.mark.skipif(shutil.which('g++') is None, reason="inductor's CPU backend needs a C++ compiler")
def test_compiled_model_matches_mmdetection_reference(checkpoint):
    from mrcnn_cli.predictor import load_torch_predictor
    predictor = load_torch_predictor(None, checkpoint('r50'), style='pytorch', device='cpu', compile=True)
    assert predictor.compiled
    det = predictor.predict(read_image(COCO_IMAGES / '000000397133.jpg'))
    ref = json.loads((SHARED / 'data' / 'reference' / 'r50_fpn__000000397133.json').read_text())['detections']
    assert len(det) == len(ref)
    assert [d['label'] for d in ref] == det.labels.tolist()
    assert np.abs(det.scores - [d['score'] for d in ref]).max() <= 1e-3
    assert np.abs(det.boxes - np.array([d['bbox_xyxy'] for d in ref])).max() <= 0.05


def test_compile_is_refused_for_onnx(tmp_path):
    proc = mrcnn('predict', COCO_IMAGES / '000000397133.jpg', '--backend', 'onnx', '--onnx', tmp_path / 'm.onnx',
                 '--compile', '--out', tmp_path / 'out')
    assert_one_error_line(proc, 'torch backend')
    assert not (tmp_path / 'out').exists()


@pytest.mark.skipif(shutil.which('g++') is None, reason="inductor's CPU backend needs a C++ compiler")
def test_predict_compile_flag(tmp_path, checkpoint):
    proc = mrcnn('predict', COCO_IMAGES / '000000397133.jpg', '--weights', checkpoint('r50'), '--device', 'cpu',
                 '--compile', '--no-vis', '--out', tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert '(fp32, compiled)' in proc.stderr
    assert json.loads((tmp_path / 'predictions.json').read_text())

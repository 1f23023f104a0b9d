"""`--compile`: torch.compile of the dense part gives mmdetection's detections too."""
import json
import shutil

import pytest

from mrcnn_cli.io.images import read_image

from conftest import COCO_IMAGES, SHARED
from helpers import FAST, assert_one_error_line, mrcnn_here
from matching import assert_matches_reference, assert_same_to_rounding, from_reference


@pytest.mark.slow
@pytest.mark.skipif(shutil.which('g++') is None, reason="inductor's CPU backend needs a C++ compiler")
def test_compiled_model_matches_mmdetection_reference(checkpoint, torch_predictor):
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config
    from torch._dynamo.utils import counters

    from mrcnn_cli import load
    settings = (inductor_config.freezing, dynamo_config.recompile_limit)
    predictor = load(weights=checkpoint('r50'), style='pytorch', device='cpu', compile=True)
    assert predictor.compiled
    counters.clear()
    with inductor_config.patch(fx_graph_cache=False):   # a cached graph would not count its rewrites
        det = predictor(read_image(COCO_IMAGES / '000000397133.jpg'), score_thr=0)
    # frozen weights: every convolution of backbone, FPN and RPN head (53 + 8 + 3) pre-packed for
    # oneDNN, with its ReLU or residual sum fused
    assert counters['inductor']['mkldnn_conv_weight_pack_matcher_count'] >= 64
    assert counters['inductor']['mkldnn_conv_binary_unary_fusion_matcher_count'] >= 16   # a sum+ReLU per block
    # the compile options are the compiled modules' own: no process-wide torch setting changed
    assert (inductor_config.freezing, dynamo_config.recompile_limit) == settings
    ref = json.loads((SHARED / 'data' / 'reference' / 'r50_fpn__000000397133.json').read_text())['detections']
    assert_matches_reference(from_reference(ref), det)
    assert_same_to_rounding(det, torch_predictor('r50', 'pytorch')(read_image(COCO_IMAGES / '000000397133.jpg'),
                                                            score_thr=0))


def test_compile_is_refused_for_onnx(tmp_path):
    proc = mrcnn_here('predict', COCO_IMAGES / '000000397133.jpg', '--backend', 'onnx', '--onnx', tmp_path / 'm.onnx',
                 '--compile', '--out', tmp_path / 'out')
    assert_one_error_line(proc, 'torch backend')
    assert not (tmp_path / 'out').exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which('g++') is None, reason="inductor's CPU backend needs a C++ compiler")
def test_predict_compile_flag(tmp_path, checkpoint):
    proc = mrcnn_here('predict', COCO_IMAGES / '000000397133.jpg', '--weights', checkpoint('r50'), '--device',
                      'cpu', *FAST, '--compile', '--no-vis', '--out', tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert '(fp32, compiled, scale 640x384)' in proc.stderr
    assert json.loads((tmp_path / 'predictions.json').read_text())

"""`mrcnn export --onnx` and the onnxruntime backend against the PyTorch backend."""
import copy
import json
import os

import onnx
import onnxruntime as ort
import pytest
import torch

from mrcnn_cli import MrcnnError
from mrcnn_cli.backends.onnx_export import export_onnx
from mrcnn_cli.backends.onnx_runtime import OnnxBackend
from mrcnn_cli.io.images import read_image
from mrcnn_cli.predictor import Predictor

from conftest import COCO_IMAGES, DEMO, SHARED
from helpers import EXPORT_CASES, FAST, assert_one_error_line, mrcnn_here
from matching import assert_matches_reference

STANDARD_DOMAINS = {'', 'ai.onnx'}
# different sizes and aspect ratios: 640x427, 640x480, 333x500 (portrait), 640x358


@pytest.mark.slow
@pytest.mark.parametrize('variant,style,images,scale', EXPORT_CASES, ids=[c[0] for c in EXPORT_CASES])
def test_onnxruntime_matches_pytorch(exported, torch_predictor, variant, style, images, scale):
    path = exported(variant, style)
    proto = onnx.load(str(path), load_external_data=False)
    assert {op.domain for op in proto.opset_import} <= STANDARD_DOMAINS
    assert {n.domain for n in proto.graph.node} <= STANDARD_DOMAINS
    ops = {n.op_type for n in proto.graph.node}
    assert {'NonMaxSuppression', 'RoiAlign', 'TopK'} <= ops
    roi_modes = {a.s.decode() for n in proto.graph.node if n.op_type == 'RoiAlign'
                 for a in n.attribute if a.name == 'coordinate_transformation_mode'}
    assert roi_modes == {'half_pixel'}  # aligned=True
    # the box head reads RoIAlign's NCHW output through a plain reshape (weights put in its order)
    assert not [n.name for n in proto.graph.node if n.op_type == 'Transpose' and 'bbox_head' in n.name]
    # FPN upsampling by constant scales (no `sizes` input): onnxruntime keeps it in NCHWc layout
    resizes = [n for n in proto.graph.node if n.op_type == 'Resize']
    assert len(resizes) == 3 and all(len(n.input) == 3 and n.input[2] for n in resizes)
    ort_backend = OnnxBackend(path, device='cpu')
    ort_predictor = Predictor(ort_backend)
    assert ort_backend.providers == ['CPUExecutionProvider']
    opts = ort_backend.session.get_session_options()
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.intra_op_num_threads == os.cpu_count() and not opts.enable_mem_pattern
    assert opts.get_session_config_entry('session.intra_op.allow_spinning') == '0'
    assert ort_predictor.classes == torch_predictor(variant, style).classes
    assert ort_predictor.spec == torch_predictor(variant, style).spec
    torch_side = Predictor(copy.copy(torch_predictor(variant, style).backend))
    if scale:
        torch_side.backend.scale = ort_backend.scale = scale
    for name in images:
        img = read_image(COCO_IMAGES / name)
        ref = torch_side(img, score_thr=0)
        got = ort_predictor(img, score_thr=0)
        assert len(ref) > 0
        assert_matches_reference(ref, got)


@pytest.mark.slow
def test_image_with_no_detections(checkpoint, tmp_path):
    from mrcnn_cli import load
    p = load(weights=checkpoint('r50'), style='pytorch', device='cpu')
    p.torch_model().roi_head.bbox_head.fc_cls.bias[-1] = 1e4   # background wins every RoI
    path = tmp_path / 'empty.onnx'
    export_onnx(p, path)
    det = Predictor(OnnxBackend(path, device='cpu'))(read_image(DEMO), score_thr=0)
    assert len(det) == 0 and det.boxes.shape == (0, 4) and det.masks.shape == (0, 427, 640)
    assert len(p(read_image(DEMO))) == 0


@pytest.mark.slow
def test_export_cli_and_predict_with_onnx_backend(tmp_path, checkpoint):
    path = tmp_path / 'm.onnx'
    proc = mrcnn_here('export', '--onnx', path, '--weights', checkpoint('r50'))
    assert proc.returncode == 0, proc.stderr
    assert 'MiB' in proc.stdout and ' s\n' in proc.stdout
    reference = json.loads((SHARED / 'data' / 'reference' / 'r50_fpn__mmdet_demo.json').read_text())
    n = len(reference['detections'])                             # the demo photo: every detection of mmdet's
    assert f'{n}/{n} detections matched' in proc.stdout
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert json.loads(meta['classes'])[0] == 'person' and meta['style'] == 'pytorch'
    assert len(meta['source_sha256']) == 64 and meta['source_checkpoint'] == checkpoint('r50').name
    outs = {}
    for backend in ('torch', 'onnx'):
        out = tmp_path / backend
        args = ['--onnx', path] if backend == 'onnx' else ['--weights', checkpoint('r50')]
        proc = mrcnn_here('predict', DEMO, '--backend', backend, *args, '--out', out, '--device', 'cpu', *FAST,
                     '--score-thr', '0.05')
        assert proc.returncode == 0, proc.stderr
        outs[backend] = out
    assert sorted(p.name for p in outs['torch'].iterdir()) == sorted(p.name for p in outs['onnx'].iterdir())
    docs = {b: json.loads((o / 'predictions.json').read_text()) for b, o in outs.items()}
    assert docs['torch']['images'] == docs['onnx']['images']
    assert docs['torch']['categories'] == docs['onnx']['categories']
    a, b = docs['torch']['annotations'], docs['onnx']['annotations']
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x['category_id'] == y['category_id'] and abs(x['score'] - y['score']) <= 0.01
        assert max(abs(u - v) for u, v in zip(x['bbox'], y['bbox'])) < 0.5


def test_bad_onnx_inputs(tmp_path):
    bad = tmp_path / 'bad.onnx'
    bad.write_bytes(b'\x08\x07garbage' * 100)
    with pytest.raises(MrcnnError, match='cannot load the ONNX model'):
        OnnxBackend(bad, device='cpu')
    assert_one_error_line(mrcnn_here('predict', DEMO, '--backend', 'onnx', '--onnx', bad), 'cannot load the ONNX model')
    assert_one_error_line(mrcnn_here('predict', DEMO, '--backend', 'onnx'), 'needs --onnx')
    plain = tmp_path / 'plain.onnx'
    x = torch.zeros(1, 3)
    torch.onnx.export(torch.nn.Identity(), (x,), str(plain), dynamo=False)
    with pytest.raises(MrcnnError, match='not an mrcnn ONNX export'):
        OnnxBackend(plain, device='cpu')

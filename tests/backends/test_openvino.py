"""The OpenVINO backend on the file `mrcnn export` writes, against the PyTorch backend (the same
matching rule as the onnxruntime tests); skipped where the optional openvino package is absent."""
import copy

import numpy as np
import pytest

from mrcnn_cli import MrcnnError, load
from mrcnn_cli.io.images import read_image
from mrcnn_cli.predictor import Predictor

from conftest import COCO_IMAGES
from helpers import EXPORT_CASES, FAST, FAST_SCALE, assert_one_error_line, mrcnn_here
from matching import assert_matches_reference

pytest.importorskip('openvino', reason="the optional openvino package is not installed (pip install "
                                       "'mrcnn-cli[openvino]')")


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """OpenVINO's compiled-model cache under the test's own folder, not the user's ~/.cache."""
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path_factory.getbasetemp() / 'cache'))


@pytest.mark.slow
@pytest.mark.parametrize('variant,style,images,scale', EXPORT_CASES, ids=[c[0] for c in EXPORT_CASES])
def test_openvino_matches_pytorch(exported, torch_predictor, variant, style, images, scale):
    path = exported(variant, style)
    ov_predictor = load(onnx=path, backend='openvino', device='cpu', scale=scale or (1333, 800))
    torch_side = Predictor(copy.copy(torch_predictor(variant, style).backend))
    assert ov_predictor.classes == torch_side.classes and ov_predictor.spec == torch_side.spec
    assert ov_predictor.backend.ov_device == 'CPU' and ov_predictor.precision == 'fp32'
    if scale:
        torch_side.backend.scale = scale
    for name in images:
        img = read_image(COCO_IMAGES / name)
        ref = torch_side(img, score_thr=0)
        assert len(ref) > 0
        assert_matches_reference(ref, ov_predictor(img, score_thr=0))


@pytest.mark.slow
def test_compiled_models_are_cached_between_loads(exported, tmp_path):
    cache = tmp_path / 'ov-cache'
    from mrcnn_cli.backends.openvino import OpenVinoBackend
    OpenVinoBackend(exported('r50'), device='cpu', cache_dir=cache, scale=FAST_SCALE)
    assert any(cache.iterdir())


@pytest.mark.slow
def test_openvino_from_the_cli_and_its_refusals(exported, tmp_path):
    path = exported('r50')
    img = COCO_IMAGES / '000000011813.jpg'
    proc = mrcnn_here('predict', img, '--backend', 'openvino', '--onnx', path, '--device', 'cpu', '--out',
                      tmp_path / 'out', *FAST, '--no-vis')
    assert proc.returncode == 0, proc.stderr
    assert 'OpenVINO on CPU (fp32, scale 640x384)' in proc.stderr and (tmp_path / 'out' / 'predictions.json').exists()
    for args, message in ((('--device', 'cuda'), 'is not an OpenVINO device'),
                          (('--compile',), '--compile applies to the torch backend'),
                          (('--ort-provider', 'cpu'), '--ort-provider applies to the onnx backend')):
        proc = mrcnn_here('predict', img, '--backend', 'openvino', '--onnx', path, *args, '--out', tmp_path / 'o2')
        assert_one_error_line(proc, message)
    with pytest.raises(MrcnnError, match="backend='openvino' needs onnx=FILE"):   # Python's words
        load(backend='openvino')
    broken = tmp_path / 'broken.onnx'
    broken.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(MrcnnError, match='cannot load the ONNX model in OpenVINO'):
        load(onnx=broken, backend='openvino', device='cpu')


@pytest.mark.slow
def test_the_bf16_hint_keeps_backbone_stages_at_bf16_rounding(torch_predictor, tmp_path):
    """As the --bf16 tests do for torch, stage by stage (a random network amplifies any rounding
    end to end): backbone stages compiled with the predictor's own BF16 settings, fed the FP32
    model's input, are within 2 % (relative L2) of OpenVINO FP32, and really ran in BF16."""
    import openvino as ov
    import torch

    from mrcnn_cli.backends.openvino import cpu_runs_bf16
    if not cpu_runs_bf16():   # a test never depends on a CPU feature: where BF16 is emulated there is no hint
        pytest.skip("OpenVINO's CPU plugin computes no BF16 on this CPU (no AVX512-BF16 or AMX)")

    from mrcnn_cli.backends.openvino import check_precision, compile_config
    from mrcnn_cli.engine.preprocess import pad_batch, prepare
    model = torch_predictor('r50').torch_model()
    core = ov.Core()
    check_precision(core, 'CPU', 'bf16')
    net = model.backbone
    x = pad_batch([prepare(read_image(COCO_IMAGES / '000000011813.jpg'), model.spec.norm).tensor])
    with torch.inference_mode():
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    worst, lowest = 0.0, 1.0
    for k, stage in enumerate((net.layer1, net.layer2)):
        path = tmp_path / f'stage{k}.onnx'
        torch.onnx.export(stage, (x,), str(path), dynamo=False)
        runs = {}
        for precision in ('fp32', 'bf16'):
            compiled = core.compile_model(core.read_model(str(path)), 'CPU', compile_config('CPU', precision))
            assert compiled.get_property('INFERENCE_PRECISION_HINT') == ov.Type.bf16 if precision == 'bf16' else True
            runs[precision] = torch.from_numpy(np.array(compiled(x.numpy())[0]))
        rel = float((runs['bf16'] - runs['fp32']).norm() / runs['fp32'].norm())
        worst, lowest = max(worst, rel), min(lowest, rel)
        with torch.inference_mode():
            x = stage(x)
    assert worst <= 0.02, f"a BF16 stage differs by {worst:.3%}"
    assert lowest > 1e-4   # BF16 really ran


def test_without_openvino_installed_one_line_says_how_to_install(exported, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, 'openvino', None)   # as if it were not installed
    with pytest.raises(MrcnnError, match=r"needs the openvino package: pip install 'mrcnn-cli\[openvino\]'"):
        load(onnx=exported('r50'), backend='openvino', device='cpu')

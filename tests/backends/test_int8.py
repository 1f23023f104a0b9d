"""`mrcnn export --int8`: NNCF quantization for OpenVINO (FILE.xml) and onnxruntime's QDQ quantization
(FILE.onnx) behind an accuracy guard, and the INT8 files through predict, eval, bench, serve and load.

The synthetic checkpoints cannot show how much INT8 costs in accuracy: their heads turn any
rounding into other detections (OpenVINO BF16 itself agrees with FP32 at a box agreement AP near
0.1 on them; docs/int8.md has the numbers).  So the file that goes through every command is
written with the guard at zero, and the guard's refusal is shown at its defaults."""
import json
import re
import shutil

import cv2
import numpy as np
import pytest

from mrcnn_cli import MrcnnError, MrcnnWarning, load
from mrcnn_cli.io.files import file_sha256

from conftest import COCO_IMAGES
from helpers import FAST, FAST_SCALE, assert_one_error_line, mrcnn_here, no_partial_files

pytest.importorskip('nncf', reason="INT8 export needs NNCF (pip install 'mrcnn-cli[int8]')")
pytest.importorskip('openvino', reason="INT8 export needs OpenVINO (pip install 'mrcnn-cli[int8]')")

PHOTOS = sorted(p.name for p in COCO_IMAGES.glob('*.jpg'))
CALIBRATION, CHECK = PHOTOS[:8], PHOTOS[40:44]   # the check images are never calibration images


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """OpenVINO's compiled-model cache under the test's own folder, not the user's ~/.cache."""
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path_factory.getbasetemp() / 'cache'))


def image_folder(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(COCO_IMAGES / name, folder / name)
    return folder


def export_int8(checkpoint, out, calib, *extra, int8_name='r50_int8.xml'):
    return mrcnn_here('export', '--weights', checkpoint('r50'), '--style', 'pytorch', '--device', 'cpu', *FAST,
                      '--onnx', out / 'r50.onnx', '--int8', out / int8_name, '--calib', calib,
                      *[a for name in CHECK for a in ('--int8-check', COCO_IMAGES / name)], *extra)


@pytest.fixture(scope='module')
def int8_export(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp('int8')
    proc = export_int8(checkpoint, out, image_folder(out / 'calib', CALIBRATION), '--int8-guard', '0,0,0')
    assert proc.returncode == 0, proc.stderr
    return out, proc


@pytest.mark.slow
def test_the_int8_file_carries_what_made_it_and_what_its_guard_measured(int8_export):
    import openvino as ov
    out, proc = int8_export
    assert (out / 'r50_int8.xml').exists() and (out / 'r50_int8.bin').exists() and not no_partial_files(out)
    meta = {k: v.astype(str) for k, v in ov.Core().read_model(str(out / 'r50_int8.xml'))
            .get_rt_info()['framework'].items()}
    fp32 = {k: v.astype(str) for k, v in ov.Core().read_model(str(out / 'r50.onnx')).get_rt_info()['framework'].items()}
    assert meta['precision'] == 'int8' and fp32['precision'] == 'fp32'
    for key in ('classes', 'source_sha256', 'source_checkpoint', 'mrcnn_version', 'mean', 'std', 'depth'):
        assert meta[key] == fp32[key], key
    calibration = json.loads(meta['calibration'])
    assert calibration['images'] == len(CALIBRATION) and calibration['first'] == CALIBRATION[0]
    assert calibration['scale'] == list(FAST_SCALE)
    agreement = json.loads(meta['agreement'])
    assert agreement['images'] == len(CHECK) and agreement['passed'] is True
    assert agreement['thresholds'] == {'box_ap': 0.0, 'mask_ap': 0.0, 'found': 0.0}
    assert agreement['reference_detections'] > 0 and 0 <= agreement['box_ap'] <= 1
    # what the export printed is what the file says
    assert (f'box agreement AP {agreement["box_ap"]:.3f}, mask agreement AP {agreement["mask_ap"]:.3f}'
            in proc.stdout), proc.stdout
    assert f'calibrated on {len(CALIBRATION)} images' in proc.stdout
    # no log record of a library it drives (torch logs its CUDA probe when NNCF imports its torch part)
    assert not [line for line in proc.stderr.splitlines() if re.match(r'[IWE]\d{4} \d\d:', line)], proc.stderr


@pytest.mark.slow
def test_the_guard_measures_what_the_two_models_give(int8_export):
    """The file's agreement figures are reproduced from the FP32 and INT8 models' own detections
    on the held-out images, scored by pycocotools."""
    out, _ = int8_export
    fp32 = load(onnx=out / 'r50.onnx', backend='openvino', device='cpu', scale=FAST_SCALE)
    assert_guard_reproduced(fp32, load(out / 'r50_int8.xml', device='cpu', scale=FAST_SCALE))


def assert_guard_reproduced(fp32, int8):
    """The INT8 file's recorded agreement is what its FP32 and INT8 models give on CHECK."""
    from mrcnn_cli.engine.compare import agreement_ap
    from mrcnn_cli.io.images import read_image
    images = [read_image(COCO_IMAGES / name) for name in CHECK]
    measured = agreement_ap([fp32(img, score_thr=0) for img in images], [int8(img, score_thr=0) for img in images])
    recorded = int8.backend.agreement
    assert measured.reference_detections == recorded['reference_detections'] > 0
    for key in ('box_ap', 'mask_ap', 'found'):
        assert getattr(measured, key) == pytest.approx(recorded[key], abs=1e-4), key


@pytest.mark.slow
def test_the_int8_file_runs_wherever_an_onnx_file_does(int8_export, tmp_path):
    out, _ = int8_export
    xml = out / 'r50_int8.xml'
    model = load(xml, device='cpu')                                   # told by its content
    assert model.precision == 'int8' and model.name == 'openvino' and 'int8' in model.describe()
    assert model.backend.identity()['weights_sha256'] != file_sha256(xml)      # the .bin's weights count too
    img = cv2.imread(str(COCO_IMAGES / CHECK[0]))
    assert len(model(img, score_thr=0)) > 0
    proc = mrcnn_here('predict', COCO_IMAGES / CHECK[0], '--onnx', xml, '--device', 'cpu', '--out', tmp_path / 'p',
                      '--no-vis', *FAST)
    assert proc.returncode == 0 and 'OpenVINO on CPU (int8' in proc.stderr, proc.stderr
    assert (tmp_path / 'p' / 'predictions.json').exists()
    ann = tmp_path / 'ann.json'
    gt = json.loads((COCO_IMAGES.parent / 'annotations' / 'instances_val2017.json').read_text())
    keep = {i['id'] for i in gt['images'] if i['file_name'] in CHECK[:2]}
    gt['images'] = [i for i in gt['images'] if i['id'] in keep]
    gt['annotations'] = [a for a in gt['annotations'] if a['image_id'] in keep]
    ann.write_text(json.dumps(gt))
    proc = mrcnn_here('eval', 'coco', '--ann', ann, '--images', COCO_IMAGES, '--onnx', xml, '--device', 'cpu',
                      '--out', tmp_path / 'e', *FAST)
    assert proc.returncode == 0 and '2 of 2 images evaluated' in proc.stdout, proc.stderr
    proc = mrcnn_here('bench', '--onnx', out / 'r50.onnx', '--backend', 'openvino', '--int8', xml, '--device', 'cpu',
                      '--n', '2', '--warmup', '0', '--json', tmp_path / 'b.json', *FAST)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / 'b.json').read_text())['rows']
    assert [(r['backend'], r['precision']) for r in rows] == [('openvino', 'fp32'), ('openvino', 'int8')]
    assert rows[0]['agreement'] is None and rows[1]['agreement'] == model.backend.agreement
    assert 'openvino int8 agreement with FP32' in proc.stdout


@pytest.mark.slow
def test_the_int8_file_serves(int8_export):
    pytest.importorskip('fastapi')
    from fastapi.testclient import TestClient

    from mrcnn_cli.serve import ServeOptions, create_app
    out, _ = int8_export
    model = load(out / 'r50_int8.xml', device='cpu', scale=(640, 384))
    with TestClient(create_app(model, ServeOptions())) as client:
        answer = client.post('/v1/predict?score_thr=0', content=(COCO_IMAGES / CHECK[0]).read_bytes())
    assert answer.status_code == 200, answer.text
    served, local = answer.json()['detections'], model(COCO_IMAGES / CHECK[0], score_thr=0)
    assert len(served) == len(local) > 0
    assert [d['score'] for d in served] == pytest.approx(local.scores.tolist(), abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize('int8_name', ['r50_int8.xml', 'r50_int8.onnx'])
def test_the_guard_refuses_a_model_calibrated_on_blank_images_and_writes_nothing(checkpoint, tmp_path, int8_name):
    blank = tmp_path / 'blank'
    blank.mkdir()
    for i in range(8):
        cv2.imwrite(str(blank / f'grey{i}.png'), np.full((480, 640, 3), 114, np.uint8))
    proc = export_int8(checkpoint, tmp_path, blank, int8_name=int8_name)
    assert_one_error_line(proc, 'INT8 model refused by the accuracy guard: box agreement AP')
    assert 'found' in proc.stderr and '--force writes it anyway' in proc.stderr
    assert not (tmp_path / int8_name).exists() and not (tmp_path / 'r50_int8.bin').exists()
    assert not no_partial_files(tmp_path)


@pytest.mark.slow
def test_an_int8_file_of_another_mrcnn_version_is_refused(int8_export, tmp_path):
    out, _ = int8_export
    text = (out / 'r50_int8.xml').read_text()
    from mrcnn_cli import __version__
    assert f'<mrcnn_version value="{__version__}"' in text
    (tmp_path / 'old.xml').write_text(text.replace(f'<mrcnn_version value="{__version__}"',
                                                   '<mrcnn_version value="0.0.9"'))
    shutil.copy(out / 'r50_int8.bin', tmp_path / 'old.bin')
    with pytest.raises(MrcnnError, match=rf'quantized by mrcnn 0\.0\.9, this is mrcnn {__version__}'):
        load(tmp_path / 'old.xml', device='cpu')


@pytest.mark.slow
def test_a_cpu_without_int8_dot_products_gets_one_warning(int8_export, monkeypatch):
    from mrcnn_cli.io import cpu
    out, _ = int8_export
    monkeypatch.setattr(cpu, 'cpu_has_int8_dot_product', lambda: False)
    with pytest.warns(MrcnnWarning, match='no INT8 dot-product units'):
        load(out / 'r50_int8.xml', device='cpu')


@pytest.mark.slow
def test_precisions_a_file_or_backend_cannot_run_are_one_line(int8_export, checkpoint, tmp_path):
    out, _ = int8_export
    img = COCO_IMAGES / CHECK[0]
    common = ('--device', 'cpu', '--out', tmp_path / 'o', '--no-vis')
    for args, message in (
            (('--onnx', out / 'r50_int8.xml', '--bf16'), 'is an INT8 model: it runs in int8'),
            (('--onnx', out / 'r50_int8.xml', '--backend', 'onnx'), 'is an OpenVINO model'),
            (('--onnx', out / 'r50.onnx', '--precision', 'int8'), '--precision int8 runs an INT8 file'),
            (('--weights', checkpoint('r50'), '--precision', 'int8', '--backend', 'torch'),
             'INT8 runs on OpenVINO: `mrcnn export --int8'),
            (('--onnx', out / 'r50.onnx', '--precision', 'bf16', '--fp16'), 'choose one precision')):
        assert_one_error_line(mrcnn_here('predict', img, *args, *common), message)


def test_agreement_ap_of_a_model_with_itself_and_with_nothing():
    """pycocotools' AP of detections scored against themselves is 1; against none, 0."""
    from mrcnn_cli.engine.compare import agreement_ap
    from mrcnn_cli.engine.detections import Detections
    from mrcnn_cli.ops.paste import MaskWindow
    masks = np.zeros((3, 60, 80), bool)
    masks[0, 5:20, 5:30] = masks[1, 30:50, 40:70] = masks[2, 10:40, 50:60] = True
    windows = [MaskWindow(m, 0, 0) for m in masks]
    boxes = np.array([[5, 5, 30, 20], [40, 30, 70, 50], [50, 10, 60, 40]], np.float32)
    det = Detections(boxes, [0.9, 0.8, 0.2], [0, 2, 0], windows, 60, 80, ('a', 'b', 'c'))
    same = agreement_ap([det], [det])
    assert (same.box_ap, same.mask_ap) == (pytest.approx(1.0), pytest.approx(1.0))
    assert (same.found, same.reference_detections) == (1.0, 2)
    none = agreement_ap([det], [det[det.scores > 1]])
    assert (none.box_ap, none.mask_ap, none.found) == (0.0, 0.0, 0.0)
    moved = Detections(boxes + [[0, 0, 0, 0], [8, 0, 8, 0], [0, 0, 0, 0]], det.scores, det.labels, windows, 60, 80,
                       det.classes)
    half = agreement_ap([det], [moved])
    assert half.found == 0.5 and 0 < half.box_ap < 1
    with pytest.raises(ValueError, match='no detections above 0.95'):
        agreement_ap([det], [det], score_thr=0.95)


def test_int8_export_refusals_come_before_any_work(checkpoint, tmp_path, monkeypatch):
    calib = image_folder(tmp_path / 'few', PHOTOS[:5])
    (calib / 'broken.jpg').write_bytes(b'\xff\xd8 not a jpeg')
    base = ('export', '--weights', checkpoint('r50'), '--device', 'cpu', '--onnx', tmp_path / 'x.onnx')
    proc = mrcnn_here(*base, '--int8', tmp_path / 'x.xml', '--calib', calib)
    assert_one_error_line(proc, 'needs at least 8 readable calibration images and 4 held-out check images')
    assert len([ln for ln in proc.stderr.splitlines() if ln.startswith('warning:') and 'broken.jpg' in ln]) == 1
    assert not (tmp_path / 'x.onnx').exists()
    assert_one_error_line(mrcnn_here(*base, '--int8', tmp_path / 'x.onnx8', '--calib', calib),
                          'an INT8 model is an OpenVINO .xml file (NNCF; its weights go to the .bin beside it) or '
                          'an .onnx file')
    assert_one_error_line(mrcnn_here(*base, '--int8', tmp_path / 'x.onnx', '--calib', calib),
                          '--int8 names the FP32 file --onnx writes')
    assert_one_error_line(mrcnn_here(*base, '--int8', tmp_path / 'x.xml'), '--int8 needs --calib')
    assert_one_error_line(mrcnn_here(*base, '--int8', tmp_path / 'x.xml', '--calib', calib, '--int8-guard', '2,0,0'),
                          'BOX_AP,MASK_AP,FOUND')
    monkeypatch.setitem(__import__('sys').modules, 'nncf', None)
    assert_one_error_line(mrcnn_here(*base, '--int8', tmp_path / 'x.xml', '--calib', calib),
                          "pip install 'mrcnn-cli[int8]'")


@pytest.fixture(scope='module')
def qdq_export(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp('qdq')
    proc = export_int8(checkpoint, out, image_folder(out / 'calib', CALIBRATION), '--int8-guard', '0,0,0',
                       int8_name='r50_int8.onnx')
    assert proc.returncode == 0, proc.stderr
    return out, proc


@pytest.mark.slow
def test_the_onnx_int8_file_is_qdq_with_what_made_it_and_its_guard(qdq_export):
    """onnxruntime's QDQ file: every convolution and matrix product reads INT8 weights through a
    DequantizeLinear and UINT8 activations through a Quantize/DequantizeLinear pair; its metadata is
    the FP32 export's, with what calibrated it and what its guard measured, as NNCF's file has."""
    import onnx
    out, proc = qdq_export
    qdq, fp32 = onnx.load(str(out / 'r50_int8.onnx')), onnx.load(str(out / 'r50.onnx'))
    assert not no_partial_files(out) and not list(out.glob('*.bin'))
    producers = {o: n for n in qdq.graph.node for o in n.output}
    initializers = {i.name: i for i in qdq.graph.initializer}
    dense = [n for n in qdq.graph.node if n.op_type in ('Conv', 'MatMul', 'Gemm')]
    assert len(dense) == sum(n.op_type in ('Conv', 'MatMul', 'Gemm') for n in fp32.graph.node) > 60
    for node in dense:
        activation, weight = (producers.get(name) for name in node.input[:2])
        assert activation is not None and activation.op_type == 'DequantizeLinear', node.name
        assert producers[activation.input[0]].op_type == 'QuantizeLinear', node.name
        if node.op_type == 'Conv':   # the weight: an INT8 constant, one scale per output channel
            assert weight.op_type == 'DequantizeLinear'
            assert initializers[weight.input[0]].data_type == onnx.TensorProto.INT8
            assert len(initializers[weight.input[1]].dims) == 1
    meta = {p.key: p.value for p in qdq.metadata_props}
    fp32_meta = {p.key: p.value for p in fp32.metadata_props}
    assert meta['precision'] == 'int8' and fp32_meta['precision'] == 'fp32'
    for key in ('classes', 'source_sha256', 'source_checkpoint', 'mrcnn_version', 'mean', 'std', 'depth'):
        assert meta[key] == fp32_meta[key], key
    calibration = json.loads(meta['calibration'])
    assert calibration['images'] == len(CALIBRATION) and calibration['tool'].startswith('onnxruntime ')
    agreement = json.loads(meta['agreement'])
    assert agreement['images'] == len(CHECK) and agreement['passed'] is True
    assert f'box agreement AP {agreement["box_ap"]:.3f}' in proc.stdout


@pytest.mark.slow
def test_the_onnx_int8_file_runs_on_onnxruntime_and_its_guard_is_what_it_gives(qdq_export, tmp_path):
    out, _ = qdq_export
    int8 = load(out / 'r50_int8.onnx', device='cpu', scale=FAST_SCALE)
    fp32 = load(onnx=out / 'r50.onnx', device='cpu', scale=FAST_SCALE)
    assert (int8.name, int8.precision, fp32.precision) == ('onnx', 'int8', 'fp32')
    assert_guard_reproduced(fp32, int8)
    recorded = int8.backend.agreement
    proc = mrcnn_here('predict', COCO_IMAGES / CHECK[0], '--onnx', out / 'r50_int8.onnx', '--device', 'cpu',
                      '--out', tmp_path / 'p', '--no-vis', *FAST)
    assert proc.returncode == 0 and 'onnxruntime CPUExecutionProvider (int8' in proc.stderr, proc.stderr
    proc = mrcnn_here('bench', '--onnx', out / 'r50.onnx', '--backend', 'onnx', '--int8', out / 'r50_int8.onnx',
                      '--device', 'cpu', '--n', '1', '--warmup', '0', '--json', tmp_path / 'b.json', *FAST)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / 'b.json').read_text())['rows']
    assert [(r['backend'], r['precision']) for r in rows] == [('onnx', 'fp32'), ('onnx', 'int8')]
    assert rows[1]['agreement'] == recorded
    for args, message in ((('--bf16',), 'does not apply to the onnx backend'),
                          (('--precision', 'int8', '--onnx', out / 'r50.onnx'), 'is an fp32 export')):
        assert_one_error_line(mrcnn_here('predict', COCO_IMAGES / CHECK[0], '--onnx', out / 'r50_int8.onnx', *args,
                                         '--device', 'cpu', '--out', tmp_path / 'x', '--no-vis'), message)


@pytest.mark.slow
def test_the_onnx_int8_file_is_refused_by_another_version_and_warns_without_dot_products(qdq_export, tmp_path,
                                                                                        monkeypatch):
    import onnx

    from mrcnn_cli import __version__
    from mrcnn_cli.io import cpu
    out, _ = qdq_export
    monkeypatch.setattr(cpu, 'cpu_has_int8_dot_product', lambda: False)
    with pytest.warns(MrcnnWarning, match='no INT8 dot-product units'):
        load(out / 'r50_int8.onnx', device='cpu')
    model = onnx.load(str(out / 'r50_int8.onnx'))
    version = next(p for p in model.metadata_props if p.key == 'mrcnn_version')
    assert version.value == __version__
    version.value = '0.0.9'
    onnx.save(model, str(tmp_path / 'old.onnx'))
    with pytest.raises(MrcnnError, match=rf'quantized by mrcnn 0\.0\.9, this is mrcnn {__version__}'):
        load(tmp_path / 'old.onnx', device='cpu')

"""The CUDA paths, where a GPU exists: mmdetection's reference detections on `cuda` in FP32, FP16
held to the BF16 tests' stage-by-stage tolerance, the chunked GPU paste against the CPU paste,
onnxruntime's CUDA and TensorRT providers against its CPU provider, --compile (CUDA graphs), and a
2-rank NCCL torchrun eval.  Without a GPU every test here is skipped with the reason (pytest
prints the count); `make gpu-check` runs them with the GPU benchmarks on a machine that has one."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from mrcnn_cli import load
from mrcnn_cli.io.images import read_image

from conftest import COCO_IMAGES, SHARED
from matching import REFERENCES, assert_matches_reference, assert_same_to_rounding, from_reference
from stage_checks import IMAGES as STAGE_IMAGES
from stage_checks import HeadsAgreement, fp32_stage_inputs, heads_detections

CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not CUDA, reason='no CUDA GPU here (the GPU paths run under `make gpu-check`)')


@pytest.fixture(scope='module')
def cuda_predictor(checkpoint):
    cache = {}

    def get(variant, style=None, **kw):
        key = (variant, style, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = load(weights=checkpoint(variant), style=style, device='cuda', **kw)
        return cache[key]
    return get


@pytest.mark.parametrize('variant,style,ref_name,image', REFERENCES, ids=[r[2] for r in REFERENCES])
def test_mmdetection_reference_on_cuda_fp32(cuda_predictor, variant, style, ref_name, image):
    ref = json.loads((SHARED / 'data' / 'reference' / ref_name).read_text())
    det = cuda_predictor(variant, style)(read_image(image))
    assert_matches_reference(from_reference(ref['detections']), det)


@pytest.mark.parametrize('image', STAGE_IMAGES, ids=[p.name for p in STAGE_IMAGES])
def test_fp16_roi_heads_keep_detections_and_masks(cuda_predictor, image):
    fp32_model = cuda_predictor('r50', 'pytorch').torch_model()
    fp16_model = cuda_predictor('r50', 'pytorch', precision='fp16').torch_model()
    p, _, feats, proposals = fp32_stage_inputs(fp32_model, read_image(image), device='cuda')
    ref = heads_detections(fp32_model, feats, proposals, p)
    got = heads_detections(fp16_model, feats, proposals, p, torch.float16)
    agreement = HeadsAgreement(ref, got)
    assert agreement.total >= 30 and not agreement.failures()


def test_gpu_paste_matches_the_cpu_paste():
    from mrcnn_cli.ops.paste import paste_masks
    gen = torch.Generator().manual_seed(0)
    n, h, w = 100, 480, 640
    probs = torch.rand(n, 28, 28, generator=gen)
    xy = torch.rand(n, 2, generator=gen) * torch.tensor([w, h])
    wh = torch.rand(n, 2, generator=gen) * torch.tensor([w / 2, h / 2]) + 1
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1)
    cpu = paste_masks(probs, boxes, h, w)
    gpu = paste_masks(probs.cuda(), boxes.cuda(), h, w)
    differ = total = 0
    for a, b in zip(cpu, gpu):
        full_a = a.paste_into(np.zeros((h, w), bool))
        full_b = b.paste_into(np.zeros((h, w), bool))
        differ += int((full_a != full_b).sum())
        total += int(full_a.sum())
    assert differ <= 1e-3 * total, f'{differ} of {total} mask pixels differ'   # only threshold ties


@pytest.mark.parametrize('provider', ['cuda', 'tensorrt'])
def test_onnxruntime_gpu_providers_match_the_cpu_provider(exported, provider):
    import onnxruntime as ort
    name = {'cuda': 'CUDAExecutionProvider', 'tensorrt': 'TensorrtExecutionProvider'}[provider]
    if name not in ort.get_available_providers():
        pytest.skip(f'onnxruntime here has no {name}')
    path = exported('r50')
    cpu = load(onnx=path, device='cpu')
    gpu = load(onnx=path, device='cuda', ort_provider=provider)
    assert gpu.backend.providers[0] == name
    for image in ('000000397133.jpg', '000000011813.jpg'):
        img = read_image(COCO_IMAGES / image)
        assert_matches_reference(cpu(img), gpu(img))


def test_compile_on_cuda_stays_at_rounding_level(cuda_predictor):
    img = read_image(COCO_IMAGES / '000000397133.jpg')
    eager = cuda_predictor('r50', 'pytorch')(img)
    compiled = cuda_predictor('r50', 'pytorch', compile=True)
    compiled(img)   # the first call of a size compiles
    assert_same_to_rounding(compiled(img), eager)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs two GPUs')
def test_two_rank_nccl_eval_equals_one_process(checkpoint, tmp_path):
    ann = SHARED / 'data' / 'coco_mini_val2017' / 'annotations' / 'instances_val2017_tiny8.json'
    args = ['eval', 'coco', '--ann', str(ann), '--images', str(COCO_IMAGES), '--weights', str(checkpoint('r50')),
            '--style', 'pytorch']
    one = subprocess.run([sys.executable, '-m', 'mrcnn_cli', *args, '--device', 'cuda', '--out', str(tmp_path / 'one')],
                         capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc-per-node', '2', '--master-port',
                          '29527', '-m', 'mrcnn_cli', *args, '--out', str(tmp_path / 'two')],
                         capture_output=True, text=True, timeout=900)
    assert two.returncode == 0, two.stderr[-2000:]
    metrics = [json.loads((tmp_path / d / 'metrics.json').read_text()) for d in ('one', 'two')]
    for kind in ('bbox', 'segm'):
        assert abs(metrics[0][kind]['AP'] - metrics[1][kind]['AP']) < 2e-3

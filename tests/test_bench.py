"""`mrcnn bench`: the report's fields and that the stages account for the measured time."""
import json

import pytest

from conftest import COCO_IMAGES
from helpers import FAST, mrcnn, mrcnn_here


def check_row(row, stages):
    assert row['images'] == 2 and row['fps'] > 0
    lat = row['latency_ms']
    assert set(lat) == {'mean', 'p50', 'p90', 'p99'} and 0 < lat['p50'] <= lat['p99']
    assert row['peak_rss_mb'] > 100
    assert set(row['stages_ms']) == stages
    # per-stage times add up to the measured latency (within 10 %)
    assert sum(row['stages_ms'].values()) == pytest.approx(lat['mean'], rel=0.10)
    assert 1000 / lat['mean'] == pytest.approx(row['fps'], rel=1e-6)


def test_bench_torch_onnx_and_torchvision(tmp_path, checkpoint, exported):
    images = tmp_path / 'imgs'
    images.mkdir()
    (images / 'a.jpg').symlink_to(COCO_IMAGES / '000000397133.jpg')
    out = tmp_path / 'bench.json'
    proc = mrcnn('bench', '--fps', '--weights', checkpoint('r50'), '--backend', 'all', '--onnx', exported('r50'), *FAST,
                 '--images', images, '--n', 2, '--warmup', 1, '--device', 'cpu', '--compare', 'torchvision',
                 '--json', out)
    assert proc.returncode == 0, proc.stderr
    assert 'warm-up' in proc.stdout and 'torchvision' in proc.stdout
    report = json.loads(out.read_text())
    assert report['image_sizes'] == [[427, 640]] and report['decode_ms_per_image'] > 0
    assert report['machine']['cores'] >= 1 and 'cpu' in report['machine']
    rows = {r['backend']: r for r in report['rows']}
    assert set(rows) == {'torch', 'onnx', 'torchvision'}
    check_row(rows['torch'], {'preprocess', 'backbone+fpn', 'rpn', 'roi box head', 'mask head', 'paste'})
    check_row(rows['onnx'], {'preprocess', 'network', 'paste'})
    assert rows['torch']['speedup_vs_torchvision'] == pytest.approx(rows['torch']['fps'] / rows['torchvision']['fps'])
    assert rows['torchvision']['speedup_vs_torchvision'] is None
    assert rows['torch']['device'] == 'cpu' and rows['onnx']['device'] == 'CPUExecutionProvider'


def test_bench_rejects_compare_for_non_r50(checkpoint):
    proc = mrcnn_here('bench', '--weights', checkpoint('r50_caffe'), '--style', 'caffe', '--n', 1, '--warmup', 0,
                 '--compare', 'torchvision')
    assert proc.returncode == 1 and 'needs an R-50 pytorch-style checkpoint' in proc.stderr

"""`mrcnn bench`: the report's fields and that the stages account for the measured time."""
import json
from dataclasses import replace

import numpy as np
import pytest

from mrcnn_cli.errors import MrcnnError

from conftest import COCO_IMAGES
from helpers import FAST, FAST_SCALE, mrcnn, mrcnn_here


def check_row(row, stages):
    assert row['images'] == 2 and row['fps'] > 0
    lat = row['latency_ms']
    assert set(lat) == {'mean', 'p50', 'p90', 'p99'} and 0 < lat['p50'] <= lat['p99']
    assert row['peak_rss_mb'] > 100
    assert set(row['stages_ms']) == stages
    # per-stage times add up to the measured latency (within 10 %)
    assert sum(row['stages_ms'].values()) == pytest.approx(lat['mean'], rel=0.10)
    assert 1000 / lat['mean'] == pytest.approx(row['fps'], rel=1e-6)


@pytest.mark.slow
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
    from mrcnn_cli.backends.openvino import cpu_runs_bf16, openvino_available
    from mrcnn_cli.backends.pytorch import cpu_has_native_bf16
    # BF16 rows only on a CPU that computes BF16 (elsewhere a warning says they are left out)
    torch_rows = [('torch', 'fp32')] + [('torch', 'bf16')] * cpu_has_native_bf16()
    openvino = ([('openvino', 'fp32')] + [('openvino', 'bf16')] * cpu_runs_bf16()) if openvino_available() else []
    assert [(r['backend'], r['precision']) for r in report['rows']] == [
        *torch_rows, ('onnx', 'fp32'), *openvino, ('torchvision', 'fp32')]
    rows = {r['backend']: r for r in report['rows']}
    for r in report['rows'][:len(torch_rows)]:
        check_row(r, {'preprocess', 'backbone+fpn', 'rpn', 'roi box head', 'mask head', 'paste'})
    check_row(rows['onnx'], {'preprocess', 'network', 'paste'})
    graph_rows = report['rows'][len(torch_rows):len(torch_rows) + 1 + len(openvino)]
    for r in report['rows'][:len(torch_rows) + 1 + len(openvino)]:   # start-up reported: load, then the first result
        assert 0 < r['load_s'] < r['first_result_s']
    for r in graph_rows[1:]:
        check_row(r, {'preprocess', 'network', 'paste'})
        assert r['device'] == 'CPU'
    assert rows['torch']['speedup_vs_torchvision'] == pytest.approx(rows['torch']['fps'] / rows['torchvision']['fps'])
    assert rows['torchvision']['speedup_vs_torchvision'] is None
    assert rows['torch']['device'] == 'cpu' and rows['onnx']['device'] == 'CPUExecutionProvider'


@pytest.mark.slow
def test_bench_rejects_compare_for_non_r50(checkpoint):
    proc = mrcnn_here('bench', '--weights', checkpoint('r50_caffe'), '--style', 'caffe', '--n', 1, '--warmup', 0,
                 '--compare', 'torchvision')
    assert proc.returncode == 1 and 'needs an R-50 pytorch-style checkpoint' in proc.stderr


@pytest.mark.slow
def test_bench_pipeline_replay_row(tmp_path, checkpoint):
    images = tmp_path / 'imgs'
    images.mkdir()
    for name in ('000000011813.jpg', '000000034417.jpg'):
        (images / name).symlink_to(COCO_IMAGES / name)
    out = tmp_path / 'bench.json'
    proc = mrcnn_here('bench', '--weights', checkpoint('r50'), '--style', 'pytorch', *FAST, '--images', images,
                      '--n', 4, '--warmup', 0, '--device', 'cpu', '--pipeline', '--replay', '--no-vis', '--json', out,
                      '--track')
    assert proc.returncode == 0, proc.stderr
    tracking = json.loads(out.read_text())['tracking']
    assert tracking['objects'] == 20 and tracking['mask_ms_per_frame'] > 0 and tracking['box_ms_per_frame'] > 0
    assert 'tracking (bytetrack, 20 objects on 1920x1080 frames' in proc.stdout
    rows = {r['backend']: r for r in json.loads(out.read_text())['rows']}
    assert set(rows) == {'torch', 'torch predict (replay)'}
    row = rows['torch predict (replay)']
    assert row['pipeline']['fps'] == row['fps'] > 0 and row['images'] == 4
    assert row['pipeline']['vis'] is False and row['pipeline']['replay'] is True
    # every detection is written (test threshold): the two images' mean, as the predictor finds them
    from mrcnn_cli import load
    predictor = load(weights=checkpoint('r50'), style='pytorch', device='cpu', scale=FAST_SCALE)
    counts = [len(predictor(images / name, score_thr=0)) for name in ('000000011813.jpg', '000000034417.jpg')]
    assert row['pipeline']['detections_per_image'] == pytest.approx(sum(counts) / 2)
    assert rows['torch']['pipeline'] is None
    assert 'go with --pipeline' in mrcnn_here('bench', '--weights', checkpoint('r50'), '--replay').stderr


@pytest.mark.slow
def test_replayed_network_gives_the_recorded_detections(torch_predictor):

    import cv2

    from mrcnn_cli.commands.bench import ReplayBackend
    backend = torch_predictor('r50', 'pytorch').backend
    run_network = backend.run_network
    images = [cv2.imread(str(COCO_IMAGES / n)) for n in ('000000011813.jpg', '000000034417.jpg')]
    real = [backend.predict_batch([img])[0] for img in images]
    replaying = ReplayBackend(backend, images)
    assert backend.run_network == run_network   # the backend it replays is left as it was
    for _ in range(2):
        replayed = [replaying.predict_batch([img])[0] for img in images]
        for a, b in zip(real, replayed):
            assert len(a) > 0 and (a.boxes == b.boxes).all() and (a.scores == b.scores).all()
            assert (a.masks == b.masks).all()
        replaying.restart()


def test_bench_rows_apply_each_option_or_say_why_not():
    from mrcnn_cli import ModelChoice
    from mrcnn_cli.backends.openvino import openvino_available
    from mrcnn_cli.commands.bench import bench_rows
    from mrcnn_cli.errors import command_line_voice
    said = []
    base = ModelChoice(weights='w.pth', onnx='m.onnx', device='cuda')

    def rows_of(batch_size=1, **changes):
        with command_line_voice():
            return [(r.backend, r.precision, r.device, r.compile, r.onnx)
                    for r in bench_rows(replace(base, **changes), batch_size, warn=said.append)]
    rows = rows_of(4, backend='all', precision='bf16', compile=True)
    assert rows[:2] == [('torch', 'bf16', 'cuda', True, None), ('onnx', 'fp32', 'cuda', False, 'm.onnx')]
    from mrcnn_cli.backends.openvino import cpu_runs_bf16
    ov_bf16 = [('openvino', 'bf16', 'cpu', False, 'm.onnx')] if openvino_available() and cpu_runs_bf16() else []
    assert rows[2:] == ([('openvino', 'fp32', 'cpu', False, 'm.onnx'), *ov_bf16]
                        if openvino_available() else [])   # CUDA is not OpenVINO's: its rows run on the CPU
    assert '--bf16 and --compile apply to the torch row only' in said[-2] and '--batch-size' in said[-1]
    assert all(line.startswith('warning: ') for line in said)
    assert rows_of(backend='onnx', ort_provider='cuda', weights=None)[0][:2] == ('onnx', 'fp32')
    assert rows_of(backend='openvino', precision='bf16', weights=None)[0][:2] == ('openvino', 'bf16')
    for changes, message in (({'backend': 'onnx', 'precision': 'bf16'}, '--bf16 does not apply to the onnx backend'),
                             ({'backend': 'openvino', 'compile': True}, '--compile applies to the torch backend'),
                             ({'backend': 'torch', 'onnx': None, 'ort_provider': 'cuda'},
                              '--ort-provider applies to the onnx backend')):
        with pytest.raises(MrcnnError, match=message):
            rows_of(**changes)


@pytest.mark.slow
def test_bench_tiled_row_counts_what_predict_tile_does(tmp_path, checkpoint):
    images = tmp_path / 'imgs'
    images.mkdir()
    names = ('000000011813.jpg', '000000034417.jpg')     # 333x500 and 500x375
    for name in names:
        (images / name).symlink_to(COCO_IMAGES / name)
    out = tmp_path / 'bench.json'
    proc = mrcnn_here('bench', '--weights', checkpoint('r50'), '--style', 'pytorch', *FAST, '--images', images,
                      '--n', 1, '--warmup', 0, '--device', 'cpu', '--tile', 256, '--json', out)
    assert proc.returncode == 0, proc.stderr
    row = {r['backend']: r for r in json.loads(out.read_text())['rows']}['torch tiled']
    tiled = row['tiled']
    assert tiled['tile'] == [256, 256] and tiled['tiles'] == 6 + 6 and row['images'] == 2   # 2 x 3 and 3 x 2
    assert tiled['tiles_per_s'] == pytest.approx(12 / tiled['seconds'])
    assert tiled['megapixels_per_s'] == pytest.approx((333 * 500 + 500 * 375) / 1e6 / tiled['seconds'])
    assert 0 < tiled['model_s'] < tiled['seconds'] and tiled['cpu_overhead'] > 0
    from mrcnn_cli import load
    predictor = load(weights=checkpoint('r50'), style='pytorch', device='cpu', scale=FAST_SCALE)
    found = sum(len(predictor(images / name, tile=256, score_thr=0.3)) for name in names)
    assert row['detections_per_image'] == pytest.approx(found / 2)
    assert 'tiles of 256x256' in proc.stdout


def test_without_native_bf16_openvino_has_no_bf16_row_and_auto_refuses_bf16(monkeypatch, exported):
    """A CPU whose OpenVINO plugin has no BF16 (AVX2-only): `bench --backend all` leaves the row out
    with one warning instead of stopping, and --device auto refuses --bf16 as --device cpu does,
    instead of running FP32 under a bf16 label."""
    pytest.importorskip('openvino')
    from mrcnn_cli import ModelChoice, MrcnnError, load
    from mrcnn_cli.backends import openvino as ov_backend
    from mrcnn_cli.commands.bench import bench_rows
    monkeypatch.setattr(ov_backend, 'device_capabilities', lambda core, target: ['FP32', 'INT8', 'BIN'])
    said = []
    rows = bench_rows(ModelChoice(weights='w.pth', onnx='m.onnx', device='cpu', backend='all'), warn=said.append)
    assert [(r.backend, str(r.precision)) for r in rows][-1] == ('openvino', 'fp32')
    assert any('no openvino bf16 row' in line for line in said)
    for device in ('cpu', 'auto'):
        with pytest.raises(MrcnnError, match='needs BF16 support on OpenVINO CPU'):
            load(onnx=exported('r50'), backend='openvino', device=device, precision='bf16')


@pytest.mark.parametrize('native', [True, False])
def test_torch_bf16_row_beside_fp32_only_where_the_cpu_computes_bf16(monkeypatch, native):
    """`bench --backend all` times torch in FP32 and BF16 side by side on a CPU with native BF16 (as
    OpenVINO's rows); elsewhere one warning says why the BF16 row is left out.  A GPU row and an
    explicit precision keep the one row asked for."""
    from mrcnn_cli import ModelChoice
    from mrcnn_cli.backends import pytorch
    from mrcnn_cli.commands.bench import bench_rows
    monkeypatch.setattr(pytorch, 'cpu_has_native_bf16', lambda: native)
    said = []
    rows = bench_rows(ModelChoice(weights='w.pth', onnx='m.onnx', device='cpu', backend='all'), warn=said.append)
    torch_rows = [str(r.precision) for r in rows if r.backend == 'torch']
    assert torch_rows == (['fp32', 'bf16'] if native else ['fp32'])
    assert any('no torch bf16 row' in line for line in said) is not native
    rows = bench_rows(ModelChoice(weights='w.pth', onnx='m.onnx', device='cpu', backend='all', precision='bf16'),
                      warn=said.append)
    assert [str(r.precision) for r in rows if r.backend == 'torch'] == ['bf16']
    assert pytorch.TorchBackend.bench_precisions(pytorch.Precision.FP32, 'cuda') == (pytorch.Precision.FP32,)
    assert pytorch.TorchBackend.bench_note('cuda') is None


def test_the_tracking_rows_stream_is_twenty_objects_the_tracker_follows():
    pytest.importorskip('trackers')
    from mrcnn_cli.commands.bench import tracking_stream
    from mrcnn_cli.engine.tracking import MaskTracker
    tracker = MaskTracker()
    ids = [tracker.update(det, timestamp=t / 30).track_ids for t, det in enumerate(tracking_stream(frames=60))]
    assert all(len(frame) == 20 for frame in ids)                     # every object tracked in every frame
    assert len(set(np.concatenate(ids).tolist())) <= 24                # by nearly the same tracks throughout

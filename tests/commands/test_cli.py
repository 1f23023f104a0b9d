"""The `mrcnn` command as a user runs it (a real subprocess)."""
import json
import shutil

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO

from mrcnn_cli import __version__
from mrcnn_cli.io.coco import COCO_CATEGORY_IDS
from mrcnn_cli.io.images import read_image

from conftest import COCO_IMAGES, DEMO, SHARED
from helpers import FAST, FAST_SCALE, assert_one_error_line, mrcnn, mrcnn_here
from matching import assert_matches_reference, from_annotations, from_reference


@pytest.mark.slow
def test_version_and_help():
    assert mrcnn('--version').stdout.strip().endswith(__version__)
    for cmd in ([], ['predict'], ['zoo'], ['zoo', 'list'], ['zoo', 'download']):
        proc = mrcnn_here(*cmd, '--help')
        assert proc.returncode == 0 and 'Usage:' in proc.stdout


def test_zoo_list_shows_every_row(tmp_path):
    proc = mrcnn_here('zoo', 'list', '--weights-dir', tmp_path)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and len(lines) == 22
    assert lines[0].split()[:3] == ['name', 'backbone', 'style']
    assert any(line.startswith('mask-rcnn_x101-64x4d_fpn_ms-poly_3x_coco') for line in lines)


def test_zoo_list_says_which_downloads_match_their_checksum(tmp_path, zoo_weights_dir):
    import shutil

    from mrcnn_cli.io import zoo
    entry = zoo.get_entry('mask-rcnn_r50_fpn_1x_coco')
    other = zoo.get_entry('mask-rcnn_r101_fpn_1x_coco')
    shutil.copy(zoo_weights_dir / entry.filename, tmp_path / entry.filename)        # the r50 file, renamed:
    shutil.copy(zoo_weights_dir / entry.filename, tmp_path / other.filename)        # not the r101 checkpoint
    (tmp_path / f'.{entry.filename}.verified').write_text((zoo_weights_dir / f'.{entry.filename}.verified').read_text())
    state = {line.split()[0]: line.split(None, 6)[-1] for line in
             mrcnn_here('zoo', 'list', '--weights-dir', tmp_path).stdout.strip().splitlines()[1:]}
    assert state[other.name] == 'bad checksum' and state['mask-rcnn_r50-caffe_fpn_1x_coco'] == '-'
    verified = mrcnn_here('zoo', 'list', '--weights-dir', zoo_weights_dir).stdout
    assert next(line for line in verified.splitlines() if line.startswith(entry.name + ' ')).endswith(' yes')


@pytest.mark.slow
def test_predict_directory_writes_pictures_and_coco_json(tmp_path, checkpoint):
    src = tmp_path / 'in'
    (src / 'sub').mkdir(parents=True)
    shutil.copy(DEMO, src / 'demo.jpg')
    shutil.copy(COCO_IMAGES / '000000397133.jpg', src / 'sub' / 'street.jpg')
    (src / 'broken.jpg').write_bytes(b'\xff\xd8\xff not really a jpeg')
    out = tmp_path / 'out'
    proc = mrcnn('predict', src, '--weights', checkpoint('r50'), '--device', 'cpu', '--out', out,
                 '--score-thr', '0.05')
    assert proc.returncode == 1, proc.stderr          # one input failed
    assert 'Traceback' not in proc.stderr
    assert sum('broken.jpg' in line and 'warning' in line for line in proc.stderr.splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ['demo.jpg', 'predictions.json', 'predictions.jsonl', 'street.jpg']
    coco = COCO(str(out / 'predictions.json'))
    assert len(coco.imgs) == 2 and len(coco.cats) == 80 and sorted(coco.cats) == list(COCO_CATEGORY_IDS)
    demo_id = next(i for i, im in coco.imgs.items() if im['file_name'].endswith('demo.jpg'))
    assert (coco.imgs[demo_id]['height'], coco.imgs[demo_id]['width']) == (427, 640)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[demo_id]))
    for a in anns:
        assert isinstance(a['segmentation']['counts'], str)
        assert a['area'] == int(mask_util.decode(a['segmentation']).sum())
    # the JSON carries mmdetection's own detections for this checkpoint
    ref = json.loads((SHARED / 'data' / 'reference' / 'r50_fpn__mmdet_demo.json').read_text())
    assert_matches_reference(from_reference(ref['detections']), from_annotations(anns, 427, 640))
    picture = (out / 'demo.jpg').read_bytes()
    assert picture != DEMO.read_bytes() and len(picture) > 10000


@pytest.mark.slow
def test_predict_class_filter_and_no_vis(tmp_path, checkpoint):
    out = tmp_path / 'out'
    proc = mrcnn_here('predict', DEMO, '--weights', checkpoint('r50'), '--device', 'cpu', '--out', out,
                 '--score-thr', '0.05', '--classes', 'cat', '--no-vis')
    assert proc.returncode == 0, proc.stderr
    # a file without a training config: the assumed style is said once, in one line
    warnings = [line for line in proc.stderr.splitlines() if 'warning' in line.lower()]
    assert len(warnings) == 1 and warnings[0].startswith('warning: ') and 'assuming pytorch style' in warnings[0]
    assert sorted(p.name for p in out.iterdir()) == ['predictions.json', 'predictions.jsonl']
    doc = json.loads((out / 'predictions.json').read_text())
    assert doc['annotations'] and {a['category_id'] for a in doc['annotations']} == {17}  # cat
    assert all(a['score'] >= 0.05 for a in doc['annotations'])
    x, y, w, h = doc['annotations'][0]['bbox']
    assert 0 <= x and 0 <= y and x + w <= 640.01 and y + h <= 427.01


def test_bad_inputs_give_one_error_line(tmp_path, checkpoint):
    assert_one_error_line(mrcnn_here('predict', tmp_path / 'nope.jpg', '--weights', checkpoint('r50')),
                          'no input images')
    (tmp_path / 'empty').mkdir()
    assert_one_error_line(mrcnn_here('predict', tmp_path / 'empty', '--weights', checkpoint('r50')),
                          'no input images')
    junk = tmp_path / 'junk.pth'
    junk.write_bytes(np.random.default_rng(0).bytes(1000))
    assert_one_error_line(mrcnn_here('predict', DEMO, '--weights', junk), 'not a valid')
    assert_one_error_line(mrcnn_here('predict', DEMO, '--model', 'mask-rcnn_x101-32x4d_fpn_1x_coco',
                                '--weights', checkpoint('r50')), 'wrong architecture')
    assert_one_error_line(mrcnn_here('predict', DEMO, '--model', 'no-such-model'), 'unknown model')
    assert_one_error_line(mrcnn_here('predict', DEMO), 'no model given')
    assert_one_error_line(mrcnn_here('predict', DEMO, '--weights', checkpoint('r50'), '--classes', 'unicorn', *FAST),
                          'unknown class')
    if not torch.cuda.is_available():
        assert_one_error_line(mrcnn_here('predict', DEMO, '--weights', checkpoint('r50'), '--fp16'), 'needs a CUDA GPU')
    assert not (tmp_path / 'runs').exists()


def test_bf16_runs_with_fp32_selection(torch_predictor, checkpoint):
    from mrcnn_cli import load
    p = load(weights=checkpoint('r50'), style='pytorch', device='cpu', precision='bf16', scale=FAST_SCALE)
    det = p(read_image(DEMO), score_thr=0)
    assert len(det) > 0 and det.boxes.dtype == np.float32 and det.scores.dtype == np.float32
    assert ((det.scores > 0.05) & (det.scores <= 1)).all() and (det.scores[:-1] >= det.scores[1:]).all()


@pytest.mark.slow
def test_caffe_training_checkpoint_needs_no_options(tmp_path, checkpoint):
    """A raw mmdetection 3.x training file of a caffe model, given with --weights alone, runs as
    the caffe model it is: mmdetection's detections for it (issue 15)."""
    from mrcnn_cli.io.checkpoint import load_checkpoint

    from checkpoint_files import mmengine_training, save_mmengine
    path = save_mmengine(mmengine_training(load_checkpoint(checkpoint('r50_caffe')), 'caffe'),
                         tmp_path / 'epoch_12.pth')
    out = tmp_path / 'out'
    image = COCO_IMAGES / '000000397133.jpg'
    proc = mrcnn_here('predict', image, '--weights', path, '--device', 'cpu', '--out', out, '--score-thr', '0.05',
                 '--no-vis')
    assert proc.returncode == 0, proc.stderr
    assert 'warning' not in proc.stderr and 'R-50 caffe' in proc.stderr
    ref = json.loads((SHARED / 'data' / 'reference' / 'r50_caffe_fpn__000000397133.json').read_text())
    anns = json.loads((out / 'predictions.json').read_text())['annotations']
    assert_matches_reference(from_reference(ref['detections']), from_annotations(anns, ref['height'], ref['width']))


@pytest.mark.slow
def test_an_onnx_file_implies_its_backend_and_a_file_of_the_wrong_kind_is_named(tmp_path, checkpoint, exported):
    graph = exported('r50')
    proc = mrcnn_here('predict', DEMO, '--onnx', graph, '--device', 'cpu', *FAST, '--no-vis', '--out', tmp_path / 'o')
    assert proc.returncode == 0, proc.stderr
    assert 'onnx backend on onnxruntime CPUExecutionProvider' in proc.stderr
    assert_one_error_line(mrcnn_here('predict', DEMO, '--weights', graph),
                          f'{graph} is an ONNX file, not a PyTorch checkpoint: pass it as --onnx {graph}')
    assert_one_error_line(mrcnn_here('predict', DEMO, '--onnx', checkpoint('r50')),
                          'is a PyTorch checkpoint, not an ONNX file: pass it as --weights')
    assert_one_error_line(mrcnn_here('predict', DEMO, '--weights', checkpoint('r50'), '--device', 'cpu', '--fp16'),
                          '--fp16 needs a CUDA GPU; on the CPU use --bf16')   # the CLI names its flags
    assert not (tmp_path / 'runs').exists()


def test_class_typos_are_caught_before_any_download(tmp_path):
    empty = tmp_path / 'weights'
    empty.mkdir()
    proc = mrcnn_here('predict', DEMO, '--model', 'mask-rcnn_r50_fpn_1x_coco', '--weights-dir', empty,
                      '--classes', 'person,bycicle')
    assert_one_error_line(proc, "unknown class 'bycicle'; did you mean 'bicycle'? (--classes)")
    assert list(empty.iterdir()) == [] and 'cannot download' not in proc.stderr


@pytest.mark.slow
def test_run_folders_never_mix_two_runs(tmp_path, checkpoint, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image = COCO_IMAGES / '000000397133.jpg'
    args = ('predict', image, '--weights', checkpoint('r50'), '--style', 'pytorch', '--device', 'cpu', *FAST)
    first = mrcnn_here(*args)
    assert first.returncode == 0 and 'runs/predict/predictions.json' in first.stdout, first.stderr
    second = mrcnn_here(*args, '--score-thr', '0.5')   # the default folder: a new one, as Ultralytics does
    assert second.returncode == 0 and 'runs/predict2/predictions.json' in second.stdout, second.stderr
    assert sorted(p.name for p in (tmp_path / 'runs').iterdir()) == ['predict', 'predict2']
    resumed = mrcnn_here(*args, '--score-thr', '0.5', '--resume')   # the default folder: where this run is
    assert resumed.returncode == 0 and 'runs/predict2/predictions.json' in resumed.stdout, resumed.stderr
    assert '(1 inputs done by the earlier run)' in resumed.stdout
    before = (tmp_path / 'runs' / 'predict' / 'predictions.json').read_bytes()
    named = mrcnn_here(*args, '--score-thr', '0.5', '--out', 'runs/predict')   # a folder the user names: refused
    assert_one_error_line(named, 'runs/predict holds the results of another run (predictions.json')
    assert '--resume' in named.stderr and '--exist-ok' in named.stderr
    assert (tmp_path / 'runs' / 'predict' / 'predictions.json').read_bytes() == before
    again = mrcnn_here(*args, '--out', 'runs/predict', '--resume')   # the same run, continued: nothing to redo
    assert again.returncode == 0 and '(1 inputs done by the earlier run)' in again.stdout, again.stderr
    replaced = mrcnn_here(*args, '--score-thr', '0.5', '--out', 'runs/predict', '--exist-ok')
    assert replaced.returncode == 0, replaced.stderr
    doc = json.loads((tmp_path / 'runs' / 'predict' / 'predictions.json').read_text())
    assert doc['annotations'] and min(a['score'] for a in doc['annotations']) >= 0.5
    # the parts of one sharded run share their folder
    for k in (0, 1):
        part = mrcnn_here(*args, DEMO, '--out', 'runs/sharded', '--shard', f'{k}/2')
        assert part.returncode == 0 and 'runs/sharded/predictions.shard' in part.stdout, part.stderr
    assert mrcnn_here('merge', 'runs/sharded').returncode == 0

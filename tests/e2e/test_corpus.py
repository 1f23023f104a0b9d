"""Bad, odd and hostile inputs, generated here: mrcnn never crashes, never half-writes, never runs
a checkpoint's code (issue 8)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import COCO_IMAGES, DEMO, SHARED
from helpers import FAST, assert_one_error_line, interruptible, mrcnn, mrcnn_here, mrcnn_with_peak_rss, no_partial_files


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    """Odd but valid images, and broken files, in one folder."""
    d = tmp_path_factory.mktemp('corpus')
    demo = cv2.imread(str(DEMO))
    small = cv2.resize(demo, (160, 107))
    cv2.imwrite(str(d / 'sixteen_bit.png'), small.astype(np.uint16) * 257)
    cv2.imwrite(str(d / 'grey.png'), cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(d / 'rgba.png'), cv2.cvtColor(small, cv2.COLOR_BGR2BGRA))
    Image.fromarray(small[:, :, ::-1]).convert('P', palette=Image.ADAPTIVE).save(d / 'palette.png')
    cv2.imwrite(str(d / 'one_pixel.png'), small[:1, :1])
    # EXIF orientation 6: stored 160 wide x 107 high, shown rotated 90 degrees (107 x 160)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(small[:, :, ::-1]).save(d / 'rotated.jpg', exif=exif.tobytes())
    good = DEMO.read_bytes()
    (d / 'zero.jpg').write_bytes(b'')
    (d / 'truncated.jpg').write_bytes(good[:200])
    (d / 'random.png').write_bytes(np.random.default_rng(0).bytes(5000))
    (d / 'text.jpg').write_text('this is not an image\n')
    return d


def test_odd_images_are_read_and_broken_ones_skipped(corpus, tmp_path, checkpoint):
    out = tmp_path / 'out'
    proc = mrcnn('predict', corpus, '--weights', checkpoint('r50'), '--device', 'cpu', '--out', out, *FAST)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith('warning:')
                and 'assuming pytorch style' not in line]   # the checkpoint has no training config
    assert sorted(w.split('/')[-1].split(':')[0] for w in warnings) == sorted(
        ['random.png', 'text.jpg', 'truncated.jpg', 'zero.jpg'])
    assert '4 inputs failed' in proc.stderr
    doc = json.loads((out / 'predictions.json').read_text())
    sizes = {os.path.basename(im['file_name']): (im['width'], im['height']) for im in doc['images']}
    assert sizes == {'grey.png': (160, 107), 'one_pixel.png': (1, 1), 'palette.png': (160, 107),
                     'rgba.png': (160, 107), 'sixteen_bit.png': (160, 107), 'rotated.jpg': (107, 160)}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ['predictions.json', 'predictions.jsonl'] + list(sizes))   # pictures keep their format: PNG in, PNG out
    assert cv2.imread(str(out / 'rotated.jpg')).shape[:2] == (160, 107)   # orientation honoured
    assert not no_partial_files(out)


def test_very_large_image_keeps_memory_bounded(tmp_path, checkpoint):
    big = tmp_path / 'big.jpg'
    img = cv2.resize(cv2.imread(str(DEMO)), (8000, 6000), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(big), img, [cv2.IMWRITE_JPEG_QUALITY, 70])
    del img
    proc, peak_mb = mrcnn_with_peak_rss('predict', big, '--weights', checkpoint('r50'), '--device', 'cpu', '--out',
                                        tmp_path / 'out', *FAST, '--score-thr', '0.05')
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / 'out' / 'predictions.json').read_text())
    assert (doc['images'][0]['width'], doc['images'][0]['height']) == (8000, 6000) and doc['annotations']
    # 100 full-size boolean masks alone would be 4.8 GB; windows keep the whole run small.
    assert peak_mb < 4000, f'peak RSS {peak_mb:.0f} MB'


def test_checkpoint_and_file_faults(tmp_path, checkpoint):
    data = checkpoint('r50').read_bytes()
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(data[:len(data) // 3])
    assert_one_error_line(mrcnn_here('predict', DEMO, '--weights', cut, '--out', tmp_path / 'o'), 'not a valid')
    onnx_bad = tmp_path / 'bad.onnx'
    onnx_bad.write_bytes(bytes(range(256)) * 20)
    assert_one_error_line(mrcnn_here('predict', DEMO, '--backend', 'onnx', '--onnx', onnx_bad, '--out', tmp_path / 'o'),
                          'cannot load the ONNX model')
    onnx_bad.write_bytes(data[:5000])   # the start of a checkpoint under an .onnx name: said what it is
    assert_one_error_line(mrcnn_here('predict', DEMO, '--onnx', onnx_bad, '--out', tmp_path / 'o'),
                          'is a PyTorch checkpoint, not an ONNX file: pass it as --weights')
    mp4 = tmp_path / 'cut.mp4'   # an mp4 whose index (moov atom, at the end) was cut off
    mp4.write_bytes((SHARED / 'data' / 'video' / 'mmdet_demo.mp4').read_bytes()[:150_000])
    proc = mrcnn_here('predict', mp4, '--weights', checkpoint('r50'), '--out', tmp_path / 'o', *FAST)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert f'error: cannot open {mp4} as a video' in proc.stderr
    assert json.loads((tmp_path / 'o' / 'predictions.json').read_text())['images'] == []
    ann = tmp_path / 'ann.json'
    ann.write_text('{"images": [{"id": 1}], "annotations": {"oops": 1}, "categories": []}')
    assert_one_error_line(mrcnn_here('eval', 'coco', '--ann', ann, '--results', ann), 'not a COCO annotation file')
    assert_one_error_line(mrcnn_here('predict', tmp_path / 'does-not-exist', '--weights', checkpoint('r50')),
                          'no input images or videos found')
    assert sorted(p.name for p in (tmp_path / 'o').iterdir()) == ['predictions.json', 'predictions.jsonl']


def test_outputs_never_feed_back_or_overwrite_inputs(tmp_path, checkpoint):
    src = tmp_path / 'photos'
    src.mkdir()
    (src / 'demo.jpg').write_bytes(DEMO.read_bytes())
    out = src / 'results'
    for again in ([], ['--exist-ok']):   # the second run must not take the first run's picture as an input
        proc = mrcnn_here('predict', src, '--weights', checkpoint('r50'), '--device', 'cpu', '--out', out, *FAST,
                          *again)
        assert proc.returncode == 0, proc.stderr
        doc = json.loads((out / 'predictions.json').read_text())
        assert [im['file_name'] for im in doc['images']] == [str(src / 'demo.jpg')]
    assert (src / 'demo.jpg').read_bytes() == DEMO.read_bytes()
    proc = mrcnn_here('predict', src / 'demo.jpg', '--weights', checkpoint('r50'), '--device', 'cpu', '--out', src,
                      *FAST)
    assert_one_error_line(proc, 'would overwrite the input')
    assert (src / 'demo.jpg').read_bytes() == DEMO.read_bytes()


# Ctrl-C lands in different places of the run (decoding, the network, writing): each run must end
# with 130 and no native thread left running at interpreter exit (which aborted: exit 134).
@pytest.mark.parametrize('sig,after', [(signal.SIGINT, 0), (signal.SIGINT, 2), (signal.SIGINT, 5),
                                       (signal.SIGTERM, 0)], ids=['SIGINT-1st', 'SIGINT-3rd', 'SIGINT-6th', 'SIGTERM'])
def test_signal_during_a_directory_run(tmp_path, checkpoint, sig, after):
    src = tmp_path / 'imgs'
    src.mkdir()
    for i in range(12):
        shutil.copy(COCO_IMAGES / '000000397133.jpg', src / f'img{i:02d}.jpg')  # copies: links are de-duplicated
    out = tmp_path / 'out'
    proc = subprocess.Popen([sys.executable, '-m', 'mrcnn_cli', 'predict', str(src), *FAST, '--weights',
                             str(checkpoint('r50')), '--device', 'cpu', '--out', str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)
    while proc.poll() is None and not (out / f'img{after:02d}.jpg').exists():   # that picture is written
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130 and 'Traceback' not in err, err
    doc = json.loads((out / 'predictions.json').read_text())
    done = [os.path.basename(im['file_name']) for im in doc['images']]
    assert after + 1 <= len(done) < 12 and done == [f'img{i:02d}.jpg' for i in range(len(done))]
    pictures = sorted(p.name for p in out.iterdir() if p.suffix == '.jpg')
    assert pictures == done and not no_partial_files(out)

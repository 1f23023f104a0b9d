"""`mrcnn predict` on real video clips from ../shared/data/video."""
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import pytest

from mrcnn_cli.commands.options import VideoOptions
from mrcnn_cli.commands.predict import PredictOptions, predict_sources
from mrcnn_cli.io.sources import collect_sources

from conftest import DEMO, SHARED
from helpers import FAST, FAST_SCALE, interruptible, mrcnn

CLIP = SHARED / 'data' / 'video' / 'mmaction2_demo.mp4'   # 280 frames, 340x256


def video_props(path):
    cap = cv2.VideoCapture(str(path))
    props = (int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
             int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), cap.get(cv2.CAP_PROP_FPS))
    n = 0
    while cap.read()[0]:
        n += 1
    return props, n


def test_video_output_stride_and_max_frames(tmp_path, checkpoint):
    out = tmp_path / 'out'
    proc = mrcnn('predict', CLIP, '--weights', checkpoint('r50'), '--device', 'cpu', '--out', out, *FAST,
                 '--max-frames', 9, '--vid-stride', 4)
    assert proc.returncode == 0, proc.stderr
    (declared, w, h, fps), decoded = video_props(out / 'mmaction2_demo.mp4')
    (_, w0, h0, fps0), _ = video_props(CLIP)
    assert (declared, decoded, w, h) == (9, 9, w0, h0) and fps == pytest.approx(fps0)
    doc = json.loads((out / 'predictions.json').read_text())
    assert [im['frame_index'] for im in doc['images']] == [0, 4, 8]
    assert [im['file_name'] for im in doc['images']] == [f'{CLIP}#{i}' for i in (0, 4, 8)]
    assert all(im['video'] == str(CLIP) and (im['width'], im['height']) == (w0, h0) for im in doc['images'])
    assert not [p for p in out.iterdir() if p.name.startswith('.')]
    summary = proc.stdout.strip().splitlines()[-1]   # every frame written is counted, and the model's share
    assert summary.startswith('9 video frames (3 through the model), ') and '1 picture/video in' in summary


def test_batch_4_equals_batch_1(tmp_path, checkpoint):
    import mrcnn_cli
    small = mrcnn_cli.load(weights=checkpoint('r50'), style='pytorch', device='cpu', scale=FAST_SCALE)
    docs = []
    for bs in (1, 4):
        opts = PredictOptions(out_dir=tmp_path / f'b{bs}', vis=False, score_thr=0.05, batch_size=bs,
                              video=VideoOptions(max_frames=4), progress=False)
        summary = predict_sources(small, collect_sources([str(CLIP)])[0], opts)
        assert summary.frames == 4
        docs.append(json.loads(summary.json_path.read_text()))
    assert docs[0]['annotations'] and docs[0] == docs[1]


def test_non_video_and_truncated_video(tmp_path, checkpoint):
    fake = tmp_path / 'notes.mp4'
    fake.write_text('not a video')
    # an AVI cut at 60 %: its frames up to the cut still decode
    clip = tmp_path / 'clip.avi'
    cap = cv2.VideoCapture(str(CLIP))
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*'MJPG'), 25, (340, 256))
    for _ in range(20):
        writer.write(cap.read()[1])
    writer.release()
    cut = tmp_path / 'cut.avi'
    data = clip.read_bytes()
    cut.write_bytes(data[:int(len(data) * 0.6)])
    out = tmp_path / 'out'
    proc = mrcnn('predict', fake, cut, DEMO, '--weights', checkpoint('r50'), '--device', 'cpu', '--out', out, *FAST,
                 '--vid-stride', 100, '--no-vis')
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert f'error: cannot open {fake} as a video' in proc.stderr
    assert f'warning: {cut} ended after' in proc.stderr and 'of 20 frames' in proc.stderr
    doc = json.loads((out / 'predictions.json').read_text())
    assert [im['file_name'] for im in doc['images']] == [f'{cut}#0', str(DEMO)]   # in order; the others ran


def test_interrupt_leaves_playable_video_and_complete_json(tmp_path, checkpoint):
    out = tmp_path / 'out'
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    proc = subprocess.Popen([sys.executable, '-m', 'mrcnn_cli', 'predict', str(CLIP), *FAST, '--weights',
                             str(checkpoint('r50')), '--device', 'cpu', '--out', str(out), '--vid-stride', '40'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=interruptible)
    part = out / '.mmaction2_demo.part.mp4'
    while proc.poll() is None and not (part.exists() and part.stat().st_size > 20000):
        time.sleep(0.2)   # wait until frames are being written
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130 and 'Traceback' not in err, err
    (declared, w, h, _), decoded = video_props(out / 'mmaction2_demo.mp4')
    assert 0 < decoded == declared < 280 and (w, h) == (340, 256)
    doc = json.loads((out / 'predictions.json').read_text())
    assert doc['images'] and [im['frame_index'] for im in doc['images']] == list(range(0, 40 * len(doc['images']), 40))
    assert sorted(p.name for p in out.iterdir()) == ['mmaction2_demo.mp4', 'predictions.json', 'predictions.jsonl']

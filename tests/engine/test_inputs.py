"""What `model(x)`, `model.predict(xs)` and `model.stream(src)` take (issue 26): every input kind
users have gives the same detections as the file it came from, or one MrcnnError saying what is
accepted."""
import http.server
import io
import threading
import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import mrcnn_cli
from mrcnn_cli import Detections, MrcnnError
from mrcnn_cli.io import fetch

from conftest import COCO_IMAGES, SHARED

STREET = COCO_IMAGES / '000000397133.jpg'
OTHER = COCO_IMAGES / '000000516916.jpg'
CLIP = SHARED / 'data' / 'video' / 'mmaction2_demo.mp4'
SMALL = (320, 192)   # input handling, not mmdetection's numbers: a small test-time scale


@pytest.fixture(scope='module')
def model(checkpoint):
    return mrcnn_cli.load(weights=checkpoint('r50'), style='pytorch', device='cpu', scale=SMALL)


@pytest.fixture(scope='module')
def reference(model):
    return model(str(STREET))


def same(a, b):
    return (isinstance(a, Detections) and isinstance(b, Detections) and len(a) == len(b) > 0
            and np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
            and np.array_equal(a.labels, b.labels) and np.array_equal(a.masks, b.masks))


class _Handler(http.server.BaseHTTPRequestHandler):
    body = STREET.read_bytes()
    release = threading.Event()

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path in ('/street.jpg', '/photo?id=1'):
            self._send(200, self.body)
        elif self.path == '/moved.jpg':
            self._redirect('/street.jpg')
        elif self.path == '/to-ftp.jpg':
            self._redirect('ftp://127.0.0.1/street.jpg')
        elif self.path == '/huge.jpg':
            self.send_response(200)
            self.send_header('Content-Length', str(10 ** 12))
            self.end_headers()
        elif self.path == '/stalls.jpg':
            self.send_response(200)
            self.send_header('Content-Length', str(len(self.body)))
            self.end_headers()
            self.release.wait(30)
        else:
            self._send(404, b'not here')

    def _send(self, code, body):
        self.send_response(code)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, where):
        self.send_response(302)
        self.send_header('Location', where)
        self.send_header('Content-Length', '0')
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope='module')
def server():
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}'
    _Handler.release.set()
    httpd.shutdown()


@pytest.mark.slow
def test_paths_urls_bytes_and_file_objects_give_the_file_detections(model, reference, server):
    assert same(model(STREET), reference)                         # pathlib.Path
    assert same(model(f'{server}/street.jpg'), reference)        # an image URL
    assert same(model(f'{server}/photo?id=1'), reference)        # any http(s) URL is one image to model()
    assert same(model(f'{server}/moved.jpg'), reference)         # an http redirect is followed
    assert same(model(STREET.read_bytes()), reference)            # encoded bytes
    assert same(model(bytearray(STREET.read_bytes())), reference)
    assert same(model(io.BytesIO(STREET.read_bytes())), reference)
    with open(STREET, 'rb') as f:
        assert same(model(f), reference)                          # an open binary file
    item, = model.stream(f'{server}/street.jpg')
    assert item.kind == 'url' and item.source == f'{server}/street.jpg' and same(item.detections, reference)


def test_urls_that_fail_are_one_error_naming_them(model, server):
    with pytest.raises(MrcnnError, match=r'cannot fetch .*/missing.jpg: HTTP 404'):
        model(f'{server}/missing.jpg')
    with pytest.raises(MrcnnError, match=r'redirects to a ftp: URL; only http and https'):
        model(f'{server}/to-ftp.jpg')
    with pytest.raises(MrcnnError, match='larger than 100 MiB'):
        model(f'{server}/huge.jpg')
    with pytest.raises(MrcnnError, match='not complete within 0.5 s'):
        fetch.fetch_url(f'{server}/stalls.jpg', timeout=0.5)
    with pytest.raises(MrcnnError, match='larger than 10240 bytes'):
        fetch.fetch_url(f'{server}/street.jpg', max_bytes=10 * 1024)
    with pytest.raises(MrcnnError, match='only http and https'):
        fetch.fetch_url(f'file://{STREET}')
    with pytest.warns(mrcnn_cli.MrcnnWarning, match='HTTP 404'):
        assert list(model.stream(f'{server}/missing.jpg')) == []


@pytest.mark.slow
def test_arrays_in_bgr_and_with_channels_rgb(model, reference):
    bgr = cv2.imread(str(STREET))
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    before = rgb.copy()
    assert same(model(bgr), reference)
    assert same(model(rgb, channels='rgb'), reference)
    assert same(model(bgr[:, :, ::-1], channels='rgb'), reference)   # a reversed view, not contiguous
    assert np.array_equal(rgb, before)                               # the caller's array is not changed
    taken_as_bgr = model(rgb)                                        # BGR is the documented default
    assert not same(taken_as_bgr, reference)
    bgra = np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)])
    assert same(model(bgra), reference)                              # alpha dropped, as cv2.imread does
    with pytest.raises(MrcnnError, match="channels must be 'bgr' or 'rgb'"):
        model(bgr, channels='bgra')
    with pytest.raises(MrcnnError, match='need a uint8 HxWx3 array'):
        model(bgr.astype(np.float32))


@pytest.mark.slow
def test_grey_images_are_read_as_opencv_reads_a_grey_file(model, tmp_path):
    grey = cv2.cvtColor(cv2.imread(str(STREET)), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / 'grey.png'), grey)
    from_file = model(tmp_path / 'grey.png')
    assert same(model(grey), from_file) and same(model(grey[:, :, None]), from_file)
    assert same(model(Image.open(tmp_path / 'grey.png')), from_file)          # PIL mode L
    assert same(model(torch.from_numpy(grey)[None]), from_file)               # a 1-channel tensor


def test_pil_images_of_any_mode(model, reference, tmp_path):
    pil = Image.open(STREET)
    assert pil.mode == 'RGB' and same(model(pil), reference)
    rgba = pil.convert('RGBA')
    assert same(model(rgba), reference)
    assert rgba.mode == 'RGBA'                                               # not converted in place


@pytest.mark.slow
def test_tensors_as_torchvision_reads_images(model, reference):
    rgb = torch.from_numpy(cv2.imread(str(STREET))[:, :, ::-1].copy()).permute(2, 0, 1)   # CHW uint8 RGB
    assert same(model(rgb), reference)
    as_float = rgb.float() / 255                                             # torchvision's float images
    assert same(model(as_float), reference)
    batch = model(torch.stack([rgb, rgb]))                                   # NCHW: one Detections each
    assert isinstance(batch, list) and len(batch) == 2 and all(same(d, reference) for d in batch)
    with pytest.raises(MrcnnError, match=r'values in \[0, 1\], not \[0, 255\]'):
        model(rgb.float())
    with pytest.raises(MrcnnError, match='need a CHW tensor'):
        model(rgb.permute(1, 2, 0))                                          # HWC: not what torchvision gives
    with pytest.raises(MrcnnError, match='need a uint8 or float image tensor'):
        model(rgb.int())


@pytest.mark.slow
def test_lists_folders_and_globs_give_one_detections_per_image(model, reference, tmp_path):
    other = model(OTHER)
    mixed = model([STREET, cv2.imread(str(OTHER)), STREET.read_bytes()])
    assert isinstance(mixed, list) and [len(d) for d in mixed] == [len(reference), len(other), len(reference)]
    assert same(mixed[0], reference) and same(mixed[1], other) and same(mixed[2], reference)
    assert model.predict([STREET, STREET], batch_size=2)[1].scores.tolist() == reference.scores.tolist()
    folder = tmp_path / 'photos'
    folder.mkdir()
    for path in (STREET, OTHER):
        (folder / path.name).symlink_to(path)
    by_folder = model.predict(folder)
    assert len(by_folder) == 2 and same(by_folder[0], reference) and same(by_folder[1], other)
    by_glob = model(str(folder / '*.jpg'))
    assert isinstance(by_glob, list) and same(by_glob[1], other)
    assert same(model.predict(STREET)[0], reference)                         # one path: a list of one
    with pytest.raises(MrcnnError, match=r'mmaction2_demo.mp4 is a video: .*use stream\(\)'):
        model.predict([STREET, CLIP])
    with pytest.raises(MrcnnError, match='no such file or directory: missing.jpg'):
        model.predict([STREET, 'missing.jpg'])


def test_anything_else_is_one_error_naming_its_type_and_what_is_accepted(model):
    for value, name in ((3.5, 'float'), ({'a': 1}, 'dict'), (object(), 'object')):
        with pytest.raises(MrcnnError, match=rf'cannot read a {name} as an image: inputs are paths .* PIL images'):
            model(value)
    with pytest.raises(MrcnnError, match='opened in text mode'):
        model(io.StringIO('text'))


@pytest.mark.slow
def test_per_call_score_threshold_and_classes(model, reference):
    names = sorted(set(reference.class_names))
    some = model(STREET, score_thr=float(reference.scores[3]), classes=[names[0], model.classes.index(names[1])])
    expected = reference.filter(score_thr=float(reference.scores[3]), classes=names[:2])
    assert len(some) > 0 and np.array_equal(some.boxes, expected.boxes)
    assert set(some.class_names) <= set(names[:2]) and (some.scores >= reference.scores[3]).all()
    one = model(STREET, classes=names[0])                                    # one string is one class
    assert set(one.class_names) == {names[0]}
    assert [len(d) for d in model.predict([STREET], classes=[names[0]])] == [len(one)]
    items = list(model.stream(CLIP, max_frames=2, classes='person', score_thr=0.2))
    assert all(set(i.detections.class_names) <= {'person'} and (i.detections.scores >= 0.2).all() for i in items)
    with pytest.raises(MrcnnError, match="unknown class 'preson'; did you mean 'person'?"):
        model(STREET, classes=['preson'])
    with pytest.raises(MrcnnError, match='class index 80 is out of range'):
        model(STREET, classes=80)
    with pytest.raises(MrcnnError, match='score_thr must be between 0 and 1'):
        model(STREET, score_thr=5)


@pytest.mark.slow
def test_load_tells_a_checkpoint_from_an_onnx_file_by_content(checkpoint, exported, tmp_path):
    ckpt, graph = tmp_path / 'weights', tmp_path / 'graph'      # names that say nothing
    ckpt.symlink_to(checkpoint('r50'))
    graph.symlink_to(exported('r50', 'pytorch'))
    assert mrcnn_cli.load(ckpt, style='pytorch', device='cpu').name == 'torch'
    assert mrcnn_cli.load(str(graph), device='cpu').name == 'onnx'
    with pytest.raises(MrcnnError, match=r"is an ONNX file, not a PyTorch checkpoint: pass it as onnx=.*graph"):
        mrcnn_cli.load(weights=graph)
    with pytest.raises(MrcnnError, match=r'is a PyTorch checkpoint, not an ONNX file: pass it as weights='):
        mrcnn_cli.load(onnx=ckpt)
    with pytest.raises(MrcnnError, match='model file not found: .*nothing.pth'):
        mrcnn_cli.load(str(tmp_path / 'nothing.pth'))
    (tmp_path / 'notes.txt').write_text('hello')
    with pytest.raises(MrcnnError, match='neither a PyTorch checkpoint nor an ONNX file'):
        mrcnn_cli.load(tmp_path / 'notes.txt')


def test_the_library_speaks_python_and_points_warnings_at_the_callers_line(checkpoint):
    with pytest.raises(MrcnnError, match=r"precision='fp16' needs a CUDA GPU; on the CPU use precision='bf16'"):
        mrcnn_cli.load(weights=checkpoint('r50'), style='pytorch', device='cpu', precision='fp16')
    with pytest.raises(MrcnnError, match=r"backend='onnx' needs onnx=FILE"):
        mrcnn_cli.load(weights=checkpoint('r50'), backend='onnx')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        model = mrcnn_cli.load(weights=checkpoint('r50'), device='cpu', scale=SMALL)   # no style: warned
        list(model.stream([STREET, 'missing.jpg']))
    messages = [(str(w.message), w.filename) for w in caught if issubclass(w.category, mrcnn_cli.MrcnnWarning)]
    assert len(messages) == 2 and all(filename == __file__ for _, filename in messages), messages
    assert "pass style='caffe' for a caffe-style checkpoint" in messages[0][0]
    assert repr(model) == f'<TorchBackend: {model.describe()}>' and 'R-50 pytorch' in repr(model)

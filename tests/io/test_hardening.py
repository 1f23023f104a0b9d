"""Inputs nobody thought of: decompression-bomb headers, --max-pixels, header sizes read without
decoding, and the numbers in annotation and results files validated before pycocotools."""
import json
import shutil
import struct
import zlib

import cv2
import numpy as np
import pytest

from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.io.image_header import declared_size
from mrcnn_cli.io.images import read_image

from conftest import COCO_IMAGES, SHARED
from helpers import FAST, assert_one_error_line, mrcnn_here, no_partial_files

GOOD = COCO_IMAGES / '000000011813.jpg'
TINY8 = SHARED / 'data' / 'coco_mini_val2017' / 'annotations' / 'instances_val2017_tiny8.json'


def png_declaring(width, height):
    """A PNG whose header claims width x height, with almost no pixel data (a decompression bomb,
    or what a corrupted header looks like)."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(b'\0' * 1000)) + chunk(b'IEND', b''))


def predict_args(checkpoint, out, *more):
    return ('predict', '--weights', checkpoint('r50'), '--style', 'pytorch', '--device', 'cpu', '--out', out,
            *FAST, '--no-vis', *more)


def test_a_bomb_header_and_broken_files_are_skipped_one_line_each_and_the_good_image_is_done(checkpoint, tmp_path):
    folder = tmp_path / 'photos'
    folder.mkdir()
    shutil.copy(GOOD, folder / 'good.jpg')
    (folder / 'bomb.png').write_bytes(png_declaring(60000, 60000))
    (folder / 'cut.jpg').write_bytes(GOOD.read_bytes()[:2000])
    (folder / 'empty.png').write_bytes(b'')
    (folder / 'text.webp').write_bytes(b'not an image at all')
    out = tmp_path / 'out'
    proc = mrcnn_here(*predict_args(checkpoint, out), folder)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    warnings = [line for line in proc.stderr.replace('\r', '\n').splitlines() if line.startswith('warning:')]
    broken = ('bomb.png', 'cut.jpg', 'empty.png', 'text.webp')
    assert len(warnings) == len(broken), proc.stderr
    for name in broken:
        assert sum(name in w for w in warnings) == 1
    assert '60000x60000 is 3600.0 megapixels, more than the limit of 200 (--max-pixels)' in proc.stderr
    assert 'error: error' not in proc.stderr and 'OpenCV(' not in proc.stderr
    doc = json.loads((out / 'predictions.json').read_text())
    assert [im['file_name'] for im in doc['images']] == [str(folder / 'good.jpg')] and doc['annotations']
    assert not no_partial_files(out)


def test_max_pixels_skips_larger_images_before_decoding(checkpoint, tmp_path, monkeypatch):
    h, w = cv2.imread(str(GOOD)).shape[:2]
    decoded = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, 'imdecode', lambda *a: decoded.append(1) or real(*a))
    with pytest.raises(MrcnnError, match=f'{w}x{h} is .* megapixels, more than the limit of 0.1 '):
        read_image(GOOD, max_pixels=100_000)
    assert not decoded                      # refused from the header, nothing decoded
    assert read_image(GOOD, max_pixels=w * h).shape == (h, w, 3)
    proc = mrcnn_here(*predict_args(checkpoint, tmp_path / 'out', '--max-pixels', '100000'), GOOD)
    assert proc.returncode == 1 and 'more than the limit of 0.1 (--max-pixels)' in proc.stderr


def test_a_format_without_a_parsed_header_is_limited_after_decoding(tmp_path):
    path = tmp_path / 'x.ppm'
    cv2.imwrite(str(path), np.zeros((40, 50, 3), np.uint8))
    assert declared_size(path) is None
    with pytest.raises(MrcnnError, match='50x40 is 0.0 megapixels, more than the limit'):
        read_image(path, max_pixels=1000)


def test_videos_larger_than_max_pixels_are_refused_in_one_line(checkpoint, tmp_path):
    clip = SHARED / 'data' / 'video' / 'mmaction2_demo.mp4'    # 340x256
    proc = mrcnn_here(*predict_args(checkpoint, tmp_path / 'out', '--max-pixels', '50000'), clip)
    assert proc.returncode == 1
    assert '340x256 frames are 0.1 megapixels, more than the limit of 0.05 (--max-pixels)' in proc.stderr


@pytest.mark.parametrize('ext, params', [
    ('.png', []), ('.jpg', []), ('.jpg', [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    ('.webp', [cv2.IMWRITE_WEBP_QUALITY, 60]), ('.webp', [cv2.IMWRITE_WEBP_QUALITY, 101]),
    ('.bmp', []), ('.tif', []), ('.tiff', [cv2.IMWRITE_TIFF_COMPRESSION, 1]),
])
def test_declared_size_is_what_opencv_decodes(ext, params, tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    path = tmp_path / f'x{ext}'
    assert cv2.imwrite(str(path), img, params)
    h, w = cv2.imread(str(path), cv2.IMREAD_COLOR).shape[:2]
    assert declared_size(path) == (w, h)


def test_declared_size_of_real_photos_and_a_jpeg_with_a_large_exif_block(tmp_path):
    for path in sorted(COCO_IMAGES.glob('*.jpg'))[:20]:
        h, w = cv2.imread(str(path)).shape[:2]
        assert declared_size(path) == (w, h)
    data = GOOD.read_bytes()   # an APP1 segment of 60 kB before the frame header
    app1 = b'\xff\xe1' + struct.pack('>H', 2 + 60000) + b'Exif\0\0' + bytes(60000 - 6)
    (tmp_path / 'exif.jpg').write_bytes(data[:2] + app1 + data[2:])
    h, w = cv2.imread(str(GOOD)).shape[:2]
    assert declared_size(tmp_path / 'exif.jpg') == (w, h)


def write(path, obj):
    path.write_text(json.dumps(obj))   # json writes NaN and Infinity as Python reads them back
    return path


@pytest.fixture(scope='module')
def gt():
    return json.loads(TINY8.read_text())


def result_entries(gt):
    return [{'image_id': a['image_id'], 'category_id': a['category_id'], 'bbox': a['bbox'], 'score': 0.9}
            for a in gt['annotations'][:6]]


@pytest.mark.parametrize('field, values, message', [
    ('score', [float('nan'), float('inf')], "2 results entries are not valid; the first, entry 0 (image_id {}): "
                                            "score nan is NaN, infinite, negative or not a number (and 1 more)"),
    ('score', [-0.5], 'score -0.5 is NaN, infinite, negative'),
    ('bbox', [[10, 10, -5, 20]], 'has a negative width or height'),
    ('bbox', [[10, 10, float('inf'), 20]], 'is not four finite numbers'),
    ('image_id', ['7'], "image_id '7' is not an integer"),
])
def test_bad_numbers_in_a_results_file_are_one_error_naming_the_first_and_the_count(gt, tmp_path, field, values,
                                                                                      message):
    entries = result_entries(gt)
    for e, v in zip(entries, values):
        e[field] = v
    res = write(tmp_path / 'res.json', entries)
    proc = mrcnn_here('eval', 'coco', '--ann', TINY8, '--results', res, '--out', tmp_path / 'out')
    assert_one_error_line(proc, message.format(entries[0]['image_id']))
    assert f'{res}: ' in proc.stderr and not (tmp_path / 'out' / 'metrics.json').exists()


@pytest.mark.parametrize('edit, message', [
    (lambda d: d['images'][1].update(width=-640), "images[1] (id {1}): width -640 is not a positive integer"),
    (lambda d: d['images'][0].pop('height'), 'images[0] (id {0}): no height'),
    (lambda d: d['annotations'][3].update(area=float('nan')), 'area nan is not a finite number >= 0'),
    (lambda d: d['annotations'][2].update(category_id=999), 'category_id 999 is not a category'),
    (lambda d: d['annotations'][0].update(segmentation={'size': [1], 'counts': 'x'}), 'RLE size [1] is not'),
])
def test_bad_annotation_files_are_one_error_naming_the_first_entry(gt, tmp_path, edit, message):
    data = json.loads(json.dumps(gt))
    edit(data)
    ann = write(tmp_path / 'ann.json', data)
    res = write(tmp_path / 'res.json', result_entries(gt))
    proc = mrcnn_here('eval', 'coco', '--ann', ann, '--results', res, '--out', tmp_path / 'out')
    ids = [im['id'] for im in gt['images']]
    assert_one_error_line(proc, message.replace('{0}', str(ids[0])).replace('{1}', str(ids[1])))


def test_a_stream_that_changes_resolution_keeps_one_playable_video(tmp_path):
    from mrcnn_cli.io.video import VideoSink
    sink = VideoSink(tmp_path / 'a.mp4', 10, (64, 48))
    for k in range(4):
        sink.write(np.full((48, 64, 3) if k < 2 else (120, 90, 3), 60 * k, np.uint8))
    sink.close()
    cap = cv2.VideoCapture(str(tmp_path / 'a.mp4'))
    shapes = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        shapes.append(img.shape)
    assert shapes == [(48, 64, 3)] * 4 and [p.name for p in tmp_path.iterdir()] == ['a.mp4']

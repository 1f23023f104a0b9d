"""The files `mrcnn predict` writes besides predictions.json, each checked against the detections it
comes from (the RLE masks of predictions.json, decoded by pycocotools): mask PNGs, YOLO labels,
crops, COCO polygons, browser-playable video, drawing options, and failures to write."""
import contextlib
import io
import json
import os
import resource
import subprocess
import sys

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest

from conftest import COCO_IMAGES, SHARED
from helpers import FAST, assert_one_error_line, mrcnn_here, no_partial_files

CLIP = SHARED / 'data' / 'video' / 'mmaction2_demo.mp4'   # 340x256
JPEG = COCO_IMAGES / '000000034417.jpg'
PNG_FROM = COCO_IMAGES / '000000092660.jpg'
SAVE_ALL = ('--save-masks', '--save-txt', '--save-conf', '--save-crop')


@pytest.fixture(scope='module')
def run(checkpoint, tmp_path_factory):
    """One predict run over a JPEG, a PNG (a real COCO picture stored losslessly) and two frames
    of a real clip, with every output file asked for."""
    root = tmp_path_factory.mktemp('outputs')
    png = root / 'in' / 'photo.png'
    png.parent.mkdir()
    cv2.imwrite(str(png), cv2.imread(str(PNG_FROM)))
    out = root / 'out'
    proc = mrcnn_here('predict', JPEG, png, CLIP, '--weights', checkpoint('r50'), '--style', 'pytorch',
                      '--device', 'cpu', '--out', out, *FAST, '--max-frames', 2, '--score-thr', 0.3, *SAVE_ALL)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / 'predictions.json').read_text())
    return {'out': out, 'doc': doc, 'png': png, 'weights': checkpoint('r50')}


def per_image(doc):
    """[(image entry, its annotations in file order, their decoded RLE masks)]."""
    out = []
    for im in doc['images']:
        anns = [a for a in doc['annotations'] if a['image_id'] == im['id']]
        masks = [mask_utils.decode(a['segmentation']).astype(bool) for a in anns]
        out.append((im, anns, masks))
    return out


def stem_of(im):
    name = os.path.basename(im['file_name'])
    if 'frame_index' in im:
        return f'{os.path.splitext(os.path.basename(im["video"]))[0]}/{im["frame_index"]:06d}'
    return os.path.splitext(name)[0]


def read_png(path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, f'{path} missing or unreadable'
    return img


def test_images_and_frames_each_have_detections(run):
    entries = per_image(run['doc'])
    assert len(entries) == 4 and all(anns for _, anns, _ in entries)   # 2 pictures, 2 frames


def test_instance_and_class_maps_equal_the_rle_masks(run):
    classes = {c['id'] for c in run['doc']['categories']}
    for im, anns, masks in per_image(run['doc']):
        inst = read_png(run['out'] / 'masks' / f'{stem_of(im)}.png')
        cls = read_png(run['out'] / 'masks' / f'{stem_of(im)}_class.png')
        assert inst.dtype == np.uint16 and cls.dtype == np.uint8
        assert inst.shape == cls.shape == (im['height'], im['width'])
        coverage = np.sum(masks, axis=0)
        assert (inst > 0).sum() == (coverage > 0).sum()   # the union of the masks, nothing else
        assert inst.max() <= len(anns)
        for k, (ann, m) in enumerate(zip(anns, masks), 1):
            assert np.array_equal(inst[m & (coverage == 1)], np.full((m & (coverage == 1)).sum(), k))
            # where masks overlap the higher score wins: k's pixels are its mask minus those of
            # higher-scored detections
            higher = np.any([masks[j] for j in range(len(anns)) if anns[j]['score'] > ann['score']], axis=0) \
                if any(a['score'] > ann['score'] for a in anns) else np.zeros_like(m)
            assert (inst == k).sum() == (m & ~higher).sum()
            assert np.all(cls[inst == k] == ann['category_id']) and ann['category_id'] in classes
        assert np.all(cls[inst == 0] == 0)


def test_per_instance_pngs_decode_to_the_rle_masks(run):
    names = {c['id']: c['name'] for c in run['doc']['categories']}
    for im, anns, masks in per_image(run['doc']):
        folder = run['out'] / 'masks' / stem_of(im)
        files = sorted(folder.iterdir())    # numbered so that they sort by name
        assert len(files) == len(anns)
        for k, (path, ann, m) in enumerate(zip(files, anns, masks), 1):
            assert path.name == f'{k:03d}_{names[ann["category_id"]].replace(" ", "_")}.png'
            img = read_png(path)
            assert img.dtype == np.uint8 and set(np.unique(img)) <= {0, 255}
            assert np.array_equal(img == 255, m)


def test_the_colour_preview_shows_each_instance_in_its_own_colour(run):
    from mrcnn_cli.visualize import distinct_colors
    for im, _, _ in per_image(run['doc']):
        inst = read_png(run['out'] / 'masks' / f'{stem_of(im)}.png')
        preview = read_png(run['out'] / 'masks' / f'{stem_of(im)}_color.png')
        assert preview.shape == (*inst.shape, 3) and preview.dtype == np.uint8
        assert (preview[inst == 0] == 0).all()
        for k in np.unique(inst[inst > 0]):
            assert (preview[inst == k] == distinct_colors()[k - 1][::-1]).all()


def rasterise(points, width, height):
    canvas = np.zeros((height, width), np.uint8)
    pts = np.round(np.asarray(points).reshape(-1, 2) * (width, height)).astype(np.int32)
    cv2.fillPoly(canvas, [pts], 1)
    return canvas.astype(bool)


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_yolo_labels_rasterise_to_the_masks(run):
    classes = (run['out'] / 'labels' / 'classes.txt').read_text().splitlines()
    assert len(classes) == 80 and classes[0] == 'person' and classes[9] == 'traffic light'
    index = {c['id']: classes.index(c['name']) for c in run['doc']['categories']}
    checked = 0
    for im, anns, masks in per_image(run['doc']):
        lines = (run['out'] / 'labels' / f'{stem_of(im)}.txt').read_text().splitlines()
        assert len(lines) == sum(m.any() for m in masks)   # every instance with a mask
        unmatched = list(range(len(anns)))
        for line in lines:
            values = line.split()
            cls, coords, score = int(values[0]), [float(v) for v in values[1:-1]], float(values[-1])
            assert len(coords) % 2 == 0 and len(coords) >= 6 and all(0 <= v <= 1 for v in coords)
            # lines come in detection order; the score (--save-conf) says which detection
            j = next(j for j in unmatched if abs(anns[j]['score'] - score) < 1e-5)
            unmatched = unmatched[unmatched.index(j) + 1:]
            assert cls == index[anns[j]['category_id']]
            x, y, w, h = anns[j]['bbox']
            if w >= 32 and h >= 32:
                assert iou(rasterise(coords, im['width'], im['height']), masks[j]) >= 0.8
                checked += 1
    assert checked >= 10


def test_crops_are_the_box_region_with_the_mask_as_alpha(run):
    names = {c['id']: c['name'].replace(' ', '_') for c in run['doc']['categories']}
    for im, anns, masks in per_image(run['doc']):
        if 'frame_index' in im:
            image = None   # frames are checked for size and alpha only
        else:
            image = cv2.imread(str(JPEG if im['file_name'] == str(JPEG) else run['png']))
        stem = stem_of(im).replace('/', '_')
        for k, (ann, m) in enumerate(zip(anns, masks), 1):
            crop = read_png(run['out'] / 'crops' / names[ann['category_id']] / f'{stem}_{k:03d}.png')
            x, y, w, h = ann['bbox']
            x0, y0 = max(int(np.floor(x)), 0), max(int(np.floor(y)), 0)
            x1, y1 = min(int(np.ceil(x + w)), im['width']), min(int(np.ceil(y + h)), im['height'])
            assert crop.shape == (y1 - y0, x1 - x0, 4)
            assert np.array_equal(crop[..., 3] == 255, m[y0:y1, x0:x1]) and set(np.unique(crop[..., 3])) <= {0, 255}
            if image is not None:
                assert np.array_equal(crop[..., :3], image[y0:y1, x0:x1])


def test_pictures_keep_a_lossless_format_and_video_is_h264(run):
    import av
    out = run['out']
    assert (out / '000000034417.jpg').exists() and (out / 'photo.png').exists()
    assert not (out / 'photo.jpg').exists()
    with av.open(str(out / 'mmaction2_demo.mp4')) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == 'h264' and stream.codec_context.pix_fmt == 'yuv420p'
        assert (stream.width, stream.height) == (340, 256)
        fps = float(stream.guessed_rate)
        decoded = sum(1 for _ in container.decode(video=0))
    with av.open(str(CLIP)) as source:
        rate = float(source.streams.video[0].guessed_rate)
    assert decoded == 2 and fps == pytest.approx(rate, rel=1e-3)
    assert not no_partial_files(out)


def test_polygon_results_load_in_pycocotools(run, tmp_path):
    out = tmp_path / 'poly'
    proc = mrcnn_here('predict', JPEG, run['png'], '--weights', run['weights'], '--style', 'pytorch',
                      '--device', 'cpu', '--out', out, *FAST, '--score-thr', 0.05, '--mask-format', 'polygon',
                      '--no-vis')
    assert proc.returncode == 0, proc.stderr
    from pycocotools.coco import COCO
    doc = json.loads((out / 'predictions.json').read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(out / 'predictions.json'))
    rle = {im['file_name']: (im, anns, masks) for im, anns, masks in per_image(run['doc'])}
    checked = without_holes = 0
    for im in doc['images']:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[im['id']]))
        assert all(isinstance(a['segmentation'], list) and all(len(p) >= 6 and len(p) % 2 == 0
                                                                for p in a['segmentation']) for a in anns)
        # the detections above 0.3 are those of the RLE run, in the same order
        kept = [a for a in anns if a['score'] >= 0.3]
        _, rle_anns, rle_masks = rle[im['file_name']]
        assert [a['score'] for a in kept] == pytest.approx([a['score'] for a in rle_anns], abs=1e-6)
        for a, m in zip(kept, rle_masks):
            poly = coco.annToMask(a).astype(bool)
            assert a['area'] == m.sum()
            # pixel-exact but for holes, which polygons cannot express
            filled = fill_holes(m)
            assert np.array_equal(poly, filled)
            checked += 1
            without_holes += np.array_equal(filled, m)
    assert checked >= 20 and without_holes >= 1


def fill_holes(mask):
    """The mask with its holes filled: everything not reachable from the border's background."""
    padded = np.pad(mask, 1).astype(np.uint8)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 2)
    return (flood != 2)[1:-1, 1:-1]


def test_drawing_options(run, tmp_path):
    out = tmp_path / 'plain'
    base = ('--weights', run['weights'], '--style', 'pytorch', '--device', 'cpu', *FAST, '--score-thr', 0.3)
    proc = mrcnn_here('predict', run['png'], '--out', out, *base, '--hide-boxes', '--hide-masks', '--hide-labels')
    # (--hide-labels hides the whole label, score included, as in Ultralytics)
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(read_png(out / 'photo.png'), read_png(run['png']))   # nothing drawn, lossless
    # masks only, opaque, no outlines over them: each instance's own pixels have its class's colour
    from mrcnn_cli.visualize import class_color
    out = tmp_path / 'masks'
    proc = mrcnn_here('predict', run['png'], '--out', out, *base, '--hide-boxes', '--hide-labels',
                      '--mask-alpha', 1, '--line-width', 1)
    assert proc.returncode == 0, proc.stderr
    drawn = read_png(out / 'photo.png')
    (im, anns, masks), = [e for e in per_image(run['doc']) if e[0]['file_name'] == str(run['png'])]
    inst = read_png(run['out'] / 'masks' / 'photo.png')
    names = [c['name'] for c in run['doc']['categories']]
    classes = {c['id']: names.index(c['name']) for c in run['doc']['categories']}
    for k, ann in enumerate(anns, 1):
        inner = cv2.erode((inst == k).astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        if inner.sum() > 50:
            colours = drawn[inner]
            # the class's colour, whatever the detection's rank: stable across frames and runs
            assert (colours == class_color(classes[ann['category_id']])).all(axis=1).mean() > 0.9


def test_credentials_never_written(run, tmp_path):
    out = tmp_path / 'out'
    url = 'rtsp://admin:s3cr3tpass@127.0.0.1:9/live'
    proc = mrcnn_here('predict', url, JPEG, '--weights', run['weights'], '--style', 'pytorch', '--device', 'cpu',
                      '--out', out, *FAST, '--save-masks', '--save-txt')
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert 'rtsp://admin:***@127.0.0.1:9/live' in proc.stderr
    texts = [proc.stdout, proc.stderr] + [str(p) for p in out.rglob('*')]
    texts += [p.read_text() for p in out.rglob('*') if p.suffix in ('.json', '.txt')]
    assert not [t for t in texts if 's3cr3tpass' in t]


def test_unwritable_output_folder(run, tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    proc = mrcnn_here('predict', JPEG, '--weights', run['weights'], '--device', 'cpu', '--out', blocker / 'out',
                      *FAST)
    assert_one_error_line(proc, f'cannot write to {blocker / "out"}')


def test_disk_full_is_one_error_line_and_no_half_written_file(run, tmp_path):
    """A file-size limit (what a full disk looks like to a writer: EFBIG like ENOSPC) stops the
    first large PNG; the run ends with one error line naming it and nothing half-written."""
    out = tmp_path / 'out'
    limit = 60_000   # predictions.json and small masks fit, a drawn 640x427 PNG does not

    def cap_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, '-m', 'mrcnn_cli', 'predict', str(run['png']), '--weights',
                           str(run['weights']), '--style', 'pytorch', '--device', 'cpu', '--out', str(out), *FAST,
                           '--save-masks'], capture_output=True, text=True, preexec_fn=cap_file_size, timeout=300)
    assert_one_error_line(proc, f'cannot write {out / "photo.png"}')
    assert not no_partial_files(out)
    assert all(p.stat().st_size < limit for p in out.rglob('*') if p.is_file())
    for p in out.rglob('*.png'):
        assert read_png(p) is not None   # every PNG left is complete

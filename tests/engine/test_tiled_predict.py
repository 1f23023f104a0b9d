"""Sliced inference through the real model on real photos: a mosaic of COCO pictures cut along
their own borders gives exactly each picture's detections, shifted; a TIFF read region by region
gives what the same pixels in memory give; a tile no smaller than the image is a plain pass."""
import cv2
import numpy as np
import pytest
import tifffile

from mrcnn_cli import TileOptions

from conftest import COCO_IMAGES

pytestmark = pytest.mark.slow
PHOTOS = ['000000018575.jpg', '000000073326.jpg', '000000106235.jpg', '000000117645.jpg']   # all 640 x 480
ALL = 0   # score_thr: every detection the model keeps (the synthetic checkpoint's scores are low)


@pytest.fixture(scope='module')
def model(torch_predictor):
    return torch_predictor('r50', 'pytorch')


@pytest.fixture(scope='module')
def mosaic():
    photos = [cv2.imread(str(COCO_IMAGES / name)) for name in PHOTOS]
    return photos, np.vstack([np.hstack(photos[:2]), np.hstack(photos[2:])])


def by_score(det):
    order = np.lexsort((det.boxes[:, 1], det.boxes[:, 0], -det.scores))
    return det[order]


def test_a_mosaic_cut_along_its_photos_gives_each_photos_own_detections(model, mosaic):
    photos, image = mosaic
    tiled = model(image, tile=TileOptions((640, 480), overlap=0.0), batch_size=2, score_thr=ALL)
    assert (tiled.height, tiled.width) == (960, 1280)
    assert_each_photos_own(tiled, [model(photo, score_thr=ALL) for photo in photos],
                           [(0, 0), (640, 0), (0, 480), (640, 480)])


def test_onnx_runtime_slices_the_same_way(exported, mosaic):
    from mrcnn_cli import load
    onnx = load(exported('r50'), device='cpu')
    photos, image = mosaic
    # the first two, side by side
    tiled = onnx(image[:480], tile=TileOptions((640, 480), overlap=0.0), score_thr=ALL)
    assert_each_photos_own(tiled, [onnx(photo, score_thr=ALL) for photo in photos[:2]], [(0, 0), (640, 0)])


def assert_each_photos_own(tiled, own, offsets):
    """Each photo's detections are found, shifted, with their masks, among the mosaic's, and
    nothing else is."""
    assert len(tiled) == sum(len(d) for d in own) > 20
    got = by_score(tiled)
    for det, (x, y) in zip(own, offsets):
        inside = (got.boxes[:, 0] >= x) & (got.boxes[:, 2] <= x + 640) & (got.boxes[:, 1] >= y) & \
                 (got.boxes[:, 3] <= y + 480)
        part = by_score(got[inside])
        det = by_score(det)
        assert len(part) == len(det)   # some photos have none: the total above has more than 20
        np.testing.assert_array_equal(part.boxes, det.boxes + np.array([x, y, x, y], np.float32))
        np.testing.assert_array_equal(part.scores, det.scores)
        np.testing.assert_array_equal(part.labels, det.labels)
        for i in range(len(det)):
            np.testing.assert_array_equal(part.mask(i)[y:y + 480, x:x + 640], det.mask(i))


def test_a_tile_no_smaller_than_the_image_is_a_plain_pass(model, mosaic):
    photo = mosaic[0][0]
    plain, tiled = model(photo, score_thr=ALL), model(photo, tile=800, score_thr=ALL)
    assert len(plain) > 0
    np.testing.assert_array_equal(tiled.boxes, plain.boxes)
    np.testing.assert_array_equal(tiled.scores, plain.scores)
    np.testing.assert_array_equal(tiled.masks, plain.masks)


def test_a_tiff_read_by_regions_gives_what_the_same_pixels_in_memory_give(model, mosaic, tmp_path):
    image = mosaic[1][:700, :1100]
    path = tmp_path / 'scene.tif'
    tifffile.imwrite(path, image[..., ::-1], tile=(128, 128), bigtiff=True, compression='zlib', photometric='rgb')
    tiles = TileOptions(512, overlap=0.25)
    from_file = model(path, tile=tiles, batch_size=2, score_thr=ALL)
    in_memory = model(image, tile=tiles, score_thr=ALL)
    assert len(from_file) == len(in_memory) > 0
    np.testing.assert_array_equal(from_file.boxes, in_memory.boxes)
    np.testing.assert_array_equal(from_file.scores, in_memory.scores)
    assert all(np.array_equal(from_file.mask(i), in_memory.mask(i)) for i in range(len(from_file)))


def test_a_sliced_tiff_streams_as_one_item_with_a_preview_and_its_whole_image_pass(model, mosaic, tmp_path):
    path = tmp_path / 'scene.tif'
    tifffile.imwrite(path, mosaic[1][..., ::-1], tile=(256, 256), photometric='rgb')
    items = list(model.stream(path, tile=TileOptions(640, full=True), score_thr=0.3))
    assert len(items) == 1
    item = items[0]
    assert item.image is None and item.scene.tiles == 6 and item.scene.full_pass   # 3 x 2 at 0.2 overlap
    assert item.scene.preview.shape == (960, 1280, 3)           # under 4096 a side: the image itself
    np.testing.assert_array_equal(item.scene.preview, mosaic[1])
    det = item.detections
    assert len(det) and det.scores.min() >= 0.3 and (det.height, det.width) == (960, 1280)
    assert (det.boxes[:, 2] <= 1280).all() and (det.boxes[:, 3] <= 960).all()


def test_the_whole_image_pass_of_a_scene_read_by_regions_lands_on_the_full_image(model, tmp_path):
    photo = cv2.imread(str(COCO_IMAGES / PHOTOS[0]))
    path = tmp_path / 'big.tif'
    big = cv2.resize(photo, (5120, 3840), interpolation=cv2.INTER_NEAREST)    # preview: 4096 a side
    tifffile.imwrite(path, big[..., ::-1], tile=(512, 512), photometric='rgb')
    from mrcnn_cli.engine.frames import Frame
    from mrcnn_cli.engine.sliced import prepare_frame, scene_items
    from mrcnn_cli.io.sources import IMAGE, Source
    items = list(scene_items(0, Source(IMAGE, path, 'big.tif'), 10**8, TileOptions(4096, full=True), model.scale))
    full = next(f for f in items if isinstance(f, Frame) and f.tile is not None and f.tile.full_pass)
    det = model.predict_prepared([prepare_frame(model, full)])[0]
    assert full.image.shape == (800, 1067, 3)     # the preview shrunk to the model's input size
    assert (det.height, det.width) == (3840, 5120) and len(det) > 0
    # pasted at full resolution: each mask lies in its box (mmdetection's one-pixel paste margin)
    for i, win in enumerate(det.mask_windows()):
        ys, xs = np.nonzero(win.mask)
        if len(xs):
            x1, y1, x2, y2 = det.boxes[i]
            assert x1 - 1 <= win.x0 + xs.min() and win.x0 + xs.max() < x2 + 1
            assert y1 - 1 <= win.y0 + ys.min() and win.y0 + ys.max() < y2 + 1
    # the network saw the shrunk copy as a photo of that size: the same detections, scaled up
    small = model(full.image, score_thr=ALL)
    assert len(small) == len(det)
    np.testing.assert_array_equal(det.scores, small.scores)
    np.testing.assert_allclose(det.boxes, small.boxes * np.array([5120 / 1067, 3840 / 800] * 2, np.float32),
                               rtol=1e-5, atol=1e-2)

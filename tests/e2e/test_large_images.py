"""`mrcnn predict --tile` on GeoTIFFs written by tifffile with known georeferencing: the COCO
document, the GeoJSON (validated by shapely, its areas the masks' and its coordinates the tags'),
the bounded picture, resume, and bad input (usage lines, damaged tiles, an unreadable CRS)."""
import json

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
import tifffile

from conftest import COCO_IMAGES
from helpers import FAST, assert_one_error_line, mrcnn_here, no_partial_files

shapely_geometry = pytest.importorskip('shapely.geometry')

UTM33N = [1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633]
ORIGIN, PIXEL = (500000.0, 4100000.0), 0.5


def write_geotiff(path, width, height, keys=UTM33N, tile=(256, 256)):
    photos = sorted(COCO_IMAGES.glob('*.jpg'))
    image = np.zeros((height, width, 3), np.uint8)
    k = 0
    for y in range(0, height, 480):
        for x in range(0, width, 640):
            photo = cv2.imread(str(photos[k % len(photos)]))
            k += 1
            h, w = min(photo.shape[0], height - y), min(photo.shape[1], width - x)
            image[y:y + h, x:x + w] = photo[:h, :w]
    tags = [(33550, 'd', 3, (PIXEL, PIXEL, 0.0), True), (33922, 'd', 6, (0, 0, 0, *ORIGIN, 0.0), True),
            (34735, 'H', len(keys), keys, True)]
    tifffile.imwrite(path, image[..., ::-1], tile=tile, bigtiff=True, photometric='rgb', compression='zlib',
                     extratags=tags)
    return image


@pytest.fixture(scope='module')
def run(checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp('large')
    scene = root / 'scene.tif'
    write_geotiff(scene, 1700, 1100)
    out = root / 'out'
    proc = mrcnn_here('predict', scene, '--weights', checkpoint('r50'), '--style', 'pytorch', '--device', 'cpu',
                      '--out', out, *FAST, '--tile', 640, '--tile-overlap', 0.25, '--batch-size', 2, '--save-geojson')
    assert proc.returncode == 0, proc.stderr
    return {'out': out, 'scene': scene, 'proc': proc, 'weights': checkpoint('r50'),
            'doc': json.loads((out / 'predictions.json').read_text()),
            'geojson': json.loads((out / 'geojson' / 'scene.geojson').read_text())}


def test_one_image_in_full_image_coordinates(run):
    doc = run['doc']
    assert [(im['width'], im['height']) for im in doc['images']] == [(1700, 1100)]
    anns = doc['annotations']
    assert len(anns) > 10 and all(a['score'] >= 0.3 for a in anns)
    boxes = np.array([a['bbox'] for a in anns])
    assert boxes[:, 0].min() >= 0 and (boxes[:, 0] + boxes[:, 2]).max() <= 1700
    assert (boxes[:, 0] + boxes[:, 2]).max() > 1100 and (boxes[:, 1] + boxes[:, 3]).max() > 640   # beyond one tile


def test_geojson_polygons_are_valid_cover_the_masks_and_sit_on_the_map(run):
    collection, anns = run['geojson'], run['doc']['annotations']
    assert collection['crs']['properties']['name'] == 'urn:ogc:def:crs:EPSG::32633'
    assert len(collection['features']) == len(anns)
    for feature, ann in zip(collection['features'], anns):
        shape = shapely_geometry.shape(feature['geometry'])
        assert shape.is_valid
        mask = mask_utils.decode(ann['segmentation']).astype(bool)
        assert feature['properties']['area_px'] == mask.sum() == ann['area']
        assert shape.area == pytest.approx(mask.sum() * PIXEL * PIXEL)       # the pixel-edge rule, in m²
        ys, xs = np.nonzero(mask)   # the mask's pixel bounds, mapped through the tie point and pixel scale
        expected = (ORIGIN[0] + xs.min() * PIXEL, ORIGIN[1] - (ys.max() + 1) * PIXEL,
                    ORIGIN[0] + (xs.max() + 1) * PIXEL, ORIGIN[1] - ys.min() * PIXEL)
        assert shape.bounds == pytest.approx(expected)
        assert feature['properties']['score'] == pytest.approx(ann['score'], abs=1e-5)


def test_the_picture_is_the_scene_drawn(run):
    picture = cv2.imread(str(run['out'] / 'scene.png'))
    assert picture.shape == (1100, 1700, 3)
    no_partial_files(run['out'])


def test_resume_skips_the_scene_and_other_tiling_is_another_run(run):
    args = ('predict', run['scene'], '--weights', run['weights'], '--style', 'pytorch', '--device', 'cpu',
            '--out', run['out'], *FAST, '--tile', 640, '--tile-overlap', 0.25, '--save-geojson')
    proc = mrcnn_here(*args, '--resume')
    assert proc.returncode == 0 and '1 inputs done by the earlier run' in proc.stdout
    proc = mrcnn_here(*args[:-3], '--tile-overlap', 0.1, '--resume')
    assert proc.returncode == 1 and 'tiles' in proc.stderr


@pytest.mark.parametrize('args,message', [
    (('--tile', 0), '--tile 0: tiles are 32 to 65536 pixels a side'),
    (('--tile', 'big'), '--tile big: need a size in pixels, or W,H'),
    (('--tile', 512, '--tile-overlap', 1.5), '--tile-overlap 1.5: need a fraction in [0, 1)'),
    (('--tile-full',), '--tile-full needs --tile SIZE'),
    (('--tile-match-thr', 0.3), '--tile-match-thr needs --tile SIZE')])
def test_tile_options_out_of_range_are_one_usage_line(tmp_path, args, message):
    proc = mrcnn_here('predict', COCO_IMAGES / '000000397133.jpg', '--weights', tmp_path / 'none.pth', *args)
    assert proc.returncode == 2
    assert_one_error_line(proc, message)


def test_damaged_tiles_and_an_unreadable_crs_are_warnings_and_the_run_goes_on(run, tmp_path):
    damaged = tmp_path / 'damaged.tif'
    write_geotiff(damaged, 700, 500, keys=[1, 1, 0, 1, 3072, 0, 1, 32767])   # a user-defined CRS: no EPSG code
    with tifffile.TiffFile(damaged) as tif:
        offset, count = tif.pages.first.dataoffsets[1], tif.pages.first.databytecounts[1]
    data = bytearray(damaged.read_bytes())
    data[offset:offset + count] = bytes(count)
    damaged.write_bytes(bytes(data))
    out = tmp_path / 'out'
    proc = mrcnn_here('predict', damaged, COCO_IMAGES / '000000397133.jpg', '--weights', run['weights'],
                      '--style', 'pytorch', '--device', 'cpu', '--out', out, *FAST, '--tile', 512, '--save-geojson',
                      '--no-vis')
    warnings = [line for line in proc.stderr.splitlines() if line.startswith('warning:')]
    assert any('damaged.tif: 1 of 6 TIFF segments could not be decoded' in w for w in warnings), proc.stderr
    assert any('damaged.tif: its coordinate reference system is not an EPSG code; its GeoJSON is in pixel '
               'coordinates' in w for w in warnings), proc.stderr
    doc = json.loads((out / 'predictions.json').read_text())
    assert len(doc['images']) == 2
    collection = json.loads((out / 'geojson' / 'damaged.geojson').read_text())
    assert 'crs' not in collection and collection['image']['coordinates'] == 'pixel'


def test_max_pixels_bounds_what_is_decoded_at_once_with_tiles(run, tmp_path):
    scene = tmp_path / 'wide.tif'
    write_geotiff(scene, 1500, 700)    # 1.05 megapixels, in 256 x 256 tiles
    common = ('predict', scene, '--weights', run['weights'], '--style', 'pytorch', '--device', 'cpu', *FAST,
              '--max-pixels', 1_000_000, '--no-vis')
    proc = mrcnn_here(*common, '--out', tmp_path / 'whole')
    assert proc.returncode == 1 and 'more than the limit of 1 (--max-pixels)' in proc.stderr
    proc = mrcnn_here(*common, '--out', tmp_path / 'tiled', '--tile', 700)
    assert proc.returncode == 0, proc.stderr

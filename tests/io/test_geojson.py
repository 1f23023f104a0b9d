"""GeoJSON polygons checked by a GIS library (shapely): every geometry valid, its area the mask's
pixel count (the pixel-edge rule), and rasterised back, the mask's own pixels."""
import json

import cv2
import numpy as np
import pytest

from mrcnn_cli.engine.detections import Detections
from mrcnn_cli.io.geojson import geometry
from mrcnn_cli.io.scene import GeoReference
from mrcnn_cli.ops.paste import MaskWindow

shapely_geometry = pytest.importorskip('shapely.geometry')
shapely = pytest.importorskip('shapely')


def random_masks(count, seed=0):
    rng = np.random.default_rng(seed)
    for k in range(count):
        h, w = rng.integers(1, 16, 2)
        mask = rng.random((h, w)) < rng.uniform(0.2, 0.9)
        if k % 3 == 0:   # blobs with holes as well as speckle
            mask = cv2.dilate(mask.astype(np.uint8), np.ones((2, 2), np.uint8)).astype(bool)
        yield mask


def test_every_polygon_is_valid_and_covers_exactly_its_masks_pixels():
    for mask in random_masks(3000):
        geom = geometry(MaskWindow(mask, 7, 3))
        if not mask.any():
            assert geom is None
            continue
        shape = shapely_geometry.shape(geom)
        assert shape.is_valid, shapely.validation.explain_validity(shape)
        assert shape.area == mask.sum()
        # each pixel is inside the polygon exactly when it is in the mask (pixel centres tested)
        ys, xs = np.mgrid[:mask.shape[0], :mask.shape[1]]
        centres = shapely.points(xs.ravel() + 7.5, ys.ravel() + 3.5)
        assert np.array_equal(shapely.contains(shape, centres).reshape(mask.shape), mask)


def test_an_empty_mask_has_no_geometry():
    for mask in (np.zeros((0, 0), bool), np.zeros((3, 0), bool), np.zeros((4, 5), bool)):
        assert geometry(MaskWindow(mask, 2, 2)) is None


def test_rings_are_oriented_as_rfc_7946_asks_and_closed():
    mask = np.ones((6, 6), bool)
    mask[2:4, 2:4] = False     # one hole
    geom = geometry(MaskWindow(mask, 0, 0))
    assert geom['type'] == 'Polygon' and len(geom['coordinates']) == 2
    exterior, hole = (np.array(r) for r in geom['coordinates'])
    assert (exterior[0] == exterior[-1]).all() and (hole[0] == hole[-1]).all()

    def signed_area(r):
        return 0.5 * np.sum(r[:-1, 0] * r[1:, 1] - r[1:, 0] * r[:-1, 1])
    assert signed_area(exterior) == 36 and signed_area(hole) == -4


def test_map_coordinates_follow_the_transform_and_keep_orientation():
    mask = np.ones((2, 3), bool)
    geo = GeoReference((0.5, 0.0, 500000.0, 0.0, -0.5, 4100000.0), 32633)
    det = Detections([[10, 20, 13, 22]], [0.9], [1], [MaskWindow(mask, 10, 20)], 100, 100, ['a', 'b'])
    collection = json.loads(json.dumps(det.to_geojson(georef=geo, name='scene')))
    assert collection['crs']['properties']['name'] == 'urn:ogc:def:crs:EPSG::32633'
    feature = collection['features'][0]
    assert feature['properties'] == {'id': 1, 'class_name': 'b', 'label': 1, 'score': 0.9, 'area_px': 6}
    shape = shapely_geometry.shape(feature['geometry'])
    assert shape.bounds == (500005.0, 4099989.0, 500006.5, 4099990.0)
    assert shape.area == pytest.approx(6 * 0.25) and shape.exterior.is_ccw

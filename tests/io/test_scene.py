"""Large TIFFs read a region at a time, against OpenCV's own TIFF reader (libtiff) on files written
by tifffile the ways GIS and microscopy software write them; GeoTIFF georeferencing against the
tags written."""
import cv2
import numpy as np
import pytest
import tifffile

from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.io.scene import GeoTiffProblem, TiffScene, georeference_from_tags

RNG = np.random.default_rng(3)
PHOTO = cv2.imread('../shared/data/demo/mmdet_demo.jpg')            # 427 x 640, real content


def regions(width, height):
    yield 0, 0, width, height
    for _ in range(12):
        x0, y0 = int(RNG.integers(0, width - 1)), int(RNG.integers(0, height - 1))
        yield x0, y0, int(RNG.integers(x0 + 1, width + 1)), int(RNG.integers(y0 + 1, height + 1))


@pytest.mark.parametrize('name,write', [
    ('tiled BigTIFF, deflate', lambda p, img: tifffile.imwrite(p, img[..., ::-1], tile=(64, 128), bigtiff=True,
                                                                 compression='zlib', photometric='rgb')),
    ('striped', lambda p, img: tifffile.imwrite(p, img[..., ::-1], rowsperstrip=37, photometric='rgb')),
    ('one strip', lambda p, img: tifffile.imwrite(p, img[..., ::-1], photometric='rgb')),
    ('planar, tiled', lambda p, img: tifffile.imwrite(p, np.moveaxis(img[..., ::-1], 2, 0), tile=(48, 48),
                                                        photometric='rgb', planarconfig='separate')),
    ('grey', lambda p, img: tifffile.imwrite(p, img[..., 1], tile=(32, 32), photometric='minisblack')),
    ('RGBA', lambda p, img: tifffile.imwrite(p, np.dstack([img[..., ::-1], img[..., :1]]), photometric='rgb',
                                             extrasamples=['unassalpha'], tile=(64, 64))),
    ('16-bit', lambda p, img: tifffile.imwrite(p, img[..., ::-1].astype(np.uint16) * 256 + RNG.integers(
        0, 256, img.shape, dtype=np.uint16), tile=(64, 64), photometric='rgb')),
    ('pyramidal', lambda p, img: _pyramid(p, img)),
])
def test_regions_are_the_pixels_opencv_reads(tmp_path, name, write):
    path = tmp_path / 'scene.tif'
    write(path, PHOTO)
    expected = cv2.imread(str(path), cv2.IMREAD_COLOR)
    scene = TiffScene(path, 'scene.tif', max_pixels=10**8)
    try:
        assert (scene.width, scene.height) == (640, 427)
        for x0, y0, x1, y1 in regions(640, 427):
            assert np.array_equal(scene.read(x0, y0, x1, y1), expected[y0:y1, x0:x1]), (x0, y0, x1, y1)
        assert scene.damaged == 0
    finally:
        scene.close()


def _pyramid(path, img):
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(img[..., ::-1], tile=(64, 64), photometric='rgb', subifds=1)
        tif.write(img[::2, ::2, ::-1], tile=(64, 64), photometric='rgb', subfiletype=1)


def test_damaged_tiles_read_black_and_are_counted(tmp_path):
    path = tmp_path / 'scene.tif'
    tifffile.imwrite(path, PHOTO[..., ::-1], tile=(64, 64), compression='zlib', photometric='rgb')
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages.first.dataoffsets[3], tif.pages.first.databytecounts[3]
    data = bytearray(path.read_bytes())
    data[offset:offset + count] = bytes(count)      # tile 3 (row 0, x 192..256) zeroed: not deflate data
    path.write_bytes(bytes(data))
    scene = TiffScene(path, 'scene.tif', max_pixels=10**8)
    whole = scene.read(0, 0, 640, 427)
    scene.close()
    assert scene.damaged == 1 and scene.segments == 70
    assert not whole[:64, 192:256].any()
    assert np.array_equal(whole[64:], PHOTO[64:]) and np.array_equal(whole[:64, :192], PHOTO[:64, :192])


def test_a_segment_larger_than_max_pixels_is_refused(tmp_path):
    path = tmp_path / 'scene.tif'
    tifffile.imwrite(path, PHOTO[..., ::-1], photometric='rgb')            # one strip: 640 x 427
    with pytest.raises(MrcnnError, match=r'strips are 640x427 pixels, more than max_pixels'):
        TiffScene(path, 'scene.tif', max_pixels=100_000)
    tifffile.imwrite(path, PHOTO[..., ::-1], photometric='rgb', tile=(64, 64))
    TiffScene(path, 'scene.tif', max_pixels=100_000).close()               # 64 x 64 at a time: fine


def test_not_a_tiff_and_unsupported_samples_are_one_error(tmp_path):
    path = tmp_path / 'scene.tif'
    path.write_bytes(b'II*\x00' + bytes(100))
    with pytest.raises(MrcnnError, match='not a readable TIFF'):
        TiffScene(path, 'scene.tif', max_pixels=10**8)
    tifffile.imwrite(path, RNG.random((50, 60, 3)).astype(np.float32), photometric='rgb')
    with pytest.raises(MrcnnError, match='float32'):
        TiffScene(path, 'scene.tif', max_pixels=10**8)


def test_overview_is_the_whole_image_shrunk(tmp_path):
    path = tmp_path / 'scene.tif'
    tifffile.imwrite(path, PHOTO[..., ::-1], tile=(64, 64), photometric='rgb')
    scene = TiffScene(path, 'scene.tif', max_pixels=10**8)
    small = scene.overview(160)
    scene.close()
    assert small.shape == (107, 160, 3)
    reference = cv2.resize(PHOTO, (160, 107), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - reference).mean() < 2.0


GEO_KEYS_UTM33N = [1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633]


def test_tie_point_and_pixel_scale_map_pixel_corners():
    tags = {33550: (0.5, 0.25, 0.0), 33922: (0, 0, 0, 500000.0, 4100000.0, 0.0), 34735: GEO_KEYS_UTM33N}
    geo = georeference_from_tags(tags)
    assert geo.epsg == 32633
    assert geo.to_map(np.array([[0.0, 0.0], [10.0, 4.0]])).tolist() == [[500000.0, 4100000.0], [500005.0, 4099999.0]]
    point = GEO_KEYS_UTM33N[:8] + [1025, 0, 1, 2] + GEO_KEYS_UTM33N[12:]    # RasterPixelIsPoint
    geo = georeference_from_tags({**tags, 34735: point})
    assert geo.to_map(np.array([[0.5, 0.5]])).tolist() == [[500000.0, 4100000.0]]   # the tie point is a centre
    transform = (2.0, 0.5, 0, 100.0, 0.25, -3.0, 0, 200.0, 0, 0, 0, 0, 0, 0, 0, 1)
    geo = georeference_from_tags({34264: transform, 34735: [1, 1, 0, 1, 2048, 0, 1, 4326]})
    assert geo.epsg == 4326 and geo.to_map(np.array([[4.0, 2.0]])).tolist() == [[109.0, 195.0]]


@pytest.mark.parametrize('tags,problem', [
    ({33922: (0, 0, 0, 1.0, 2.0, 0)}, 'no ModelPixelScaleTag'),
    ({33550: (1, 1, 0), 33922: (0, 0, 0, 1.0, 2.0, 0)}, 'names no coordinate reference system'),
    ({33550: (1, 1, 0), 33922: (0, 0, 0, 1.0, 2.0, 0), 34735: [1, 1, 0, 1, 3072, 0, 1, 32767]}, 'not an EPSG code'),
    ({34264: (1, 2, 3), 34735: GEO_KEYS_UTM33N}, '16 numbers')])
def test_georeferencing_that_cannot_be_used_says_why(tags, problem):
    with pytest.raises(GeoTiffProblem, match=problem):
        georeference_from_tags(tags)

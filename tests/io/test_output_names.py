"""Output picture names (issue 34): an image URL's picture is named after its file name, and
files whose names differ only in the suffix's spelling keep their own names."""
from pathlib import Path

from mrcnn_cli.commands.predict import picture_suffix
from mrcnn_cli.io.sources import IMAGE, URL, Source, output_names


def names(*sources):
    return output_names(list(sources), lambda s: picture_suffix(s, 'h264'))


def test_an_image_urls_picture_is_named_after_its_file_name():
    url = Source(URL, 'http://127.0.0.1:8765/a.jpg', 'http://127.0.0.1:8765/a.jpg')
    query = Source(URL, 'https://example.com/photos/street.png?size=big', 'https://example.com/photos/street.png')
    bare = Source(URL, 'https://example.com/', 'https://example.com/')
    assert names(url, query, bare) == ['a.jpg', 'street.png', 'url.png']


def test_each_file_keeps_its_own_name_whatever_the_order():
    upper, lower = Source(IMAGE, Path('d/x.JPEG'), 'd/x.JPEG'), Source(IMAGE, Path('d/x.jpg'), 'd/x.jpg')
    assert names(upper, lower) == ['x.JPEG', 'x.jpg'] and names(lower, upper) == ['x.jpg', 'x.JPEG']
    bmp, png = Source(IMAGE, Path('d/x.bmp'), 'd/x.bmp'), Source(IMAGE, Path('d/x.png'), 'd/x.png')
    assert names(bmp, png) == ['x_1.png', 'x.png']   # the PNG's picture is x.png; the BMP's goes aside

"""Reading images as mmdetection does, behind one boundary: whatever a file holds, the result is
an image or one MrcnnError naming the file."""
import cv2
import numpy as np

from mrcnn_cli.errors import MrcnnError, first_line
from mrcnn_cli.io.image_header import MAX_PIXELS, OPENCV_MAX_PIXELS, PNG_SIGNATURE, declared_size, png_damage


def check_max_pixels(max_pixels):
    if not 1 <= int(max_pixels) <= OPENCV_MAX_PIXELS:
        raise MrcnnError(f'max_pixels must be between 1 and {OPENCV_MAX_PIXELS} (what OpenCV decodes), '
                         f'not {max_pixels}')
    return int(max_pixels)


def too_large(name, width, height, max_pixels, what='is'):
    """The one message for an image (or, with what='frames are', a video) over the pixel limit."""
    return MrcnnError(f'{name}: {width}x{height} {what} {width * height / 1e6:.1f} megapixels, more than the limit '
                      f'of {max_pixels / 1e6:g} (--max-pixels)')


def read_image(path, max_pixels=MAX_PIXELS):
    """BGR uint8 HxWx3 as mmcv reads it (cv2.imdecode, IMREAD_COLOR: EXIF orientation applied,
    grey/alpha/16-bit converted).  An image whose header declares more than `max_pixels` is
    refused before it is decoded.  Raises MrcnnError on an unreadable file."""
    try:
        size = declared_size(path)
        if size and size[0] * size[1] > max_pixels:
            raise too_large(path, *size, max_pixels)
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise MrcnnError(f'cannot read {path}: {e.strerror or e}') from None
    damage = png_damage(data) if data[:8].tobytes() == PNG_SIGNATURE else None
    if damage:
        raise MrcnnError(f'{path}: not a readable image ({damage})')
    try:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except Exception as e:  # noqa: BLE001 - the decoder's boundary: whatever OpenCV raises on this file
        if 'CV_IO_MAX_IMAGE_PIXELS' in str(e):
            raise MrcnnError(f'{path}: more pixels than OpenCV decodes ({OPENCV_MAX_PIXELS})') from None
        raise MrcnnError(f'{path}: not a readable image ({getattr(e, "err", None) or first_line(e)})') from None
    if img is None:
        raise MrcnnError(f'{path}: not a readable image')
    if img.shape[0] * img.shape[1] > max_pixels:   # a format whose header is not read above
        raise too_large(path, img.shape[1], img.shape[0], max_pixels)
    return img

"""Reading images as mmdetection does, behind one boundary: whatever a file (or a buffer) holds, the
result is an image or one MrcnnError naming it."""
from __future__ import annotations

import cv2
import numpy as np

from mrcnn_cli.errors import MrcnnError, first_line, option
from mrcnn_cli.io.image_header import MAX_PIXELS, OPENCV_MAX_PIXELS, PNG_SIGNATURE, declared_size, png_damage


def check_max_pixels(max_pixels: int) -> int:
    if not 1 <= int(max_pixels) <= OPENCV_MAX_PIXELS:
        raise MrcnnError(f'max_pixels must be between 1 and {OPENCV_MAX_PIXELS} (what OpenCV decodes), '
                         f'not {max_pixels}')
    return int(max_pixels)


class ImageTooLarge(MrcnnError):
    """An image (or a video's frames) over the pixel limit, found before decoding where a header says."""


def too_large(name, width: int, height: int, max_pixels: int, what: str = 'is') -> MrcnnError:
    """The one message for an image (or, with what='frames are', a video) over the pixel limit."""
    return ImageTooLarge(f'{name}: {width}x{height} {what} {width * height / 1e6:.1f} megapixels, more than the limit '
                      f'of {max_pixels / 1e6:g} ({option("max_pixels")})')


def read_image(path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """BGR uint8 HxWx3 as mmcv reads it (cv2.imdecode, IMREAD_COLOR: EXIF orientation applied,
    grey/alpha/16-bit converted).  An image whose header declares more than `max_pixels` is
    refused before it is decoded.  Raises MrcnnError on an unreadable file."""
    try:
        size = declared_size(path)
        if size and size[0] * size[1] > max_pixels:
            raise too_large(path, size[0], size[1], max_pixels)
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise MrcnnError(f'cannot read {path}: {e.strerror or e}') from None
    return decode_image(data, path, max_pixels, header_checked=True)


def decode_image(data, name, max_pixels: int = MAX_PIXELS, header_checked: bool = False) -> np.ndarray:
    """An encoded image (bytes or a uint8 array: a file's contents, a download) as `read_image`
    decodes it; `name` is how messages refer to it."""
    data = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if not header_checked:
        size = declared_size(data[:1 << 20].tobytes())   # headers, EXIF blocks included, sit in front
        if size and size[0] * size[1] > max_pixels:
            raise too_large(name, size[0], size[1], max_pixels)
    damage = png_damage(data) if data[:8].tobytes() == PNG_SIGNATURE else None
    if damage:
        raise MrcnnError(f'{name}: not a readable image ({damage})')
    try:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except Exception as e:  # noqa: BLE001 - the decoder's boundary: whatever OpenCV raises on this file
        if 'CV_IO_MAX_IMAGE_PIXELS' in str(e):
            raise MrcnnError(f'{name}: more pixels than OpenCV decodes ({OPENCV_MAX_PIXELS})') from None
        raise MrcnnError(f'{name}: not a readable image ({getattr(e, "err", None) or first_line(e)})') from None
    if img is None:
        raise MrcnnError(f'{name}: not a readable image')
    if img.shape[0] * img.shape[1] > max_pixels:   # a format whose header is not read above
        raise too_large(name, img.shape[1], img.shape[0], max_pixels)
    return img


def as_bgr(img: np.ndarray, name: str, channels: str = 'bgr') -> np.ndarray:
    """A caller's uint8 array as the BGR HxWx3 image the model takes: HxW grey and HxWx1 repeated,
    HxWx4 without its alpha (as cv2.imread's IMREAD_COLOR reads such files); `channels='rgb'`
    says the colour channels come in RGB order.  The caller's array is never changed."""
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3, 4)) \
            or 0 in img.shape:
        raise MrcnnError(f'{name}: need a uint8 HxWx3 array (BGR as cv2.imread gives, or RGB with '
                         f"channels='rgb'), HxW grey or HxWx4, not {img.dtype} {img.shape}")
    if img.ndim == 2 or img.shape[2] == 1:
        return cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        img = img[:, :, :3]
    if channels == 'rgb':
        img = img[:, :, ::-1]
    return img if img.flags.c_contiguous else np.ascontiguousarray(img)

"""Reading images as mmdetection does."""
import cv2
import numpy as np

from mrcnn_cli.errors import MrcnnError


def read_image(path):
    """BGR uint8 HxWx3 as mmcv reads it (cv2.imdecode, IMREAD_COLOR: EXIF orientation applied,
    grey/alpha/16-bit converted).  Raises MrcnnError on an unreadable file."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise MrcnnError(f'cannot read {path}: {e.strerror or e}') from None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise MrcnnError(f'{path}: not a readable image')
    return img

"""COCO's classes and category ids, RLE masks, and the predictions.json document."""
import numpy as np

from mrcnn_cli.io.files import write_json

COCO_CLASSES = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
    'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat',
    'dog', 'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack',
    'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball',
    'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket',
    'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple',
    'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair',
    'couch', 'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse',
    'remote', 'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink',
    'refrigerator', 'book', 'clock', 'vase', 'scissors', 'teddy bear', 'hair drier',
    'toothbrush')

COCO_CATEGORY_IDS = (
    *range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70,
    *range(72, 83), *range(84, 91))

assert len(COCO_CATEGORY_IDS) == len(COCO_CLASSES) == 80


def category_ids(classes):
    """Official COCO ids when the classes are COCO's 80, else 1..N."""
    if tuple(classes) == COCO_CLASSES:
        return COCO_CATEGORY_IDS
    return tuple(range(1, len(classes) + 1))


def encode_rle(windows, height, width):
    """Compressed RLE (counts as str) of each MaskWindow as a full height x width mask, and its area."""
    import pycocotools.mask as mask_util
    buf = np.zeros((height, width), dtype=np.uint8, order='F')
    out = []
    for win in windows:
        region = buf[win.y0:win.y0 + win.mask.shape[0], win.x0:win.x0 + win.mask.shape[1]]
        region[...] = win.mask
        rle = mask_util.encode(buf)
        rle['counts'] = rle['counts'].decode('ascii')
        out.append((rle, int(win.mask.sum())))
        region[...] = 0
    return out


class CocoDocument:
    """Accumulates images and their results entries into a pycocotools-loadable COCO dataset dict."""

    def __init__(self, classes):
        self.classes = tuple(classes)
        self.cat_ids = category_ids(self.classes)
        self.images, self.annotations = [], []

    def add(self, file_name, width, height, entries, **extra):
        """One image and its results entries (`Detections.to_coco`); returns the image id."""
        image_id = len(self.images) + 1
        self.images.append({'id': image_id, 'file_name': str(file_name), 'width': width, 'height': height, **extra})
        for entry in entries:
            self.annotations.append({**entry, 'image_id': image_id, 'id': len(self.annotations) + 1, 'iscrowd': 0})
        return image_id

    def as_dict(self):
        return {'info': {'description': 'mrcnn predictions'},
                'images': self.images,
                'categories': [{'id': int(c), 'name': n} for c, n in zip(self.cat_ids, self.classes)],
                'annotations': self.annotations}

    def write(self, path):
        write_json(path, self.as_dict())

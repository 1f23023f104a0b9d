"""COCO-format results: RLE masks, the predictions.json document, atomic file writes."""
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util

from mrcnn_cli.coco import category_ids


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds.

    A crash or Ctrl-C never leaves a half-written output under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.stem}.', suffix=path.suffix or '.tmp', dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get ordinary permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path, obj):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj))


def encode_masks(det, indices):
    """Compressed RLE (counts as str) of the full-image masks of `indices`."""
    buf = np.zeros((det.height, det.width), dtype=np.uint8, order='F')
    rles = []
    for i in indices:
        m, (x0, y0) = det.masks[i]
        window = buf[y0:y0 + m.shape[0], x0:x0 + m.shape[1]]
        window[...] = m
        rle = mask_util.encode(buf)
        rle['counts'] = rle['counts'].decode('ascii')
        rles.append(rle)
        window[...] = 0
    return rles


def coco_results(det, image_id, cat_ids, indices=None):
    """Official COCO results entries (image_id, category_id, bbox xywh, score, RLE segmentation),
    full precision, for detections `indices` (default: all)."""
    indices = range(len(det)) if indices is None else indices
    out = []
    for i, rle in zip(indices, encode_masks(det, indices)):
        x1, y1, x2, y2 = (float(v) for v in det.boxes[i])
        out.append({'image_id': int(image_id), 'category_id': int(cat_ids[det.labels[i]]),
                    'bbox': [x1, y1, x2 - x1, y2 - y1], 'score': float(det.scores[i]), 'segmentation': rle})
    return out


def to_coco_annotations(det, image_id, cat_ids, keep):
    """predictions.json annotations for the kept detections: results entries, rounded for
    size, with the mask area and iscrowd that a COCO dataset dict carries."""
    anns = coco_results(det, image_id, cat_ids, [i for i in range(len(det)) if keep[i]])
    for ann in anns:
        ann['bbox'] = [round(v, 3) for v in ann['bbox']]
        ann['score'] = round(ann['score'], 5)
        ann['area'] = int(mask_util.area(ann['segmentation']))
        ann['iscrowd'] = 0
    return anns


class CocoDocument:
    """Accumulates images and detections into a pycocotools-loadable COCO dict."""

    def __init__(self, classes):
        self.classes = tuple(classes)
        self.cat_ids = category_ids(self.classes)
        self.images, self.annotations = [], []

    def add(self, file_name, det, keep, **extra):
        image_id = len(self.images) + 1
        self.images.append({'id': image_id, 'file_name': str(file_name), 'width': det.width,
                            'height': det.height, **extra})
        for ann in to_coco_annotations(det, image_id, self.cat_ids, keep):
            ann['id'] = len(self.annotations) + 1
            self.annotations.append(ann)
        return image_id

    def as_dict(self):
        return {'info': {'description': 'mrcnn predictions'},
                'images': self.images,
                'categories': [{'id': int(c), 'name': n} for c, n in zip(self.cat_ids, self.classes)],
                'annotations': self.annotations}

    def write(self, path):
        write_json(path, self.as_dict())

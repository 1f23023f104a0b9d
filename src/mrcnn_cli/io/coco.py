"""COCO's classes and category ids, and RLE masks (predictions.json is io.results_log's)."""
import numpy as np

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


def window_rle_counts(win, height, width):
    """Uncompressed COCO RLE counts (column-major runs, zeros first) of a MaskWindow as a full
    height x width mask, computed from the window alone: the pixels outside it are zero."""
    h, w = win.mask.shape
    padded = np.zeros((w, h + 2), np.int8)           # one row per image column, zero-padded ends
    padded[:, 1:-1] = win.mask.T
    change = np.diff(padded, axis=1)
    col_s, y_s = np.nonzero(change == 1)             # runs start ...
    _, y_e = np.nonzero(change == -1)                # ... and end, in the same column order
    base = (col_s + win.x0) * height + win.y0       # position of the window's top in that column
    starts, ends = base + y_s, base + y_e
    if len(starts) > 1:   # a run at a column's foot continues at the next column's head
        joined = starts[1:] == ends[:-1]
        if joined.any():
            keep = np.concatenate([[True], ~joined])
            starts = starts[keep]
            ends = ends[np.concatenate([~joined, [True]])]
    bounds = np.empty(2 * len(starts) + 2, np.int64)
    bounds[0], bounds[-1] = 0, height * width
    bounds[1:-1:2], bounds[2:-1:2] = starts, ends
    counts = np.diff(bounds)
    return counts[:-1] if len(counts) > 1 and counts[-1] == 0 else counts   # as pycocotools: no trailing 0


def encode_rle(windows, height, width):
    """Compressed RLE (counts as str) of each MaskWindow as a full height x width mask, and its
    area; the runs are found in the window alone (every pixel outside it is 0), not by scanning
    the whole image per instance."""
    import pycocotools.mask as mask_util
    if not windows:
        return []
    counts = [window_rle_counts(win, height, width) for win in windows]
    rles = mask_util.frPyObjects([{'size': [height, width], 'counts': c} for c in counts], height, width)
    out = []
    for rle, c in zip(rles, counts):
        rle['counts'] = rle['counts'].decode('ascii')
        out.append((rle, int(c[1::2].sum())))
    return out


def decode_rle(rle):
    """(H, W) bool mask of a COCO RLE dict (`size` and `counts`, compressed str or bytes, or an
    uncompressed list of runs)."""
    import pycocotools.mask as mask_util
    h, w = (int(v) for v in rle['size'])
    counts = rle['counts']
    if isinstance(counts, list):
        rle = mask_util.frPyObjects({'size': [h, w], 'counts': counts}, h, w)
    else:
        rle = {'size': [h, w], 'counts': counts.encode('ascii') if isinstance(counts, str) else counts}
    return mask_util.decode(rle).astype(bool)

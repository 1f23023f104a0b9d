"""Instance masks in the forms other tools read: instance and class maps, polygons, YOLO labels, crops.

Functions take MaskWindows (a bool window of the image and its offset) in detection order."""
import re

import cv2
import numpy as np


def instance_map(windows, height, width):
    """(H, W) uint16: 0 background, k for the k-th mask (from 1); where masks overlap, the
    earlier one (the higher score: detections come by decreasing score) wins."""
    if len(windows) >= 2 ** 16:
        raise ValueError('more than 65535 instances do not fit a 16-bit instance map')
    out = np.zeros((height, width), np.uint16)
    for k in range(len(windows), 0, -1):   # lowest score first, so higher scores paint over it
        win = windows[k - 1]
        h, w = win.mask.shape
        out[win.y0:win.y0 + h, win.x0:win.x0 + w][win.mask] = k
    return out


def class_map(inst_map, category_ids):
    """(H, W) of each pixel's category id (0 background), from an instance map: uint8 when the ids
    fit, else uint16."""
    lut = np.zeros(len(category_ids) + 1, np.int64)
    lut[1:] = category_ids
    out = lut[inst_map]
    return out.astype(np.uint8 if out.max(initial=0) < 256 else np.uint16)


def mask_polygons(win):
    """COCO polygons of a MaskWindow: one flat [x1, y1, x2, y2, ...] list per external contour, in
    image coordinates, tracing the pixels' outer edges, so that pycocotools rasterises a polygon
    back to exactly the mask's pixels (holes filled: a polygon cannot express a hole).  An empty
    mask gives one zero-area triangle, as pycocotools fails on an empty list."""
    if not win.mask.any():
        return [[float(win.x0), float(win.y0)] * 3]
    # OpenCV's contours run through pixel centres.  On the mask upsampled 2x, a contour point at
    # even u is the left (top) edge of original pixel u/2 and at odd u the right (bottom) edge of
    # pixel (u-1)/2: ceil(u/2) is the edge's coordinate in both cases.
    doubled = np.kron(win.mask.astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(doubled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for c in contours:
        pts = (c.reshape(-1, 2) + 1) // 2 + (win.x0, win.y0)
        pts = pts[np.any(pts != np.roll(pts, 1, axis=0), axis=1)]   # the repeats the halving makes
        out.append([float(v) for v in pts.reshape(-1)])
    return out


def outer_contour(win):
    """The largest external contour of a MaskWindow as (K, 2) pixel coordinates, K >= 3 with a
    non-zero area, or None for an empty mask.  Through pixel centres, as Ultralytics'
    masks2segments writes YOLO labels; a mask one pixel thin, whose centre line encloses nothing,
    gets the polygon along its pixels' outer edges instead (`mask_polygons`)."""
    if not win.mask.any():
        return None
    contours, _ = cv2.findContours(win.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    c = max(contours, key=len).reshape(-1, 2)
    if len(c) >= 3 and cv2.contourArea(c) > 0:
        return c.astype(np.float64) + (win.x0, win.y0)
    edges = [np.asarray(p, np.float64).reshape(-1, 2) for p in mask_polygons(win)]
    return max(edges, key=lambda p: cv2.contourArea(p.astype(np.float32)))


def yolo_lines(windows, labels, scores, height, width, conf=False):
    """Ultralytics' segmentation label lines: `class x1 y1 x2 y2 ...` (0-based class, the outer
    contour's points normalised to [0, 1]), with the score last when `conf`: one line for every
    non-empty mask (an empty one has no outline to write)."""
    lines = []
    for win, label, score in zip(windows, labels, scores):
        pts = outer_contour(win)
        if pts is None:
            continue
        pts = np.clip(pts / (width, height), 0.0, 1.0)
        line = f'{int(label)} ' + ' '.join(f'{v:.6f}' for v in pts.reshape(-1))
        lines.append(line + (f' {float(score):.5f}' if conf else ''))
    return lines


def box_region(box, height, width):
    """Integer pixel bounds [x0, x1) x [y0, y1) covering a float x1, y1, x2, y2 box, in the image."""
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])), width), min(int(np.ceil(box[3])), height)
    return x0, y0, max(x1, x0), max(y1, y0)


def rgba_crop(image, box, win):
    """The box's region of a BGR image as BGRA, its alpha 255 inside the instance's mask."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = box_region(box, height, width)
    alpha = np.zeros((height, width), np.uint8)
    h, w = win.mask.shape
    alpha[win.y0:win.y0 + h, win.x0:win.x0 + w][win.mask] = 255
    return np.dstack([image[y0:y1, x0:x1], alpha[y0:y1, x0:x1]])


def safe_name(text):
    """A class name as a file-name part: 'traffic light' -> 'traffic_light'; never '.', '..' or a
    hidden name (a checkpoint's class names come from its file)."""
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', str(text)).strip('_.') or 'class'

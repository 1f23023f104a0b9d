"""io.masks on its own, against independent readers: pycocotools rasterises the polygons, OpenCV
fills the YOLO outlines, and the maps are checked against hand-made masks."""
import cv2
import numpy as np
import pycocotools.mask as mask_util

from mrcnn_cli.io import masks
from mrcnn_cli.ops.paste import MaskWindow


def window(full, x0, y0, x1, y1):
    return MaskWindow(full[y0:y1, x0:x1].copy(), x0, y0)


def test_instance_map_gives_overlaps_to_the_higher_score_and_class_map_follows_it():
    a, b = np.zeros((8, 10), bool), np.zeros((8, 10), bool)
    a[1:5, 1:6] = True
    b[3:7, 4:9] = True
    wins = [window(a, 0, 0, 7, 6), window(b, 3, 2, 10, 8)]   # by decreasing score: a first
    inst = masks.instance_map(wins, 8, 10)
    assert inst.dtype == np.uint16
    assert (inst == 1).sum() == a.sum() and ((inst == 2) == (b & ~a)).all() and ((inst == 0) == ~(a | b)).all()
    cls = masks.class_map(inst, [17, 300])                  # ids over 255 need 16 bits
    assert cls.dtype == np.uint16 and (cls[a] == 17).all() and (cls[b & ~a] == 300).all() and (cls[~(a | b)] == 0).all()
    assert masks.class_map(inst, [17, 3]).dtype == np.uint8


def test_polygons_rasterise_back_to_the_mask_in_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(20):
        full = np.zeros((30, 40), np.uint8)
        for _ in range(3):
            x, y = rng.integers(0, 32), rng.integers(0, 22)
            cv2.rectangle(full, (int(x), int(y)), (int(x + rng.integers(1, 8)), int(y + rng.integers(1, 8))), 1, -1)
        polys = masks.mask_polygons(window(full.astype(bool), 0, 0, 40, 30))
        rles = mask_util.frPyObjects(polys, 30, 40)
        back = mask_util.decode(mask_util.merge(rles)).astype(bool)
        filled = np.zeros_like(full)   # polygons fill holes: compare with the mask's holes filled
        contours, _ = cv2.findContours(full, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(filled, contours, -1, 1, -1)
        assert (back == filled.astype(bool)).all()


def test_yolo_lines_normalise_and_keep_every_non_empty_mask():
    full = np.zeros((20, 40), bool)
    full[5:15, 10:30] = True
    line_mask = np.zeros((20, 40), bool)
    line_mask[2, 3:12] = True                               # one pixel thin: no area through pixel centres
    empty = np.zeros((20, 40), bool)
    wins = [window(full, 8, 3, 32, 17), window(line_mask, 0, 0, 20, 5), window(empty, 0, 0, 5, 5)]
    lines = masks.yolo_lines(wins, [2, 0, 1], [0.9, 0.5, 0.1], 20, 40, conf=True)
    assert len(lines) == 2                                  # the empty mask has no outline
    for line, label, score, mask in zip(lines, (2, 0), (0.9, 0.5), (full, line_mask)):
        values = [float(v) for v in line.split()]
        assert int(values[0]) == label and values[-1] == score
        pts = np.array(values[1:-1]).reshape(-1, 2) * (40, 20)
        assert len(pts) >= 3 and cv2.contourArea(pts.astype(np.float32)) > 0
        canvas = np.zeros((20, 40), np.uint8)
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
        assert canvas[mask].all()                           # the outline holds every pixel of the mask


def test_crop_is_the_box_region_with_the_mask_as_alpha():
    image = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    full = np.zeros((20, 30), bool)
    full[4:9, 6:12] = True
    crop = masks.rgba_crop(image, np.array([5.5, 3.2, 12.0, 9.0]), window(full, 5, 3, 13, 10))
    assert crop.shape == (6, 7, 4) and (crop[:, :, :3] == image[3:9, 5:12]).all()
    assert ((crop[:, :, 3] == 255) == full[3:9, 5:12]).all()
    assert masks.safe_name('traffic light') == 'traffic_light' and masks.safe_name('../x') == 'x'
    assert [masks.safe_name(n) for n in ('..', '.', '.hidden', '/')] == ['class', 'class', 'hidden', 'class']

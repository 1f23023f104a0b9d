"""`Detections` as users take results away (issue 26): dict/JSON/pandas exports, numpy rows, the
summary, class filters by name or index, and pictures that stay readable."""
import json
import sys

import cv2
import numpy as np
import pytest

from mrcnn_cli import Detections, MrcnnError
from mrcnn_cli.io.coco import COCO_CLASSES
from mrcnn_cli.ops.paste import MaskWindow
from mrcnn_cli.visualize import _srgb_to_lab, class_color, distinct_colors, place_labels

from conftest import COCO_IMAGES

CROWDED = COCO_IMAGES / '000000568290.jpg'


def made(boxes, scores, labels, size=(60, 80)):
    """Detections with a filled rectangle (inside its box) as each mask."""
    windows = []
    for x1, y1, x2, y2 in boxes:
        mask = np.zeros((int(y2) - int(y1), int(x2) - int(x1)), bool)
        mask[1:-1, 1:-1] = True
        windows.append(MaskWindow(mask, int(x1), int(y1)))
    return Detections(np.array(boxes, np.float32), scores, labels, windows, *size, COCO_CLASSES)


@pytest.fixture(scope='module')
def crowded(torch_predictor):
    """A real crowded scene: every detection the synthetic R-50 makes (100) on a COCO photo."""
    det = torch_predictor('r50', 'pytorch')(CROWDED)
    assert len(det) == 100
    return det


def test_summary_repr_xywh_and_numpy_rows():
    det = made([(0, 0, 10, 10), (5, 5, 20, 30), (30, 10, 50, 40), (1, 2, 5, 9)], [0.9, 0.8, 0.5, 0.2], [0, 2, 0, 0])
    assert det.summary() == '3 person, 1 car'
    assert repr(det) == 'Detections(4 instances in a 80x60 image: 3 person, 1 car)'
    assert repr(det[:0]) == 'Detections(0 instances in a 80x60 image)' and det[:0].summary() == 'no instances'
    assert det.xywh.tolist()[1] == [5, 5, 15, 25] and det.boxes.tolist()[1] == [5, 5, 20, 30]   # boxes untouched
    rows = np.asarray(det)
    assert rows.shape == (4, 6) and rows.dtype == np.float32
    assert rows[1].tolist() == pytest.approx([5, 5, 20, 30, 0.8, 2])
    assert np.asarray(det, dtype=np.float64).dtype == np.float64 and np.asarray(det[:0]).shape == (0, 6)


def test_filter_by_names_indexes_and_one_string():
    det = made([(0, 0, 10, 10), (5, 5, 20, 30), (30, 10, 50, 40), (1, 2, 5, 9)], [0.9, 0.8, 0.5, 0.2], [0, 2, 15, 0])
    assert det.filter(classes='cat').class_names == ['cat']             # a string is one class, not letters
    assert det.filter(classes=15).class_names == ['cat']                # a 0-based index
    assert det.filter(classes=['person', 2]).class_names == ['person', 'car', 'person']
    assert det.filter(classes=np.int64(2)).class_names == ['car']
    assert det.filter(score_thr=0.5, classes=['person', 'cat']).class_names == ['person', 'cat']
    with pytest.raises(MrcnnError, match="unknown class 'cta'; did you mean 'cat'?"):
        det.filter(classes=['person', 'cta'])
    with pytest.raises(MrcnnError, match="unknown class 'Person'; did you mean 'person'?"):
        det.filter(classes='Person')
    with pytest.raises(MrcnnError, match="unknown class 'zzz'; known: person, bicycle"):
        det.filter(classes='zzz')
    with pytest.raises(MrcnnError, match='class index -1 is out of range'):
        det.filter(classes=-1)


@pytest.mark.slow
def test_to_json_round_trips_and_to_dict_is_plain_json(crowded, tmp_path):
    data = crowded.to_dict()
    assert json.loads(json.dumps(data)) == data
    first = data['instances'][0]
    assert set(first) == {'label', 'class_name', 'score', 'box', 'mask', 'area'}
    assert first['mask']['size'] == [crowded.height, crowded.width] and first['area'] == int(crowded.mask(0).sum())
    back = Detections.from_json(crowded.to_json(tmp_path / 'det.json'))
    assert json.loads((tmp_path / 'det.json').read_text()) == data
    assert np.array_equal(back.boxes, crowded.boxes) and np.array_equal(back.scores, crowded.scores)
    assert np.array_equal(back.labels, crowded.labels) and back.classes == crowded.classes
    assert np.array_equal(back.masks, crowded.masks)
    assert back.to_coco(image_id=3) == crowded.to_coco(image_id=3)
    broken = dict(data, instances=[dict(first, mask={'size': first['mask']['size'], 'counts': '0'})])
    with pytest.raises(MrcnnError, match='not a Detections dict .*RLE runs do not cover'):
        Detections.from_dict(broken)


def test_to_pandas_columns_and_a_clear_line_without_pandas(crowded, monkeypatch):
    frame = crowded.to_pandas()
    assert list(frame.columns) == ['class_name', 'label', 'score', 'x1', 'y1', 'x2', 'y2', 'area']
    assert len(frame) == len(crowded) and frame['class_name'].tolist() == crowded.class_names
    assert np.array_equal(frame[['x1', 'y1', 'x2', 'y2']].to_numpy(), crowded.boxes)
    assert frame['area'].tolist() == [int(crowded.mask(i).sum()) for i in range(len(crowded))]
    monkeypatch.setitem(sys.modules, 'pandas', None)   # as if it were not installed
    with pytest.raises(MrcnnError, match='to_pandas needs pandas: pip install pandas'):
        crowded.to_pandas()


def test_every_instance_gets_a_valid_yolo_polygon_thin_masks_too(crowded):
    """The reported case: 98 lines for 100 detections, thin masks having fewer than 3 contour points."""
    thin = [i for i, w in enumerate(crowded.mask_windows())
            if len(max(cv2.findContours(w.mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                        cv2.CHAIN_APPROX_SIMPLE)[0], key=len)) < 3]
    assert thin, 'the crowded scene should have a mask one pixel thin'
    lines = crowded.to_yolo(conf=True)
    assert len(lines) == len(crowded) == 100
    for i, line in enumerate(lines):
        values = [float(v) for v in line.split()]
        label, points, score = int(values[0]), np.array(values[1:-1]).reshape(-1, 2), values[-1]
        assert label == crowded.labels[i] and score == pytest.approx(float(crowded.scores[i]), abs=1e-5)
        assert len(points) >= 3 and cv2.contourArea((points * (crowded.width, crowded.height)).astype(np.float32)) > 0
        assert (points >= 0).all() and (points <= 1).all()
    for i in thin:   # the outline traced along the pixels' edges covers one whole piece of the mask
        points = np.array([float(v) for v in lines[i].split()[1:-1]]).reshape(-1, 2) * (crowded.width, crowded.height)
        canvas = np.zeros((crowded.height, crowded.width), np.uint8)
        cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1)
        count, pieces = cv2.connectedComponents(crowded.mask(i).astype(np.uint8), connectivity=8)
        assert any(canvas[pieces == k].all() for k in range(1, count))


def test_plot_draws_what_mrcnn_predict_draws_unless_told():
    det = made([(5, 5, 40, 30), (30, 20, 70, 55), (10, 30, 35, 58)], [0.9, 0.5, 0.2], [0, 2, 15])
    image = np.full((60, 80, 3), 90, np.uint8)
    default = det.plot(image)
    assert np.array_equal(default, det[:2].plot(image, score_thr=0))        # 0.3, as `mrcnn predict` draws
    assert not np.array_equal(default, det.plot(image, score_thr=0))
    assert np.array_equal(det.plot(image, score_thr=0.95), image)
    for options, message in (({'mask_alpha': 2}, 'mask_alpha must be between 0'),
                             ({'mask_alpha': 'half'}, 'mask_alpha must be between 0'),
                             ({'line_width': 0}, 'line_width must be a whole number'),
                             ({'line_width': 2.5}, 'line_width must be a whole number'),
                             ({'score_thr': -1}, 'score_thr must be between 0 and 1')):
        with pytest.raises(MrcnnError, match=message):
            det.plot(image, **options)
    with pytest.raises(MrcnnError, match='need the image as a BGR uint8 HxWx3 array'):
        det.plot(image[:, :, 0])


def test_class_colours_are_distinguishable():
    lab = _srgb_to_lab(np.array(distinct_colors()[:80], np.float64) / 255)
    gaps = np.linalg.norm(lab[:, None] - lab[None], axis=2) + np.eye(80) * 1e9
    assert gaps.min() > 15          # CIE76 distance: about 2.3 is the smallest difference people see
    cat, toaster, drier = (COCO_CLASSES.index(n) for n in ('cat', 'toaster', 'hair drier'))
    assert min(gaps[cat, toaster], gaps[cat, drier], gaps[toaster, drier]) > 15
    assert distinct_colors(40) == distinct_colors()[:40]    # a class keeps its colour
    assert class_color(0, palette=[(1, 2, 3)]) == (3, 2, 1)   # the checkpoint's palette first (RGB -> BGR)


def overlap_area(rects):
    total = 0
    for i in range(len(rects)):
        for j in range(i):
            (a, b, c, d), (e, f, g, h) = rects[i], rects[j]
            total += max(0, min(c, g) - max(a, e)) * max(0, min(d, h) - max(b, f))
    return total


def test_labels_are_placed_where_they_cover_no_other_label():
    """The 12 most crowded scenes of the COCO mini set (15 to 26 objects, their annotated boxes): labels
    at the boxes' corners overlap in every one; placed, none covers another and all stay in the picture."""
    data = json.loads((COCO_IMAGES.parent / 'annotations' / 'instances_val2017.json').read_text())
    names = {c['id']: c['name'] for c in data['categories']}
    by_image = {}
    for a in data['annotations']:
        by_image.setdefault(a['image_id'], []).append(a)
    images = {im['id']: im for im in data['images']}
    for image_id, anns in sorted(by_image.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:12]:
        w, h = images[image_id]['width'], images[image_id]['height']
        boxes = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in (a['bbox'] for a in anns)], np.float32)
        sizes = []
        for a in anns:
            (tw, th), base = cv2.getTextSize(f'{names[a["category_id"]]} 0.99', cv2.FONT_HERSHEY_SIMPLEX,
                                             max(0.4, min(h, w) / 1000), 1)
            sizes.append((tw + 2, th + base + 2))
        spots = place_labels(boxes, sizes, w, h)
        assert sum(spot is None for spot in spots) <= len(spots) // 4   # most labels find a free place
        rects = [(s[0], s[1], s[0] + lw, s[1] + lh) for s, (lw, lh) in zip(spots, sizes) if s is not None]
        assert all(0 <= x and 0 <= y and x2 <= w and y2 <= h for x, y, x2, y2 in rects)
        naive = [(int(b[0]), int(b[1]) - lh, int(b[0]) + lw, int(b[1])) for b, (lw, lh) in zip(boxes, sizes)]
        assert overlap_area(naive) > 0 and overlap_area(rects) == 0, (image_id, overlap_area(rects))
    # twelve labels of one box: stacked above and below it, none on another
    stacked = place_labels(np.array([[100, 150, 200, 250]] * 12, np.float32), [(60, 12)] * 12, 400, 400)
    assert len(set(stacked)) == 12 and overlap_area([(x, y, x + 60, y + 12) for x, y in stacked]) == 0


def test_resize_scales_boxes_and_masks_as_opencv_resizes_the_image():
    full = np.zeros((400, 600), bool)
    full[100:220, 300:480] = True                   # a rectangle: nearest-neighbour keeps it one
    det = Detections([[300, 100, 480, 220]], [0.9], [2], [MaskWindow(full[100:220, 300:480].copy(), 300, 100)],
                     400, 600, COCO_CLASSES)
    small = det.resize(150, 100)
    assert (small.width, small.height) == (150, 100)
    np.testing.assert_allclose(small.boxes, [[75, 25, 120, 55]])
    expected = cv2.resize(full.view(np.uint8), (150, 100), interpolation=cv2.INTER_NEAREST).astype(bool)
    assert np.array_equal(small.mask(0), expected)
    assert small.scores.tolist() == det.scores.tolist() and small.labels.tolist() == [2]


def test_pictures_of_large_sliced_images_are_drawn_at_most_4096_a_side():
    from mrcnn_cli.commands.predict import draw_bounded
    from mrcnn_cli.engine.stream import StreamItem
    from mrcnn_cli.engine.tiling import SceneInfo
    from mrcnn_cli.visualize import DrawOptions
    det = made([[1000, 2000, 3000, 4000]], [0.9], [0], size=(5000, 8192))
    preview = np.full((2500, 4096, 3), 90, np.uint8)
    item = StreamItem('big.tif', image=None, detections=det, scene=SceneInfo(8192, 5000, 40, preview=preview))
    drawn = draw_bounded(item, det, DrawOptions())
    assert drawn.shape == (2500, 4096, 3)
    assert (drawn[1000:2000, 500:1500] != 90).any() and (drawn[:900, :400] == 90).all()   # the mask, halved
    whole = np.full((5000, 8192, 3), 90, np.uint8)       # held whole: shrunk the same way
    item = StreamItem('big.png', image=whole, detections=det, scene=SceneInfo(8192, 5000, 40))
    assert draw_bounded(item, det, DrawOptions()).shape == (2500, 4096, 3)
    small = made([[10, 20, 30, 40]], [0.9], [0])          # not sliced: as it is
    assert draw_bounded(StreamItem('a.png', image=np.zeros((60, 80, 3), np.uint8)), small,
                        DrawOptions()).shape == (60, 80, 3)


def test_a_picture_of_thousands_labels_the_surest_that_fit():
    from mrcnn_cli.visualize import MIN_LABELS, _labels_that_fit
    sizes = [(60, 15, 3)] * 20000                        # 900 px² each
    assert _labels_that_fit(sizes, 4096, 4096) == 4096 * 4096 // 4 // 900
    assert _labels_that_fit(sizes, 640, 480) == MIN_LABELS
    assert _labels_that_fit(sizes[:30], 640, 480) == 30
    rng = np.random.default_rng(0)
    xy = rng.integers(0, 1900, (3000, 2))
    det = made(np.column_stack([xy, xy + 40]).tolist(), np.linspace(1, 0.3, 3000), [0] * 3000, size=(2000, 2000))
    drawn = det.plot(np.zeros((2000, 2000, 3), np.uint8), score_thr=0)
    assert drawn.shape == (2000, 2000, 3) and drawn.any()


def drawn_label_rects(det, width, height, **options):
    from mrcnn_cli.visualize import DrawOptions, label_layout
    _, sizes, spots = label_layout(det, width, height, DrawOptions(**options))
    return [(x, y, x + lw, y + lh) for spot, (lw, lh, _) in zip(spots, sizes) if spot is not None for x, y in [spot]]


def test_labels_of_a_crowded_large_scene_stay_small_and_never_cover_each_other():
    """Issue 34: a 4000 x 4000 scene with 400 instances drew 90 px labels that covered the scene."""
    rng = np.random.default_rng(1)
    xy = rng.integers(0, 3900, (400, 2))
    wh = rng.integers(20, 300, (400, 2))
    det = made(np.column_stack([xy, np.minimum(xy + wh, 4000)]).tolist(), np.linspace(0.99, 0.3, 400),
               rng.integers(0, 80, 400).tolist(), size=(4000, 4000))
    rects = drawn_label_rects(det, 4000, 4000)
    assert len(rects) > 200 and overlap_area(rects) == 0
    assert max(y2 - y1 for _, y1, _, y2 in rects) <= 32      # capped: not a banner across the scene
    assert sum((x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in rects) < 0.15 * 4000 * 4000   # was all of it
    assert len(drawn_label_rects(det, 4000, 4000, max_labels=50)) == 50
    big = drawn_label_rects(det, 4000, 4000, label_size=60)
    assert max(y2 - y1 for _, y1, _, y2 in big) > 60 and overlap_area(big) == 0


def test_two_labels_of_one_photo_never_cover_each_other():
    """COCO 000000000802.jpg: "cat 0.87" covered "cat 0.30" (two boxes sharing a corner)."""
    det = made([[10, 40, 200, 300], [12, 42, 150, 250], [14, 44, 120, 200]], [0.87, 0.30, 0.31], [15, 15, 15],
               size=(427, 640))
    rects = drawn_label_rects(det, 640, 427)
    assert len(rects) == 3 and overlap_area(rects) == 0
    drawn = det.plot(np.zeros((427, 640, 3), np.uint8), masks=False, boxes=False)
    ys, xs = np.nonzero(drawn.any(axis=2))                    # what was drawn is the labels, where they were placed
    inside = np.zeros(drawn.shape[:2], bool)
    for x1, y1, x2, y2 in rects:
        inside[y1:y2, x1:x2] = True
    assert len(ys) and inside[ys, xs].all()


def test_track_trails_follow_each_track_in_its_colour_and_forget_old_tracks():
    from mrcnn_cli.visualize import TrackTrails
    trails = TrackTrails(3)

    def frame(*tracks):   # (id, x): a 10x10 box at (x, 40)
        boxes = np.array([[x, 40, x + 10, 50] for _, x in tracks], np.float32).reshape(-1, 4)
        det = Detections(boxes, [0.9] * len(tracks), [0] * len(tracks), [MaskWindow(np.ones((10, 10), bool), 0, 0)]
                         * len(tracks), 100, 200, COCO_CLASSES)
        return det.with_track_ids([t for t, _ in tracks])
    for x in (10, 30, 50, 70):   # track 1 moves right; track 2 is seen in the first frame only
        trails.add(frame((1, x), (2, 150)) if x == 10 else frame((1, x)))
    img = trails.draw(np.zeros((100, 200, 3), np.uint8), line_width=1)
    ys, xs = np.nonzero(np.all(img == class_color(1), axis=2))
    assert xs.min() == 35 and xs.max() == 75 and set(ys) <= {44, 45, 46}   # the last 3 centres: 35, 55, 75 at y 45
    assert not np.any(np.all(img == class_color(2), axis=2))               # track 2 was unseen for 3 frames
    assert list(trails._paths) == [1]                                       # and is forgotten
    untracked = Detections(np.zeros((0, 4), np.float32), [], [], [], 100, 200, COCO_CLASSES)
    trails.add(untracked)
    with pytest.raises(MrcnnError, match='trail must be a whole number of frames'):
        TrackTrails(0)

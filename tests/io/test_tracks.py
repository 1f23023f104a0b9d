"""MOTS txt and YouTube-VIS files, read back with pycocotools' own RLE decoder."""
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mrcnn_cli.engine.detections import Detections
from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.io.coco import COCO_CLASSES, category_ids
from mrcnn_cli.io.tracks import read_mot, read_mots, write_track_files
from mrcnn_cli.ops.paste import MaskWindow

H, W = 40, 60
CLASS_NAMES = dict(zip(category_ids(COCO_CLASSES), COCO_CLASSES))


def tracked(rects, labels, scores, ids):
    """Detections of rectangles (x0, y0, x1, y1) with track ids."""
    windows = [MaskWindow(np.ones((y1 - y0, x1 - x0), bool), x0, y0) for x0, y0, x1, y1 in rects]
    return Detections(np.array(rects, np.float32).reshape(-1, 4), scores, labels, windows, H, W,
                      COCO_CLASSES).with_track_ids(ids)


def frame_record(index, det, source_index=0):
    return {'source_index': source_index, 'frame_index': index, 'height': H, 'width': W,
            'annotations': det.to_coco()}


def decode(counts):
    return mask_utils.decode({'size': [H, W], 'counts': counts.encode()}).astype(bool)


def test_mots_masks_do_not_overlap_and_the_higher_score_keeps_a_contested_pixel(tmp_path):
    person, car, dog = COCO_CLASSES.index('person'), COCO_CLASSES.index('car'), COCO_CLASSES.index('dog')
    det = tracked([(0, 0, 30, 20), (20, 10, 50, 30), (52, 0, 60, 8)], [person, car, dog], [0.6, 0.9, 0.5], [4, 7, 9])
    paths = write_track_files([frame_record(3, det)], tmp_path, {0: 'clip'}, CLASS_NAMES)
    assert paths == [tmp_path / 'mots' / 'clip.txt', tmp_path / 'mot' / 'clip.txt', tmp_path / 'ytvis.json']
    # MOTChallenge boxes: the person only (it scores pedestrians), frames from 1, the detection's box
    assert (tmp_path / 'mot' / 'clip.txt').read_text() == '4,4,0.00,0.00,30.00,20.00,0.6000,-1,-1,-1\n'
    rows = [line.split() for line in (tmp_path / 'mots' / 'clip.txt').read_text().splitlines()]
    assert [r[:5] for r in rows] == [['3', '7', '1', str(H), str(W)], ['3', '4', '2', str(H), str(W)],
                                     ['3', '9', str(100 + category_ids(COCO_CLASSES)[dog]), str(H), str(W)]]
    car_mask, person_mask = decode(rows[0][5]), decode(rows[1][5])
    assert car_mask[10:30, 20:50].all() and car_mask.sum() == 30 * 20          # the surer one keeps all of it
    assert person_mask.sum() == 30 * 20 - 10 * 10 and not (person_mask & car_mask).any()


def test_ytvis_has_one_entry_per_track_with_null_where_it_is_absent(tmp_path):
    person = COCO_CLASSES.index('person')
    frames = [tracked([(0, 0, 10, 10), (30, 0, 40, 10)], [person, person], [0.8, 0.6], [1, 2]),
              tracked([(2, 0, 12, 10)], [person], [0.6], [1]),
              tracked([], [], [], [])]
    other = tracked([(5, 5, 15, 15)], [person], [0.7], [1])
    records = [frame_record(i, d) for i, d in enumerate(frames)] + [frame_record(0, other, source_index=1)]
    write_track_files(records, tmp_path, {0: 'a', 1: 'b'}, CLASS_NAMES)
    entries = json.loads((tmp_path / 'ytvis.json').read_text())
    assert [(e['video_id'], e['track_id'], e['category_id']) for e in entries] == [(1, 1, 1), (1, 2, 1), (2, 1, 1)]
    first, second = entries[0], entries[1]
    assert first['score'] == pytest.approx(0.7) and len(first['segmentations']) == 3
    assert first['segmentations'][2] is None and second['segmentations'][1:] == [None, None]
    assert mask_utils.decode(first['segmentations'][1])[0:10, 2:12].all()
    assert sorted(p.name for p in (tmp_path / 'mots').iterdir()) == ['a.txt', 'b.txt']
    assert [line.split(',')[:2] for line in (tmp_path / 'mot' / 'a.txt').read_text().splitlines()] == \
        [['1', '1'], ['1', '2'], ['2', '1']]


FULL = '0 1 2 40 60 ' + mask_utils.encode(np.asfortranarray(np.ones((40, 60), np.uint8)))['counts'].decode()


@pytest.mark.parametrize('read, text, where', [
    (read_mots, FULL + '\n0 1 2 40\n', 'line 2: not a MOTS line'),
    (read_mots, '0 x 2 40 60 abc\n', 'line 1: frame, id, class_id, height and width must be integers'),
    (read_mots, '\n-1 1 2 40 60 abc\n', 'line 2: frame must be 0 to 100000'),
    (read_mots, FULL + '\n0 2 2 40 61 ' + FULL.split()[-1] + '\n',
     'line 2: a 61x40 image; the file\'s first line says 60x40'),
    (read_mots, '0 1 2 40 60 l7\n', 'line 1: RLE runs do not cover its 40x60 pixels exactly'),   # pycocotools hangs
    (read_mots, '0 1 2 100000 100000 abc\n', 'line 1: a 100000x100000 image is larger than'),
    (read_mot, '1,1,10,10,5,5,1,1,1\n1,2,10,10\n', 'line 2: not a MOTChallenge line'),
    (read_mot, '1,1,10,x,5,5,1,1,1\n', 'line 1: the fields must be numbers'),
    (read_mot, '0,1,10,10,5,5,1,1,1\n', 'line 1: frame must be a whole number from 1'),
    (read_mot, '1,1,10,10,-5,5,1,1,1\n', 'line 1: width and height must not be negative'),
    (read_mot, '1,1,nan,10,5,5,1,1,1\n', 'line 1: the fields must be finite numbers'),
])
def test_a_malformed_line_is_one_error_naming_it(tmp_path, read, text, where):
    path = tmp_path / 'gt.txt'
    path.write_text(text)
    with pytest.raises(MrcnnError, match=where):
        read(path)


def test_a_binary_file_is_not_a_mots_file(tmp_path):
    path = tmp_path / 'gt.txt'
    path.write_bytes(b'\x80\x04\x95 pickle')
    with pytest.raises(MrcnnError, match='not a MOTS txt file'):
        read_mots(path)


def test_ids_twice_in_a_frame_and_overlapping_masks_break_mots_rules():
    from mrcnn_cli.io.tracks import MotsObject, mots_frame_problem

    def obj(frame, track_id, x0):
        mask = np.zeros((H, W), np.uint8, order='F')
        mask[0:10, x0:x0 + 10] = 1
        return MotsObject(frame, track_id, 2, mask_utils.encode(mask))
    assert mots_frame_problem([obj(0, 1, 0), obj(0, 2, 10), obj(1, 1, 5)]) is None
    assert mots_frame_problem([obj(0, 1, 0), obj(0, 1, 20)]) == 'frame 0 has id 1 twice'
    assert mots_frame_problem([obj(3, 1, 0), obj(3, 2, 20), obj(3, 4, 25)]) == \
        'in frame 3 the mask of id 4 overlaps another (MOTS masks do not overlap)'

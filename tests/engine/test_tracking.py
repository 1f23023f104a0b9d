"""The tracker on sequences with exact ground truth (tests/tracking_scenes.py), scored by TrackEval."""
import numpy as np
import pytest

from mrcnn_cli import load, save_tracks
from mrcnn_cli.engine.detections import Detections
from mrcnn_cli.engine.pipeline import StreamItem
from mrcnn_cli.engine.track_metrics import evaluate_mots
from mrcnn_cli.engine.tracking import (
    BotSortTracker,
    MaskTracker,
    TrackOptions,
    make_tracker,
    moved_window,
    tracked_items,
)
from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.io.coco import COCO_CLASSES, category_ids
from mrcnn_cli.io.tracks import write_track_files
from mrcnn_cli.ops.paste import MaskWindow

from helpers import FAST_SCALE
from tracking_scenes import HEIGHT, NO_OCCLUSION, WIDTH, detections_from_truth, detections_of_masks, mots_text, render

pytest.importorskip('trackers')
pytest.importorskip('trackeval')
CLASS_NAMES = dict(zip(category_ids(COCO_CLASSES), COCO_CLASSES))


def track_sequence(name, folder, association, seed=0):
    """Ground truth and tracked results of sequence `name` as MOTS files in folder/gt, folder/<association>."""
    seq = render(name)
    (folder / 'gt').mkdir(parents=True, exist_ok=True)
    (folder / 'gt' / f'{name}.txt').write_text(mots_text(seq))
    tracker = MaskTracker(TrackOptions(association=association), fps=30.0)
    records = [{'source_index': 0, 'frame_index': t, 'height': HEIGHT, 'width': WIDTH,
                'annotations': tracker.update(det, timestamp=t / 30).to_coco()}
               for t, det in enumerate(detections_from_truth(seq, seed=seed))]
    write_track_files(records, folder / association, {0: name}, CLASS_NAMES)


@pytest.mark.slow   # TrackEval on four rendered sequences, five times
def test_sequences_without_occlusion_are_tracked_with_hota_095_and_no_id_switch(tmp_path):
    """HOTA over the four sequences, averaged over five draws of the detector's errors (one draw
    can lose an entering car's first frames: its HOTA is lower), and no id switch in any."""
    hota = {}
    for name in NO_OCCLUSION:   # each sequence rendered once
        for seed in range(5):
            track_sequence(name, tmp_path / str(seed), 'mask', seed)
    for seed in range(5):
        scores = evaluate_mots(tmp_path / str(seed) / 'gt', tmp_path / str(seed) / 'mask')
        print(seed, *scores.table()[1:], sep='\n')
        for cls in scores.classes:
            hota.setdefault(cls, []).append(scores.scores['COMBINED_SEQ'][cls]['HOTA'])
        for name in NO_OCCLUSION:
            present = [row for row in scores.scores[name].values() if row['GT']]
            assert present and all(row['IDSW'] == 0 and row['IDF1'] >= 0.9 for row in present), (seed, name, present)
    assert set(hota) == {'car', 'pedestrian'}
    for cls, values in hota.items():
        assert np.mean(values) >= 0.95 and min(values) >= 0.9, (cls, values)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['crossing', 'occlusion'])
def test_mask_association_is_no_worse_than_box_association(tmp_path, name):
    """Over three draws of the detector's errors: the mean HOTA and the id switches, per class."""
    hota, switches = {}, {}
    for seed in range(3):
        for association in ('mask', 'box'):
            track_sequence(name, tmp_path / str(seed), association, seed)
            scores = evaluate_mots(tmp_path / str(seed) / 'gt', tmp_path / str(seed) / association)
            print(name, seed, association, *scores.table()[1:], sep='\n')
            for cls, row in scores.scores['COMBINED_SEQ'].items():
                hota.setdefault((association, cls), []).append(row['HOTA'])
                switches[association, cls] = switches.get((association, cls), 0) + row['IDSW']
    for association, cls in hota:
        if association == 'mask':
            assert np.mean(hota['mask', cls]) >= np.mean(hota['box', cls]) - 1e-9, cls
            assert switches['mask', cls] <= switches['box', cls], cls


def blob(x, y, w=40, h=60, height=200, width=300):
    mask = np.zeros((height, width), bool)
    mask[max(y, 0):y + h, max(x, 0):x + w] = True
    return mask


def test_ids_start_at_1_follow_objects_and_leave_the_callers_detections_alone():
    tracker = MaskTracker(TrackOptions(), fps=30.0)
    seen = []
    for t in range(6):
        det = detections_of_masks([blob(10 + 5 * t, 20), blob(200 - 5 * t, 100)], [0, 0], [0.9, 0.8])
        before = det.boxes.copy()
        out = tracker.update(det, timestamp=t / 30)
        assert det.track_ids is None and np.array_equal(det.boxes, before)   # a new object, this one untouched
        seen.append(dict(zip(out.boxes[:, 0].round().astype(int).tolist(), out.track_ids.tolist())))
    assert seen[0] == {10: 1, 200: 2} and seen[-1] == {35: 1, 175: 2}
    assert all(sorted(ids.values()) == [1, 2] for ids in seen)


def test_a_missed_detection_is_filled_in_at_the_predicted_place_for_fill_frames():
    tracker = MaskTracker(TrackOptions(fill=1), fps=30.0)
    for t in range(4):
        tracker.update(detections_of_masks([blob(10 + 6 * t, 20)], [0], [0.9]), timestamp=t / 30)
    empty = detections_of_masks([], [], [])
    filled = tracker.update(empty, timestamp=4 / 30)
    assert filled.track_ids.tolist() == [1] and abs(filled.boxes[0, 0] - 34) <= 1   # moved on at 6 px per frame
    assert filled.mask(0).sum() == 40 * 60
    assert len(tracker.update(empty, timestamp=5 / 30)) == 0          # fill=1: one frame only
    back = tracker.update(detections_of_masks([blob(46, 20)], [0], [0.9]), timestamp=6 / 30)
    assert back.track_ids.tolist() == [1]                              # found again: the same id


def test_tracks_are_class_aware():
    tracker = MaskTracker(TrackOptions(), fps=30.0)
    for t in (0, 1):
        tracker.update(detections_of_masks([blob(10, 20)], [0], [0.9]), timestamp=t / 30)
    for t in (2, 3):   # a car where the person was: a track of its own, never the person's
        out = tracker.update(detections_of_masks([blob(10 + t, 20)], [2], [0.9]), timestamp=t / 30)
    assert sorted(zip(out.track_ids.tolist(), out.class_names)) == [(1, 'person'), (2, 'car')]   # the person filled in


def test_empty_frames_give_no_tracks_and_no_error():
    tracker = MaskTracker(TrackOptions(), fps=30.0)
    for t in range(3):
        out = tracker.update(Detections.empty(200, 300, COCO_CLASSES), timestamp=t / 30)
        assert len(out) == 0 and out.track_ids is not None


def test_moved_window_is_cut_to_the_frame():
    win = MaskWindow(np.ones((10, 10), bool), 5, 5)
    moved = moved_window(win, -10, 0, 50, 50)
    assert moved.mask.shape == (10, 5) and (moved.x0, moved.y0) == (0, 5)
    assert moved_window(win, 100, 0, 50, 50) is None


@pytest.mark.parametrize('options, message', [(TrackOptions(tracker='sort'), "unknown tracker 'sort'"),
                                               (TrackOptions(association='iou'), 'association must be one of'),
                                               (TrackOptions(track_thr=2.0), 'track_thr must be between')])
def test_bad_options_are_one_error(options, message):
    with pytest.raises(MrcnnError, match=message):
        MaskTracker(options)


def test_frames_between_vid_stride_steps_show_the_last_tracked_detections():
    dets = [detections_of_masks([blob(10 + 5 * t, 20)], [0], [0.9]) for t in range(6)]
    items = [StreamItem('v.mp4', 'video', t, detections=dets[t - t % 2], inferred=t % 2 == 0) for t in range(6)]
    out = list(tracked_items(items, TrackOptions()))
    assert [item.detections.track_ids.tolist() for item in out] == [[1]] * 6
    assert out[1].detections is out[0].detections and out[3].detections is out[2].detections


@pytest.mark.slow   # 10,000 frames
def test_track_state_stays_bounded_over_a_long_stream():
    """10,000 frames of objects coming and going: the tracker holds only the live and recently lost tracks."""
    rng = np.random.default_rng(0)
    tracker = MaskTracker(TrackOptions(buffer=10), fps=30.0)
    most = 0
    for t in range(10_000):
        starts = [(k * 50 + (t // 40) * 97) % 260 for k in range(3)]   # three objects, others every 40 frames
        masks = [blob(x, 10 + 60 * k, 20, 30) for k, x in enumerate(starts) if rng.random() > 0.1]
        tracker.update(detections_of_masks(masks, [0] * len(masks), [0.9] * len(masks)), timestamp=t / 30)
        most = max(most, len(tracker._library.tracks))
    assert most <= 3 * 2 + 3


def test_identities_survive_indexing_serialising_and_drawing():
    det = detections_of_masks([blob(10, 20), blob(100, 50)], [0, 2], [0.9, 0.6]).with_track_ids([7, 3])
    assert det.filter(score_thr=0.7).track_ids.tolist() == [7] and det[[1, 0]].track_ids.tolist() == [3, 7]
    assert [e['track_id'] for e in det.to_coco()] == [7, 3]
    assert Detections.from_dict(det.to_dict()).track_ids.tolist() == [7, 3]
    assert det.resize(150, 100).track_ids.tolist() == [7, 3]
    plain = det.with_track_ids(None)
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    assert not np.array_equal(det.plot(image, conf=False), plain.plot(image, conf=False))   # 'id:7 person', own colour
    with pytest.raises(ValueError, match='one row per detection'):
        det.with_track_ids([1])


@pytest.mark.slow   # the model on three frames
def test_predictor_track_is_stream_with_a_tracker(checkpoint, tmp_path):
    model = load(weights=checkpoint('r50'), style='pytorch', device='cpu', scale=FAST_SCALE)
    frames = [f[::2, ::2].copy() for f in render('crossing').frames[:3]]
    items = list(model.track(frames))
    assert [item.source_index for item in items] == [0, 1, 2]   # arrays given together: one sequence
    tracker = MaskTracker(TrackOptions(), fps=30.0)
    for item in items:
        expected = tracker.update(model(item.image, score_thr=0.1))
        assert item.detections.track_ids.tolist() == expected.track_ids.tolist()
        assert np.array_equal(item.detections.boxes, expected.boxes)
    assert len(items[0].detections) > 0
    paths = save_tracks(items, tmp_path)
    assert paths == [tmp_path / 'mots' / 'arrays.txt', tmp_path / 'mot' / 'arrays.txt', tmp_path / 'ytvis.json']
    frames_written = {int(line.split()[0]) for line in paths[0].read_text().splitlines()}
    assert frames_written == {i for i, item in enumerate(items) if len(item.detections)}
    with pytest.raises(TypeError, match="'tile'"):
        model.track(frames, tile=512)
    with pytest.raises(MrcnnError, match="unknown tracker 'sort'"):
        model.track(frames, tracker='sort')


@pytest.mark.slow
def test_botsort_is_the_librarys_own_and_tracks_the_constant_sequence(tmp_path):
    seq = render('constant')
    (tmp_path / 'gt.txt').write_text(mots_text(seq))
    tracker = make_tracker(TrackOptions(tracker='botsort'), 30.0)
    records = []
    for t, det in enumerate(detections_from_truth(seq)):
        tracked = tracker.update(det, timestamp=t / 30, image=seq.frames[t])   # the frame: camera-motion compensation
        assert set(tracked.track_ids.tolist()) <= {1, 2} and np.all(np.diff(tracked.scores) <= 0)
        records.append({'source_index': 0, 'frame_index': t, 'height': HEIGHT, 'width': WIDTH,
                        'annotations': tracked.to_coco()})
    write_track_files(records, tmp_path, {0: 'constant'}, CLASS_NAMES)
    scores = evaluate_mots(tmp_path / 'gt.txt', tmp_path / 'mots' / 'constant.txt')
    print(*scores.table(), sep='\n')
    assert all(row['IDSW'] == 0 and row['IDF1'] >= 0.8 for row in scores.scores['COMBINED_SEQ'].values())


def test_botsort_refuses_mask_association_in_one_line():
    with pytest.raises(MrcnnError, match='BoT-SORT matches by box IoU'):
        make_tracker(TrackOptions(tracker='botsort', association='mask'))
    assert isinstance(make_tracker(TrackOptions(tracker='botsort', association='box')), BotSortTracker)


@pytest.mark.parametrize('gap, ids_after', [(25, [[1], [1]]), (40, [[], [2]])])
def test_a_track_outlives_a_gap_in_time_up_to_its_buffer(gap, ids_after):
    """A live stream that was away: its frame numbers, the tracker's time, skip the gap; a lost track
    waits `buffer` frames' time (30 at 30 fps), then a new id starts."""
    tracker = MaskTracker(TrackOptions(buffer=30), fps=30.0)
    for t in range(3):
        tracker.update(detections_of_masks([blob(10, 20)], [0], [0.9]), timestamp=t / 30)
    after = [tracker.update(detections_of_masks([blob(10, 20)], [0], [0.9]), timestamp=(2 + gap + k) / 30).track_ids
             for k in range(2)]
    assert [ids.tolist() for ids in after] == ids_after

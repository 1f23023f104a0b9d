"""`mrcnn eval track` against TrackEval's own run on the same files (its documented KITTI MOTS layout)."""
import contextlib
import io
import json

import numpy as np
import pytest

from mrcnn_cli.engine.tracking import MaskTracker, TrackOptions
from mrcnn_cli.io.coco import COCO_CLASSES, category_ids
from mrcnn_cli.io.tracks import write_track_files

from helpers import mrcnn
from tracking_scenes import HEIGHT, WIDTH, detections_from_truth, mots_text, render

trackeval = pytest.importorskip('trackeval')
pytest.importorskip('trackers')
SEQUENCES = {'0000': 'constant', '0001': 'crossing'}


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """Ground truth (KITTI MOTS layout, with its seqmap) and tracked results of two sequences."""
    root = tmp_path_factory.mktemp('mots')
    seqmap = []
    for seq, name in SEQUENCES.items():
        scene = render(name)
        (root / 'gt' / 'label_02').mkdir(parents=True, exist_ok=True)
        (root / 'gt' / 'label_02' / f'{seq}.txt').write_text(mots_text(scene))
        seqmap.append(f'{seq} empty 000000 {len(scene.frames) - 1:06d}\n')
        tracker = MaskTracker(TrackOptions(), fps=30.0)
        records = [{'source_index': 0, 'frame_index': t, 'height': HEIGHT, 'width': WIDTH,
                    'annotations': tracker.update(det, timestamp=t / 30).to_coco()}
                   for t, det in enumerate(detections_from_truth(scene, seed=1))]
        write_track_files(records, root / 'run', {0: seq}, dict(zip(category_ids(COCO_CLASSES), COCO_CLASSES)))
    (root / 'gt' / 'evaluate_mots.seqmap.val').write_text(''.join(seqmap))
    (root / 'trackers' / 'mine').mkdir(parents=True)
    (root / 'run' / 'mots').rename(root / 'trackers' / 'mine' / 'data')
    return root


def trackevals_own_run(root):
    """TrackEval as its KITTI MOTS script runs it: its default configs, only the folders set."""
    evaluator = trackeval.Evaluator({**trackeval.Evaluator.get_default_eval_config(), 'USE_PARALLEL': False,
                                     'PRINT_RESULTS': False, 'OUTPUT_SUMMARY': False, 'OUTPUT_DETAILED': False,
                                     'PLOT_CURVES': False})
    dataset = trackeval.datasets.KittiMOTS({**trackeval.datasets.KittiMOTS.get_default_dataset_config(),
                                            'GT_FOLDER': str(root / 'gt'), 'TRACKERS_FOLDER': str(root / 'trackers'),
                                            'OUTPUT_FOLDER': str(root / 'out')})
    with contextlib.redirect_stdout(io.StringIO()):
        results, _ = evaluator.evaluate([dataset], [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR(),
                                                    trackeval.metrics.Identity()])
    return results['KittiMOTS']['mine']


def test_eval_track_gives_trackevals_own_numbers(files, tmp_path):
    out = tmp_path / 'scores.json'
    proc = mrcnn('eval', 'track', files / 'gt' / 'label_02', files / 'trackers' / 'mine' / 'data', '--out', out)
    assert proc.returncode == 0, proc.stderr
    assert 'HOTA' in proc.stdout and '2 sequences evaluated by TrackEval' in proc.stdout
    ours = json.loads(out.read_text())['scores']
    theirs = trackevals_own_run(files)
    for seq in [*SEQUENCES, 'COMBINED_SEQ']:
        for cls in ('car', 'pedestrian'):
            row, reference = ours[seq][cls], theirs[seq][cls]
            assert row['HOTA'] == pytest.approx(np.mean(reference['HOTA']['HOTA']), abs=1e-12)
            assert row['DetA'] == pytest.approx(np.mean(reference['HOTA']['DetA']), abs=1e-12)
            assert row['AssA'] == pytest.approx(np.mean(reference['HOTA']['AssA']), abs=1e-12)
            assert row['IDF1'] == pytest.approx(reference['Identity']['IDF1'], abs=1e-12)
            assert row['MOTA'] == pytest.approx(reference['CLEAR']['MOTA'], abs=1e-12)
            assert row['IDSW'] == reference['CLEAR']['IDSW']
    assert ours['COMBINED_SEQ']['pedestrian']['HOTA'] > 0.5      # a real score, not an empty match


def test_a_malformed_ground_truth_line_is_one_error_line(files, tmp_path):
    lines = (files / 'gt' / 'label_02' / '0000.txt').read_text().splitlines()
    lines[4] = lines[4].replace(' ', ',', 2)
    bad = tmp_path / '0000.txt'
    bad.write_text('\n'.join(lines) + '\n')
    proc = mrcnn('eval', 'track', bad, files / 'trackers' / 'mine' / 'data' / '0000.txt', '--out', tmp_path / 's.json')
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f'error: {bad}, line 5: not a MOTS line (frame id class_id height width rle: 6 fields, not 4)']
    assert not (tmp_path / 's.json').exists()


def mot_ground_truth(scene):
    """MOTChallenge gt.txt of a scene: every visible object's box, people as pedestrians (1), cars 3."""
    lines = []
    for t, objects in enumerate(scene.truth):
        for track_id, name, mask in objects:
            ys, xs = np.nonzero(mask)
            left, top = xs.min(), ys.min()
            lines.append(f'{t + 1},{track_id},{left},{top},{xs.max() + 1 - left},{ys.max() + 1 - top},1,'
                         f'{1 if name == "person" else 3},1.0')
    return ''.join(line + '\n' for line in lines)


def test_eval_track_scores_motchallenge_boxes_as_trackeval_does(files, tmp_path):
    """MOTChallenge boxes: mrcnn's mot/ files against box ground truth, as TrackEval scores them in
    its own MOT17 layout (seqinfo.ini, seqmap)."""
    root = tmp_path / 'mot'
    seqmap = ['name']
    for seq, name in SEQUENCES.items():
        scene = render(name)
        folder = root / 'gt' / 'MOT17-train' / f'MOT17-{seq}'
        (folder / 'gt').mkdir(parents=True)
        (folder / 'gt' / 'gt.txt').write_text(mot_ground_truth(scene))
        (folder / 'seqinfo.ini').write_text(f'[Sequence]\nname=MOT17-{seq}\nseqLength={len(scene.frames)}\n')
        seqmap.append(f'MOT17-{seq}')
        results = root / 'trackers' / 'MOT17-train' / 'mine' / 'data'
        results.mkdir(parents=True, exist_ok=True)
        (results / f'MOT17-{seq}.txt').write_text((files / 'run' / 'mot' / f'{seq}.txt').read_text())
    (root / 'gt' / 'seqmaps').mkdir()
    (root / 'gt' / 'seqmaps' / 'MOT17-train.txt').write_text('\n'.join(seqmap) + '\n')
    out = tmp_path / 'scores.json'
    proc = mrcnn('eval', 'track', root / 'gt' / 'MOT17-train' / 'MOT17-0000' / 'gt' / 'gt.txt',
                 root / 'trackers' / 'MOT17-train' / 'mine' / 'data' / 'MOT17-0000.txt', '--out', out)
    assert proc.returncode == 0, proc.stderr
    ours = json.loads(out.read_text())['scores']['COMBINED_SEQ']['pedestrian']
    evaluator = trackeval.Evaluator({**trackeval.Evaluator.get_default_eval_config(), 'USE_PARALLEL': False,
                                     'PRINT_RESULTS': False, 'OUTPUT_SUMMARY': False, 'OUTPUT_DETAILED': False,
                                     'PLOT_CURVES': False})
    dataset = trackeval.datasets.MotChallenge2DBox({
        **trackeval.datasets.MotChallenge2DBox.get_default_dataset_config(), 'GT_FOLDER': str(root / 'gt'),
        'TRACKERS_FOLDER': str(root / 'trackers'), 'OUTPUT_FOLDER': str(tmp_path / 'te')})
    with contextlib.redirect_stdout(io.StringIO()):
        results, _ = evaluator.evaluate([dataset], [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR(),
                                                    trackeval.metrics.Identity()])
    reference = results['MotChallenge2DBox']['mine']['MOT17-0000']['pedestrian']
    assert ours['HOTA'] == pytest.approx(np.mean(reference['HOTA']['HOTA']), abs=1e-12) and ours['HOTA'] > 0.5
    assert ours['IDF1'] == pytest.approx(reference['Identity']['IDF1'], abs=1e-12)
    assert ours['MOTA'] == pytest.approx(reference['CLEAR']['MOTA'], abs=1e-12)
    assert ours['IDSW'] == reference['CLEAR']['IDSW']

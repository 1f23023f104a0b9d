"""io.results_log on its own: the predictions log's lines, scans, resumes and the COCO document
assembled from one or several logs (pycocotools reads it back)."""
import contextlib
import io
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO

from mrcnn_cli import MrcnnError
from mrcnn_cli.io.results_log import ResultsLog, merge_logs, scan, unfinished_parts, write_document

HEADER = {'model': 'R-50 pytorch', 'weights_sha256': 'ab' * 32, 'classes': ['person', 'car'], 'inputs': {'count': 4},
          'partition': [0, 1]}


def entry(score, category_id=1, size=(4, 6)):
    mask = np.zeros(size, np.uint8, order='F')
    mask[1:3, 1:4] = 1
    rle = mask_util.encode(mask)
    return {'image_id': 99, 'category_id': category_id, 'bbox': [1.0, 1.0, 3.0, 2.0], 'score': score,
            'segmentation': {'size': list(size), 'counts': rle['counts'].decode('ascii')}, 'area': 6}


def test_lines_scan_and_a_line_cut_by_a_crash(tmp_path):
    path = tmp_path / 'predictions.jsonl'
    log = ResultsLog(path, HEADER)
    log.add(0, 'a.jpg', 6, 4, [entry(0.9)])
    log.add(1, 'clip.mp4#0', 6, 4, [entry(0.8)], frame_index=0, video='clip.mp4')
    log.failed(2, 'not a readable image')
    log.add(3, 'd.jpg', 6, 4, [])
    log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]['format'] == 'mrcnn predictions log 1' and lines[0]['model'] == 'R-50 pytorch'
    assert 'image_id' not in lines[1]['annotations'][0]          # the document numbers the images
    found = scan(path)
    assert found.done == {0, 3} and found.unfinished_videos == [1] and found.failed == {2}
    assert found.complete_bytes == path.stat().st_size
    with open(path, 'a') as f:
        f.write('{"source_index": 9, "file_na')                 # cut mid-line by a kill
    assert scan(path).complete_bytes == found.complete_bytes and scan(path).done == {0, 3}


def test_resume_keeps_finished_inputs_drops_the_rest_and_refuses_another_run(tmp_path):
    path = tmp_path / 'predictions.jsonl'
    log = ResultsLog(path, HEADER)
    log.add(0, 'a.jpg', 6, 4, [entry(0.9)])
    log.add(1, 'clip.mp4#0', 6, 4, [entry(0.8)], frame_index=0, video='clip.mp4')   # never ended
    log.failed(2, 'broken')
    log.close()
    again = ResultsLog(path, HEADER, resume=True)
    assert again.done == {0} and again.restarted == [1]
    again.close()
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r.get('source_index') for r in kept] == [None, 0]     # the unfinished video and the failure go
    with pytest.raises(MrcnnError, match=r"written by another run \(model 'R-50 pytorch', now 'R-101 pytorch'\)"):
        ResultsLog(path, dict(HEADER, model='R-101 pytorch'), resume=True)
    (tmp_path / 'other.jsonl').write_text('{"not": "a log"}\n')
    with pytest.raises(MrcnnError, match='is not an mrcnn predictions log'):
        ResultsLog(tmp_path / 'other.jsonl', HEADER, resume=True)


def test_the_document_is_coco_and_shards_merge_in_input_order(tmp_path):
    for rank in (0, 1):
        log = ResultsLog(tmp_path / f'predictions.shard-{rank}-of-2.jsonl', dict(HEADER, partition=[rank, 2]))
        for index in range(rank, 4, 2):
            log.add(index, f'img{index}.jpg', 6, 4, [entry(0.9 - index / 10, category_id=1 + index % 2)])
        log.close()
    out = merge_logs(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(out))
    assert [coco.imgs[i]['file_name'] for i in sorted(coco.imgs)] == [f'img{i}.jpg' for i in range(4)]
    assert sorted(coco.cats) == [1, 2] and coco.cats[2]['name'] == 'car'
    assert [a['score'] for a in coco.loadAnns(sorted(coco.anns))] == pytest.approx([0.9, 0.8, 0.7, 0.6])
    assert mask_util.decode(coco.anns[1]['segmentation']).sum() == 6
    single = tmp_path / 'single.json'
    write_document(sorted(tmp_path.glob('predictions.shard-*.jsonl')), single, HEADER['classes'])
    assert json.loads(single.read_text()) == json.loads(out.read_text())


def test_unfinished_parts_are_named_and_not_merged(tmp_path):
    for rank, done in ((0, [0, 2]), (1, [1])):
        log = ResultsLog(tmp_path / f'predictions.shard-{rank}-of-2.jsonl', dict(HEADER, partition=[rank, 2]))
        for index in done:
            log.add(index, f'img{index}.jpg', 6, 4, [])
        log.close()
    (part,) = unfinished_parts(sorted(tmp_path.glob('*.jsonl')))
    assert (part.rank, part.done, part.inputs) == (1, 1, 2)
    with pytest.raises(MrcnnError, match=r'predictions.shard-1-of-2.jsonl is not finished \(1 of 2 inputs done\)'):
        merge_logs(tmp_path)
    with pytest.raises(MrcnnError, match=r'2 of 3 parts are missing .* \(part 1 first\)'):
        log = ResultsLog(tmp_path / 'x' / 'predictions.shard-0-of-3.jsonl', dict(HEADER, partition=[0, 3]))
        log.close()
        merge_logs(tmp_path / 'x')

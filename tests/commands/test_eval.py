"""`mrcnn eval coco`: pycocotools' official example, the full loop on both backends, sharding."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import COCO_IMAGES, SHARED
from helpers import FAST, FAST_SCALE, assert_one_error_line, mrcnn, mrcnn_here

VAL2014 = SHARED / 'data' / 'val2014_100'
TINY8 = SHARED / 'data' / 'coco_mini_val2017' / 'annotations' / 'instances_val2017_tiny8.json'
MINI = SHARED / 'data' / 'coco_mini_val2017' / 'annotations' / 'instances_val2017.json'


def official_numbers(kind):
    text = (VAL2014 / 'val2014_fake_eval_res.txt').read_text()
    block = text.split(f'type={kind}')[1].split('-----')[0]
    return [float(v) for v in re.findall(r'= (\d\.\d+)', block)]


def printed_numbers(stdout, kind):
    block = stdout.split(f'--- {kind} ---')[1].split('---')[0]
    return [float(v) for v in re.findall(r'= (\d\.\d+)', block)]


@pytest.mark.parametrize('kind,results', [('bbox', 'instances_val2014_fakebbox100_results.json'),
                                          ('segm', 'instances_val2014_fakesegm100_results.json')])
def test_reproduces_pycocotools_official_example(kind, results, tmp_path):
    proc = mrcnn_here('eval', 'coco', '--ann', VAL2014 / 'instances_val2014_100.json', '--results', VAL2014 / results,
                      '--out', tmp_path, '--model', 'mask-rcnn_r50_fpn_1x_coco', '--classwise')
    assert proc.returncode == 0, proc.stderr
    assert 'the results name 99 of the 100 images' in proc.stderr   # scored on all 100, as the example is
    expected = official_numbers(kind)
    assert len(expected) == 12 and expected[0] == {'bbox': 0.505, 'segm': 0.320}[kind]
    assert printed_numbers(proc.stdout, kind) == expected
    # --out and --model are honoured with --results: metrics.json there, the published AP beside
    metrics = _metrics(tmp_path)
    assert [round(v, 3) for v in metrics[kind].values()] == expected
    assert metrics['published'] == {'bbox': 0.382, 'segm': 0.347}
    name = {'bbox': 'box', 'segm': 'mask'}[kind]
    assert re.search(rf'^{name} AP {expected[0]:.3f}, published 0\.3\d\d', proc.stdout, re.M)
    check_per_class_against_pycocotools(kind, VAL2014 / results, metrics['per_class'][kind], proc.stdout)


def check_per_class_against_pycocotools(kind, results, per_class, stdout):
    """Each category's AP/AP50/AP75/AR100 equals pycocotools' own evaluation restricted to it."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(VAL2014 / 'instances_val2014_100.json'))
        dt = gt.loadRes(str(results))
    assert list(per_class) == [gt.cats[c]['name'] for c in sorted(gt.getCatIds())]
    by_gt = sorted(gt.getCatIds(), key=lambda c: -len(gt.getAnnIds(catIds=[c])))
    empty = [c for c in gt.getCatIds() if not gt.getAnnIds(catIds=[c])]
    for cat in by_gt[:3] + by_gt[len(by_gt) // 2:len(by_gt) // 2 + 1] + empty[:1]:
        ev = COCOeval(gt, dt, kind)
        ev.params.catIds = [cat]
        with contextlib.redirect_stdout(io.StringIO()):
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        ours = per_class[gt.cats[cat]['name']]
        theirs = dict(zip(('AP', 'AP50', 'AP75'), ev.stats[:3])) | {'AR100': ev.stats[8]}
        for metric, value in theirs.items():
            assert (ours[metric] is None) if value == -1 else ours[metric] == pytest.approx(value, abs=1e-12), \
                (gt.cats[cat]['name'], metric)
        ap = ours['AP']
        row = re.search(rf'^{re.escape(gt.cats[cat]["name"])}\s+(.*)$', stdout, re.M).group(1).split()
        assert row[0 if kind == 'bbox' else 2] == ('-' if ap is None else f'{ap:.3f}')


def test_results_with_unknown_ids_and_bad_files(tmp_path):
    ann = VAL2014 / 'instances_val2014_100.json'
    entries = json.loads((VAL2014 / 'instances_val2014_fakebbox100_results.json').read_text())
    for field, value, message in (('image_id', 999999999, 'image ids that are not in the annotation file'),
                                  ('category_id', 12, 'category ids that are not in the annotation file')):
        bad = tmp_path / f'{field}.json'
        bad.write_text(json.dumps([dict(entries[0], **{field: value})] + entries[1:]))
        assert_one_error_line(mrcnn_here('eval', 'coco', '--ann', ann, '--results', bad), message)
    broken = tmp_path / 'broken.json'
    broken.write_text('{"images": [')
    fake = VAL2014 / 'instances_val2014_fakebbox100_results.json'
    assert_one_error_line(mrcnn_here('eval', 'coco', '--ann', broken, '--results', fake), 'not valid JSON')
    assert_one_error_line(mrcnn_here('eval', 'coco', '--ann', tmp_path / 'nope.json', '--results', broken),
                          'annotation file not found')
    (tmp_path / 'list.json').write_text('[1, 2]')
    assert_one_error_line(mrcnn_here('eval', 'coco', '--ann', tmp_path / 'list.json', '--results', broken),
                          'not a COCO annotation file')


def _metrics(out):
    return json.loads((out / 'metrics.json').read_text())


@pytest.mark.slow
def test_full_loop_on_both_backends(tmp_path, checkpoint, exported):
    outs = {}
    for backend, args in (('torch', ['--weights', checkpoint('r50')]), ('onnx', ['--onnx', exported('r50')])):
        out = tmp_path / backend
        proc = mrcnn_here('eval', 'coco', '--ann', TINY8, '--images', COCO_IMAGES, '--backend', backend, *args, *FAST,
                          '--max-images', 5,
                     '--device', 'cpu', '--out', out)
        assert proc.returncode == 0, proc.stderr
        assert printed_numbers(proc.stdout, 'bbox') and printed_numbers(proc.stdout, 'segm')
        outs[backend] = out
    from pycocotools.coco import COCO
    gt = COCO(str(TINY8))
    results = json.loads((outs['torch'] / 'results.json').read_text())
    assert results and gt.loadRes(results)   # official results format, loadable
    assert {r['image_id'] for r in results} <= set(gt.getImgIds())
    assert all(isinstance(r['segmentation']['counts'], str) and len(r['bbox']) == 4 for r in results)
    assert all(r['score'] > 0.05 for r in results)
    m_torch, m_onnx = _metrics(outs['torch']), _metrics(outs['onnx'])
    assert m_torch['images_evaluated'] == 5
    # what produced the numbers
    assert (m_torch['backend'], m_torch['precision'], m_torch['scale']) == ('torch', 'fp32', list(FAST_SCALE))
    assert (m_onnx['backend'], m_onnx['scale']) == ('onnx', list(FAST_SCALE)) and len(m_torch['weights_sha256']) == 64
    for kind in ('bbox', 'segm'):
        for name, value in m_torch[kind].items():
            assert value == pytest.approx(m_onnx[kind][name], abs=0.005), (kind, name)


@pytest.mark.slow
def test_missing_images_resume_and_shards(tmp_path, checkpoint):
    images = tmp_path / 'images'
    images.mkdir()
    ids = sorted(img['id'] for img in json.loads(TINY8.read_text())['images'])[:3]
    names = {img['id']: img['file_name'] for img in json.loads(TINY8.read_text())['images']}
    for i in ids[:2]:
        os.symlink(COCO_IMAGES / names[i], images / names[i])
    out = tmp_path / 'out'
    base = ['eval', 'coco', '--ann', TINY8, '--images', images, '--weights', checkpoint('r50'), '--device', 'cpu',
            *FAST, '--max-images', 3, '--out', out]
    proc = mrcnn_here(*base)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert f'1 of 3 images missing or unreadable, not evaluated: {names[ids[2]]}' in proc.stderr
    first = _metrics(out)
    assert first['images_evaluated'] == 2 and first['images_missing'] == [names[ids[2]]]
    # resume: nothing left to predict for the two readable images, same numbers
    proc = mrcnn_here(*base, '--resume')
    assert proc.returncode == 1 and _metrics(out)['bbox'] == first['bbox']
    records = [json.loads(line) for line in (out / 'results.partial.jsonl').read_text().splitlines()]
    assert records[0]['format'].startswith('mrcnn predictions log') and records[0]['scale'] == list(FAST_SCALE)
    assert sum('annotations' in r for r in records) == 2 and sum('failed' in r for r in records) == 1
    # the same --out again without --resume: refused, as predict refuses it, and nothing overwritten
    before = (out / 'metrics.json').read_bytes()
    assert_one_error_line(mrcnn_here(*base), 'holds the results of another run (metrics.json)')
    assert (out / 'metrics.json').read_bytes() == before
    # resuming with other options would mix two runs' results: refused, naming what differs
    proc = mrcnn_here(*base, '--scale', '800,480', '--resume')   # the last --scale counts
    assert proc.returncode == 1 and 'written by another run (scale [640, 384], now [800, 480])' in proc.stderr
    # two shards written separately and evaluated together give the same metrics
    shards = tmp_path / 'shards'
    proc = mrcnn_here(*base[:-1], shards, '--shard', '0/2')
    assert proc.returncode == 0 and f'--merge {shards}' in proc.stdout, proc.stderr
    assert_one_error_line(mrcnn_here('eval', 'coco', '--ann', TINY8, '--merge', shards), '1 of 2 parts are missing')
    proc = mrcnn_here(*base[:-1], shards, '--shard', '1/2')
    assert proc.returncode == 0, proc.stderr
    proc = mrcnn_here('eval', 'coco', '--ann', TINY8, '--merge', shards)   # from the parts' logs
    assert proc.returncode == 1 and f'1 of 3 images missing or unreadable, not evaluated: {names[ids[2]]}' in \
        proc.stderr
    merged_metrics = _metrics(shards)
    assert (merged_metrics['bbox'], merged_metrics['segm']) == (first['bbox'], first['segm'])
    assert merged_metrics['parts'] == 2 and merged_metrics['scale'] == list(FAST_SCALE)
    assert_one_error_line(mrcnn_here('eval', 'coco', '--ann', MINI, '--merge', shards), 'was written for other images')
    proc = mrcnn_here('eval', 'coco', '--ann', TINY8, '--results', str(tmp_path / 'shards' / 'results.shard-*.json'),
                      '--covered-only', '--out', tmp_path / 'merged')
    assert proc.returncode == 0, proc.stderr
    # the shards' results name the two readable images, which the one run evaluated: the same numbers
    assert _metrics(tmp_path / 'merged')['bbox'] == first['bbox'] and _metrics(tmp_path / 'merged')['segm'] == \
        first['segm']
    merged = sorted((r['image_id'], r['score']) for k in (0, 1)
                    for r in json.loads((tmp_path / 'shards' / f'results.shard-{k}-of-2.json').read_text()))
    single = sorted((r['image_id'], r['score']) for r in json.loads((out / 'results.json').read_text()))
    assert merged == single


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tmp_path, checkpoint):
    common = ['--ann', TINY8, '--images', COCO_IMAGES, '--weights', checkpoint('r50'), '--max-images', 2, *FAST]
    env = dict(os.environ, OMP_NUM_THREADS='1')  # same thread count, same float reduction order
    single = tmp_path / 'single'
    proc = mrcnn('eval', 'coco', *common, '--device', 'cpu', '--out', single, env=env)
    assert proc.returncode == 0, proc.stderr
    multi = tmp_path / 'multi'
    proc = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc-per-node', '2',
                           '--master-port', '29517', '-m', 'mrcnn_cli', 'eval', 'coco', *map(str, common),
                           '--out', str(multi)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (multi / 'results.rank0.partial.jsonl').exists() and (multi / 'results.rank1.partial.jsonl').exists()
    assert json.loads((multi / 'results.json').read_text()) == json.loads((single / 'results.json').read_text())
    assert _metrics(multi)['bbox'] == _metrics(single)['bbox'] and _metrics(multi)['segm'] == _metrics(single)['segm']


def test_results_that_name_part_of_the_images_are_said_and_scorable_alone(tmp_path):
    """Perfect results for 5 of the 79 images: scored as COCO does (the other 74 found nothing) with
    one warning line naming the coverage, recorded in metrics.json; --covered-only gives AP 1 on the 5."""
    from pycocotools.coco import COCO
    gt = COCO(str(MINI))
    chosen = sorted(gt.getImgIds())[:5]
    perfect = [{'image_id': a['image_id'], 'category_id': a['category_id'], 'bbox': a['bbox'], 'score': 1.0,
                'segmentation': gt.annToRLE(a)} for a in gt.loadAnns(gt.getAnnIds(imgIds=chosen, iscrowd=False))]
    for r in perfect:
        r['segmentation']['counts'] = r['segmentation']['counts'].decode('ascii')
    results = tmp_path / 'perfect.json'
    results.write_text(json.dumps(perfect))
    proc = mrcnn_here('eval', 'coco', '--ann', MINI, '--results', results, '--out', tmp_path / 'all')
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if line.startswith('warning:')]
    assert len(notes) == 1 and 'the results name 5 of the 79 images' in notes[0] and '--covered-only' in notes[0]
    every = _metrics(tmp_path / 'all')
    assert (every['images_evaluated'], every['images_total'], every['images_with_results']) == (79, 79, 5)
    assert every['bbox']['AP'] < 0.2 and '79 of 79 images evaluated' in proc.stdout
    proc = mrcnn_here('eval', 'coco', '--ann', MINI, '--results', results, '--covered-only', '--out',
                      tmp_path / 'covered')
    assert proc.returncode == 0 and 'warning' not in proc.stderr, proc.stderr
    covered = _metrics(tmp_path / 'covered')
    assert covered['bbox']['AP'] == pytest.approx(1.0) and covered['segm']['AP'] == pytest.approx(1.0)
    assert covered['images_evaluated'] == 5 and covered['images_scored'] == 'those the results name'

"""`mrcnn eval coco`: COCO box and mask AP with pycocotools, resumable and sharded inference."""
from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from mrcnn_cli.engine.distributed import partition, process_group
from mrcnn_cli.engine.stream import StreamOptions, stream_sources
from mrcnn_cli.errors import MrcnnError, first_line
from mrcnn_cli.io.coco import category_ids
from mrcnn_cli.io.coco_checks import check_annotations
from mrcnn_cli.io.coco_checks import check_results as check_result_entries
from mrcnn_cli.io.files import read_json, write_json
from mrcnn_cli.io.images import MAX_PIXELS
from mrcnn_cli.io.results_log import ResultsLog, check_parts, find_logs, result_records, scan
from mrcnn_cli.io.sources import IMAGE, Source

METRICS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl')


def load_ground_truth(path):
    """pycocotools COCO for an annotation file, with one-line errors for what is wrong with it."""
    from pycocotools.coco import COCO
    data = read_json(path, 'annotation file')
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ('images', 'annotations', 'categories')):
        raise MrcnnError(f"{path}: not a COCO annotation file (needs 'images', 'annotations' and 'categories' lists)")
    check_annotations(data, path)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            coco.createIndex()
        except Exception as e:  # noqa: BLE001 - pycocotools' boundary, after the checks above
            raise MrcnnError(f'{path}: malformed COCO annotations ({type(e).__name__}: {first_line(e)})') from None
    return coco


@dataclass(frozen=True)
class MissingImage:
    """An image of the annotation file that could not be read."""
    image_id: int
    file_name: str
    reason: str


@dataclass(frozen=True)
class KindEvaluation:
    """COCOeval of one iou type (bbox or segm): its 12 numbers by name, pycocotools' printed
    summary, and per category name its AP, AP50, AP75 and AR100 (None without ground truth)."""
    metrics: dict[str, float]
    summary: str
    per_class: dict[str, dict[str, float | None]]


@dataclass
class InferenceRun:
    results: list = field(default_factory=list)
    done: list[int] = field(default_factory=list)               # image ids processed (this run and resumed)
    missing: list[MissingImage] = field(default_factory=list)
    seconds: float = 0.0


def select_images(gt, max_images):
    """The annotation file's image ids in order, the first `max_images` of them when given."""
    ids = sorted(gt.getImgIds())
    return ids[:max_images] if max_images else ids


def eval_header(predictor, gt, image_ids, part):
    """What an evaluation's results log records of its run (see commands.predict.run_header): the
    model and every image it covers, so that --resume never mixes two models' or two sets' results."""
    return {**predictor.identity(), 'inputs': images_record(gt, image_ids), 'partition': [part.rank, part.world]}


def images_record(gt, image_ids):
    """What a log records of the images it covers: their count and a digest of their ids and names."""
    listed = '\n'.join(f'{i} {gt.imgs[i]["file_name"]}' for i in image_ids)
    return {'count': len(image_ids), 'sha256': hashlib.sha256(listed.encode()).hexdigest()}


@dataclass(frozen=True)
class EvalOptions:
    """How `mrcnn eval coco` runs a model over an annotation file's images."""
    max_images: int | None = None           # only the first N images (by id)
    resume: bool = False                    # skip the images an interrupted run finished
    shard: tuple[int, int] | None = None    # (K, N): every Nth image from the Kth
    model_name: str | None = None           # a zoo entry: its published AP goes beside the numbers
    max_pixels: int = MAX_PIXELS
    progress: bool = True


def add_logged_results(run, path, image_ids):
    """The results entries and done images a log holds, added to `run` (image k of `image_ids` is input k)."""
    for record in result_records(path):
        image_id = image_ids[record['source_index']]
        run.done.append(image_id)
        run.results += [{'image_id': image_id, **entry} for entry in record['annotations']]


def run_inference(predictor, gt, images_dir, log_path, all_ids, part, options=EvalOptions(), warn=print):
    """Predict this part's images, appending each image's results to the results log at
    `log_path` as it is done (the predictions log format, image k of `all_ids` as input k), so
    that `resume` skips finished images after an interruption, and refuses another run's log."""
    cat_ids = category_ids(predictor.classes)
    known = set(gt.getCatIds())
    if not set(cat_ids) <= known:
        warn(f"warning: the model's category ids are not all in the annotation file "
             f'(e.g. {sorted(set(cat_ids) - known)[0]}); their detections cannot match')
    run = InferenceRun()
    log = ResultsLog(log_path, eval_header(predictor, gt, all_ids, part), resume=options.resume)
    try:
        if log.done:   # what an interrupted run finished
            add_logged_results(run, log.path, all_ids)
        todo = [k for k in part.take(range(len(all_ids))) if k not in log.done]
        sources = [Source(IMAGE, Path(images_dir) / gt.imgs[all_ids[k]]['file_name'],
                          gt.imgs[all_ids[k]]['file_name']) for k in todo]
        start = time.perf_counter()
        show = options.progress and part.rank == 0
        with tqdm(total=len(todo), desc='eval', unit='img', disable=None if show else True) as bar:
            stream = StreamOptions(errors='yield', max_pixels=options.max_pixels)
            for item in (stream_sources(predictor, sources, stream) if sources else []):
                k = todo[item.source_index]
                image_id = all_ids[k]
                bar.update(1)
                if not item.ok:
                    warn(f'warning: image {image_id} missing or unreadable: {item.error}')
                    run.missing.append(MissingImage(image_id, item.source, item.error))
                    log.failed(k, item.error)
                    continue
                results = item.detections.to_coco(image_id)   # every detection: mmdet's thresholds
                log.add(k, item.source, item.detections.width, item.detections.height, results)
                run.done.append(image_id)
                run.results += results
        run.seconds = time.perf_counter() - start
    finally:
        log.close()
    return run


def load_results(patterns, gt=None):
    """Results entries from files (globs allowed), split by kind: entries with segmentation
    serve segm (and bbox, when no bbox-only file is given); bbox-only files serve bbox.  Every
    entry is checked (on the ground truth's image sizes, when given)."""
    sizes = {i: (im['height'], im['width']) for i, im in gt.imgs.items()} if gt is not None else None
    files = []
    for pattern in patterns:
        matched = sorted(glob.glob(str(pattern))) if glob.has_magic(str(pattern)) else [str(pattern)]
        if not matched:
            raise MrcnnError(f'no results file matches {pattern}')
        files += matched
    segm, bbox = [], []
    for f in files:
        entries = read_json(f, 'results file')
        if not isinstance(entries, list) or not all(isinstance(e, dict) and 'image_id' in e and 'category_id' in e
                                                    and 'score' in e for e in entries):
            raise MrcnnError(f'{f}: not a COCO results file (a list of {{image_id, category_id, score, ...}})')
        check_result_entries(entries, f, sizes)
        (segm if entries and all('segmentation' in e for e in entries) else bbox).extend(entries)
    return {'segm': segm, 'bbox': bbox or [dict(e) for e in segm]}


def check_results(gt, results_by_type):
    images, cats = set(gt.getImgIds()), set(gt.getCatIds())
    for kind, entries in results_by_type.items():
        bad_img = sorted({e['image_id'] for e in entries} - images)
        if bad_img:
            raise MrcnnError(f'{kind} results name {len(bad_img)} image ids that are not in the annotation file '
                             f'(e.g. {bad_img[0]})')
        bad_cat = sorted({e['category_id'] for e in entries} - cats)
        if bad_cat:
            raise MrcnnError(f'{kind} results use {len(bad_cat)} category ids that are not in the annotation '
                             f'file (e.g. {bad_cat[0]})')


def evaluate(gt, results_by_type, image_ids=None) -> dict[str, KindEvaluation]:
    """COCOeval per iou type ('bbox', 'segm'), on `image_ids` (default: every image of `gt`)."""
    from pycocotools.cocoeval import COCOeval
    check_results(gt, results_by_type)
    out = {}
    for kind in ('bbox', 'segm'):
        entries = results_by_type.get(kind)
        if not entries:
            continue
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            try:
                dt = gt.loadRes([dict(e) for e in entries])
                ev = COCOeval(gt, dt, kind)
                if image_ids is not None:
                    ev.params.imgIds = sorted(image_ids)
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            except Exception as e:  # noqa: BLE001 - pycocotools' boundary, after the checks of the entries
                raise MrcnnError(f'pycocotools could not evaluate the {kind} results ({type(e).__name__}: '
                                 f'{first_line(e)})') from None
        lines = [ln for ln in buf.getvalue().splitlines() if 'Average' in ln]
        out[kind] = KindEvaluation(dict(zip(METRICS, (float(v) for v in ev.stats))), '\n'.join(lines),
                                   per_class(ev, gt))
    if not out:
        raise MrcnnError('no results to evaluate')
    return out


def per_class(ev, gt):
    """{category name: {'AP', 'AP50', 'AP75', 'AR100'}} from an accumulated COCOeval, as its summary
    computes the overall numbers (all areas, 100 detections; cells of -1, categories without ground
    truth, left out of the mean).  A category with no ground truth gets None."""
    import numpy as np
    precision, recall = ev.eval['precision'], ev.eval['recall']   # [T, R, K, A, M], [T, K, A, M]
    iou = list(np.round(ev.params.iouThrs, 2))
    area, dets = ev.params.areaRngLbl.index('all'), len(ev.params.maxDets) - 1

    def mean(values):
        values = values[values > -1]
        return float(values.mean()) if values.size else None

    out = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, area, dets]
        out[gt.cats[cat_id]['name']] = {
            'AP': mean(p), 'AP50': mean(p[iou.index(0.5)]), 'AP75': mean(p[iou.index(0.75)]),
            'AR100': mean(recall[:, k, area, dets])}
    return out


def classwise_table(evaluation):
    """Per-class box and mask AP as text lines: one row per category, in the annotation file's order."""
    kinds = [k for k in ('bbox', 'segm') if k in evaluation]
    names = list(evaluation[kinds[0]].per_class)
    width = max([len('category')] + [len(n) for n in names])
    short = {'bbox': 'box', 'segm': 'mask'}
    head = f'{"category":<{width}}' + ''.join(f'  {label:>9}' for k in kinds
                                              for label in (f'{short[k]} AP', f'{short[k]} AP50'))
    rows = [head]
    for name in names:
        cells = []
        for k in kinds:
            c = evaluation[k].per_class[name]
            cells += [f'{"-":>9}' if c[m] is None else f'{c[m]:9.3f}' for m in ('AP', 'AP50')]
        rows.append(f'{name:<{width}}' + ''.join(f'  {c}' for c in cells))
    return rows


def metrics_record(evaluation, extra=None):
    rec = {kind: v.metrics for kind, v in evaluation.items()}
    rec['per_class'] = {kind: v.per_class for kind, v in evaluation.items()}
    rec.update(extra or {})
    return rec


def gather_to_rank0(dist, run):
    """Every rank's results, done and missing lists, merged on rank 0 (None elsewhere)."""
    mine = (run.results, run.done, run.missing)
    gathered = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(mine, gathered, dst=0)
    if dist.get_rank() != 0:
        return None
    merged = InferenceRun(seconds=run.seconds)
    for results, done, missing in gathered:
        merged.results += results
        merged.done += done
        merged.missing += missing
    return merged


def published(model_name):
    if not model_name:
        return None
    from mrcnn_cli.io import zoo
    e = zoo.get_entry(model_name)
    return {'bbox': round(e.box_ap / 100, 4), 'segm': round(e.mask_ap / 100, 4)}


def summarise_missing(missing: list[MissingImage], total: int) -> str:
    if not missing:
        return ''
    names = ', '.join(m.file_name for m in missing[:5]) + (' ...' if len(missing) > 5 else '')
    return f'{len(missing)} of {total} images missing or unreadable, not evaluated: {names}'


@dataclass
class FilesEvaluation:
    """`eval coco --results`: the metrics, where they were written, and which images they cover."""
    evaluation: dict
    metrics_path: Path
    images_evaluated: int
    images_total: int


def eval_results_files(ann, patterns, out_dir, model_name=None, covered_only=False, warn=print):
    """COCOeval of existing results files, metrics.json written to `out_dir`.

    As COCO (and pycocotools' official example) does, every image of the annotation file is
    scored: one the results do not name is an image where nothing was detected.  When the results
    name fewer images than that (a shard, a run over part of the set), one warning line says so;
    `covered_only` then scores only the images the results name."""
    gt = load_ground_truth(ann)
    by_type = load_results(patterns, gt)
    total = len(gt.getImgIds())
    covered = sorted({e['image_id'] for entries in by_type.values() for e in entries})
    if len(covered) < total and not covered_only:
        warn(f'warning: the results name {len(covered)} of the {total} images in {ann}; the other '
             f'{total - len(covered)} are scored as images where nothing was detected (--covered-only scores the '
             f'{len(covered)} alone)')
    evaluation = evaluate(gt, by_type, image_ids=covered if covered_only else None)
    evaluated = len(covered) if covered_only else total
    path = Path(out_dir) / 'metrics.json'
    write_json(path, metrics_record(evaluation, {
        'results_files': [str(p) for p in patterns], 'model': model_name, 'published': published(model_name),
        'images_evaluated': evaluated, 'images_total': total, 'images_with_results': len(covered),
        'images_scored': 'those the results name' if covered_only else 'all of the annotation file'}))
    return FilesEvaluation(evaluation, path, evaluated, total)


@dataclass
class EvalOutcome:
    evaluation: dict | None = None
    missing: list = field(default_factory=list)
    total: int = 0
    evaluated: int = 0
    results_path: Path | None = None
    metrics_path: Path | None = None
    seconds: float = 0.0
    rank: int = 0


def check_no_other_run(out_dir, log_name):
    """An --out that holds an earlier eval's results (or this part's unfinished log) is refused, as
    `mrcnn predict` refuses one: two runs never mix, and nothing is overwritten unasked."""
    for name in ('metrics.json', 'results.json', log_name):
        if (out_dir / name).exists():
            raise MrcnnError(f'{out_dir} holds the results of another run ({name}); choose another --out, or add '
                             '--resume to finish an interrupted run there')


def eval_with_model(predictor, ann, images_dir, out_dir, options=EvalOptions(), warn=print):
    """Inference over the annotation file's images, then COCOeval (on rank 0 when distributed)."""
    gt = load_ground_truth(ann)
    out_dir = Path(out_dir)
    part = partition(options.shard)
    rank, world = part.rank, part.world
    log_path = out_dir / f'results{part.tag}.partial.jsonl'
    if not options.resume:
        check_no_other_run(out_dir, log_path.name)
    with process_group(part, predictor.device.type == 'cuda') as dist:   # the last collective: the gather
        all_ids = select_images(gt, options.max_images)
        run = run_inference(predictor, gt, images_dir, log_path, all_ids, part,
                            options, warn)
        outcome = EvalOutcome(total=len(all_ids), rank=rank, seconds=run.seconds)
        if dist:
            run = gather_to_rank0(dist, run)
    if dist and run is None:
        return outcome
    run.results.sort(key=lambda r: (r['image_id'], -r['score']))
    outcome.missing = run.missing
    if world > 1 and not dist:
        # one shard of several: its results beside its log; `--merge` evaluates all parts together
        outcome.results_path = out_dir / f'results.shard-{rank}-of-{world}.json'
        write_json(outcome.results_path, run.results)
        return outcome
    identity = {k: v for k, v in predictor.identity().items() if k != 'classes'}
    return evaluate_run(gt, run, out_dir, outcome, {'source': predictor.source, **identity}, options.model_name)


def evaluate_run(gt, run, out_dir, outcome, produced_by, model_name=None):
    """results.json and metrics.json (what `produced_by` says made them) of a whole run's results."""
    outcome.results_path = out_dir / 'results.json'
    write_json(outcome.results_path, run.results)
    outcome.evaluated = len(run.done)
    if not run.done:
        raise MrcnnError('no image could be read: nothing to evaluate')
    by_type = {'bbox': [dict(r) for r in run.results], 'segm': run.results}
    outcome.evaluation = evaluate(gt, by_type, image_ids=run.done)
    outcome.metrics_path = out_dir / 'metrics.json'
    write_json(outcome.metrics_path, metrics_record(outcome.evaluation, {
        'images_evaluated': outcome.evaluated, 'images_total': outcome.total,
        'images_missing': [m.file_name for m in run.missing], 'model': model_name, **produced_by,
        'published': published(model_name)}))
    return outcome


def eval_parts(ann, folder, model_name=None):
    """COCOeval of every part of a sharded evaluation in `folder` (`--shard K/N` runs, each with
    the same --out), read from their logs: checked to be one run's, over this annotation file's
    images, every part there and finished; results.json and metrics.json as one process writes."""
    gt = load_ground_truth(ann)
    folder = Path(folder)
    logs = find_logs(folder, 'results', '.partial.jsonl')
    headers = check_parts(logs, folder)
    image_ids = select_images(gt, headers[0]['inputs']['count'])
    if images_record(gt, image_ids) != headers[0]['inputs']:
        raise MrcnnError(f'{logs[0].name} was written for other images than those of {ann}')
    run = InferenceRun()
    for path in logs:
        add_logged_results(run, path, image_ids)
        run.missing += [MissingImage(image_ids[k], gt.imgs[image_ids[k]]['file_name'], 'unreadable')
                        for k in sorted(scan(path).failed)]
    run.results.sort(key=lambda r: (r['image_id'], -r['score']))
    outcome = EvalOutcome(total=len(image_ids), missing=run.missing)
    produced_by = {k: v for k, v in headers[0].items() if k not in ('classes', 'inputs', 'partition', 'format')}
    return evaluate_run(gt, run, folder, outcome, {'parts': len(logs), **produced_by}, model_name)
